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
