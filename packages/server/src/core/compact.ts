import type { StoredRecord } from "../stores/store.js";

/**
 * Compact catch-up: a reader that asks for it gets the history it catches up on (the records
 * already in the log when it attached) with runs of consecutive deltas of one kind folded into
 * one event of the same type. The folded event's offset is the offset of the LAST record folded,
 * so resuming after it (Last-Event-ID, `?offset=`) is exact; the live tail is never folded.
 *
 * What folds (and only when every field of both records is one the fold knows, so nothing an
 * upstream or a producer added is lost):
 * - `text-delta` after `text-delta` of the same `block` and `refusal`; `logprobs` are joined
 *   when both records have them (a record with and one without do not fold);
 * - `reasoning-delta` after `reasoning-delta` of the same `block`;
 * - `tool-call-delta` after `tool-call-delta` of the same call (`id`, `index`, `block`) that
 *   does not name the tool again (a `name` starts a call).
 * A folded event holds at most `maxChars` characters of delta (a single record larger than that
 * is passed as it is).
 *
 * A folded record keeps, in `first`, the offset of the first record folded into it: a format
 * that writes one record as several SSE events (AI SDK, Anthropic: a block start, then the
 * delta) numbers the events before the last `<first>.<k>`, which names the same events of the
 * same record in an uncompacted read, so a resume between them is exact either way.
 */

/** Default bound of one folded event: characters of delta text (or tool arguments). */
export const COMPACT_MAX_CHARS = 16 * 1024;

const TEXT_KEYS = new Set(["type", "delta", "block", "refusal", "logprobs"]);
const REASONING_KEYS = new Set(["type", "delta", "block"]);
const TOOL_KEYS = new Set(["type", "id", "name", "args_delta", "index", "block"]);

type Obj = Record<string, unknown>;

function known(o: Obj, keys: Set<string>): boolean {
  for (const k in o) if (!keys.has(k)) return false;
  return true;
}

/** The piece of a foldable record, or undefined when the record does not fold at all. */
function pieceOf(type: string | undefined, o: Obj): string | undefined {
  switch (type) {
    case "text-delta":
      if (!known(o, TEXT_KEYS) || typeof o.delta !== "string") return undefined;
      if (o.logprobs !== undefined && !Array.isArray(o.logprobs)) return undefined;
      return o.delta;
    case "reasoning-delta":
      return known(o, REASONING_KEYS) && typeof o.delta === "string" ? o.delta : undefined;
    case "tool-call-delta":
      return known(o, TOOL_KEYS) && typeof o.args_delta === "string" && typeof o.id === "string"
        ? o.args_delta
        : undefined;
    default:
      return undefined;
  }
}

/** True when `next` continues the run `head` started (same kind, same block / call). */
function continues(type: string, head: Obj, next: Obj): boolean {
  if (head.block !== next.block) return false;
  switch (type) {
    case "text-delta":
      return head.refusal === next.refusal && (head.logprobs === undefined) === (next.logprobs === undefined);
    case "reasoning-delta":
      return true;
    default:
      return next.name === undefined && head.id === next.id && head.index === next.index;
  }
}

function isFoldableType(type: string | undefined): boolean {
  return type === "text-delta" || type === "reasoning-delta" || type === "tool-call-delta";
}

/**
 * Folds records as they come (catch-up reads them a page at a time: a run that crosses a page
 * is still one event). `push` returns what is complete; `end` what is still held.
 */
export class Folder {
  private type: string | undefined;
  private head: Obj | undefined;
  private firstRec: StoredRecord | undefined;
  private lastRec: StoredRecord | undefined;
  private pieces: string[] = [];
  private chars = 0;
  private logprobs: unknown[] | undefined;
  private count = 0;

  constructor(private readonly maxChars = COMPACT_MAX_CHARS) {}

  /** Feeds one record; appends to `out` whatever is complete. */
  push(rec: StoredRecord, out: StoredRecord[]): void {
    // Only generation events (JSON records with a type) fold; anything else passes as it is.
    if (!isFoldableType(rec.type) || rec.encoding !== undefined) {
      this.end(out);
      out.push(rec);
      return;
    }
    let o: Obj;
    try {
      o = JSON.parse(rec.data) as Obj;
    } catch {
      this.end(out);
      out.push(rec);
      return;
    }
    const piece = pieceOf(rec.type, o);
    if (piece === undefined) {
      this.end(out);
      out.push(rec);
      return;
    }
    if (
      this.head !== undefined &&
      this.type === rec.type &&
      continues(rec.type as string, this.head, o) &&
      this.chars + piece.length <= this.maxChars
    ) {
      this.pieces.push(piece);
      this.chars += piece.length;
      if (Array.isArray(o.logprobs)) this.logprobs = (this.logprobs ?? []).concat(o.logprobs);
      this.lastRec = rec;
      this.count++;
      return;
    }
    this.end(out);
    this.type = rec.type;
    this.head = o;
    this.firstRec = rec;
    this.lastRec = rec;
    this.pieces = [piece];
    this.chars = piece.length;
    this.logprobs = Array.isArray(o.logprobs) ? [...o.logprobs] : undefined;
    this.count = 1;
  }

  /** Emits the run being held, if any. */
  end(out: StoredRecord[]): void {
    const head = this.head;
    if (head === undefined) return;
    const first = this.firstRec as StoredRecord;
    const last = this.lastRec as StoredRecord;
    if (this.count === 1) {
      out.push(first);
    } else {
      const joined = this.pieces.join("");
      const folded: Obj = { ...head };
      if (this.type === "tool-call-delta") folded.args_delta = joined;
      else folded.delta = joined;
      if (this.logprobs !== undefined) folded.logprobs = this.logprobs;
      const rec: StoredRecord = { seq: last.seq, offset: last.offset, data: JSON.stringify(folded) };
      if (last.type !== undefined) rec.type = last.type;
      rec.first = first.offset;
      out.push(rec);
    }
    this.head = undefined;
    this.firstRec = undefined;
    this.lastRec = undefined;
    this.pieces = [];
    this.chars = 0;
    this.logprobs = undefined;
    this.count = 0;
  }
}

/** Folds a whole list of history records (JSON pages, tests). */
export function foldRecords(records: StoredRecord[], maxChars = COMPACT_MAX_CHARS): StoredRecord[] {
  const out: StoredRecord[] = [];
  const f = new Folder(maxChars);
  for (const r of records) f.push(r, out);
  f.end(out);
  return out;
}
