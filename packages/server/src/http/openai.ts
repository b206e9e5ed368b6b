/**
 * The OpenAI-compatible façade: `POST /v1/chat/completions`, streaming and not, on top of the
 * runner. The generation is a Sluice stream like any other (its id in `Sluice-Stream-Id`), so it
 * can be read again or resumed with `GET /v1/streams/{id}?format=openai`. A client that drops
 * does not stop the generation unless the route or request says `on_disconnect: cancel`.
 */
import {
  ERROR_CODES,
  type ErrorCode,
  quoteInput,
  retryAfterSeconds,
  SluiceError as SErr,
  type SluiceError,
} from "@sluice/protocol";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { type GenerationRequest, GenerationRequestSchema } from "../core/request.js";
import { openAIErrorBody, sseOpenAI, sseOpenAIUsage } from "../formats/openai.js";
import type { StreamInfo } from "../stores/store.js";
import {
  type AppDeps,
  type DoorDeps,
  describeIssues,
  SSE_HEADERS,
  SSE_HEARTBEAT,
  toSluiceError,
} from "./context.js";
import { startFor } from "./start.js";

const opt = <T extends z.ZodType>(t: T) => t.nullish();

/**
 * What real OpenAI clients send. The fields Sluice interprets are checked here; every other field
 * is forwarded to the upstream verbatim (see FORWARDING below and docs/openai.md).
 */
const ChatCompletionsSchema = z
  .object({
    model: z.string().min(1).max(256),
    messages: z.array(z.unknown()).min(1),
    stream: opt(z.boolean()),
    stream_options: opt(z.object({ include_usage: opt(z.boolean()) }).passthrough()),
    max_tokens: opt(z.number().int().positive()),
    max_completion_tokens: opt(z.number().int().positive()),
    temperature: opt(z.number()),
    top_p: opt(z.number()),
    stop: opt(z.union([z.string(), z.array(z.string())])),
    tools: opt(z.array(z.unknown())),
    tool_choice: z.unknown().optional(),
    n: opt(z.number().int().min(1).max(1, { message: "only n=1 is supported" })),
    metadata: opt(z.record(z.string(), z.unknown())),
    seed: opt(z.number().int()),
    response_format: opt(z.object({ type: z.string().min(1) }).passthrough()),
    /** Sluice extensions. */
    on_disconnect: opt(z.enum(["continue", "cancel"])),
    timeout_ms: z.unknown().optional(),
    demo: z.unknown().optional(),
  })
  .passthrough();

/**
 * The forwarding policy. Fields Sluice interprets become typed GenerationRequest fields (and a
 * provider sends them in its upstream's terms); `stream`, `stream_options.include_usage` and `n`
 * belong to this façade (the upstream is always streamed); `metadata` and the Sluice extensions
 * stay with Sluice. Every other non-null field goes to the upstream verbatim in `upstream_extra`,
 * including `max_tokens` / `max_completion_tokens` under the name the client used.
 */
const TYPED = new Set(["model", "messages", "temperature", "top_p", "stop", "tools", "tool_choice"]);
const NOT_FORWARDED = new Set([
  "stream",
  "stream_options",
  "n",
  "metadata",
  "on_disconnect",
  "timeout_ms",
  "demo",
]);

type ChatBody = z.infer<typeof ChatCompletionsSchema>;

function fail(code: ErrorCode, message: string, param?: string): never {
  throw new SErr(code, message, param ? { param } : undefined);
}

export function parseChatBody(body: unknown): { request: GenerationRequest; body: ChatBody } {
  if (body === undefined || body === null || typeof body !== "object" || Array.isArray(body)) {
    fail("invalid_request", "the body must be a JSON object");
  }
  const r = ChatCompletionsSchema.safeParse(body);
  if (!r.success) {
    const first = r.error.issues[0];
    fail("invalid_request", describeIssues(r.error.issues), first?.path.map(String).join("."));
  }
  const b = r.data;
  const candidate: Record<string, unknown> = { model: b.model, messages: b.messages };
  const maxTokens = b.max_completion_tokens ?? b.max_tokens;
  if (maxTokens != null) candidate.max_tokens = maxTokens;
  if (b.temperature != null) candidate.temperature = b.temperature;
  if (b.top_p != null) candidate.top_p = b.top_p;
  if (b.stop != null) candidate.stop = b.stop;
  if (b.tools != null) candidate.tools = b.tools;
  if (b.tool_choice != null) candidate.tool_choice = b.tool_choice;
  if (b.metadata != null) candidate.metadata = b.metadata;
  if (b.on_disconnect != null) candidate.on_disconnect = b.on_disconnect;
  if (b.timeout_ms != null) candidate.timeout_ms = b.timeout_ms;
  if (b.demo != null) candidate.demo = b.demo;
  const extra: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(b)) {
    if (value === null || value === undefined || TYPED.has(key) || NOT_FORWARDED.has(key)) continue;
    extra[key] = value;
  }
  // stream_options other than include_usage (which this façade answers itself) are forwarded.
  const { include_usage: _, ...streamOptions } = b.stream_options ?? {};
  if (Object.keys(streamOptions).length > 0) extra.stream_options = streamOptions;
  if (Object.keys(extra).length > 0) candidate.upstream_extra = extra;
  const g = GenerationRequestSchema.safeParse(candidate);
  if (!g.success) {
    const first = g.error.issues[0];
    fail("invalid_request", describeIssues(g.error.issues), first?.path.map(String).join("."));
  }
  return { request: g.data, body: b };
}

function sendOpenAIError(reply: FastifyReply, err: SluiceError): FastifyReply {
  const param = typeof err.details?.param === "string" ? err.details.param : null;
  const headers: Record<string, string> = {};
  const retry = retryAfterSeconds(err);
  if (retry !== undefined) headers["retry-after"] = String(retry);
  return reply
    .code(err.status)
    .headers(headers)
    .type("application/json")
    .send(openAIErrorBody(err.code, err.message, param));
}

export function registerOpenAI(app: FastifyInstance, deps: DoorDeps): void {
  const { routes, store, config, live } = deps;

  const errorHandler = (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const e = toSluiceError(err, config.limits.body_bytes);
    if (e.code === "internal_error") req.log.error({ err }, "unhandled error");
    return sendOpenAIError(reply, e);
  };

  app.post("/v1/chat/completions", { errorHandler }, async (req, reply) => {
    const { request, body } = parseChatBody(req.body);
    const route = routes.resolve(request.model);
    const onDisconnect = request.on_disconnect ?? route.on_disconnect ?? "continue";
    const { info, hold } = await live.start(req, reply, body.stream === true, () =>
      startFor(req, deps, request),
    );
    if (hold) {
      const codec = body.stream_options?.include_usage === true ? sseOpenAIUsage : sseOpenAI;
      await live.stream(
        req,
        reply,
        {
          streamId: info.id,
          after: 0,
          codec,
          transport: "sse",
          headers: SSE_HEADERS,
          heartbeat: SSE_HEARTBEAT,
          cancelOnDisconnect: onDisconnect === "cancel",
        },
        hold,
      );
      return reply;
    }
    // Not streaming: wait for the end (a client leaving cancels only with on_disconnect: cancel).
    await live.settled(reply, info.id, onDisconnect === "cancel");
    const completion = await assembleCompletion(store, info);
    if (completion.error) return sendOpenAIError(reply, completion.error);
    return reply.type("application/json").send(completion.body);
  });

  // OpenAI's `models.retrieve`: a model id may hold slashes (`org/model`), hence the wildcard.
  app.get("/v1/models/*", { errorHandler }, async (req, reply) => {
    const id = (req.params as { "*": string })["*"];
    const route = routes.list().find((r) => r.name === id);
    if (!route) {
      return sendOpenAIError(
        reply,
        new SErr("model_not_found", `The model ${quoteInput(id, 256)} does not exist`, { param: "model" }),
      );
    }
    return { id: route.name, object: "model", created: 0, owned_by: route.owned_by };
  });
}

/** Reads a finished generation and builds the `chat.completion` object OpenAI answers with. */
async function assembleCompletion(
  store: AppDeps["store"],
  info: StreamInfo,
): Promise<{ body?: Record<string, unknown>; error?: SluiceError }> {
  let content = "";
  let refusal: string | null = null;
  const logprobs: { content?: unknown[]; refusal?: unknown[] } = {};
  const upstream: { service_tier?: string; system_fingerprint?: string } = {};
  let reasoning = "";
  let audio: { id: string; data: Buffer[]; expires_at: number; transcript: string } | undefined;
  const calls = new Map<
    number,
    { id: string; type: "function"; function: { name: string; arguments: string } }
  >();
  let finish = "stop";
  let usage: Record<string, unknown> | undefined;
  let after = 0;
  for (;;) {
    const page = await store.read(info.id, after, 1000);
    for (const rec of page.records) {
      const ev = JSON.parse(rec.data) as Record<string, unknown>;
      switch (ev.type) {
        case "text-delta":
          if (ev.refusal === true) refusal = (refusal ?? "") + (ev.delta as string);
          else content += ev.delta as string;
          if (Array.isArray(ev.logprobs)) {
            const key = ev.refusal === true ? "refusal" : "content";
            const list = logprobs[key] ?? [];
            for (const entry of ev.logprobs) list.push(entry);
            logprobs[key] = list;
          }
          break;
        case "reasoning-delta":
          reasoning += ev.delta as string;
          break;
        case "data": {
          // Audio pieces (`delta.audio`) join into `message.audio` as OpenAI's own answer has it.
          if (ev.name !== "openai-audio" || typeof ev.value !== "object" || ev.value === null) break;
          const piece = ev.value as Record<string, unknown>;
          audio ??= { id: "", data: [], expires_at: 0, transcript: "" };
          if (typeof piece.id === "string") audio.id = piece.id;
          if (typeof piece.expires_at === "number") audio.expires_at = piece.expires_at;
          // Each piece is base64 on its own (padded): join the bytes, not the text.
          if (typeof piece.data === "string") audio.data.push(Buffer.from(piece.data, "base64"));
          if (typeof piece.transcript === "string") audio.transcript += piece.transcript;
          break;
        }
        case "tool-call-delta": {
          const index = (ev.index as number | undefined) ?? 0;
          const call = calls.get(index) ?? {
            id: ev.id as string,
            type: "function" as const,
            function: { name: "", arguments: "" },
          };
          if (typeof ev.name === "string") call.function.name = ev.name;
          call.function.arguments += ev.args_delta as string;
          calls.set(index, call);
          break;
        }
        case "tool-call": {
          const index = (ev.index as number | undefined) ?? calls.size;
          if (!calls.has(index)) {
            calls.set(index, {
              id: ev.id as string,
              type: "function",
              function: { name: ev.name as string, arguments: JSON.stringify(ev.args ?? {}) },
            });
          }
          break;
        }
        case "usage":
          usage = {
            prompt_tokens: ev.input_tokens,
            completion_tokens: ev.output_tokens,
            total_tokens: ev.total_tokens ?? (ev.input_tokens as number) + (ev.output_tokens as number),
            ...(ev.reasoning_tokens !== undefined
              ? { completion_tokens_details: { reasoning_tokens: ev.reasoning_tokens } }
              : {}),
          };
          break;
        case "finish":
          if (typeof ev.service_tier === "string") upstream.service_tier = ev.service_tier;
          if (typeof ev.system_fingerprint === "string") upstream.system_fingerprint = ev.system_fingerprint;
          finish = {
            stop: "stop",
            length: "length",
            "tool-calls": "tool_calls",
            "content-filter": "content_filter",
          }[ev.reason as string] as string;
          break;
        case "error": {
          const code = (ev.code as string) in ERROR_CODES ? (ev.code as ErrorCode) : "upstream_error";
          return { error: new SErr(code, ev.message as string) };
        }
        case "abort":
          return {
            error: new SErr("cancelled", `the generation was cancelled (${ev.by}: ${ev.reason})`),
          };
      }
      after = rec.seq;
    }
    if (page.up_to_date || page.records.length === 0) break;
  }
  const toolCalls = [...calls.entries()].sort((a, b) => a[0] - b[0]).map(([, c]) => c);
  const message: Record<string, unknown> = {
    role: "assistant",
    content: (toolCalls.length > 0 || refusal !== null || audio) && content === "" ? null : content,
    refusal,
  };
  if (reasoning !== "") message.reasoning_content = reasoning;
  if (audio) message.audio = { ...audio, data: Buffer.concat(audio.data).toString("base64") };
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  return {
    body: {
      id: `chatcmpl-${info.id}`,
      object: "chat.completion",
      created: Math.floor(Date.parse(info.created_at) / 1000),
      model: info.model,
      ...upstream,
      choices: [
        {
          index: 0,
          message,
          logprobs:
            logprobs.content || logprobs.refusal
              ? { content: logprobs.content ?? null, refusal: logprobs.refusal ?? null }
              : null,
          finish_reason: finish,
        },
      ],
      ...(usage ? { usage } : {}),
    },
  };
}
