import { subOffset } from "@sluice/protocol";
import type { StoredRecord, StreamInfo } from "../stores/store.js";

/**
 * A codec turns stored records into the bytes one wire format puts on one transport
 * (e.g. "sse:sluice", "ndjson:sluice"). The fan-out encodes each record once per codec
 * and shares the result with every reader using that codec.
 */
export interface Codec {
  /** Registry key, e.g. "sse:sluice". */
  readonly key: string;
  /** Index into per-record encode caches; assigned by the registry. */
  index: number;
  /**
   * Bytes for one record; may be "" when the format has nothing to say about it. A codec that
   * sets `needsPrev` also gets the record before it (undefined only for the first record), so
   * formats that open and close parts (AI SDK) or move values (OpenAI usage) stay a pure
   * function of the log: every reader gets the same bytes for a record, wherever it started.
   */
  encode(rec: StoredRecord, info: StreamInfoLite, prev?: StoredRecord): string;
  readonly needsPrev?: boolean;
}

/** The parts of stream info a codec may need (kept small: computed once per tail). */
export interface StreamInfoLite {
  id: string;
  model?: string;
  created_at: string;
}

export function lite(info: StreamInfo): StreamInfoLite {
  const l: StreamInfoLite = { id: info.id, created_at: info.created_at };
  if (info.model !== undefined) l.model = info.model;
  return l;
}

const registry = new Map<string, Codec>();

export function registerCodec(codec: Codec): Codec {
  const existing = registry.get(codec.key);
  if (existing) return existing;
  codec.index = registry.size;
  registry.set(codec.key, codec);
  return codec;
}

export function getCodec(key: string): Codec | undefined {
  return registry.get(key);
}

export function codecCount(): number {
  return registry.size;
}

/**
 * One record as several SSE events (`data: <event>`). Every event carries an id: the record's
 * offset on the last, `<offset>.<k>` on the k-th before it, so a client whose connection is cut
 * between two of them resumes (Last-Event-ID) after exactly the events it has: the reader skips
 * the first k events of that record (parseResumePosition, Hub.attach's skipEvents).
 *
 * A record folded by compact catch-up (core/compact.ts) is numbered `<first>.<k>` before its last
 * event, `first` being the first record folded into it: the events before the delta (a block or
 * part start, the end of the previous one) are those of that first record, so the id names the
 * same events in a compact read and in an uncompacted one, and a resume between them is exact.
 */
export function sseRecord(events: string[], offset: string, first: string = offset): string {
  let s = "";
  const n = events.length;
  for (let i = 0; i < n; i++) {
    s += `id: ${i === n - 1 ? offset : subOffset(first, i + 1)}\ndata: ${events[i]}\n\n`;
  }
  return s;
}
