import { Allow, parse } from "partial-json";

/**
 * What a partial value may show: strings, arrays, objects, null and booleans may be
 * partial; numbers may not (a half-streamed `12` of `125` would be a wrong value).
 */
const ALLOW = Allow.ALL & ~Allow.NUM;

/**
 * Parses the JSON text received so far into the most complete valid value it implies,
 * or undefined when nothing can be shown yet (or the text is not JSON at all).
 */
export function parsePartialJson<T = unknown>(text: string): T | undefined {
  const t = text.trim();
  if (t === "") return undefined;
  try {
    return parse(t, ALLOW) as T;
  } catch {
    return undefined;
  }
}

/**
 * Turns a streaming JSON answer into a sequence of valid partial objects: push each
 * delta; `push` returns the new partial value when it changed, undefined otherwise.
 * Every value returned is valid JSON data (no half numbers, no broken strings).
 */
export class PartialJson<T = unknown> {
  private text = "";
  private lastJson = "";
  value: T | undefined;

  push(delta: string): T | undefined {
    this.text += delta;
    const v = parsePartialJson<T>(this.text);
    if (v === undefined) return undefined;
    const json = JSON.stringify(v);
    if (json === this.lastJson) return undefined;
    this.lastJson = json;
    this.value = v;
    return v;
  }

  /** The final value: a strict parse of the whole text (throws when the answer is not JSON). */
  complete(): T {
    return JSON.parse(this.text) as T;
  }

  get raw(): string {
    return this.text;
  }
}

/** Partial values of a stream of text deltas, each different from the one before. */
export async function* partialObjects<T = unknown>(deltas: AsyncIterable<string>): AsyncGenerator<T> {
  const p = new PartialJson<T>();
  for await (const d of deltas) {
    const v = p.push(d);
    if (v !== undefined) yield v;
  }
}
