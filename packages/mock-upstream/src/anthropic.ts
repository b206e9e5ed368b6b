/**
 * The mock upstream's Anthropic side: `POST /v1/messages`, streaming (the Messages API SSE
 * events: message_start, ping, content_block_start/delta/stop with text_delta, thinking_delta
 * + signature_delta, input_json_delta, message_delta, message_stop; `event: error` at the
 * simulated failure point) and not, served from the same demo generator as the OpenAI side.
 */
import { randomBytes } from "node:crypto";
import { type EventEmitter, once } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { isSluiceError } from "@sluice/protocol";
import {
  type Clock,
  DemoOptionsSchema,
  type GenerationRequest,
  type Message,
  type ProviderEvent,
  planDemo,
  runDemoPlan,
} from "@sluice/server/demo";
import { z } from "zod";
import { afterToken, faultMessage, type MockOptions, MockOptionsSchema, untilClosed } from "./faults.js";
import { HttpError, type MockRequestRecord, readBody, sendJson } from "./server.js";

export interface MessagesContext {
  clock: Clock;
  log: (line: string, fields?: object) => void;
  addRecord(record: MockRequestRecord): void;
  end(record: MockRequestRecord, status: "completed" | "failed"): void;
  inFlight: Set<AbortController>;
  takeFault(): MockOptions | undefined;
  isClosing(): boolean;
  events: EventEmitter;
}

function anthropicError(type: string, message: string) {
  return { type: "error", error: { type, message } };
}

const ContentSchema = z.union([z.string(), z.array(z.object({ type: z.string() }).passthrough())]);

const MessagesBodySchema = z
  .object({
    model: z.string().min(1),
    max_tokens: z.number().int().positive(),
    messages: z
      .array(z.object({ role: z.enum(["user", "assistant"]), content: ContentSchema }).passthrough())
      .min(1),
    system: z.union([z.string(), z.array(z.unknown())]).optional(),
    stream: z.boolean().optional(),
    tools: z
      .array(
        z
          .object({ name: z.string().min(1), description: z.string().optional(), input_schema: z.unknown() })
          .passthrough(),
      )
      .optional(),
    tool_choice: z.object({ type: z.string(), name: z.string().optional() }).passthrough().optional(),
    demo: DemoOptionsSchema.nullish(),
    mock: MockOptionsSchema.nullish(),
  })
  .passthrough();

type MessagesBody = z.infer<typeof MessagesBodySchema>;

function parse(text: string): MessagesBody {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new HttpError(400, anthropicError("invalid_request_error", "The request body is not valid JSON."));
  }
  const r = MessagesBodySchema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new HttpError(
      400,
      anthropicError(
        "invalid_request_error",
        `${i?.path.join(".") || "body"}: ${i?.message ?? "invalid request"}`,
      ),
    );
  }
  return r.data;
}

function textOf(content: z.infer<typeof ContentSchema>): string {
  if (typeof content === "string") return content;
  return content.map((b) => (b.type === "text" && typeof b.text === "string" ? b.text : "")).join("");
}

const STOP_REASONS = {
  stop: "end_turn",
  length: "max_tokens",
  "tool-calls": "tool_use",
  "content-filter": "refusal",
};

function messageId(): string {
  return `msg_${randomBytes(12).toString("hex")}`;
}

export async function anthropicMessages(
  req: IncomingMessage,
  res: ServerResponse,
  ctx: MessagesContext,
): Promise<void> {
  const { clock, log } = ctx;
  const text = await readBody(req);
  const body = parse(text);
  const record: MockRequestRecord = {
    id: messageId(),
    model: body.model,
    stream: body.stream === true,
    status: "streaming",
    chunks_sent: 0,
    tokens: 0,
    started_at: clock.now(),
    // Kept only when small: up to 1000 records are held.
    ...(text.length <= 64 * 1024 ? { body: body as Record<string, unknown> } : {}),
  };
  ctx.addRecord(record);

  const fault: MockOptions | undefined = body.mock ?? ctx.takeFault();
  if (fault?.status !== undefined) {
    const type =
      fault.status === 429
        ? "rate_limit_error"
        : fault.status === 529
          ? "overloaded_error"
          : fault.status >= 500
            ? "api_error"
            : "invalid_request_error";
    sendJson(
      res,
      fault.status,
      anthropicError(
        type,
        faultMessage(req, fault, `simulated HTTP ${fault.status} from mock-upstream (fault injection)`),
      ),
      fault.retry_after !== undefined ? { "retry-after": String(fault.retry_after) } : {},
    );
    ctx.end(record, "failed");
    return;
  }

  const messages: Message[] = [];
  if (typeof body.system === "string") messages.push({ role: "system", content: body.system });
  for (const m of body.messages) messages.push({ role: m.role, content: textOf(m.content) });
  const request: GenerationRequest = {
    model: body.model,
    messages,
    max_tokens: body.max_tokens,
    ...(body.tools?.length
      ? {
          tools: body.tools.map((t) => ({
            type: "function" as const,
            function: { name: t.name, parameters: t.input_schema },
          })),
          ...(body.tool_choice?.type === "any" || body.tool_choice?.type === "tool"
            ? { tool_choice: "required" }
            : {}),
        }
      : {}),
    ...(body.demo ? { demo: body.demo } : {}),
  };
  // Structured outputs (`output_config.format` json_schema): the answer conforms, as Claude's does.
  const format = (body.output_config as { format?: { type?: unknown; schema?: unknown } } | undefined)
    ?.format;
  if (format?.type === "json_schema") {
    request.upstream_extra = {
      response_format: { type: "json_schema", json_schema: { schema: format.schema } },
    };
  }
  const plan = planDemo(request);

  const controller = new AbortController();
  ctx.inFlight.add(controller);
  res.on("close", () => {
    ctx.inFlight.delete(controller);
    if (res.writableEnded) return;
    controller.abort(new Error("client closed the connection"));
    if (record.status !== "streaming") return;
    record.status = "aborted";
    record.ended_at = clock.now();
    ctx.events.emit("abort", record);
    log(`mock-upstream: ${ctx.isClosing() ? "closing, dropped" : "client aborted"} message ${record.id}`, {
      id: record.id,
      chunks_sent: record.chunks_sent,
    });
  });

  if (fault?.stall === "headers") {
    await untilClosed(controller.signal); // an upstream that never answers
    ctx.inFlight.delete(controller);
    return;
  }
  const steps = runDemoPlan(plan, { signal: controller.signal, clock });
  try {
    if (record.stream)
      await streamMessage(res, record, body, plan.input_tokens, steps, controller.signal, fault);
    else await wholeMessage(res, record, body, plan.input_tokens, steps);
    if (record.status === "streaming") ctx.end(record, "completed"); // not ended by a fault
  } catch (err) {
    if (controller.signal.aborted) return;
    if (isSluiceError(err) && err.code === "upstream_error") {
      const error = anthropicError("overloaded_error", err.message);
      if (res.headersSent) res.end(`event: error\ndata: ${JSON.stringify(error)}\n\n`);
      else sendJson(res, 529, error);
      ctx.end(record, "failed");
      return;
    }
    throw err;
  } finally {
    ctx.inFlight.delete(controller);
  }
}

async function streamMessage(
  res: ServerResponse,
  record: MockRequestRecord,
  body: MessagesBody,
  inputTokens: number,
  steps: AsyncGenerator<{ event: ProviderEvent; due: number }>,
  signal: AbortSignal,
  fault: MockOptions | undefined,
): Promise<void> {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    connection: "keep-alive",
    "request-id": record.id,
  });
  res.flushHeaders();
  const send = async (type: string, data: Record<string, unknown>) => {
    record.chunks_sent++;
    if (!res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`)) {
      await once(res, "drain", { signal });
    }
  };
  await send("message_start", {
    message: {
      id: record.id,
      type: "message",
      role: "assistant",
      model: body.model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: inputTokens, output_tokens: 1 },
    },
  });
  await send("ping", {});
  let index = -1;
  let open: "text" | "thinking" | "tool_use" | undefined;
  let openTool: string | undefined;
  const close = async () => {
    if (open === undefined) return;
    if (open === "thinking") {
      await send("content_block_delta", {
        index,
        delta: { type: "signature_delta", signature: randomBytes(24).toString("base64") },
      });
    }
    await send("content_block_stop", { index });
    open = undefined;
    openTool = undefined;
  };
  const openBlock = async (kind: "text" | "thinking" | "tool_use", block: Record<string, unknown>) => {
    await close();
    index++;
    open = kind;
    await send("content_block_start", { index, content_block: block });
  };
  let output = 0;
  for await (const { event } of steps) {
    switch (event.type) {
      case "text-delta":
        if (open !== "text") await openBlock("text", { type: "text", text: "" });
        await send("content_block_delta", { index, delta: { type: "text_delta", text: event.delta } });
        break;
      case "reasoning-delta":
        if (open !== "thinking")
          await openBlock("thinking", { type: "thinking", thinking: "", signature: "" });
        await send("content_block_delta", {
          index,
          delta: { type: "thinking_delta", thinking: event.delta },
        });
        break;
      case "tool-call-delta":
        if (open !== "tool_use" || openTool !== event.id) {
          await openBlock("tool_use", { type: "tool_use", id: event.id, name: event.name ?? "", input: {} });
          openTool = event.id;
        }
        await send("content_block_delta", {
          index,
          delta: { type: "input_json_delta", partial_json: event.args_delta },
        });
        break;
      case "usage":
        output = event.output_tokens;
        break;
      case "finish":
        await close();
        await send("message_delta", {
          delta: { stop_reason: STOP_REASONS[event.reason], stop_sequence: null },
          usage: { output_tokens: output },
        });
        await send("message_stop", {});
        break;
      default:
        break;
    }
    if (event.type.endsWith("-delta")) {
      record.tokens++;
      if (await afterToken(res, record, fault, record.tokens, signal)) return;
    }
  }
  res.end();
}

async function wholeMessage(
  res: ServerResponse,
  record: MockRequestRecord,
  body: MessagesBody,
  inputTokens: number,
  steps: AsyncGenerator<{ event: ProviderEvent; due: number }>,
): Promise<void> {
  const content: Record<string, unknown>[] = [];
  let stop = "end_turn";
  let output = 0;
  const last = () => content[content.length - 1];
  for await (const { event } of steps) {
    if (event.type.endsWith("-delta")) record.tokens++;
    if (event.type === "text-delta") {
      const b = last();
      if (b?.type === "text") b.text = `${b.text as string}${event.delta}`;
      else content.push({ type: "text", text: event.delta });
    } else if (event.type === "reasoning-delta") {
      const b = last();
      if (b?.type === "thinking") b.thinking = `${b.thinking as string}${event.delta}`;
      else
        content.push({
          type: "thinking",
          thinking: event.delta,
          signature: randomBytes(24).toString("base64"),
        });
    } else if (event.type === "tool-call") {
      content.push({ type: "tool_use", id: event.id, name: event.name, input: event.args });
    } else if (event.type === "usage") output = event.output_tokens;
    else if (event.type === "finish") stop = STOP_REASONS[event.reason];
  }
  sendJson(res, 200, {
    id: record.id,
    type: "message",
    role: "assistant",
    model: body.model,
    content,
    stop_reason: stop,
    stop_sequence: null,
    usage: { input_tokens: inputTokens, output_tokens: output },
  });
}
