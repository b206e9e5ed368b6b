/**
 * The reconnect logic of a follower as an explicit, immutable state machine. `transition`
 * is pure: the same state, input and random number always give the same next state, so
 * every path (drops, backoff, give-up, end) is unit-testable without sockets or timers.
 *
 *   idle ──connect──▶ connecting ──opened──▶ live ──event(terminal)──▶ ended
 *                        ▲   │                 │
 *                        │   └─dropped─┐       └─dropped──▶ reconnecting(delay)
 *                        └──retry──────┴──────────────────────────┘
 *   any ──fatal──▶ failed        any ──close──▶ closed
 *
 * Backoff: exponential with full jitter, delay = random() × min(maxMs, initialMs × factor^attempt).
 * Progress (an event received) resets the attempt counter; `maxAttempts` consecutive
 * drops without progress give up (`failed`).
 */

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** Consecutive failed attempts (no event received) before giving up; Infinity = never. */
  maxAttempts: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  initialMs: 250,
  maxMs: 10_000,
  factor: 2,
  maxAttempts: Number.POSITIVE_INFINITY,
};

export type ConnectionState =
  | { status: "idle"; offset: string; attempt: 0 }
  | { status: "connecting"; offset: string; attempt: number }
  | { status: "live"; offset: string; attempt: number }
  | { status: "reconnecting"; offset: string; attempt: number; delayMs: number; reason: string }
  | { status: "ended"; offset: string; reason: "terminal" | "no-more-events" }
  | { status: "failed"; offset: string; error: FollowError }
  | { status: "closed"; offset: string };

export type ConnectionStatus = ConnectionState["status"];

export interface FollowError {
  code: string;
  message: string;
  retryable: boolean;
}

export type MachineInput =
  | { type: "connect" }
  | { type: "opened" }
  | { type: "event"; offset: string; terminal: boolean }
  /** The connection went away (network error, server closed without a terminal event). */
  | { type: "dropped"; reason: string }
  /** The backoff delay elapsed. */
  | { type: "retry" }
  /** The server said nothing more will come (204 after the terminal event). */
  | { type: "exhausted" }
  /** A non-retryable error (unknown stream, bad offset, …). */
  | { type: "fatal"; error: FollowError }
  /** The user stopped following. */
  | { type: "close" };

export function initialState(offset = "-1"): ConnectionState {
  return { status: "idle", offset, attempt: 0 };
}

export function backoffDelay(attempt: number, opts: BackoffOptions, random: () => number): number {
  const cap = Math.min(opts.maxMs, opts.initialMs * opts.factor ** attempt);
  return Math.floor(random() * cap);
}

export function isFinal(s: ConnectionState): boolean {
  return s.status === "ended" || s.status === "failed" || s.status === "closed";
}

export function transition(
  s: ConnectionState,
  input: MachineInput,
  opts: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): ConnectionState {
  if (isFinal(s)) return s;
  switch (input.type) {
    case "close":
      return { status: "closed", offset: s.offset };
    case "fatal":
      return { status: "failed", offset: s.offset, error: input.error };
    case "connect":
      if (s.status === "idle") return { status: "connecting", offset: s.offset, attempt: 0 };
      return s;
    case "retry":
      if (s.status === "reconnecting") return { status: "connecting", offset: s.offset, attempt: s.attempt };
      return s;
    case "opened":
      if (s.status === "connecting") return { status: "live", offset: s.offset, attempt: s.attempt };
      return s;
    case "event": {
      if (s.status !== "live" && s.status !== "connecting") return s;
      // An offset at or before the one we hold is a duplicate: never move backwards.
      const offset = !/^\d/.test(s.offset) || input.offset > s.offset ? input.offset : s.offset;
      if (input.terminal) return { status: "ended", offset, reason: "terminal" };
      return { status: "live", offset, attempt: 0 };
    }
    case "exhausted":
      return { status: "ended", offset: s.offset, reason: "no-more-events" };
    case "dropped": {
      if (s.status !== "live" && s.status !== "connecting") return s;
      const attempt = s.attempt + 1;
      if (attempt > opts.maxAttempts) {
        return {
          status: "failed",
          offset: s.offset,
          error: {
            code: "reconnect_exhausted",
            message: `gave up after ${opts.maxAttempts} attempts without progress: ${input.reason}`,
            retryable: true,
          },
        };
      }
      return {
        status: "reconnecting",
        offset: s.offset,
        attempt,
        delayMs: backoffDelay(attempt - 1, opts, random),
        reason: input.reason,
      };
    }
  }
}
