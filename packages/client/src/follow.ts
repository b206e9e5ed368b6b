import type { StreamEvent } from "@sluice/protocol";
import type { ClientClock } from "./clock.js";
import { SluiceClientError, StreamExhausted } from "./errors.js";
import {
  type BackoffOptions,
  type ConnectionState,
  initialState,
  isFinal,
  type MachineInput,
  transition,
} from "./machine.js";
import type { Transport } from "./transport.js";

export interface FollowOptions {
  /** Read after this offset: `-1` (default) from the beginning, `now`, or an offset. */
  offset?: string;
  signal?: AbortSignal;
  /** Called on every connection state change. */
  onState?: (state: ConnectionState) => void;
}

export interface FollowDeps {
  transport: Transport;
  clock: ClientClock;
  random: () => number;
  backoff: BackoffOptions;
}

const TERMINAL = new Set(["finish", "error", "abort"]);

/**
 * Follows one stream: an async iterable of its events, in order, each exactly once,
 * whatever happens to the connection. Drops are retried from the last offset received
 * (exponential backoff, full jitter); iteration ends after the terminal event, throws a
 * SluiceClientError when the stream cannot be read (unknown stream, bad offset, gave up).
 */
export class Follow implements AsyncIterable<StreamEvent> {
  private st: ConnectionState;
  private readonly listeners = new Set<(s: ConnectionState) => void>();
  private readonly ctl = new AbortController();
  private started = false;

  constructor(
    readonly id: string,
    private readonly deps: FollowDeps,
    opts: FollowOptions = {},
  ) {
    this.st = initialState(opts.offset ?? "-1");
    if (opts.onState) this.listeners.add(opts.onState);
    if (opts.signal) {
      if (opts.signal.aborted) this.close();
      else opts.signal.addEventListener("abort", () => this.close(), { once: true });
    }
  }

  get state(): ConnectionState {
    return this.st;
  }

  /** The offset of the last event delivered (resume from here). */
  get offset(): string {
    return this.st.offset;
  }

  onState(cb: (s: ConnectionState) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  /** Stops following (the generation goes on: use client.cancel to stop it). */
  close(): void {
    if (!this.ctl.signal.aborted) this.ctl.abort(new SluiceClientError("closed", "follow closed", false));
    this.dispatch({ type: "close" });
  }

  private dispatch(input: MachineInput): void {
    const next = transition(this.st, input, this.deps.backoff, this.deps.random);
    if (next === this.st) return;
    this.st = next;
    for (const cb of this.listeners) cb(next);
  }

  [Symbol.asyncIterator](): AsyncGenerator<StreamEvent> {
    if (this.started) throw new Error("a Follow can be iterated once");
    this.started = true;
    return this.run();
  }

  private async *run(): AsyncGenerator<StreamEvent> {
    const { transport, clock } = this.deps;
    const signal = this.ctl.signal;
    this.dispatch({ type: "connect" });
    try {
      while (!isFinal(this.st)) {
        const s = this.st;
        if (s.status === "reconnecting") {
          try {
            await clock.sleep(s.delayMs, signal);
          } catch {
            break;
          }
          this.dispatch({ type: "retry" });
          continue;
        }
        const attempt = new AbortController();
        const onAbort = () => attempt.abort(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        try {
          const events = await transport.open(this.id, this.st.offset, attempt.signal);
          this.dispatch({ type: "opened" });
          for await (const se of events) {
            const held = this.st.offset;
            if (/^\d/.test(held) && se.offset <= held) continue; // already delivered
            const terminal = TERMINAL.has(se.event.type);
            this.dispatch({ type: "event", offset: se.offset, terminal });
            yield se;
            if (terminal || isFinal(this.st)) break;
          }
          if (!isFinal(this.st)) {
            this.dispatch({ type: "dropped", reason: "the server closed the connection before the end" });
          }
        } catch (err) {
          if (signal.aborted) break;
          this.onFailure(err);
        } finally {
          signal.removeEventListener("abort", onAbort);
          attempt.abort();
        }
      }
    } finally {
      if (!isFinal(this.st)) this.close();
      else if (!this.ctl.signal.aborted) this.ctl.abort();
    }
    const end = this.st;
    if (end.status === "failed") {
      throw new SluiceClientError(end.error.code, end.error.message, end.error.retryable);
    }
  }

  private onFailure(err: unknown): void {
    if (err instanceof StreamExhausted) {
      this.dispatch({ type: "exhausted" });
    } else if (err instanceof SluiceClientError && !err.retryable) {
      this.dispatch({
        type: "fatal",
        error: { code: err.code, message: err.message, retryable: false },
      });
    } else {
      this.dispatch({ type: "dropped", reason: err instanceof Error ? err.message : String(err) });
    }
  }
}
