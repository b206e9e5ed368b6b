export type { SluiceEvent, StreamEvent } from "@sluice/protocol";
export {
  emptyMessage,
  type Message,
  MessageAccumulator,
  type MessageStatus,
  type ToolCallState,
  type Usage,
} from "./accumulator.js";
export {
  type ClientOptions,
  type GenerationRequest,
  type ModelInfo,
  SluiceClient,
  type StreamInfo,
} from "./client.js";
export { type ClientClock, ManualClock, realClock } from "./clock.js";
export { SluiceClientError, StreamExhausted } from "./errors.js";
export { Follow, type FollowOptions } from "./follow.js";
export {
  type BackoffOptions,
  backoffDelay,
  type ConnectionState,
  type ConnectionStatus,
  DEFAULT_BACKOFF,
  type FollowError,
  initialState,
  isFinal,
  type MachineInput,
  transition,
} from "./machine.js";
export { stableMarkdown } from "./markdown.js";
export { PartialJson, parsePartialJson, partialObjects } from "./partial.js";
export { type SseMessage, SseParser } from "./sse.js";
export {
  SseTransport,
  type Transport,
  type WebSocketFactory,
  type WebSocketLike,
  WsTransport,
} from "./transport.js";
