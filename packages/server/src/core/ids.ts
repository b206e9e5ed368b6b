import { randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lower case

/** A new stream id: `st_` + 20 base32 characters (100 random bits). */
export function newStreamId(): string {
  const bytes = randomBytes(20);
  let s = "st_";
  for (const b of bytes) s += ALPHABET[b & 31];
  return s;
}

/** Stream ids accepted in URLs: conservative, so no id can traverse paths or break headers. */
export const STREAM_ID_RE = /^[A-Za-z0-9_-]{1,128}$/;
