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
}

/**
 * One interface for every model provider. A provider yields events as they arrive and
 * throws a SluiceError (code `upstream_error` / `upstream_unreachable`) when the upstream fails.
 * It may end with a `finish` event; if it does not, the runner ends the stream with `finish: stop`.
 */
export interface Provider {
  readonly name: string;
  stream(request: ProviderRequest, ctx: ProviderContext): AsyncIterable<ProviderEvent>;
  /**
   * Removes this provider's secrets (API key, header values) and credential-shaped strings from
   * text derived from its upstream; the runner applies it to everything it stores from an error.
   */
  redact?(text: string): string;
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
