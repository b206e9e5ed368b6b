/**
 * Anthropic Messages API provider: `POST {baseUrl}/v1/messages` with `stream: true`, its SSE
 * events (parsed with eventsource-parser) mapped to Sluice events:
 *
 * - `content_block_delta` `text_delta` → text-delta, `thinking_delta` → reasoning-delta,
 *   `input_json_delta` → tool-call-delta (the block's `content_block_start` names the call),
 *   `content_block_stop` of a tool_use block → tool-call with the parsed input;
 *   `signature_delta` (and other delta kinds) are ignored.
 * - `message_start` / `message_delta` usage → usage, `message_delta.stop_reason` → finish.
 * - `ping` and unknown event types are ignored; `event: error` → upstream_error.
 *
 * Cancel reaches the upstream: the context's signal aborts the HTTP request.
 */
import type { FinishReason } from "@sluice/protocol";
import { SluiceError } from "@sluice/protocol";
import { type Message, messageText } from "../core/request.js";
import type { Provider, ProviderContext, ProviderEvent, ProviderRequest } from "./provider.js";
import { snippet, UpstreamHttp, type UpstreamTimeouts } from "./upstream-http.js";

export interface AnthropicOptions {
  name?: string;
  /** Default https://api.anthropic.com (the provider appends `/v1/messages`). */
  baseUrl?: string;
  /** Sent as `x-api-key`. */
  apiKey?: string;
  /** `anthropic-version` header; default 2023-06-01. */
  version?: string;
  headers?: Record<string, string>;
  /** max_tokens is required by the Messages API: used when the request has none. Default 4096. */
  defaultMaxTokens?: number;
  /** Connect, first-byte and idle timeouts (upstream-http.ts DEFAULT_UPSTREAM_TIMEOUTS). */
  timeouts?: Partial<UpstreamTimeouts>;
  /** The most characters one upstream SSE event may hold (default 1 MiB). */
  maxEventChars?: number;
}

export const ANTHROPIC_BASE_URL = "https://api.anthropic.com";
export const ANTHROPIC_VERSION = "2023-06-01";

type Block = Record<string, unknown>;
interface AnthropicMessage {
  role: "user" | "assistant";
  content: string | Block[];
}

function refuse(param: string, message: string): never {
  throw new SluiceError("invalid_request", `${message} (not supported on Anthropic routes)`, { param });
}

/** `data:<media type>;base64,<data>` → its parts. */
const DATA_URL_RE = /^data:([\w.+-]+\/[\w.+-]+);base64,(.*)$/s;

/** A Chat Completions content part → a Messages API content block (text and images). */
function toBlock(part: Record<string, unknown>, param: string): Block {
  if (part.type === "text") return { type: "text", text: typeof part.text === "string" ? part.text : "" };
  if (part.type === "image_url") {
    const image = isRecord(part.image_url) ? part.image_url : {};
    const url = typeof image.url === "string" ? image.url : "";
    const data = DATA_URL_RE.exec(url);
    if (data) return { type: "image", source: { type: "base64", media_type: data[1], data: data[2] } };
    if (/^https?:\/\//i.test(url)) return { type: "image", source: { type: "url", url } };
    refuse(`${param}.image_url.url`, "an image must be an http(s) URL or a base64 data: URL");
  }
  refuse(`${param}.type`, `content part type ${JSON.stringify(String(part.type)).slice(0, 60)}`);
}

/** Chat Completions-style messages → Messages API `system` + `messages` (text and image parts). */
export function toAnthropicMessages(messages: Message[]): { system?: string; messages: AnthropicMessage[] } {
  const system: string[] = [];
  const out: AnthropicMessage[] = [];
  const push = (role: "user" | "assistant", blocks: Block[]) => {
    const last = out[out.length - 1];
    if (last && last.role === role && Array.isArray(last.content)) last.content.push(...blocks);
    else out.push({ role, content: blocks });
  };
  messages.forEach((m, i) => {
    const parts = Array.isArray(m.content) ? (m.content as Record<string, unknown>[]) : undefined;
    const textOnly = !parts || parts.every((p) => p.type === "text");
    const text = messageText(m);
    if (m.role === "system" || m.role === "developer" || m.role === "tool") {
      // Anthropic takes only text here: an image in a system or tool message cannot be honoured.
      if (!textOnly) refuse(`messages.${i}.content`, `non-text content in a ${m.role} message`);
      if (m.role === "tool")
        push("user", [{ type: "tool_result", tool_use_id: m.tool_call_id ?? "", content: text }]);
      else if (text) system.push(text);
      return;
    }
    const blocks: Block[] = textOnly
      ? text
        ? [{ type: "text", text }]
        : []
      : (parts ?? []).map((p, k) => toBlock(p, `messages.${i}.content.${k}`));
    if (m.role === "assistant" && Array.isArray(m.tool_calls)) {
      for (const c of m.tool_calls as { id?: string; function?: { name?: string; arguments?: string } }[]) {
        let input: unknown = {};
        try {
          input = c.function?.arguments ? JSON.parse(c.function.arguments) : {};
        } catch {
          input = {};
        }
        blocks.push({ type: "tool_use", id: c.id ?? "", name: c.function?.name ?? "", input });
      }
    }
    if (blocks.length > 0) push(m.role === "assistant" ? "assistant" : "user", blocks);
  });
  return { ...(system.length ? { system: system.join("\n\n") } : {}), messages: out };
}

/** OpenAI `reasoning_effort` → an extended-thinking budget, in tokens (Anthropic's minimum is 1024). */
export const THINKING_BUDGET: Record<string, number> = {
  minimal: 1024,
  low: 2048,
  medium: 8192,
  high: 16384,
  xhigh: 32768,
};

/** Values of OpenAI fields that ask for nothing (their defaults): honoured by sending nothing. */
const NO_OP: Record<string, unknown> = {
  frequency_penalty: 0,
  presence_penalty: 0,
  logprobs: false,
  store: false,
  parallel_tool_calls: true,
};

/**
 * What the request's `upstream_extra` (the OpenAI fields Sluice forwards) becomes in a Messages
 * API body; throws `invalid_request` naming the first field that has no mapping.
 */
export function mapExtra(request: ProviderRequest, defaultMaxTokens: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const extra = request.upstream_extra ?? {};
  for (const [key, value] of Object.entries(extra)) {
    if (key in NO_OP && NO_OP[key] === value) continue;
    switch (key) {
      case "max_tokens":
      case "max_completion_tokens":
        break; // already request.max_tokens
      case "top_k":
        if (typeof value !== "number") refuse(key, "top_k must be a number");
        out.top_k = value;
        break;
      case "user":
        if (typeof value !== "string") refuse(key, "user must be a string");
        out.metadata = { user_id: value };
        break;
      case "parallel_tool_calls":
        // false (true is NO_OP): Anthropic's tool_choice.disable_parallel_tool_use.
        out.disable_parallel_tool_use = true;
        break;
      case "service_tier":
        if (value !== "auto") refuse(key, `service_tier ${JSON.stringify(value)}`);
        out.service_tier = "auto";
        break;
      case "reasoning_effort": {
        if (value === "none") break;
        const budget = typeof value === "string" ? THINKING_BUDGET[value] : undefined;
        if (budget === undefined) refuse(key, `reasoning_effort ${JSON.stringify(value)}`);
        // OpenAI's limit counts reasoning too: the budget fits inside it (Anthropic wants max_tokens > budget).
        const limit = request.max_tokens;
        const fitted = limit === undefined ? budget : Math.min(budget, limit - 1);
        if (fitted < 1024) refuse(key, "thinking needs max_completion_tokens above 1024");
        out.thinking = { type: "enabled", budget_tokens: fitted };
        if (limit === undefined) out.max_tokens = defaultMaxTokens + fitted;
        break;
      }
      case "response_format": {
        const format = isRecord(value) ? value : {};
        if (format.type === "text") break;
        const js = isRecord(format.json_schema) ? format.json_schema : undefined;
        if (format.type === "json_schema" && js && isRecord(js.schema)) {
          out.output_config = { format: { type: "json_schema", schema: js.schema } };
          break;
        }
        refuse(key, `response_format ${JSON.stringify(format.type ?? null)} (use json_schema with a schema)`);
        break;
      }
      default:
        refuse(key, `${key}`);
    }
  }
  return out;
}

function mapToolChoice(choice: unknown): unknown {
  if (choice === "auto") return { type: "auto" };
  if (choice === "required") return { type: "any" };
  if (choice === "none") return { type: "none" };
  if (isRecord(choice) && isRecord(choice.function) && typeof choice.function.name === "string") {
    return { type: "tool", name: choice.function.name };
  }
  return undefined;
}

export function mapStopReason(reason: string): FinishReason {
  switch (reason) {
    case "max_tokens":
    case "model_context_window_exceeded":
      return "length";
    case "tool_use":
      return "tool-calls";
    case "refusal":
      return "content-filter";
    default:
      return "stop"; // end_turn, stop_sequence, pause_turn, …
  }
}

export class AnthropicProvider implements Provider {
  readonly name: string;
  readonly #url: string;
  readonly #apiKey: string | undefined;
  readonly #version: string;
  readonly #headers: Record<string, string>;
  readonly #defaultMaxTokens: number;
  readonly #http: UpstreamHttp;

  constructor(opts: AnthropicOptions = {}) {
    this.name = opts.name ?? "anthropic";
    this.#url = `${(opts.baseUrl ?? ANTHROPIC_BASE_URL).replace(/\/+$/, "").replace(/\/v1$/, "")}/v1/messages`;
    this.#apiKey = opts.apiKey;
    this.#version = opts.version ?? ANTHROPIC_VERSION;
    this.#headers = opts.headers ?? {};
    this.#defaultMaxTokens = opts.defaultMaxTokens ?? 4096;
    this.#http = new UpstreamHttp({
      timeouts: opts.timeouts,
      maxEventChars: opts.maxEventChars,
      secrets: [opts.apiKey, ...Object.values(this.#headers)],
    });
  }

  redact(text: string): string {
    return this.#http.redact(text);
  }

  close(): Promise<void> {
    return this.#http.close();
  }

  buildBody(request: ProviderRequest): Record<string, unknown> {
    const { system, messages } = toAnthropicMessages(request.messages);
    const body: Record<string, unknown> = {
      model: request.upstream_model,
      max_tokens: request.max_tokens ?? this.#defaultMaxTokens,
      messages,
      stream: true,
    };
    if (system !== undefined) body.system = system;
    if (request.temperature !== undefined) body.temperature = Math.min(1, request.temperature);
    if (request.top_p !== undefined) body.top_p = request.top_p;
    if (request.stop !== undefined)
      body.stop_sequences = Array.isArray(request.stop) ? request.stop : [request.stop];
    if (request.tools?.length) {
      body.tools = request.tools.map((t) => ({
        name: t.function.name,
        ...(t.function.description ? { description: t.function.description } : {}),
        input_schema: t.function.parameters ?? { type: "object", properties: {} },
      }));
      const choice = mapToolChoice(request.tool_choice);
      if (choice !== undefined) body.tool_choice = choice;
      else if (request.tool_choice !== undefined && request.tool_choice !== null)
        refuse("tool_choice", "this tool_choice (use auto, none, required or a function name)");
    }
    const { disable_parallel_tool_use, ...mapped } = mapExtra(request, this.#defaultMaxTokens);
    Object.assign(body, mapped);
    if (disable_parallel_tool_use === true && request.tools?.length) {
      body.tool_choice = {
        ...((body.tool_choice as Block | undefined) ?? { type: "auto" }),
        disable_parallel_tool_use: true,
      };
    }
    if (request.demo !== undefined) body.demo = request.demo; // understood by `sluice mock-upstream`
    return body;
  }

  /** Refuses what has no Messages API mapping (buildBody would throw the same, later). */
  check(request: ProviderRequest): void {
    this.buildBody(request);
  }

  async *stream(request: ProviderRequest, ctx: ProviderContext): AsyncGenerator<ProviderEvent> {
    const { signal } = ctx;
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "text/event-stream",
      "anthropic-version": this.#version,
    };
    if (this.#apiKey) headers["x-api-key"] = this.#apiKey;
    Object.assign(headers, this.#headers);
    const redact = (t: string) => this.#http.redact(t);

    // Connect, timeouts, status → error, abort and the bounded SSE reader: upstream-http.ts.
    const sse = await this.#http.postSse({
      url: this.#url,
      headers,
      body: JSON.stringify(this.buildBody(request)),
      signal,
      now: ctx.clock.now(),
    });
    try {
      const state = new MessageState(redact);
      const messages = sse.messages;
      let more = true;
      read: while (more) {
        more = await sse.fill();
        try {
          for (const msg of messages) {
            if (msg.data.trim() === "") continue;
            let data: unknown;
            try {
              data = JSON.parse(msg.data);
            } catch {
              throw new SluiceError(
                "upstream_error",
                redact(`upstream sent an event that is not valid JSON: ${snippet(msg.data)}`),
              );
            }
            for (const ev of state.apply(msg.event ?? (isRecord(data) ? String(data.type) : ""), data)) {
              yield ev;
              if (signal.aborted) throw signal.reason;
            }
            if (state.stopped) break read;
          }
        } finally {
          messages.length = 0;
        }
      }
      if (!state.stopped)
        throw new SluiceError("upstream_error", "upstream stream was cut off (no message_stop)");
      for (const ev of state.final()) yield ev;
    } finally {
      sse.close();
    }
  }
}

interface ToolBlock {
  id: string;
  name: string;
  json: string;
}

/** Folds Messages API events into Sluice events. */
export class MessageState {
  constructor(private readonly redact: (text: string) => string = (t) => t) {}
  stopped = false;
  #inputTokens = 0;
  #outputTokens = 0;
  #sawUsage = false;
  #stopReason: string | undefined;
  readonly #tools = new Map<number, ToolBlock>();

  *apply(type: string, data: unknown): Generator<ProviderEvent> {
    const d = isRecord(data) ? data : {};
    switch (type) {
      case "message_start": {
        const usage = isRecord(d.message) && isRecord(d.message.usage) ? d.message.usage : undefined;
        if (usage) this.#usage(usage);
        return;
      }
      case "content_block_start": {
        const index = typeof d.index === "number" ? d.index : 0;
        const block = isRecord(d.content_block) ? d.content_block : {};
        if (block.type === "tool_use") {
          const tool = { id: String(block.id ?? `toolu_${index}`), name: String(block.name ?? ""), json: "" };
          this.#tools.set(index, tool);
          yield { type: "tool-call-delta", id: tool.id, name: tool.name, args_delta: "" };
        } else if (block.type === "text" && typeof block.text === "string" && block.text !== "") {
          yield { type: "text-delta", delta: block.text };
        } else if (block.type === "thinking" && typeof block.thinking === "string" && block.thinking !== "") {
          yield { type: "reasoning-delta", delta: block.thinking };
        }
        return;
      }
      case "content_block_delta": {
        const index = typeof d.index === "number" ? d.index : 0;
        const delta = isRecord(d.delta) ? d.delta : {};
        if (delta.type === "text_delta" && typeof delta.text === "string" && delta.text !== "") {
          yield { type: "text-delta", delta: delta.text };
        } else if (
          delta.type === "thinking_delta" &&
          typeof delta.thinking === "string" &&
          delta.thinking !== ""
        ) {
          yield { type: "reasoning-delta", delta: delta.thinking };
        } else if (delta.type === "input_json_delta" && typeof delta.partial_json === "string") {
          const tool = this.#tools.get(index);
          if (tool && delta.partial_json !== "") {
            tool.json += delta.partial_json;
            yield { type: "tool-call-delta", id: tool.id, args_delta: delta.partial_json };
          }
        }
        // signature_delta, citations_delta, …: nothing to stream
        return;
      }
      case "content_block_stop": {
        const index = typeof d.index === "number" ? d.index : 0;
        const tool = this.#tools.get(index);
        if (!tool) return;
        this.#tools.delete(index);
        let args: unknown = {};
        const text = tool.json.trim();
        try {
          args = text === "" ? {} : JSON.parse(text);
        } catch {
          throw new SluiceError(
            "upstream_error",
            this.redact(
              `upstream sent input for tool call ${tool.id} (${tool.name}) that is not valid JSON: ${snippet(text)}`,
            ),
          );
        }
        yield { type: "tool-call", id: tool.id, name: tool.name, args };
        return;
      }
      case "message_delta": {
        const delta = isRecord(d.delta) ? d.delta : {};
        if (typeof delta.stop_reason === "string") this.#stopReason = delta.stop_reason;
        if (isRecord(d.usage)) this.#usage(d.usage);
        return;
      }
      case "message_stop":
        this.stopped = true;
        return;
      case "error": {
        const err = isRecord(d.error) ? d.error : {};
        const kind = typeof err.type === "string" ? snippet(err.type, 64) : "error";
        const message = typeof err.message === "string" ? err.message : snippet(JSON.stringify(data));
        throw new SluiceError("upstream_error", this.redact(`upstream error (${kind}): ${message}`), {
          upstream_error_type: this.redact(kind),
        });
      }
      default:
        return; // ping, and event types this version does not know
    }
  }

  #usage(u: Record<string, unknown>): void {
    if (typeof u.input_tokens === "number") {
      this.#inputTokens =
        u.input_tokens +
        (typeof u.cache_read_input_tokens === "number" ? u.cache_read_input_tokens : 0) +
        (typeof u.cache_creation_input_tokens === "number" ? u.cache_creation_input_tokens : 0);
      this.#sawUsage = true;
    }
    if (typeof u.output_tokens === "number") {
      this.#outputTokens = u.output_tokens; // cumulative in message_delta
      this.#sawUsage = true;
    }
  }

  *final(): Generator<ProviderEvent> {
    if (this.#sawUsage) {
      yield {
        type: "usage",
        input_tokens: this.#inputTokens,
        output_tokens: this.#outputTokens,
        total_tokens: this.#inputTokens + this.#outputTokens,
      };
    }
    yield { type: "finish", reason: mapStopReason(this.#stopReason ?? "end_turn") };
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
