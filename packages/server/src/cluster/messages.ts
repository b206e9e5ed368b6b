import type { WireChange } from "./worker-store.js";

/** Messages between the primary and its workers (node:cluster IPC, JSON). Tagged `sluice`. */
export type ToPrimary =
  | { sluice: "notices"; changes: WireChange[] }
  | { sluice: "listening"; url: string; grpc?: string }
  | { sluice: "request"; seq: number; op: "acquire" | "hasOwner"; id: string }
  | { sluice: "request"; seq: number; op: "release"; id: string }
  | { sluice: "request"; seq: number; op: "cancel"; id: string; by: string; reason: string }
  | { sluice: "request"; seq: number; op: "owned"; ids: string[] }
  /** This worker follows the stream now (its first reader of it); the reply comes once the primary knows. */
  | { sluice: "request"; seq: number; op: "follow"; id: string }
  /** The streams other workers follow (asked once, at startup; changes then come as `interest`). */
  | { sluice: "request"; seq: number; op: "interests" }
  /** This worker no longer follows the stream (its last reader of it left). */
  | { sluice: "unfollow"; id: string }
  | { sluice: "request"; seq: number; op: "metrics" };

export type ToWorker =
  | { sluice: "notices"; changes: WireChange[] }
  | { sluice: "reply"; seq: number; value: unknown; error?: string }
  | { sluice: "cancel"; id: string; by: string; reason: string }
  | { sluice: "interrupt"; ids: string[] }
  /** Another worker began (`on`) or stopped (`!on`) following the stream: publish its commits or not. */
  | { sluice: "interest"; id: string; on: boolean };

export function isSluiceMessage(m: unknown): m is { sluice: string } {
  return typeof m === "object" && m !== null && typeof (m as { sluice?: unknown }).sluice === "string";
}

/** The env var that tells a forked process which store file the workers share. */
export const WORKER_STORE_ENV = "SLUICE_WORKER_STORE";
/** Set to 1 when that file is a scratch file standing in for the memory store (not durable). */
export const WORKER_SCRATCH_ENV = "SLUICE_WORKER_SCRATCH";
/** Set to 1 to add `Sluice-Worker: <worker id>` to every HTTP response (debugging, tests). */
export const WORKER_HEADER_ENV = "SLUICE_WORKER_HEADER";

/**
 * With SLUICE_WORKER_HEADER=1, every HTTP response and WebSocket handshake says which process
 * served it: `Sluice-Worker: <pid>` (a debugging aid for `--workers`, off by default).
 */
export function workerHeader(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env[WORKER_HEADER_ENV] === "1" ? String(process.pid) : undefined;
}
