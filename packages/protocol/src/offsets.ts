/**
 * Offsets are opaque to clients: fixed-width strings, strictly increasing within a
 * stream, comparable as strings. Sluice mints them from a per-stream sequence number
 * (the n-th record has sequence n, starting at 1) written as 16 decimal digits.
 *
 * "Read from X" means every record after X. `-1` means from the beginning, `now`
 * means only what comes next.
 */

export const OFFSET_WIDTH = 16;
export const OFFSET_START = "-1";
export const OFFSET_NOW = "now";
/** The offset "before the first record": reading after it returns everything. */
export const ZERO_OFFSET = "0".repeat(OFFSET_WIDTH);

const OFFSET_RE = /^\d{16}$/;

export function formatOffset(seq: number): string {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError(`bad sequence ${seq}`);
  return String(seq).padStart(OFFSET_WIDTH, "0");
}

export function isOffset(value: string): boolean {
  return OFFSET_RE.test(value);
}

/** Parses a concrete offset into its sequence number; returns undefined when malformed. */
export function parseOffset(value: string): number | undefined {
  if (!OFFSET_RE.test(value)) return undefined;
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : undefined;
}

export type ReadPosition = { kind: "after"; seq: number } | { kind: "now" };

/**
 * Parses what a client may send as a read position: `-1`, `now`, or a concrete offset.
 * An empty or missing value means from the beginning. Returns undefined when malformed.
 */
export function parseReadPosition(value: string | undefined | null): ReadPosition | undefined {
  if (value === undefined || value === null || value === "" || value === OFFSET_START) {
    return { kind: "after", seq: 0 };
  }
  if (value === OFFSET_NOW) return { kind: "now" };
  const seq = parseOffset(value);
  return seq === undefined ? undefined : { kind: "after", seq };
}

/** `<offset>.<k>`: the id of an SSE event that is not the last of its record (see below). */
const SUB_OFFSET_RE = /^(\d{16})\.(\d{1,4})$/;

/** The SSE event id for event `k` (1-based) of a record encoded as several events. */
export function subOffset(offset: string, k: number): string {
  return `${offset}.${k}`;
}

/**
 * Like parseReadPosition, and also `<offset>.<k>`: the id of the k-th event of a record that a
 * format writes as several SSE events (AI SDK, OpenAI). A client cut after it has that
 * record's first k events: it resumes after the record before, skipping k events.
 */
export function parseResumePosition(
  value: string | undefined | null,
): (ReadPosition & { skipEvents?: number }) | undefined {
  const m = value ? SUB_OFFSET_RE.exec(value) : null;
  if (m) {
    const seq = parseOffset(m[1] as string);
    const k = Number(m[2]);
    if (seq === undefined || seq < 1 || k < 1) return undefined;
    return { kind: "after", seq: seq - 1, skipEvents: k };
  }
  return parseReadPosition(value);
}
