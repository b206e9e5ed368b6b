/**
 * The Sluice event model: a stream is an ordered sequence of these events.
 * A discriminated union on `type`, noun-verb names. Exactly one terminal event
 * (`finish`, `error`, `abort`) ends every generation stream.
 */

export interface StartEvent {
  type: "start";
  model: string;
  created_at: string;
  /** Free-form request metadata (route, provider, request id, …). */
  metadata?: Record<string, unknown>;
}

export interface TextDeltaEvent {
  type: "text-delta";
  delta: string;
  /** This text is the model's refusal (OpenAI's `delta.refusal`), not its answer. */
  refusal?: true;
  /** The upstream's log probabilities for this piece, when asked for (OpenAI's `logprobs.content` entries). */
  logprobs?: unknown[];
  /**
   * Position of the content block this event belongs to, for formats that number blocks
   * (Anthropic's): a run of text or of reasoning deltas is one block, each tool call one. Set by
   * the runner; absent when 0.
   */
  block?: number;
}

export interface ReasoningDeltaEvent {
  type: "reasoning-delta";
  delta: string;
  /**
   * Position of the content block this event belongs to, for formats that number blocks
   * (Anthropic's): a run of text or of reasoning deltas is one block, each tool call one. Set by
   * the runner; absent when 0.
   */
  block?: number;
}

export interface ToolCallDeltaEvent {
  type: "tool-call-delta";
  id: string;
  name?: string;
  args_delta: string;
  /** Position of this call among the generation's tool calls (0-based; set by the runner). */
  index?: number;
  /**
   * Position of the content block this event belongs to, for formats that number blocks
   * (Anthropic's): a run of text or of reasoning deltas is one block, each tool call one. Set by
   * the runner; absent when 0.
   */
  block?: number;
}

export interface ToolCallEvent {
  type: "tool-call";
  id: string;
  name: string;
  args: unknown;
  /** Position of this call among the generation's tool calls (0-based; set by the runner). */
  index?: number;
  /**
   * Position of the content block this event belongs to, for formats that number blocks
   * (Anthropic's): a run of text or of reasoning deltas is one block, each tool call one. Set by
   * the runner; absent when 0.
   */
  block?: number;
}

export interface DataEvent {
  type: "data";
  name: string;
  value: unknown;
}

export interface MediaEvent {
  type: "media";
  mime: string;
  data?: string;
  url?: string;
}

export interface UsageEvent {
  type: "usage";
  input_tokens: number;
  output_tokens: number;
  reasoning_tokens?: number;
  total_tokens?: number;
}

export type FinishReason = "stop" | "length" | "tool-calls" | "content-filter";

export interface FinishEvent {
  type: "finish";
  reason: FinishReason;
  /** What an OpenAI-compatible upstream said about the run (its `system_fingerprint`, `service_tier`). */
  system_fingerprint?: string;
  service_tier?: string;
}

export interface ErrorEvent {
  type: "error";
  code: string;
  message: string;
  retryable: boolean;
}

export interface AbortEvent {
  type: "abort";
  reason: string;
  /** Who asked: "client", "admin", "server", … */
  by: string;
}

export type SluiceEvent =
  | StartEvent
  | TextDeltaEvent
  | ReasoningDeltaEvent
  | ToolCallDeltaEvent
  | ToolCallEvent
  | DataEvent
  | MediaEvent
  | UsageEvent
  | FinishEvent
  | ErrorEvent
  | AbortEvent;

export type SluiceEventType = SluiceEvent["type"];
export type TerminalEvent = FinishEvent | ErrorEvent | AbortEvent;

export const EVENT_TYPES: readonly SluiceEventType[] = [
  "start",
  "text-delta",
  "reasoning-delta",
  "tool-call-delta",
  "tool-call",
  "data",
  "media",
  "usage",
  "finish",
  "error",
  "abort",
];

export const TERMINAL_TYPES: readonly SluiceEventType[] = ["finish", "error", "abort"];

export function isTerminal(event: { type: string }): event is TerminalEvent {
  return event.type === "finish" || event.type === "error" || event.type === "abort";
}

/** Status of a stream. `running` until a terminal event (or close) ends it. */
export type StreamStatus = "running" | "completed" | "failed" | "cancelled";

/** The status a terminal event puts a stream in. */
export function statusOf(event: TerminalEvent): Exclude<StreamStatus, "running"> {
  switch (event.type) {
    case "finish":
      return "completed";
    case "error":
      return "failed";
    case "abort":
      return "cancelled";
  }
}

/** An event as read from a stream: its offset and the event. */
export interface StreamEvent<E = SluiceEvent> {
  offset: string;
  event: E;
}
