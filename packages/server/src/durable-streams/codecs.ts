import { type Codec, registerCodec } from "../formats/codec.js";
import type { RecordInput, StoredRecord } from "../stores/store.js";
import type { Mode } from "./protocol.js";

/**
 * How DS streams sit in Sluice records, and the two codecs the Hub encodes them with.
 *
 * One append (POST, or PUT with a body) is one record:
 * - JSON mode: `data` is the append's messages, each as compact JSON, joined by "," (a POSTed
 *   array is flattened one level; any other value is one message). A generation event record
 *   (one event's JSON) is the one-message case, so generation streams read the same way.
 * - bytes mode: the body's bytes; valid UTF-8 is kept as text, anything else as base64
 *   (`encoding: "base64"`), so text stays readable in the store and binary stays exact.
 *
 * Codec output is what a batch of records concatenates to: for JSON, each record's messages
 * followed by ","; for bytes, the record's bytes as a latin1 string (one char per byte).
 */

export const dsJsonCodec: Codec = registerCodec({
  key: "ds:json",
  index: -1,
  encode(rec) {
    return `${rec.data},`;
  },
});

export const dsBytesCodec: Codec = registerCodec({
  key: "ds:bytes",
  index: -1,
  encode(rec) {
    return recordBytes(rec).toString("latin1");
  },
});

export function codecFor(mode: Mode): Codec {
  return mode === "json" ? dsJsonCodec : dsBytesCodec;
}

export function recordBytes(rec: { data: string; encoding?: string }): Buffer {
  return rec.encoding === "base64" ? Buffer.from(rec.data, "base64") : Buffer.from(rec.data, "utf8");
}

/** Encoded records (codec output) → response body. */
export function bodyOf(mode: Mode, chunk: string): Buffer {
  if (mode === "json") return Buffer.from(jsonArray(chunk), "utf8");
  return Buffer.from(chunk, "latin1");
}

/** JSON codec output → the JSON array of its messages. */
export function jsonArray(chunk: string): string {
  return `[${chunk.slice(0, -1)}]`;
}

export function encodeRecords(mode: Mode, records: StoredRecord[]): string {
  const codec = codecFor(mode);
  let out = "";
  for (const r of records) out += codec.encode(r, { id: "", created_at: "" });
  return out;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A bytes-mode append body as a record. */
export function bytesRecord(body: Buffer): RecordInput {
  try {
    return { data: utf8.decode(body) };
  } catch {
    return { data: body.toString("base64"), encoding: "base64" };
  }
}

/**
 * A JSON-mode body → its messages: a top-level array is a batch (flattened one level), any other
 * value is one message. Throws SyntaxError on bad JSON. Messages keep their source text (minus
 * whitespace outside strings), so numbers beyond double precision and key order stay exact.
 */
export function jsonMessages(body: Buffer | string): string[] {
  const text = typeof body === "string" ? body : body.toString("utf8");
  JSON.parse(text); // validation only
  const compact = minifyJson(text);
  return compact.startsWith("[") ? splitTopLevel(compact.slice(1, -1)) : [compact];
}

/** The messages of one JSON-mode record (for sub-offset forks). */
export function recordMessages(rec: { data: string }): string[] {
  return splitTopLevel(rec.data);
}

/** Drops whitespace outside strings (valid JSON in, the same value out, on one line). */
function minifyJson(text: string): string {
  let out = "";
  let start = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped char
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
      out += text.slice(start, i);
      start = i + 1;
    }
  }
  return out + text.slice(start);
}

/** Splits compact JSON values separated by top-level commas ("1,[2,3],{\"a\":4}" → three values). */
function splitTopLevel(list: string): string[] {
  const out: string[] = [];
  if (list.length === 0) return out;
  let depth = 0;
  let inString = false;
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) depth++;
    else if (c === 0x5d || c === 0x7d) depth--;
    else if (c === 0x2c && depth === 0) {
      out.push(list.slice(start, i));
      start = i + 1;
    }
  }
  out.push(list.slice(start));
  return out;
}
