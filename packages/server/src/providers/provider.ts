import type {
  DataEvent,
  FinishEvent,
  MediaEvent,
  ReasoningDeltaEvent,
  TextDeltaEvent,
  ToolCallDeltaEvent,
  ToolCallEvent,
  UsageEvent,
} from "@sluice/protocol";
import type { Clock } from "../core/clock.js";
import type { GenerationRequest } from "../core/request.js";

/** What a provider may yield. The runner adds `start` and the terminal events it owns. */
export type ProviderEvent =
  | TextDeltaEvent
  | ReasoningDeltaEvent
  | ToolCallDeltaEvent
  | ToolCallEvent
  | DataEvent
  | MediaEvent
  | UsageEvent
  | FinishEvent;

export interface ProviderRequest extends GenerationRequest {
  /** The model name to send upstream (a route may rename it). */
  upstream_model: string;
}

export interface ProviderContext {
  /** Aborts when the generation is cancelled or its deadline passes: the provider must stop at once
   * (for HTTP providers: abort the upstream request). */
  signal: AbortSignal;
  clock: Clock;
  /**
   * Marks a phase of the first token's way (TTFT phases, core/phases.ts) the first time it is
   * reached; HTTP providers mark `upstream_sent`, `upstream_headers` and `upstream_first_byte`.
   */
  mark?: (phase: number) => void;
}

/**
 * Where a push provider hands its events: once per upstream read, every event that read gave,
 * in order. The array is the provider's and is reused after the call returns. The runner's sink
 * is synchronous; a sink may return a promise to hold the provider until it has taken them
 * (backpressure: the provider reads nothing more until then). A sink that throws stops the
 * provider, which closes the upstream and rejects with that error.
 */
export type ProviderSink = (events: readonly ProviderEvent[]) => void | Promise<void>;

/**
 * One interface for every model provider. A provider yields events as they arrive and
 * throws a SluiceError (code `upstream_error` / `upstream_unreachable`) when the upstream fails.
 * It may end with a `finish` event; if it does not, the runner ends the stream with `finish: stop`.
 */
export interface Provider {
  readonly name: string;
  stream(request: ProviderRequest, ctx: ProviderContext): AsyncIterable<ProviderEvent>;
  /**
   * The same events as `stream`, pushed (optional; the runner prefers it): one sink call per
   * upstream read instead of one async-iterator step per event. Resolves once the stream has
   * ended (its final events handed over), rejects as `stream` throws; after an abort it rejects
   * with the signal's reason.
   */
  push?(request: ProviderRequest, ctx: ProviderContext, sink: ProviderSink): Promise<void>;
  /**
   * Removes this provider's secrets (API key, header values) and credential-shaped strings from
   * text derived from its upstream; the runner applies it to everything it stores from an error.
   */
  redact?(text: string): string;
  /** Closes what the provider holds open (pooled and spare upstream connections); idempotent. */
  close?(): Promise<void>;
  /**
   * Bytes of memory the provider holds for a request from its start (e.g. an answer planned
   * up front), counted against the memory budget before the generation is admitted.
   */
  plannedBytes?(request: ProviderRequest): number;
  /**
   * Refuses, before the generation starts, a request this provider cannot honour (a field of
   * `upstream_extra` it has no mapping for): throws SluiceError `invalid_request` naming the
   * field in `details.param`, so nothing the client asked for is dropped silently.
   */
  check?(request: ProviderRequest): void;
}

/** Thrown into a push provider when its pulling consumer stopped early (pull() below). */
const STOPPED = Symbol("stopped");

/**
 * A push provider's events as an async iterator (Provider.stream on top of Provider.push): one
 * read's events at a time, the provider held until they have been taken, so nothing is buffered
 * beyond one read. Returning early (break) stops the provider and closes its upstream.
 */
export async function* pull(
  push: (sink: ProviderSink) => Promise<void>,
): AsyncGenerator<ProviderEvent, void, undefined> {
  let batch: readonly ProviderEvent[] | undefined;
  let taken: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  let wake: (() => void) | undefined;
  let settled = false;
  let failure: { err: unknown } | undefined;
  const done = push((events) => {
    batch = events;
    const w = wake;
    wake = undefined;
    w?.();
    return new Promise<void>((resolve, reject) => {
      taken = { resolve, reject };
    });
  }).then(
    () => {
      settled = true;
      wake?.();
    },
    (err: unknown) => {
      settled = true;
      failure = { err };
      wake?.();
    },
  );
  let finished = false;
  try {
    for (;;) {
      if (batch !== undefined) {
        const b = batch;
        batch = undefined;
        for (let i = 0; i < b.length; i++) yield b[i] as ProviderEvent;
        const t = taken;
        taken = undefined;
        t?.resolve();
        continue;
      }
      if (settled) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    finished = true;
    if (failure) throw failure.err;
  } finally {
    if (!finished) {
      // The consumer stopped early (or threw): stop the provider, wait for it to close up.
      const t = taken;
      taken = undefined;
      t?.reject(STOPPED);
      await done;
    }
  }
}
