import { sseAiSdk } from "./ai-sdk.js";
import { sseAnthropic } from "./anthropic.js";
import type { Codec } from "./codec.js";
import { sseOpenAI, sseOpenAIUsage } from "./openai.js";
import { ndjsonSluice, sseSluice } from "./sluice.js";

/** The wire formats a stream can be read in (`?format=`), per byte-stream transport. */
export type FormatTable = Readonly<Record<string, { sse?: Codec; ndjson?: Codec }>>;

/** Every format this server speaks; built once by the server (no module-global registry). */
export function buildFormats(): FormatTable {
  return {
    sluice: { sse: sseSluice, ndjson: ndjsonSluice },
    openai: { sse: sseOpenAI },
    "openai-usage": { sse: sseOpenAIUsage },
    "ai-sdk": { sse: sseAiSdk },
    anthropic: { sse: sseAnthropic },
  };
}
