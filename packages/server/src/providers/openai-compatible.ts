/**
 * OpenAI Chat Completions provider: streams from any OpenAI-compatible `/chat/completions`
 * endpoint (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio, Groq, OpenRouter, and
 * `sluice mock-upstream`) and maps its chunks to Sluice events.
 *
 * Cancel reaches the upstream: the context's signal aborts the HTTP request, and the
 * provider rethrows the signal's reason unchanged.
 */

import type { FinishReason, ToolCallEvent, UsageEvent } from "@sluice/protocol";
import { SluiceError } from "@sluice/protocol";
import { ChunkScanner, type ScannedTextChunk, scannedField } from "./openai-chunk-scan.js";
import {
  type Provider,
  type ProviderContext,
  type ProviderEvent,
  type ProviderRequest,
  type ProviderSink,
  pull,
} from "./provider.js";
import {
  describe,
  type EventSourceMessage,
  errorMessageOf,
  errorMessageOfBody,
  originOf,
  snippet,
  UpstreamHttp,
  type UpstreamTimeouts,
} from "./upstream-http.js";

export interface OpenAICompatibleOptions {
  /** Provider name (in logs and stream metadata). Default `openai-compatible`. */
  name?: string;
  /** Base URL up to and including the version, e.g. `http://127.0.0.1:11434/v1`. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Extra request headers (applied last, so they may override the defaults). */
  headers?: Record<string, string>;
  /** Connect, first-byte and idle timeouts (upstream-http.ts DEFAULT_UPSTREAM_TIMEOUTS). */
  timeouts?: Partial<UpstreamTimeouts>;
  /** The most characters one upstream SSE event may hold (default 1 MiB). */
  maxEventChars?: number;
}

const LIST_MODELS_TIMEOUT_MS = 15_000;

/** The `data` event name of an OpenAI `delta.audio` piece (formats/openai.ts reads it back). */
export const OPENAI_AUDIO = "openai-audio";

export class OpenAICompatibleProvider implements Provider {
  readonly name: string;
  readonly #baseUrl: string;
  readonly #apiKey: string | undefined;
  readonly #headers: Record<string, string>;
  readonly #http: UpstreamHttp;

  constructor(options: OpenAICompatibleOptions) {
    this.name = options.name ?? "openai-compatible";
    this.#baseUrl = trimSlash(options.baseUrl);
    this.#apiKey = options.apiKey;
    this.#headers = options.headers ?? {};
    this.#http = new UpstreamHttp({
      timeouts: options.timeouts,
      maxEventChars: options.maxEventChars,
      secrets: [options.apiKey, ...Object.values(this.#headers)],
    });
  }

  redact(text: string): string {
    return this.#http.redact(text);
  }

  close(): Promise<void> {
    return this.#http.close();
  }

  /**
   * The JSON body sent upstream for a request (exported for tests and debugging): the request's
   * `upstream_extra` fields verbatim, then the fields Sluice owns (model, messages, the typed
   * parameters, streaming) on top.
   */
  buildBody(request: ProviderRequest): Record<string, unknown> {
    const extra = request.upstream_extra ?? {};
    const body: Record<string, unknown> = { ...extra };
    body.model = request.upstream_model;
    body.messages = request.messages;
    // The client's own name for the limit wins (reasoning models refuse `max_tokens`); without
    // one (a /v1/streams request), `max_tokens`.
    const namedLimit = "max_tokens" in extra || "max_completion_tokens" in extra;
    if (request.max_tokens !== undefined && !namedLimit) body.max_tokens = request.max_tokens;
    if (request.temperature !== undefined) body.temperature = request.temperature;
    if (request.top_p !== undefined) body.top_p = request.top_p;
    if (request.stop !== undefined) body.stop = request.stop;
    if (request.tools !== undefined) body.tools = request.tools;
    if (request.tool_choice !== undefined) body.tool_choice = request.tool_choice;
    if (request.demo !== undefined) body.demo = request.demo;
    body.stream = true;
    const streamOptions = isRecord(extra.stream_options) ? extra.stream_options : {};
    body.stream_options = { ...streamOptions, include_usage: true };
    return body;
  }

  stream(request: ProviderRequest, ctx: ProviderContext): AsyncGenerator<ProviderEvent> {
    return pull((sink) => this.push(request, ctx, sink));
  }

  /**
   * The hot path: per upstream read, the events of every chunk it held go to `sink` in one
   * call (the runner appends them as one batch). See Provider.push.
   */
  async push(request: ProviderRequest, ctx: ProviderContext, sink: ProviderSink): Promise<void> {
    const { signal } = ctx;
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "text/event-stream",
    };
    if (this.#apiKey) headers.authorization = `Bearer ${this.#apiKey}`;
    Object.assign(headers, this.#headers);
    const redact = (t: string) => this.#http.redact(t);

    // Connect, timeouts, status → error, abort and the bounded SSE reader: upstream-http.ts.
    const sse = await this.#http.postSse({
      url: `${this.#baseUrl}/chat/completions`,
      headers,
      body: JSON.stringify(this.buildBody(request)),
      signal,
      now: ctx.clock.now(),
      ...(ctx.mark ? { mark: ctx.mark } : {}),
    });
    try {
      const messages = sse.messages;
      const reader = new ChunkReader(redact);
      const state = reader.state;
      const events: ProviderEvent[] = [];
      const stamp = request.demo?.stamp === true;
      let sawDone = false;
      let more = true;
      while (more) {
        try {
          more = await sse.fill();
        } catch (err) {
          // The connection broke mid-body: with a finish_reason already in hand the answer is
          // complete; otherwise it was cut off (the error says so).
          if (err instanceof SluiceError && err.details?.cut === true && state.finishReason !== undefined)
            break;
          throw err;
        }
        events.length = 0;
        try {
          for (let k = 0; k < messages.length; k++) {
            const message = messages[k] as EventSourceMessage;
            const data = message.data;
            if (data.trim() === "") continue;
            if (data.trim() === "[DONE]") {
              sawDone = true;
              break;
            }
            if (message.event === "error") {
              // What came before the error in this read is handed over first (as if read alone).
              if (events.length > 0) {
                const held = handOver(sink, events, signal);
                if (held) await held;
              }
              const msg = errorMessageOf(data) ?? snippet(data);
              throw new SluiceError("upstream_error", redact(`upstream error: ${msg}`));
            }
            const from = events.length;
            let chunkDue: unknown;
            try {
              chunkDue = reader.read(data, events);
            } catch (err) {
              events.length = from;
              if (events.length > 0) {
                const held = handOver(sink, events, signal);
                if (held) await held;
              }
              throw err;
            }
            // `demo.stamp` (benchmarks): carry mock-upstream's `sluice_due` onto delta events as `due`.
            if (stamp && typeof chunkDue === "number") {
              for (let e = from; e < events.length; e++) {
                const event = events[e] as ProviderEvent;
                if (event.type.endsWith("-delta")) events[e] = Object.assign({}, event, { due: chunkDue });
              }
            }
          }
        } finally {
          messages.length = 0;
        }
        if (events.length > 0) {
          const held = handOver(sink, events, signal);
          if (held) await held;
        }
        if (sawDone) break;
      }
      // Whatever follows [DONE] (normally just the end of the body) is drained, bounded, so the
      // upstream connection goes back to the pool instead of being closed.
      if (sawDone) sse.drainRest();

      if (!sawDone && state.finishReason === undefined) {
        throw new SluiceError("upstream_error", "upstream stream was cut off");
      }
      events.length = 0;
      try {
        for (const event of state.final()) events.push(event);
      } catch (err) {
        // The calls before a malformed one are handed over first, as the iterator gave them.
        if (events.length > 0) {
          const held = handOver(sink, events, signal);
          if (held) await held;
        }
        throw err;
      }
      const held = handOver(sink, events, signal);
      if (held) await held;
    } finally {
      // Stopped early (error, abort, consumer gone): close the upstream body.
      sse.close();
    }
  }
}

/**
 * One read's events to the sink; an abort (cancel, or the sink stopping at max_tokens) ends
 * here. Not async: with the runner's synchronous sink it costs no promise and no await per read
 * (the caller awaits only a promise the sink returned).
 */
function handOver(
  sink: ProviderSink,
  events: ProviderEvent[],
  signal: AbortSignal,
): Promise<void> | undefined {
  const held = sink(events);
  if (held !== undefined) {
    return held.then(() => {
      if (signal.aborted) throw signal.reason;
    });
  }
  if (signal.aborted) throw signal.reason;
  return undefined;
}

interface ToolCallState {
  id: string;
  name: string | undefined;
  args: string;
  /** Whether the name was already sent in a tool-call-delta. */
  nameSent: boolean;
}

/**
 * One stream's chunks → events: plain text-delta chunks through the scanner
 * (openai-chunk-scan.ts), any other chunk through JSON.parse and ChunkState.apply — the same
 * events and state either way. Exported for tests (`fast: false` is the full parse only).
 */
export class ChunkReader {
  readonly state: ChunkState;
  readonly #scanner: ChunkScanner | undefined;
  readonly #redact: (text: string) => string;

  constructor(redact: (text: string) => string, fast = true) {
    this.#redact = redact;
    this.state = new ChunkState(redact);
    this.#scanner = fast ? new ChunkScanner() : undefined;
  }

  /** Appends the events of one SSE `data` payload to `out`; returns the chunk's `sluice_due`. */
  read(data: string, out: ProviderEvent[]): unknown {
    const scanned = this.#scanner?.scan(data);
    if (scanned !== undefined) return this.state.applyText(scanned, out);
    let chunk: unknown;
    try {
      chunk = JSON.parse(data);
    } catch {
      throw new SluiceError(
        "upstream_error",
        this.#redact(`upstream sent an event that is not valid JSON: ${snippet(data)}`),
      );
    }
    this.state.apply(chunk, out);
    return (chunk as Record<string, unknown>).sluice_due;
  }
}

/** Accumulates what a stream of chunks says; appends events as they can be emitted. */
export class ChunkState {
  constructor(private readonly redact: (text: string) => string) {}
  finishReason: FinishReason | undefined;
  #usage: UsageEvent | undefined;
  #fingerprint: string | undefined;
  #serviceTier: string | undefined;
  readonly #tools = new Map<number, ToolCallState>();
  #lastToolIndex = 0;

  /** A plain text-delta chunk as ChunkReader's scanner read it (no `error`, one choice whose
   * delta is only `content`): what `apply` does with such a chunk. Returns its `sluice_due`. */
  applyText(chunk: ScannedTextChunk, out: ProviderEvent[]): unknown {
    const usage = scannedField(chunk, "usage");
    if (isRecord(usage)) this.#usage = mapUsage(usage);
    const fingerprint = scannedField(chunk, "system_fingerprint");
    if (typeof fingerprint === "string") this.#fingerprint = fingerprint;
    const tier = scannedField(chunk, "service_tier");
    if (typeof tier === "string") this.#serviceTier = tier;
    if (chunk.content !== "") out.push({ type: "text-delta", delta: chunk.content });
    return scannedField(chunk, "sluice_due");
  }

  apply(chunk: unknown, out: ProviderEvent[]): void {
    if (!isRecord(chunk)) {
      throw new SluiceError(
        "upstream_error",
        this.redact(`upstream sent an unexpected event: ${snippet(JSON.stringify(chunk))}`),
      );
    }
    if (chunk.error !== undefined && chunk.error !== null) {
      const msg = errorMessageOfBody(chunk) ?? snippet(JSON.stringify(chunk.error));
      throw new SluiceError("upstream_error", this.redact(`upstream error: ${msg}`));
    }
    if (isRecord(chunk.usage)) this.#usage = mapUsage(chunk.usage);
    // Said on every chunk; kept for the finish event (the last value wins).
    if (typeof chunk.system_fingerprint === "string") this.#fingerprint = chunk.system_fingerprint;
    if (typeof chunk.service_tier === "string") this.#serviceTier = chunk.service_tier;

    const choices = Array.isArray(chunk.choices) ? chunk.choices : [];
    const choice = choices.find((c): c is Record<string, unknown> => isRecord(c) && (c.index ?? 0) === 0);
    if (!choice) return;
    const delta = isRecord(choice.delta) ? choice.delta : undefined;
    if (delta) {
      const reasoning = nonEmptyString(delta.reasoning_content) ?? nonEmptyString(delta.reasoning);
      if (reasoning !== undefined) out.push({ type: "reasoning-delta", delta: reasoning });
      const logprobs = isRecord(choice.logprobs) ? choice.logprobs : undefined;
      const content = nonEmptyString(delta.content);
      if (content !== undefined) {
        const lp = Array.isArray(logprobs?.content) ? logprobs.content : undefined;
        out.push(
          lp ? { type: "text-delta", delta: content, logprobs: lp } : { type: "text-delta", delta: content },
        );
      }
      // Audio output (`modalities: ["audio"]`): OpenAI-specific, kept whole as application data;
      // the openai format gives it back as `delta.audio`, other formats as a `data` part.
      if (isRecord(delta.audio)) out.push({ type: "data", name: OPENAI_AUDIO, value: delta.audio });
      const refusal = nonEmptyString(delta.refusal);
      if (refusal !== undefined) {
        const lp = Array.isArray(logprobs?.refusal) ? logprobs.refusal : undefined;
        out.push({ type: "text-delta", delta: refusal, refusal: true, ...(lp ? { logprobs: lp } : {}) });
      }
      if (Array.isArray(delta.tool_calls)) {
        for (const fragment of delta.tool_calls) {
          if (!isRecord(fragment)) continue;
          const event = this.#toolFragment(fragment);
          if (event) out.push(event);
        }
      }
    }
    if (typeof choice.finish_reason === "string" && choice.finish_reason !== "") {
      this.finishReason = mapFinishReason(choice.finish_reason);
    }
  }

  #toolFragment(fragment: Record<string, unknown>): ProviderEvent | undefined {
    const id = nonEmptyString(fragment.id);
    let index: number;
    if (typeof fragment.index === "number") {
      index = fragment.index;
    } else if (id !== undefined) {
      // No index (some servers): a new id starts a new call.
      const known = [...this.#tools.entries()].find(([, t]) => t.id === id);
      index = known ? known[0] : this.#tools.size;
    } else {
      index = this.#lastToolIndex;
    }
    this.#lastToolIndex = index;

    const fn = isRecord(fragment.function) ? fragment.function : {};
    const name = nonEmptyString(fn.name);
    const rawArgs = fn.arguments;
    const argsDelta =
      typeof rawArgs === "string"
        ? rawArgs
        : rawArgs !== undefined && rawArgs !== null
          ? JSON.stringify(rawArgs)
          : "";

    let tool = this.#tools.get(index);
    const isNew = tool === undefined;
    if (!tool) {
      tool = { id: id ?? `call_${index}`, name, args: "", nameSent: false };
      this.#tools.set(index, tool);
    } else if (tool.name === undefined && name !== undefined) {
      tool.name = name;
    }
    tool.args += argsDelta;

    const sendName = tool.name !== undefined && !tool.nameSent;
    if (!isNew && !sendName && argsDelta === "") return undefined;
    const event: ProviderEvent = { type: "tool-call-delta", id: tool.id, args_delta: argsDelta };
    if (sendName) {
      event.name = tool.name;
      tool.nameSent = true;
    }
    return event;
  }

  /** tool-call events, usage, finish: what the end of the stream emits. */
  *final(): Generator<ProviderEvent> {
    const tools = [...this.#tools.entries()].sort((a, b) => a[0] - b[0]);
    for (const [, tool] of tools) {
      if (tool.name === undefined) {
        throw new SluiceError("upstream_error", `upstream sent tool call ${tool.id} without a function name`);
      }
      let args: unknown;
      const text = tool.args.trim();
      try {
        args = text === "" ? {} : JSON.parse(text);
      } catch {
        throw new SluiceError(
          "upstream_error",
          this.redact(
            `upstream sent arguments for tool call ${tool.id} (${tool.name}) that are not valid JSON: ${snippet(text)}`,
          ),
        );
      }
      const event: ToolCallEvent = { type: "tool-call", id: tool.id, name: tool.name, args };
      yield event;
    }
    if (this.#usage) yield this.#usage;
    yield {
      type: "finish",
      reason: this.finishReason ?? "stop",
      ...(this.#fingerprint !== undefined ? { system_fingerprint: this.#fingerprint } : {}),
      ...(this.#serviceTier !== undefined ? { service_tier: this.#serviceTier } : {}),
    };
  }
}

function mapFinishReason(reason: string): FinishReason {
  switch (reason) {
    case "length":
      return "length";
    case "tool_calls":
    case "function_call":
      return "tool-calls";
    case "content_filter":
      return "content-filter";
    default:
      return "stop";
  }
}

function mapUsage(usage: Record<string, unknown>): UsageEvent {
  const input = finiteNumber(usage.prompt_tokens) ?? 0;
  const output = finiteNumber(usage.completion_tokens) ?? 0;
  const event: UsageEvent = { type: "usage", input_tokens: input, output_tokens: output };
  const details = usage.completion_tokens_details;
  const reasoning = isRecord(details) ? finiteNumber(details.reasoning_tokens) : undefined;
  if (reasoning !== undefined) event.reasoning_tokens = reasoning;
  event.total_tokens = finiteNumber(usage.total_tokens) ?? input + output;
  return event;
}

/**
 * The model ids an OpenAI-compatible server offers (`GET {baseUrl}/models`).
 * Used by `sluice serve --upstream URL` to add a route per model.
 */
export async function listUpstreamModels(
  baseUrl: string,
  apiKey?: string,
  signal?: AbortSignal,
): Promise<string[]> {
  if (signal?.aborted) throw signal.reason;
  const url = `${trimSlash(baseUrl)}/models`;
  const headers: Record<string, string> = { accept: "application/json" };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  const http = new UpstreamHttp({
    timeouts: { first_byte_ms: LIST_MODELS_TIMEOUT_MS, idle_ms: LIST_MODELS_TIMEOUT_MS },
    secrets: [apiKey],
    spares: 0, // one call: nothing to connect ahead for
  });
  const signals = [AbortSignal.timeout(LIST_MODELS_TIMEOUT_MS * 2), ...(signal ? [signal] : [])];
  let text: string;
  try {
    text = await http.getText({ url, headers, signal: AbortSignal.any(signals), now: Date.now() });
  } finally {
    void http.close().catch(() => {});
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new SluiceError(
      "upstream_error",
      `upstream ${originOf(url)} did not answer with JSON: ${describe(err)}`,
    );
  }
  const data = isRecord(body) ? body.data : undefined;
  if (!Array.isArray(data)) {
    throw new SluiceError(
      "upstream_error",
      `upstream ${originOf(url)} answered without a model list (no "data" array)`,
    );
  }
  const ids: string[] = [];
  for (const entry of data) {
    if (isRecord(entry) && typeof entry.id === "string" && entry.id !== "") ids.push(entry.id);
  }
  return ids;
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function nonEmptyString(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function finiteNumber(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}
