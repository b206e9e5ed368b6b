import type { Sink } from "../core/hub.js";
import type { StreamInfo } from "../stores/store.js";
import { sseAiSdk } from "./ai-sdk.js";
import { sseAnthropic } from "./anthropic.js";
import type { Codec } from "./codec.js";
import { sseOpenAI, sseOpenAIUsage } from "./openai.js";
import { ResponsesSink, type ResponsesStart, recordLines } from "./openai-responses.js";
import { ndjsonSluice, sseSluice } from "./sluice.js";

/**
 * An SSE format that is a fold over the whole log rather than a function of a record (the OpenAI
 * Responses stream: numbered events, done events carrying what came before): the hub delivers
 * `codec` from the start of the stream and `sink` turns it into the reader's events, sending
 * only those after the reader's position.
 */
export interface FoldedSse {
  codec: Codec;
  sink(inner: Sink, info: StreamInfo, start: ResponsesStart): Sink;
}

export interface FormatEntry {
  sse?: Codec;
  ndjson?: Codec;
  sseFold?: FoldedSse;
}

/** The wire formats a stream can be read in (`?format=`), per byte-stream transport. */
export type FormatTable = Readonly<Record<string, FormatEntry>>;

export const openAIResponsesFold: FoldedSse = {
  codec: recordLines,
  sink: (inner, info, start) => new ResponsesSink(inner, info, start),
};

/** Every format this server speaks; built once by the server (no module-global registry). */
export function buildFormats(): FormatTable {
  return {
    sluice: { sse: sseSluice, ndjson: ndjsonSluice },
    openai: { sse: sseOpenAI },
    "openai-usage": { sse: sseOpenAIUsage },
    "ai-sdk": { sse: sseAiSdk },
    anthropic: { sse: sseAnthropic },
    "openai-responses": { sseFold: openAIResponsesFold },
  };
}
