import { z } from "zod";

const textPart = z.object({ type: z.literal("text"), text: z.string() }).passthrough();

export const MessageSchema = z
  .object({
    role: z.enum(["system", "developer", "user", "assistant", "tool"]),
    content: z.union([
      z.string(),
      z.array(z.union([textPart, z.object({ type: z.string() }).passthrough()])),
      z.null(),
    ]),
    name: z.string().optional(),
    tool_call_id: z.string().optional(),
    tool_calls: z.array(z.unknown()).optional(),
  })
  .passthrough();

/** Largest `metadata` of a generation request, in characters of its JSON. */
export const METADATA_MAX_CHARS = 16 * 1024;

/** Longest demo answer, in tokens (`demo.length`). */
export const DEMO_MAX_LENGTH = 100_000;

export const DemoOptionsSchema = z
  .object({
    seed: z.number().int().optional(),
    ttft_ms: z.number().min(0).max(600_000).optional(),
    tokens_per_s: z.number().positive().max(1_000_000).optional(),
    jitter: z.number().min(0).max(1).optional(),
    fail_after_tokens: z.number().int().min(0).max(DEMO_MAX_LENGTH).nullable().optional(),
    kind: z.enum(["markdown", "json", "tool-call", "reasoning"]).optional(),
    /** Answer length in tokens (before max_tokens cuts it). */
    // (The demo plans its whole answer up front, ~75 bytes a token: the bound keeps a plan small.)
    length: z.number().int().min(1).max(DEMO_MAX_LENGTH).optional(),
    /**
     * Benchmark aid (`npm run bench`): each delta event gets `due`, the epoch ms its token was
     * due, so a reader can measure delivery delay. Off by default; the events are otherwise the same.
     */
    stamp: z.boolean().optional(),
  })
  .strict();

export const ToolSchema = z
  .object({
    type: z.literal("function"),
    function: z
      .object({
        name: z.string().min(1),
        description: z.string().optional(),
        parameters: z.unknown().optional(),
      })
      .passthrough(),
  })
  .passthrough();

export const GenerationRequestSchema = z
  .object({
    model: z.string().min(1).max(256),
    messages: z.array(MessageSchema).min(1).max(10_000),
    max_tokens: z.number().int().positive().max(10_000_000).optional(),
    temperature: z.number().min(0).max(2).optional(),
    top_p: z.number().min(0).max(1).optional(),
    stop: z.union([z.string(), z.array(z.string()).max(16)]).optional(),
    tools: z.array(ToolSchema).max(128).optional(),
    tool_choice: z.unknown().optional(),
    /** Deadline for the whole generation, in ms from its start. */
    timeout_ms: z.number().int().positive().max(86_400_000).optional(),
    /** What a disconnect of the client that started the generation does. Default: continue. */
    on_disconnect: z.enum(["continue", "cancel"]).optional(),
    // Stored with the stream and returned by /info and every list page: bounded in size (its
    // depth is bounded where the JSON is parsed, limits.json_max_depth).
    metadata: z
      .record(z.string(), z.unknown())
      .refine((m) => JSON.stringify(m).length <= METADATA_MAX_CHARS, {
        message: `at most ${METADATA_MAX_CHARS} characters as JSON`,
      })
      .optional(),
    demo: DemoOptionsSchema.optional(),
    /**
     * Request fields for the upstream that Sluice does not interpret itself (`response_format`,
     * `seed`, `user`, `logprobs`, `max_completion_tokens`, …), kept verbatim: an openai-compatible
     * provider sends them as they are, the Anthropic provider maps what has a mapping and refuses
     * the rest, the demo model honours `seed` and `response_format`. Bounded by the body limit.
     */
    upstream_extra: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

export type Message = z.infer<typeof MessageSchema>;
export type DemoOptions = z.infer<typeof DemoOptionsSchema>;
export type GenerationRequest = z.infer<typeof GenerationRequestSchema>;

/** The text of a message, whatever shape its content has. */
export function messageText(m: Message): string {
  if (typeof m.content === "string") return m.content;
  if (!m.content) return "";
  return m.content
    .map((p) =>
      p.type === "text" && typeof (p as { text?: unknown }).text === "string"
        ? (p as { text: string }).text
        : "",
    )
    .join("");
}

/** The last user message's text: what the demo model shapes its answer around. */
export function lastUserText(messages: Message[]): string {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m && m.role === "user") return messageText(m);
  }
  return "";
}
