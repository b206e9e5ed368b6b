import { createHash, timingSafeEqual } from "node:crypto";
import type { Role } from "./principal.js";

export interface KeyLimits {
  concurrent_generations?: number | undefined;
  generations_per_minute?: number | undefined;
  output_tokens_per_minute?: number | undefined;
  connections?: number | undefined;
}

export interface ApiKey {
  id: string;
  /** SHA-256 of the key: the key itself is never kept in memory after loading. */
  hash: Buffer;
  role: Role;
  tenant: string;
  limits: KeyLimits;
}

export function sha256(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/**
 * API keys, stored hashed. Lookup hashes the presented key and compares it with every
 * configured hash in constant time (no early exit, no map keyed by the secret), so the
 * time taken says nothing about how close a guess was.
 */
export class KeyRing {
  constructor(private readonly keys: ApiKey[]) {}

  get size(): number {
    return this.keys.length;
  }

  find(presented: string): ApiKey | undefined {
    if (presented.length === 0 || presented.length > 512) return undefined;
    const h = sha256(presented);
    let found: ApiKey | undefined;
    for (const k of this.keys) {
      if (timingSafeEqual(h, k.hash) && !found) found = k;
    }
    return found;
  }
}
