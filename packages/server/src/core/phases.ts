/**
 * TTFT phases: where the time to a generation's first token goes, marked once per generation
 * (never per token). Each mark is a performance.now() taken the first time the phase is
 * reached; the metric `sluice_ttft_phase_seconds{phase}` observes, at the first committed
 * append, each phase's time since the mark before it (docs/operations.md).
 */
export const TTFT_PHASES = [
  /** runner.start entered (the request parsed, auth and quotas passed). */
  "received",
  /** The route resolved and every route of its chain accepted the request (check). */
  "route",
  /** The generation's lease acquired (coordinator; a Redis round trip on the Redis store). */
  "lease",
  /** The stream created in the store. */
  "create",
  /** The `start` event appended (readers may attach from here). */
  "start_append",
  /** The upstream HTTP request handed to undici (connection from the pool or a new one). */
  "upstream_sent",
  /** The upstream's response headers. */
  "upstream_headers",
  /** The first body chunk read from the upstream socket. */
  "upstream_first_byte",
  /** The first output token parsed and shaped by the runner. */
  "first_parsed",
  /** The append holding it committed by the store (readers woken). */
  "first_append",
] as const;

export type TtftPhase = (typeof TTFT_PHASES)[number];

export const PHASE_RECEIVED = 0;
export const PHASE_ROUTE = 1;
export const PHASE_LEASE = 2;
export const PHASE_CREATE = 3;
export const PHASE_START_APPEND = 4;
export const PHASE_UPSTREAM_SENT = 5;
export const PHASE_UPSTREAM_HEADERS = 6;
export const PHASE_UPSTREAM_FIRST_BYTE = 7;
export const PHASE_FIRST_PARSED = 8;
export const PHASE_FIRST_APPEND = 9;

/** One generation's marks (0 = not reached). */
export class PhaseMarks {
  readonly at = new Float64Array(TTFT_PHASES.length);
  readonly mark = (phase: number): void => {
    if (this.at[phase] === 0) this.at[phase] = performance.now();
  };
}
