/**
 * `sluice mock-upstream`: an honest *simulator* of an OpenAI-compatible upstream. A real HTTP
 * server (plain node:http, lean enough for benchmarks) that serves the built-in demo generator
 * as Chat Completions, streamed byte-for-byte like OpenAI (see PROTOCOLS.md), with fault
 * injection (`mock.status`, `demo.fail_after_tokens`) and a record of every request, so tests
 * and benchmarks can exercise the real provider path: pacing, client aborts, upstream errors.
 */
import { randomBytes } from "node:crypto";
import { EventEmitter, once } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { isSluiceError } from "@sluice/protocol";
import {
  type Clock,
  DemoOptionsSchema,
  type GenerationRequest,
  MessageSchema,
  type ProviderEvent,
  planDemo,
  realClock,
  runDemoPlan,
  ToolSchema,
} from "@sluice/server/demo";
import { z } from "zod";
import { anthropicMessages } from "./anthropic.js";
import { afterToken, faultMessage, type MockOptions, MockOptionsSchema, untilClosed } from "./faults.js";

export interface MockUpstreamOptions {
  /** Port to listen on; 0 (the default) picks a free one. */
  port?: number;
  /** Address to bind; default 127.0.0.1. */
  host?: string;
  /** When set, `/v1/*` requires `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  log?: (line: string, fields?: object) => void;
  /** Paces the generations; the real clock by default. */
  clock?: Clock;
  /**
   * Fault injection for the whole server (both APIs): the first `times` generation requests
   * (default: every one) answer HTTP `status` (with `Retry-After: retry_after` seconds when set)
   * instead of a completion, as an overloaded or broken upstream does; any other fault of
   * faults.ts (stall, cut, malformed, huge line) likewise. Per request, the body's `mock` does the same.
   */
  fault?: MockOptions & { times?: number };
}

export type MockRequestStatus = "streaming" | "completed" | "aborted" | "failed";

export interface MockRequestRecord {
  /** The completion id (`chatcmpl-…`). */
  id: string;
  model: string;
  stream: boolean;
  /** `streaming` while the response is being generated (streamed or not). */
  status: MockRequestStatus;
  /** SSE `data:` chunks written (`[DONE]` not counted; 0 for non-streaming responses). */
  chunks_sent: number;
  /** Output tokens generated so far. */
  tokens: number;
  /** Clock time (ms) the request was accepted and, once over, ended. */
  started_at: number;
  ended_at?: number;
  /** With `mock.huge_line_chars`: how many characters of the line were written. */
  huge_line_chars_sent?: number;
  /** The request body as parsed, when at most 64 KiB (so tests can check what a gateway forwarded). */
  body?: Record<string, unknown>;
}

export interface MockUpstream {
  /** Base URL for an OpenAI client: `http://127.0.0.1:PORT/v1`. */
  url: string;
  port: number;
  /** The most recent requests (at most 1000), oldest first; records are updated live. */
  requests: MockRequestRecord[];
  /**
   * Emits "request" (a completion was accepted), "abort" (its client went away before the end)
   * and "complete" (the response was finished: status completed, or failed by fault injection),
   * each with the MockRequestRecord.
   */
  events: EventEmitter;
  close(): Promise<void>;
}

const MAX_RECORDS = 1000;
const MAX_BODY_BYTES = 8 * 1024 * 1024;
const MAX_RECORDED_BODY_CHARS = 64 * 1024;
const MODELS = ["demo", "demo-fast"];

export { completionId, HttpError, readBody, sendJson };

/** What the mock accepts: Chat Completions, plus the `demo` options and the `mock` fault injection. */
const ChatCompletionsBodySchema = z
  .object({
    model: z.string().min(1),
    messages: z.array(MessageSchema).min(1),
    stream: z.boolean().nullish(),
    stream_options: z.object({ include_usage: z.boolean().optional() }).passthrough().nullish(),
    max_tokens: z.number().int().positive().nullish(),
    max_completion_tokens: z.number().int().positive().nullish(),
    n: z.literal(1).nullish(),
    tools: z.array(ToolSchema).nullish(),
    tool_choice: z.unknown().optional(),
    demo: DemoOptionsSchema.nullish(),
    /** Fault injection (faults.ts). */
    mock: MockOptionsSchema.nullish(),
  })
  .passthrough();

type ChatCompletionsBody = z.infer<typeof ChatCompletionsBodySchema>;

/** OpenAI's error body: `{"error": {message, type, param, code}}`. */
function openAIError(message: string, type: string, param: string | null = null, code: string | null = null) {
  return { error: { message, type, param, code } };
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`HTTP ${status}`);
  }
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new HttpError(
        413,
        openAIError(`Request body too large (limit ${MAX_BODY_BYTES} bytes).`, "invalid_request_error"),
      );
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function parseBody(text: string): ChatCompletionsBody {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new HttpError(
      400,
      openAIError(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
        "invalid_request_error",
      ),
    );
  }
  const parsed = ChatCompletionsBodySchema.safeParse(json);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const param = issue?.path.length ? issue.path.join(".") : null;
  const missing =
    issue?.code === "invalid_type" &&
    issue.path.reduce<unknown>(
      (v, k) => (v && typeof v === "object" ? (v as Record<PropertyKey, unknown>)[k] : undefined),
      json,
    ) === undefined;
  throw new HttpError(
    400,
    missing
      ? openAIError(
          `Missing required parameter: '${param}'.`,
          "invalid_request_error",
          param,
          "missing_required_parameter",
        )
      : openAIError(
          `Invalid value for '${param ?? "body"}': ${issue?.message ?? "invalid request"}.`,
          "invalid_request_error",
          param,
          "invalid_value",
        ),
  );
}

const B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

function completionId(): string {
  let id = "chatcmpl-";
  for (const b of randomBytes(29)) id += B62[b % 62];
  return id;
}

const FINISH_REASONS = {
  stop: "stop",
  length: "length",
  "tool-calls": "tool_calls",
  "content-filter": "content_filter",
};

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  completion_tokens_details?: { reasoning_tokens: number };
}

function usageOf(event: Extract<ProviderEvent, { type: "usage" }>): Usage {
  return {
    prompt_tokens: event.input_tokens,
    completion_tokens: event.output_tokens,
    total_tokens: event.total_tokens ?? event.input_tokens + event.output_tokens,
    ...(event.reasoning_tokens
      ? { completion_tokens_details: { reasoning_tokens: event.reasoning_tokens } }
      : {}),
  };
}

export async function startMockUpstream(opts: MockUpstreamOptions = {}): Promise<MockUpstream> {
  const clock = opts.clock ?? realClock;
  const log = opts.log ?? (() => {});
  const host = opts.host ?? "127.0.0.1";
  const requests: MockRequestRecord[] = [];
  const events = new EventEmitter();
  /** Generations in flight, so close() can stop them. */
  const inFlight = new Set<AbortController>();
  let closing = false;
  let faultsLeft = opts.fault ? (opts.fault.times ?? Number.POSITIVE_INFINITY) : 0;

  /** The configured server-wide fault for this request, if any is left. */
  function takeFault(): MockOptions | undefined {
    if (!opts.fault || faultsLeft <= 0) return undefined;
    faultsLeft--;
    return opts.fault;
  }

  function addRecord(record: MockRequestRecord): void {
    requests.push(record);
    if (requests.length > MAX_RECORDS) requests.splice(0, requests.length - MAX_RECORDS);
    events.emit("request", record);
  }

  function end(record: MockRequestRecord, status: "completed" | "failed"): void {
    record.status = status;
    record.ended_at = clock.now();
    events.emit("complete", record);
  }

  function authorized(req: IncomingMessage): boolean {
    // OpenAI clients send a bearer token; Anthropic clients send `x-api-key`.
    return (
      !opts.apiKey ||
      req.headers.authorization === `Bearer ${opts.apiKey}` ||
      req.headers["x-api-key"] === opts.apiKey
    );
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const route = `${req.method} ${path.replace(/\/+$/, "") || "/"}`;
    if (route === "GET /mock/requests") return sendJson(res, 200, { requests });
    if (path.startsWith("/v1/") && !authorized(req)) {
      return sendJson(
        res,
        401,
        openAIError("Incorrect API key provided.", "invalid_request_error", null, "invalid_api_key"),
      );
    }
    if (route === "GET /v1/models") {
      const created = Math.floor(clock.now() / 1000);
      return sendJson(res, 200, {
        object: "list",
        data: MODELS.map((id) => ({ id, object: "model", created, owned_by: "sluice-mock" })),
      });
    }
    if (route === "POST /v1/chat/completions") return completions(req, res);
    if (route === "POST /v1/messages") {
      return anthropicMessages(req, res, {
        clock,
        log,
        addRecord,
        end,
        inFlight,
        takeFault,
        isClosing: () => closing,
        events,
      });
    }
    sendJson(
      res,
      404,
      openAIError(
        `Unknown request URL: ${req.method} ${path}.`,
        "invalid_request_error",
        null,
        "unknown_url",
      ),
    );
  }

  async function completions(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const text = await readBody(req);
    const body = parseBody(text);
    const record: MockRequestRecord = {
      id: completionId(),
      model: body.model,
      stream: body.stream === true,
      status: "streaming",
      chunks_sent: 0,
      tokens: 0,
      started_at: clock.now(),
      // Kept only when small: up to 1000 records are held.
      ...(text.length <= MAX_RECORDED_BODY_CHARS ? { body: body as Record<string, unknown> } : {}),
    };
    addRecord(record);

    const fault: MockOptions | undefined = body.mock ?? takeFault();
    if (fault?.status !== undefined) {
      // Fault injection: the error an overloaded or broken upstream answers before streaming.
      const { status, retry_after } = fault;
      const headers: Record<string, string> =
        retry_after !== undefined ? { "retry-after": String(retry_after) } : {};
      const message = faultMessage(
        req,
        fault,
        `simulated HTTP ${status} from mock-upstream (fault injection)`,
      );
      const error =
        status === 429
          ? openAIError(message, "requests", null, "rate_limit_exceeded")
          : status >= 500
            ? openAIError(message, "server_error")
            : openAIError(message, "invalid_request_error");
      log(`mock-upstream: answered ${status} to ${record.id} (mock.status)`, { id: record.id, status });
      sendJson(res, status, error, headers);
      end(record, "failed");
      return;
    }

    const request: GenerationRequest = {
      model: body.model,
      messages: body.messages,
      ...(body.max_tokens || body.max_completion_tokens
        ? { max_tokens: (body.max_tokens ?? body.max_completion_tokens) as number }
        : {}),
      ...(body.tools ? { tools: body.tools } : {}),
      ...(body.tool_choice !== undefined ? { tool_choice: body.tool_choice } : {}),
      ...(body.demo ? { demo: body.demo } : {}),
      // The demo model honours these as OpenAI's models do.
      upstream_extra: {
        ...(body.seed != null ? { seed: body.seed } : {}),
        ...(body.response_format != null ? { response_format: body.response_format } : {}),
      },
    };
    const plan = planDemo(request);

    // Closing the connection is the only way an OpenAI client stops a generation: stop at once.
    const controller = new AbortController();
    inFlight.add(controller);
    res.on("close", () => {
      inFlight.delete(controller);
      if (res.writableEnded) return;
      controller.abort(new Error("client closed the connection"));
      if (record.status !== "streaming") return;
      record.status = "aborted";
      record.ended_at = clock.now();
      events.emit("abort", record);
      const why = closing ? "mock-upstream closing, dropped" : "client aborted";
      log(`mock-upstream: ${why} request ${record.id} after ${record.chunks_sent} chunks`, {
        id: record.id,
        model: record.model,
        chunks_sent: record.chunks_sent,
        tokens: record.tokens,
      });
    });

    if (fault?.stall === "headers") {
      await untilClosed(controller.signal); // an upstream that never answers
      return;
    }
    const steps = runDemoPlan(plan, { signal: controller.signal, clock });
    try {
      if (record.stream) {
        await streamCompletion(res, record, body, steps, controller.signal, fault);
      } else {
        await wholeCompletion(res, record, steps);
      }
    } catch (err) {
      if (controller.signal.aborted) return; // the client left; the close handler recorded it
      if (isSluiceError(err) && err.code === "upstream_error") {
        // The simulated failure (`demo.fail_after_tokens`).
        const error = openAIError(err.message, "server_error", null, "upstream_failure");
        log(`mock-upstream: request ${record.id} failed after ${record.tokens} tokens (simulated)`, {
          id: record.id,
          tokens: record.tokens,
        });
        if (res.headersSent) {
          // Mid-stream: an error event, and the stream ends without [DONE].
          res.end(`data: ${JSON.stringify(error)}\n\n`);
          record.chunks_sent++;
        } else {
          sendJson(res, 500, error);
        }
        end(record, "failed");
        return;
      }
      throw err;
    }
  }

  async function streamCompletion(
    res: ServerResponse,
    record: MockRequestRecord,
    body: ChatCompletionsBody,
    steps: AsyncGenerator<{ event: ProviderEvent; due: number }>,
    signal: AbortSignal,
    fault: MockOptions | undefined,
  ): Promise<void> {
    const includeUsage = body.stream_options?.include_usage === true;
    const base = {
      id: record.id,
      object: "chat.completion.chunk",
      created: Math.floor(clock.now() / 1000),
      model: body.model,
    };
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
      "x-request-id": record.id,
    });
    res.flushHeaders();

    const send = async (chunk: Record<string, unknown>) => {
      record.chunks_sent++;
      // Backpressure: a client that stops reading holds the generation, not our memory.
      if (!res.write(`data: ${JSON.stringify(chunk)}\n\n`)) await once(res, "drain", { signal });
    };
    /** A chunk with one choice; `sluice_due` (non-standard) is when its token was due, epoch ms. */
    const chunk = (delta: Record<string, unknown>, finish: string | null, due: number) => ({
      ...base,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      ...(includeUsage ? { usage: null } : {}),
      sluice_due: Math.round(due),
    });

    let first = true;
    const role = () => (first ? { role: "assistant" } : {});
    const toolIndex = new Map<string, number>();
    let usage: Usage | undefined;
    for await (const { event, due } of steps) {
      switch (event.type) {
        case "text-delta":
          await send(chunk({ ...role(), content: event.delta }, null, due));
          break;
        case "reasoning-delta":
          await send(chunk({ ...role(), reasoning_content: event.delta }, null, due));
          break;
        case "tool-call-delta": {
          // The first fragment of a call has its index, id, type and name; later ones only arguments.
          const known = toolIndex.get(event.id);
          const index = known ?? toolIndex.size;
          toolIndex.set(event.id, index);
          const fragment =
            known === undefined
              ? {
                  index,
                  id: event.id,
                  type: "function",
                  function: { name: event.name ?? "", arguments: event.args_delta },
                }
              : { index, function: { arguments: event.args_delta } };
          await send(
            chunk({ ...role(), ...(first ? { content: null } : {}), tool_calls: [fragment] }, null, due),
          );
          break;
        }
        case "usage":
          usage = usageOf(event);
          break;
        case "finish":
          await send(chunk({}, FINISH_REASONS[event.reason], due));
          if (includeUsage && usage) await send({ ...base, choices: [], usage, sluice_due: Math.round(due) });
          break;
        default:
          continue; // `tool-call` (the complete call) has no chunk of its own in Chat Completions
      }
      if (event.type.endsWith("-delta")) {
        first = false;
        record.tokens++;
        if (await afterToken(res, record, fault, record.tokens, signal)) return;
      }
    }
    res.end("data: [DONE]\n\n");
    end(record, "completed");
  }

  async function wholeCompletion(
    res: ServerResponse,
    record: MockRequestRecord,
    steps: AsyncGenerator<{ event: ProviderEvent; due: number }>,
  ): Promise<void> {
    let content = "";
    let reasoning = "";
    const calls = new Map<
      string,
      { id: string; type: "function"; function: { name: string; arguments: string } }
    >();
    let usage: Usage | undefined;
    let finish = "stop";
    for await (const { event } of steps) {
      if (event.type.endsWith("-delta")) record.tokens++;
      if (event.type === "text-delta") content += event.delta;
      else if (event.type === "reasoning-delta") reasoning += event.delta;
      else if (event.type === "tool-call-delta") {
        const call = calls.get(event.id) ?? {
          id: event.id,
          type: "function",
          function: { name: "", arguments: "" },
        };
        if (event.name) call.function.name = event.name;
        call.function.arguments += event.args_delta;
        calls.set(event.id, call);
      } else if (event.type === "usage") usage = usageOf(event);
      else if (event.type === "finish") finish = FINISH_REASONS[event.reason];
    }
    sendJson(res, 200, {
      id: record.id,
      object: "chat.completion",
      created: Math.floor(record.started_at / 1000),
      model: record.model,
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: calls.size && !content ? null : content,
            ...(reasoning ? { reasoning_content: reasoning } : {}),
            ...(calls.size ? { tool_calls: [...calls.values()] } : {}),
            refusal: null,
          },
          logprobs: null,
          finish_reason: finish,
        },
      ],
      usage,
    });
    end(record, "completed");
  }

  const server = createServer({ noDelay: true }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) {
        if (!res.headersSent) sendJson(res, err.status, err.body);
        else res.destroy();
        return;
      }
      if (req.socket.destroyed) return; // the client left while we read its request
      log(`mock-upstream: internal error: ${(err as Error)?.message ?? String(err)}`);
      if (!res.headersSent)
        sendJson(res, 500, openAIError("The mock upstream had an internal error.", "server_error"));
      else res.destroy();
    });
  });

  server.listen(opts.port ?? 0, host);
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  const urlHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${port}/v1`,
    port,
    requests,
    events,
    async close() {
      closing = true;
      for (const c of inFlight) c.abort(new Error("mock-upstream closing"));
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
