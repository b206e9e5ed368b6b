/**
 * The OpenAI Responses API door: `POST /v1/responses` (streaming and not, `background`) on any
 * route, `GET /v1/responses/{id}` (the response object, or its event stream resumed after
 * `starting_after`), `POST /v1/responses/{id}/cancel`, `DELETE /v1/responses/{id}`.
 *
 * A response is a generation stream: its id is `resp_<stream id>`, its events are the log in the
 * `openai-responses` format (formats/openai-responses.ts, a fold over the log, so sequence
 * numbers are the same for every reader). What the Responses request said that the log does not
 * (the conversation for `previous_response_id`, instructions, tools, metadata) is kept in the
 * stream's metadata under `responses`, written with the stream's creation.
 *
 * Fields that cannot be honoured are refused with 400 in OpenAI's error shape, by name; none is
 * dropped silently (docs/openai-responses.md lists them).
 */
import { ERROR_CODES, type ErrorCode, quoteInput, retryAfterSeconds, SluiceError } from "@sluice/protocol";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { type GenerationRequest, GenerationRequestSchema } from "../core/request.js";
import { openAIErrorBody } from "../formats/openai.js";
import {
  ResponsesEncoder,
  type ResponsesMeta,
  ResponsesSink,
  type ResponsesStart,
  recordLines,
  responsesMeta,
  streamIdOfResponse,
} from "../formats/openai-responses.js";
import type { Store, StreamInfo } from "../stores/store.js";
import {
  type DoorDeps,
  describeIssues,
  SSE_HEADERS,
  SSE_HEARTBEAT,
  STREAM_ID_HEADER,
  toSluiceError,
} from "./context.js";
import type { Hold } from "./live-response.js";
import { startFor } from "./start.js";

function fail(message: string, param?: string): never {
  throw new SluiceError("invalid_request", message, param ? { param } : undefined);
}

const nullish = <T extends z.ZodType>(t: T) => t.nullish();

const FunctionTool = z
  .object({
    type: z.literal("function"),
    name: z.string().min(1).max(256),
    description: nullish(z.string()),
    parameters: nullish(z.record(z.string(), z.unknown())),
    strict: nullish(z.boolean()),
  })
  .strict();

const TextFormat = z.union([
  z.object({ type: z.literal("text") }).strict(),
  z.object({ type: z.literal("json_object") }).strict(),
  z
    .object({
      type: z.literal("json_schema"),
      name: z.string().min(1).max(256),
      schema: z.record(z.string(), z.unknown()),
      description: nullish(z.string()),
      strict: nullish(z.boolean()),
    })
    .strict(),
]);

/** Every field of a Responses request Sluice knows; the ones it cannot honour are refused below. */
const ResponsesSchema = z
  .object({
    model: z.string().min(1).max(256),
    input: z.union([z.string(), z.array(z.record(z.string(), z.unknown())).max(10_000)]),
    instructions: nullish(z.string()),
    stream: nullish(z.boolean()),
    background: nullish(z.boolean()),
    store: nullish(z.boolean()),
    tools: nullish(z.array(z.record(z.string(), z.unknown())).max(128)),
    tool_choice: z
      .union([
        z.enum(["auto", "none", "required"]),
        z.object({ type: z.literal("function"), name: z.string().min(1) }).strict(),
      ])
      .nullish(),
    parallel_tool_calls: nullish(z.boolean()),
    max_output_tokens: nullish(z.number().int().positive()),
    temperature: nullish(z.number().min(0).max(2)),
    top_p: nullish(z.number().min(0).max(1)),
    metadata: nullish(z.record(z.string(), z.string().max(512))),
    previous_response_id: nullish(z.string().min(1).max(256)),
    text: nullish(
      z
        .object({
          format: nullish(TextFormat),
          verbosity: nullish(z.enum(["low", "medium", "high"])),
        })
        .strict(),
    ),
    reasoning: nullish(
      z
        .object({
          effort: nullish(z.enum(["none", "minimal", "low", "medium", "high", "xhigh"])),
          summary: nullish(z.enum(["auto", "concise", "detailed"])),
          generate_summary: nullish(z.enum(["auto", "concise", "detailed"])),
        })
        .strict(),
    ),
    truncation: nullish(z.enum(["auto", "disabled"])),
    include: nullish(z.array(z.string()).max(16)),
    stream_options: nullish(z.object({ include_obfuscation: nullish(z.boolean()) }).strict()),
    user: nullish(z.string().max(256)),
    safety_identifier: nullish(z.string().max(256)),
    prompt_cache_key: nullish(z.string().max(256)),
    service_tier: nullish(z.string().max(32)),
    /** Sluice extensions (as on /v1/chat/completions). */
    on_disconnect: nullish(z.enum(["continue", "cancel"])),
    timeout_ms: z.unknown().optional(),
    demo: z.unknown().optional(),
  })
  .passthrough();

type ResponsesBody = z.infer<typeof ResponsesSchema>;

/** Responses fields with no meaning on Sluice's routes (yet): refused by name. */
const REFUSED: Record<string, string> = {
  conversation: "conversations are not supported; chain responses with previous_response_id",
  prompt: "stored prompts are not supported",
  max_tool_calls: "max_tool_calls is not supported",
  top_logprobs: "top_logprobs is not supported on the Responses API (use /v1/chat/completions)",
  context_management: "context_management is not supported",
  prompt_cache_retention: "prompt_cache_retention is not supported",
};

type ChatMessage = Record<string, unknown>;

function partsText(content: unknown, where: string): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) fail(`${where}: content must be a string or a list of parts`, where);
  let s = "";
  content.forEach((p, i) => {
    const part = p as { type?: unknown; text?: unknown; refusal?: unknown };
    const at = `${where}.${i}`;
    if (part?.type === "input_text" || part?.type === "output_text" || part?.type === "text") {
      if (typeof part.text !== "string") fail(`${at}.text: must be a string`, `${at}.text`);
      s += part.text;
    } else if (part?.type === "refusal") {
      if (typeof part.refusal !== "string") fail(`${at}.refusal: must be a string`, `${at}.refusal`);
      s += part.refusal;
    } else {
      fail(
        `${at}: content parts of type ${quoteInput(String(part?.type), 64)} are not supported (text only)`,
        `${at}.type`,
      );
    }
  });
  return s;
}

/** Adds a function call to the assistant turn it belongs to (the last message, if that is one). */
function pushCall(out: ChatMessage[], call: Record<string, unknown>): void {
  const last = out.at(-1);
  if (last && last.role === "assistant") {
    const calls = (last.tool_calls as unknown[] | undefined) ?? [];
    calls.push(call);
    last.tool_calls = calls;
    return;
  }
  out.push({ role: "assistant", content: "", tool_calls: [call] });
}

/** Responses `input` (a string or items) → the Chat Completions-style messages of a GenerationRequest. */
export function inputToMessages(input: ResponsesBody["input"]): ChatMessage[] {
  if (typeof input === "string") return [{ role: "user", content: input }];
  const out: ChatMessage[] = [];
  input.forEach((raw, i) => {
    const item = raw as Record<string, unknown>;
    const at = `input.${i}`;
    const type = item.type ?? "message";
    switch (type) {
      case "message": {
        const role = item.role;
        if (role !== "user" && role !== "assistant" && role !== "system" && role !== "developer") {
          fail(`${at}.role: must be user, assistant, system or developer`, `${at}.role`);
        }
        out.push({ role, content: partsText(item.content, `${at}.content`) });
        break;
      }
      case "function_call": {
        const { call_id, name, arguments: args } = item;
        if (typeof call_id !== "string" || typeof name !== "string" || typeof args !== "string") {
          fail(`${at}: a function_call item needs call_id, name and arguments (strings)`, at);
        }
        pushCall(out, { id: call_id, type: "function", function: { name, arguments: args } });
        break;
      }
      case "function_call_output": {
        const { call_id, output } = item;
        if (typeof call_id !== "string") fail(`${at}.call_id: must be a string`, `${at}.call_id`);
        out.push({ role: "tool", tool_call_id: call_id, content: partsText(output, `${at}.output`) });
        break;
      }
      case "reasoning":
        // What a model thought, handed back as the SDKs do: no route takes it as input.
        break;
      default:
        fail(
          `${at}.type: input items of type ${quoteInput(String(type), 64)} are not supported (message, function_call, function_call_output, reasoning)`,
          `${at}.type`,
        );
    }
  });
  return out;
}

/** A finished response's output → the assistant turn(s) it adds to the conversation. */
function outputToMessages(output: unknown[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (const raw of output) {
    const item = raw as Record<string, unknown>;
    if (item.type === "message") {
      const parts = (item.content as { text?: string }[] | undefined) ?? [];
      out.push({ role: "assistant", content: parts.map((p) => p.text ?? "").join("") });
    } else if (item.type === "function_call") {
      pushCall(out, {
        id: item.call_id,
        type: "function",
        function: { name: item.name, arguments: item.arguments },
      });
    }
  }
  return out;
}

/** Reads a stream from its first record and folds it into the response object. */
export async function foldResponse(store: Store, info: StreamInfo): Promise<Record<string, unknown>> {
  const enc = new ResponsesEncoder(info);
  let after = 0;
  for (;;) {
    const page = await store.read(info.id, after, 1000);
    for (const rec of page.records) {
      enc.step(rec);
      after = rec.seq;
    }
    if (page.up_to_date || page.records.length === 0) break;
  }
  return enc.response();
}

export interface ParsedResponses {
  request: GenerationRequest;
  body: ResponsesBody;
  meta: ResponsesMeta;
}

/**
 * Validates a Responses request and maps it onto a GenerationRequest. `previous` is the
 * conversation so far (previous_response_id), resolved by the caller.
 */
export function parseResponsesBody(
  b: ResponsesBody,
  previous: ChatMessage[],
  isDemo: (model: string) => boolean,
): ParsedResponses {
  const conversation = [...previous, ...inputToMessages(b.input)];
  const messages: ChatMessage[] = [];
  if (b.instructions) messages.push({ role: "system", content: b.instructions });
  messages.push(...conversation);
  if (messages.length === 0) fail("input: at least one message is needed", "input");
  const candidate: Record<string, unknown> = { model: b.model, messages };
  if (b.max_output_tokens != null) candidate.max_tokens = b.max_output_tokens;
  if (b.temperature != null) candidate.temperature = b.temperature;
  if (b.top_p != null) candidate.top_p = b.top_p;
  const tools: Record<string, unknown>[] = [];
  (b.tools ?? []).forEach((raw, i) => {
    const t = FunctionTool.safeParse(raw);
    if (!t.success) {
      if (raw.type !== "function") {
        fail(
          `tools.${i}.type: tools of type ${quoteInput(String(raw.type), 64)} are not supported (function tools only)`,
          `tools.${i}.type`,
        );
      }
      fail(
        describeIssues(t.error.issues.map((x) => ({ ...x, path: ["tools", i, ...x.path] }))),
        `tools.${i}`,
      );
    }
    tools.push(t.data);
  });
  if (tools.length > 0) {
    candidate.tools = tools.map((t) => ({
      type: "function",
      function: {
        name: t.name,
        ...(t.description != null ? { description: t.description } : {}),
        parameters: t.parameters ?? { type: "object", properties: {} },
        ...(t.strict != null ? { strict: t.strict } : {}),
      },
    }));
  }
  if (b.tool_choice != null) {
    candidate.tool_choice =
      typeof b.tool_choice === "string"
        ? b.tool_choice
        : { type: "function", function: { name: b.tool_choice.name } };
  }
  if (b.metadata != null) candidate.metadata = b.metadata;
  if (b.on_disconnect != null) candidate.on_disconnect = b.on_disconnect;
  if (b.timeout_ms != null) candidate.timeout_ms = b.timeout_ms;
  if (b.demo != null) candidate.demo = b.demo;
  // What has a Chat Completions equivalent goes to the upstream under that name (each provider
  // then forwards, maps or refuses it, as for /v1/chat/completions).
  const extra: Record<string, unknown> = {};
  if (b.parallel_tool_calls != null) extra.parallel_tool_calls = b.parallel_tool_calls;
  const format = b.text?.format;
  if (format && format.type === "json_object") extra.response_format = { type: "json_object" };
  if (format && format.type === "json_schema") {
    const { type: _, ...schema } = format;
    extra.response_format = { type: "json_schema", json_schema: schema };
  }
  if (b.text?.verbosity != null) extra.verbosity = b.text.verbosity;
  if (b.reasoning?.effort != null) extra.reasoning_effort = b.reasoning.effort;
  if (b.user != null) extra.user = b.user;
  if (b.safety_identifier != null) extra.safety_identifier = b.safety_identifier;
  if (b.prompt_cache_key != null) extra.prompt_cache_key = b.prompt_cache_key;
  if (b.service_tier != null) extra.service_tier = b.service_tier;
  if (Object.keys(extra).length > 0) candidate.upstream_extra = extra;
  const summary = b.reasoning?.summary ?? b.reasoning?.generate_summary;
  if (summary != null && isDemo(b.model)) {
    // The demo model thinks when asked (its reasoning is the summary).
    const demo = (b.demo ?? {}) as Record<string, unknown>;
    candidate.demo = { ...demo, kind: demo.kind ?? "reasoning" };
  }
  const g = GenerationRequestSchema.safeParse(candidate);
  if (!g.success) {
    const first = g.error.issues[0];
    fail(describeIssues(g.error.issues), first?.path.map(String).join("."));
  }
  const meta: ResponsesMeta = {
    messages: conversation,
    instructions: b.instructions ?? null,
    tools: tools.map((t) => ({ ...t, strict: t.strict ?? true })),
    tool_choice: b.tool_choice ?? "auto",
    temperature: b.temperature ?? null,
    top_p: b.top_p ?? null,
    max_output_tokens: b.max_output_tokens ?? null,
    parallel_tool_calls: b.parallel_tool_calls ?? true,
    previous_response_id: b.previous_response_id ?? null,
    background: b.background ?? false,
    store: b.store ?? true,
    metadata: b.metadata ?? {},
    reasoning: b.reasoning ?? null,
    text: {
      format: b.text?.format ?? { type: "text" },
      ...(b.text?.verbosity ? { verbosity: b.text.verbosity } : {}),
    },
  };
  return { request: g.data, body: b, meta };
}

/** The checks of a request body before anything is looked up. */
function checkBody(body: unknown): ResponsesBody {
  if (body === undefined || body === null || typeof body !== "object" || Array.isArray(body)) {
    fail("the body must be a JSON object");
  }
  for (const key of Object.keys(body)) {
    const why = REFUSED[key];
    if (why !== undefined && (body as Record<string, unknown>)[key] != null) fail(why, key);
  }
  const r = ResponsesSchema.safeParse(body);
  if (!r.success) {
    const first = r.error.issues[0];
    fail(describeIssues(r.error.issues), first?.path.map(String).join("."));
  }
  const b = r.data;
  const known = new Set(Object.keys(ResponsesSchema.shape));
  for (const key of Object.keys(b)) {
    if (!known.has(key)) fail(`${quoteInput(key, 64)} is not a Responses API parameter Sluice knows`, key);
  }
  if (b.truncation === "auto")
    fail("truncation: auto is not supported (the input is never cut)", "truncation");
  if (b.include && b.include.length > 0) {
    fail(`include: ${quoteInput(b.include[0] as string, 64)} is not supported`, "include");
  }
  if (b.stream_options?.include_obfuscation === true) {
    fail("stream_options.include_obfuscation: Sluice does not pad stream events", "stream_options");
  }
  if (b.background === true && b.store === false) fail("background mode needs store: true", "background");
  if (b.background === true && b.on_disconnect === "cancel") {
    fail(
      "a background response runs on whatever its client does: on_disconnect: cancel contradicts it",
      "on_disconnect",
    );
  }
  return b;
}

function sendOpenAIError(reply: FastifyReply, err: SluiceError): FastifyReply {
  const param = typeof err.details?.param === "string" ? err.details.param : null;
  const retry = retryAfterSeconds(err);
  if (retry !== undefined) reply.header("retry-after", String(retry));
  return reply
    .code(err.status)
    .type("application/json")
    .send(openAIErrorBody(err.code, err.message, param));
}

function notFound(id: string): SluiceError {
  return new SluiceError("stream_not_found", `No response found with id ${quoteInput(id, 140)}`);
}

export function registerOpenAIResponses(app: FastifyInstance, deps: DoorDeps): void {
  const { routes, store, config, live, access } = deps;

  const errorHandler = (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const e = toSluiceError(err, config.limits.body_bytes);
    if (e.code === "internal_error") req.log.error({ err }, "unhandled error");
    return sendOpenAIError(reply, e);
  };

  /** A response `principal` may `action`: any generation stream, unless it was created with store: false. */
  async function lookup(req: FastifyRequest, action: "read" | "cancel" | "delete", id: string) {
    let info: StreamInfo;
    try {
      info = await access.generation(req.principal, action, streamIdOfResponse(id));
    } catch (err) {
      if (err instanceof SluiceError && err.code === "stream_not_found") throw notFound(id);
      throw err;
    }
    if (responsesMeta(info).store === false) throw notFound(id);
    return info;
  }

  /** Streams a response's events after `start` on the live-response path. */
  function streamResponse(
    req: FastifyRequest,
    reply: FastifyReply,
    info: StreamInfo,
    start: ResponsesStart,
    cancelOnDisconnect: boolean,
    held?: Hold,
  ): Promise<void> {
    return live.stream(
      req,
      reply,
      {
        streamId: info.id,
        // The fold reads the log from its first record; the sink sends what follows `start`.
        after: 0,
        codec: recordLines,
        transport: "sse",
        headers: SSE_HEADERS,
        heartbeat: SSE_HEARTBEAT,
        cancelOnDisconnect,
        // A slow reader that is cut learns the sequence number to resume after (starting_after).
        cutMessage: (seq, message) => `: slow_reader ${seq} ${message.replace(/[\r\n]/g, " ")}\n\n`,
        wrap: (inner) => new ResponsesSink(inner, info, start),
      },
      held,
    );
  }

  /**
   * Input items that name an output item of an earlier response (`{"type": "item_reference",
   * "id": "msg_<stream id>_<n>"}`, what `@ai-sdk/openai` sends for earlier turns when responses
   * are stored) become that item, read from its stream's log. Same access rules as a GET.
   */
  async function resolveReferences(req: FastifyRequest, b: ResponsesBody): Promise<boolean> {
    if (typeof b.input === "string" || !b.input.some((x) => x.type === "item_reference")) return false;
    const folded = new Map<string, unknown[]>();
    const out: Record<string, unknown>[] = [];
    for (const [i, item] of b.input.entries()) {
      if (item.type !== "item_reference") {
        out.push(item);
        continue;
      }
      const ref = typeof item.id === "string" ? /^(?:msg|fc|rs)_(.+)_(\d{1,9})$/.exec(item.id) : null;
      const missing = () =>
        new SluiceError("stream_not_found", `Item with id ${quoteInput(String(item.id), 140)} not found.`, {
          param: `input.${i}.id`,
        });
      if (!ref) throw missing();
      const sid = ref[1] as string;
      let output = folded.get(sid);
      if (!output) {
        const info = await lookup(req, "read", sid).catch((err: unknown) => {
          throw err instanceof SluiceError && err.code === "stream_not_found" ? missing() : err;
        });
        output = (await foldResponse(store, info)).output as unknown[];
        folded.set(sid, output);
      }
      const found = output[Number(ref[2])] as Record<string, unknown> | undefined;
      if (!found || found.id !== item.id) throw missing();
      out.push(found.type === "message" ? { ...found, role: "assistant" } : found);
      if (out.length > 10_000) fail("input: at most 10000 items", "input");
    }
    b.input = out;
    return true;
  }

  app.post("/v1/responses", { errorHandler }, async (req, reply) => {
    const b = checkBody(req.body);
    const referenced = await resolveReferences(req, b);
    const isDemo = (model: string) => routes.resolve(model).provider.name === "demo";
    let previous: ChatMessage[] = [];
    if (b.previous_response_id != null) {
      const prev = await lookup(req, "read", b.previous_response_id).catch((err: unknown) => {
        if (err instanceof SluiceError && err.code === "stream_not_found") {
          throw new SluiceError(
            "stream_not_found",
            `Previous response with id ${quoteInput(b.previous_response_id as string, 140)} not found.`,
            { param: "previous_response_id" },
          );
        }
        throw err;
      });
      if (prev.status === "running") {
        fail("the previous response is still in progress", "previous_response_id");
      }
      const folded = await foldResponse(store, prev);
      const prevMessages = (responsesMeta(prev).messages as ChatMessage[] | undefined) ?? [];
      previous = [...prevMessages, ...outputToMessages(folded.output as unknown[])];
    }
    const { request, meta } = parseResponsesBody(b, previous, isDemo);
    // A chain grows by every answer: what is kept and sent on has the bound of one request body.
    if (previous.length > 0 || referenced) {
      const chars = JSON.stringify(request.messages).length;
      if (chars > config.limits.body_bytes) {
        throw new SluiceError(
          "body_too_large",
          `the conversation with the earlier responses is ${chars} characters, more than limits.body_bytes (${config.limits.body_bytes}); start a new one`,
          { param: b.previous_response_id != null ? "previous_response_id" : "input" },
        );
      }
    }
    const route = routes.resolve(request.model);
    const background = b.background === true;
    // Background responses run on whatever the client does; otherwise the route's policy holds.
    const onDisconnect = background
      ? "continue"
      : (request.on_disconnect ?? route.on_disconnect ?? "continue");
    const stored: ResponsesMeta = b.store === false ? { ...meta, messages: [] } : meta;
    const { info, hold } = await live.start(req, reply, b.stream === true, () =>
      startFor(req, deps, request, { responses: stored }),
    );
    if (hold) {
      await streamResponse(req, reply, info, { afterSequence: -1 }, onDisconnect === "cancel", hold);
      return reply;
    }
    if (background) {
      // At once: the generation runs on; GET /v1/responses/{id} follows it.
      return reply.type("application/json").send(await foldResponse(store, info));
    }
    await live.settled(reply, info.id, onDisconnect === "cancel");
    const done = await store.info(info.id);
    const response = await foldResponse(store, done ?? info);
    if (response.status === "failed") {
      // As /v1/chat/completions: a generation that failed is an error answer with its code.
      const e = response.error as { code: string; message: string };
      const code = Object.hasOwn(ERROR_CODES, e.code) ? (e.code as ErrorCode) : "upstream_error";
      return sendOpenAIError(reply, new SluiceError(code, e.message));
    }
    return reply.type("application/json").send(response);
  });

  app.get("/v1/responses/:id", { errorHandler }, async (req, reply) => {
    const { id } = req.params as { id: string };
    const q = req.query as Record<string, string | undefined>;
    const stream = q.stream === "true";
    if (q.stream !== undefined && !stream && q.stream !== "false")
      fail("stream must be true or false", "stream");
    let after = -1;
    if (q.starting_after !== undefined) {
      if (!/^\d{1,12}$/.test(q.starting_after)) {
        fail("starting_after must be a sequence number (an integer from 0)", "starting_after");
      }
      after = Number(q.starting_after);
    }
    const info = await lookup(req, "read", id);
    reply.header(STREAM_ID_HEADER, info.id);
    if (!stream) return reply.type("application/json").send(await foldResponse(store, info));
    await streamResponse(req, reply, info, { afterSequence: after }, false);
    return reply;
  });

  app.post("/v1/responses/:id/cancel", { errorHandler }, async (req, reply) => {
    const { id } = req.params as { id: string };
    const info = await lookup(req, "cancel", id);
    reply.header(STREAM_ID_HEADER, info.id);
    // Aborts the upstream (here or on the node that runs it) and waits for the terminal event.
    const after = await access.cancel(req.principal, info.id, "cancelled by request");
    return reply.type("application/json").send(await foldResponse(store, after));
  });

  app.delete("/v1/responses/:id", { errorHandler }, async (req, reply) => {
    const { id } = req.params as { id: string };
    const info = await lookup(req, "delete", id);
    reply.header(STREAM_ID_HEADER, info.id);
    if (info.status === "running") await deps.runner.cancel(info.id, "client", "deleted");
    if (!(await store.delete(info.id))) throw notFound(id);
    return { id, object: "response.deleted", deleted: true };
  });
}
