/**
 * The Anthropic Messages API door: `POST /v1/messages`, streaming and not, on any route (demo,
 * openai-compatible, anthropic). The request becomes a GenerationRequest (the same one every
 * door starts); the answer is the generation's log in the `anthropic` format
 * (formats/anthropic.ts), so the stream can be read again or resumed with
 * `GET /v1/streams/{id}?format=anthropic`. Errors have Anthropic's shape
 * `{"type":"error","error":{"type","message"}}`.
 */
import { ERROR_CODES, type ErrorCode, retryAfterSeconds, SluiceError } from "@sluice/protocol";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { type GenerationRequest, GenerationRequestSchema } from "../core/request.js";
import {
  ANTHROPIC_PING,
  anthropicErrorBody,
  anthropicStopReason,
  messageShell,
  sseAnthropic,
} from "../formats/anthropic.js";
import { lite } from "../formats/codec.js";
import type { StreamInfo } from "../stores/store.js";
import { type AppDeps, type DoorDeps, describeIssues, SSE_HEADERS, toSluiceError } from "./context.js";
import { startFor } from "./start.js";

const TextBlock = z.object({ type: z.literal("text"), text: z.string() }).passthrough();
const ToolUseBlock = z
  .object({ type: z.literal("tool_use"), id: z.string(), name: z.string(), input: z.unknown() })
  .passthrough();
const ToolResultBlock = z
  .object({
    type: z.literal("tool_result"),
    tool_use_id: z.string(),
    content: z.union([z.string(), z.array(TextBlock)]).optional(),
    is_error: z.boolean().optional(),
  })
  .passthrough();
// Thinking blocks a client sends back (the SDK's finalMessage has them) carry nothing a route uses.
const ThinkingBlock = z.object({ type: z.literal("thinking") }).passthrough();
const RedactedThinkingBlock = z.object({ type: z.literal("redacted_thinking") }).passthrough();
// Other block kinds (image, document, …) are refused by name: a request is never cut silently.
const Block = z.discriminatedUnion("type", [
  TextBlock,
  ToolUseBlock,
  ToolResultBlock,
  ThinkingBlock,
  RedactedThinkingBlock,
]);

const MessagesSchema = z
  .object({
    model: z.string().min(1).max(256),
    max_tokens: z.number().int().positive(),
    messages: z
      .array(
        z.object({
          role: z.enum(["user", "assistant"]),
          content: z.union([z.string(), z.array(Block).max(10_000)]),
        }),
      )
      .min(1)
      .max(10_000),
    system: z.union([z.string(), z.array(TextBlock)]).optional(),
    stream: z.boolean().optional(),
    stop_sequences: z.array(z.string()).max(16).optional(),
    temperature: z.number().min(0).max(1).optional(),
    top_p: z.number().min(0).max(1).optional(),
    tools: z
      .array(
        z
          .object({
            name: z.string().min(1),
            description: z.string().optional(),
            input_schema: z.unknown(),
            type: z.literal("custom").optional(),
          })
          .passthrough(),
      )
      .max(128)
      .optional(),
    tool_choice: z
      .object({ type: z.enum(["auto", "any", "tool", "none"]), name: z.string().optional() })
      .passthrough()
      .optional(),
    thinking: z
      .union([
        z.object({ type: z.literal("enabled"), budget_tokens: z.number().int().positive() }).passthrough(),
        z.object({ type: z.literal("disabled") }).passthrough(),
        z.object({ type: z.literal("adaptive") }).passthrough(),
      ])
      .optional(),
    metadata: z.record(z.string(), z.unknown()).optional(),
    /** Sluice extensions (as on /v1/chat/completions). */
    on_disconnect: z.enum(["continue", "cancel"]).optional(),
    timeout_ms: z.unknown().optional(),
    demo: z.unknown().optional(),
  })
  .strict();

type MessagesBody = z.infer<typeof MessagesSchema>;
type Block = z.infer<typeof Block>;

function fail(message: string, param?: string): never {
  throw new SluiceError("invalid_request", message, param ? { param } : undefined);
}

function textOf(content: string | { text: string }[] | undefined): string {
  if (content === undefined) return "";
  return typeof content === "string" ? content : content.map((b) => b.text).join("");
}

/** Anthropic `system` + `messages` → the Chat Completions-style messages of a GenerationRequest. */
function toMessages(b: MessagesBody): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const system = textOf(b.system);
  if (system !== "") out.push({ role: "system", content: system });
  for (const m of b.messages) {
    if (typeof m.content === "string") {
      out.push({ role: m.role, content: m.content });
      continue;
    }
    const blocks = m.content as Block[];
    if (m.role === "assistant") {
      const text = blocks.map((x) => (x.type === "text" ? x.text : "")).join("");
      const calls = blocks.flatMap((x) =>
        x.type === "tool_use"
          ? [
              {
                id: x.id,
                type: "function",
                function: { name: x.name, arguments: JSON.stringify(x.input ?? {}) },
              },
            ]
          : [],
      );
      const msg: Record<string, unknown> = { role: "assistant", content: text };
      if (calls.length > 0) msg.tool_calls = calls;
      out.push(msg);
      continue;
    }
    // A user turn: tool results first (each its own tool message), then the text.
    for (const x of blocks) {
      if (x.type === "tool_result") {
        const content = textOf(x.content as string | { text: string }[] | undefined);
        out.push({ role: "tool", tool_call_id: x.tool_use_id, content });
      }
    }
    const text = blocks.map((x) => (x.type === "text" ? x.text : "")).join("");
    if (text !== "" || !blocks.some((x) => x.type === "tool_result"))
      out.push({ role: "user", content: text });
  }
  return out;
}

function toolChoiceOf(c: MessagesBody["tool_choice"]): unknown {
  if (c === undefined) return undefined;
  switch (c.type) {
    case "auto":
      return "auto";
    case "any":
      return "required";
    case "none":
      return "none";
    default:
      if (!c.name) fail("tool_choice.name: required when type is tool", "tool_choice.name");
      return { type: "function", function: { name: c.name } };
  }
}

export function parseMessagesBody(body: unknown, isDemo: (model: string) => boolean) {
  if (body === undefined || body === null || typeof body !== "object" || Array.isArray(body)) {
    fail("the body must be a JSON object");
  }
  const r = MessagesSchema.safeParse(body);
  if (!r.success) {
    const first = r.error.issues[0];
    fail(describeIssues(r.error.issues), first?.path.map(String).join("."));
  }
  const b = r.data;
  const candidate: Record<string, unknown> = {
    model: b.model,
    messages: toMessages(b),
    max_tokens: b.max_tokens,
  };
  if (b.temperature !== undefined) candidate.temperature = b.temperature;
  if (b.top_p !== undefined) candidate.top_p = b.top_p;
  if (b.stop_sequences?.length) candidate.stop = b.stop_sequences;
  if (b.tools?.length) {
    candidate.tools = b.tools.map((t) => ({
      type: "function",
      function: {
        name: t.name,
        ...(t.description !== undefined ? { description: t.description } : {}),
        parameters: t.input_schema ?? { type: "object", properties: {} },
      },
    }));
  }
  const choice = toolChoiceOf(b.tool_choice);
  if (choice !== undefined) candidate.tool_choice = choice;
  if (b.metadata !== undefined) candidate.metadata = b.metadata;
  if (b.on_disconnect !== undefined) candidate.on_disconnect = b.on_disconnect;
  if (b.timeout_ms !== undefined) candidate.timeout_ms = b.timeout_ms;
  if (b.demo !== undefined) candidate.demo = b.demo;
  if (b.thinking !== undefined && b.thinking.type !== "disabled") {
    // The demo model thinks when asked; a route to an upstream cannot be told yet, and a
    // request is never silently changed: refused (docs/anthropic.md).
    if (!isDemo(b.model)) fail("thinking is supported on demo routes only (for now)", "thinking");
    const demo = (b.demo ?? {}) as Record<string, unknown>;
    candidate.demo = { ...demo, kind: demo.kind ?? "reasoning" };
  }
  const g = GenerationRequestSchema.safeParse(candidate);
  if (!g.success) {
    const first = g.error.issues[0];
    fail(describeIssues(g.error.issues), first?.path.map(String).join("."));
  }
  return { request: g.data as GenerationRequest, body: b };
}

function sendAnthropicError(reply: FastifyReply, err: SluiceError): FastifyReply {
  const retry = retryAfterSeconds(err);
  if (retry !== undefined) reply.header("retry-after", String(retry));
  return reply.code(err.status).type("application/json").send(anthropicErrorBody(err.code, err.message));
}

export function registerAnthropic(app: FastifyInstance, deps: DoorDeps): void {
  const { routes, store, config, live } = deps;

  const errorHandler = (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const e = toSluiceError(err, config.limits.body_bytes);
    if (e.code === "internal_error") req.log.error({ err }, "unhandled error");
    return sendAnthropicError(reply, e);
  };

  app.post("/v1/messages", { errorHandler }, async (req, reply) => {
    const isDemo = (model: string) => routes.resolve(model).provider.name === "demo";
    const { request, body } = parseMessagesBody(req.body, isDemo);
    const route = routes.resolve(request.model);
    const onDisconnect = request.on_disconnect ?? route.on_disconnect ?? "continue";
    const { info, hold } = await live.start(req, reply, body.stream === true, () =>
      startFor(req, deps, request),
    );
    if (hold) {
      await live.stream(
        req,
        reply,
        {
          streamId: info.id,
          after: 0,
          codec: sseAnthropic,
          transport: "sse",
          headers: SSE_HEADERS,
          heartbeat: ANTHROPIC_PING,
          cancelOnDisconnect: onDisconnect === "cancel",
        },
        hold,
      );
      return reply;
    }
    // Not streaming: wait for the end (a client leaving cancels only with on_disconnect: cancel).
    await live.settled(reply, info.id, onDisconnect === "cancel");
    const message = await assembleMessage(store, info);
    if (message.error) return sendAnthropicError(reply, message.error);
    return reply.type("application/json").send(message.body);
  });
}

/** Reads a finished generation and builds the `message` object Anthropic answers with. */
export async function assembleMessage(
  store: AppDeps["store"],
  info: StreamInfo,
): Promise<{ body?: Record<string, unknown>; error?: SluiceError }> {
  // Blocks in the order the runner numbered them (`block`, absent when 0).
  const blocks = new Map<number, Record<string, unknown>>();
  const args = new Map<number, string>();
  let stop = "end_turn";
  let usage = { input_tokens: 0, output_tokens: 0 };
  let after = 0;
  for (;;) {
    const page = await store.read(info.id, after, 1000);
    for (const rec of page.records) {
      const ev = JSON.parse(rec.data) as Record<string, unknown>;
      const index = (ev.block as number | undefined) ?? 0;
      switch (ev.type) {
        case "text-delta": {
          const b = blocks.get(index) ?? { type: "text", text: "" };
          b.text = (b.text as string) + (ev.delta as string);
          blocks.set(index, b);
          break;
        }
        case "reasoning-delta": {
          const b = blocks.get(index) ?? { type: "thinking", thinking: "", signature: "" };
          b.thinking = (b.thinking as string) + (ev.delta as string);
          blocks.set(index, b);
          break;
        }
        case "tool-call-delta":
          if (!blocks.has(index))
            blocks.set(index, { type: "tool_use", id: ev.id, name: ev.name, input: {} });
          args.set(index, (args.get(index) ?? "") + (ev.args_delta as string));
          break;
        case "tool-call":
          // The complete call is the truth (its arguments parsed by the provider).
          blocks.set(index, { type: "tool_use", id: ev.id, name: ev.name, input: ev.args ?? {} });
          args.delete(index);
          break;
        case "usage":
          usage = { input_tokens: ev.input_tokens as number, output_tokens: ev.output_tokens as number };
          break;
        case "finish":
          stop = anthropicStopReason(ev.reason as string);
          break;
        case "error": {
          const code = (ev.code as string) in ERROR_CODES ? (ev.code as ErrorCode) : "upstream_error";
          return { error: new SluiceError(code, ev.message as string) };
        }
        case "abort":
          return {
            error: new SluiceError("cancelled", `the generation was cancelled (${ev.by}: ${ev.reason})`),
          };
      }
      after = rec.seq;
    }
    if (page.up_to_date || page.records.length === 0) break;
  }
  // A call cut before its complete event: what its deltas said, if that parses.
  for (const [index, text] of args) {
    const b = blocks.get(index);
    try {
      if (b) b.input = JSON.parse(text);
    } catch {
      // keep {}
    }
  }
  const content = [...blocks.entries()].sort((a, b) => a[0] - b[0]).map(([, b]) => b);
  return {
    body: { ...messageShell(lite(info)), content, stop_reason: stop, usage },
  };
}
