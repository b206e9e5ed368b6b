import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { SluiceError } from "@sluice/protocol";
import { afterEach, describe, expect, it } from "vitest";
import { type Clock, realClock } from "../src/core/clock.js";
import { listUpstreamModels, OpenAICompatibleProvider } from "../src/providers/openai-compatible.js";
import type { ProviderEvent, ProviderRequest } from "../src/providers/provider.js";

const fixture = (name: string): Buffer => readFileSync(new URL(`./fixtures/openai/${name}`, import.meta.url));

interface Recorded {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

interface TestUpstream {
  baseUrl: string;
  requests: Recorded[];
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void | Promise<void>;

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

/** A real HTTP server on 127.0.0.1:0 that records requests and answers with `handler`. */
async function upstream(handler: Handler): Promise<TestUpstream> {
  const requests: Recorded[] = [];
  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => {
      const body = Buffer.concat(parts).toString("utf8");
      requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      void handler(req, res, body);
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const tick = (ms = 2) => new Promise((r) => setTimeout(r, ms));

/** Writes `data` in `pieces` chunks cut at arbitrary byte offsets (mid-line, mid-UTF-8 sequence). */
async function writeInChunks(res: ServerResponse, data: Buffer, pieces = 7): Promise<void> {
  const size = Math.ceil(data.length / pieces);
  for (let at = 0; at < data.length; at += size) {
    res.write(data.subarray(at, at + size));
    await tick();
  }
}

/** Serves a fixture as an SSE response, in chunks. */
function serveFixture(name: string, transform: (b: Buffer) => Buffer = (b) => b): Handler {
  return async (_req, res) => {
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    await writeInChunks(res, transform(fixture(name)));
    res.end();
  };
}

const request = (extra: Partial<ProviderRequest> = {}): ProviderRequest => ({
  model: "my-route",
  upstream_model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Say hello" }],
  ...extra,
});

async function collect(
  provider: OpenAICompatibleProvider,
  req: ProviderRequest = request(),
  signal = new AbortController().signal,
  clock: Clock = realClock,
): Promise<{ events: ProviderEvent[]; error: unknown }> {
  const events: ProviderEvent[] = [];
  try {
    for await (const e of provider.stream(req, { signal, clock })) events.push(e);
    return { events, error: undefined };
  } catch (error) {
    return { events, error };
  }
}

function expectSluiceError(err: unknown, code: string): SluiceError {
  expect(err).toBeInstanceOf(SluiceError);
  const e = err as SluiceError;
  expect(e.code).toBe(code);
  return e;
}

describe("OpenAICompatibleProvider: recorded upstream streams", () => {
  it("OpenAI text with include_usage (multi-byte characters split across chunks)", async () => {
    const up = await upstream(serveFixture("openai-text.sse"));
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(error).toBeUndefined();
    expect(events).toEqual([
      { type: "text-delta", delta: "Hello" },
      { type: "text-delta", delta: "!" },
      { type: "text-delta", delta: " Café" },
      { type: "text-delta", delta: " ☕" },
      { type: "text-delta", delta: " —" },
      { type: "text-delta", delta: " how" },
      { type: "text-delta", delta: " can" },
      { type: "text-delta", delta: " I" },
      { type: "text-delta", delta: " help" },
      { type: "text-delta", delta: "?" },
      { type: "usage", input_tokens: 19, output_tokens: 10, reasoning_tokens: 0, total_tokens: 29 },
      { type: "finish", reason: "stop", service_tier: "default", system_fingerprint: "fp_0392822090" },
    ]);
  });

  it("the same stream with CRLF line endings and one byte per write parses identically", async () => {
    const crlf = (b: Buffer) => Buffer.from(b.toString("utf8").replaceAll("\n", "\r\n"), "utf8");
    const up = await upstream(async (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      const data = crlf(fixture("openai-text.sse"));
      // First 300 bytes one at a time (splits "data:", CR from LF, UTF-8 sequences), then the rest.
      for (let i = 0; i < 300; i++) res.write(data.subarray(i, i + 1));
      await tick();
      res.end(data.subarray(300));
    });
    const provider = new OpenAICompatibleProvider({ baseUrl: up.baseUrl });
    const { events, error } = await collect(provider);
    expect(error).toBeUndefined();
    expect(
      events
        .filter((e) => e.type === "text-delta")
        .map((e) => (e as { delta: string }).delta)
        .join(""),
    ).toBe("Hello! Café ☕ — how can I help?");
    expect(events.at(-1)).toEqual({
      type: "finish",
      reason: "stop",
      service_tier: "default",
      system_fingerprint: "fp_0392822090",
    });
  });

  it("OpenAI parallel tool calls with arguments in pieces", async () => {
    const up = await upstream(serveFixture("openai-tool-calls.sse"));
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(error).toBeUndefined();
    expect(events).toEqual([
      { type: "tool-call-delta", id: "call_8vQe1cX2p0mJ9RkT4uYhLw3N", name: "get_weather", args_delta: "" },
      { type: "tool-call-delta", id: "call_8vQe1cX2p0mJ9RkT4uYhLw3N", args_delta: '{"lo' },
      { type: "tool-call-delta", id: "call_8vQe1cX2p0mJ9RkT4uYhLw3N", args_delta: 'cation": "Pa' },
      { type: "tool-call-delta", id: "call_8vQe1cX2p0mJ9RkT4uYhLw3N", args_delta: 'ris, France"}' },
      { type: "tool-call-delta", id: "call_Zk2Hn7bVfQ4sW1xYp6Mc0aTe", name: "get_time", args_delta: "" },
      { type: "tool-call-delta", id: "call_Zk2Hn7bVfQ4sW1xYp6Mc0aTe", args_delta: '{"timezone"' },
      { type: "tool-call-delta", id: "call_Zk2Hn7bVfQ4sW1xYp6Mc0aTe", args_delta: ': "Europe/Paris"}' },
      {
        type: "tool-call",
        id: "call_8vQe1cX2p0mJ9RkT4uYhLw3N",
        name: "get_weather",
        args: { location: "Paris, France" },
      },
      {
        type: "tool-call",
        id: "call_Zk2Hn7bVfQ4sW1xYp6Mc0aTe",
        name: "get_time",
        args: { timezone: "Europe/Paris" },
      },
      { type: "usage", input_tokens: 82, output_tokens: 51, reasoning_tokens: 0, total_tokens: 133 },
      { type: "finish", reason: "tool-calls", service_tier: "default", system_fingerprint: "fp_f5bdcc3276" },
    ]);
  });

  it("DeepSeek/vLLM-style delta.reasoning_content, usage on the finishing chunk", async () => {
    const up = await upstream(serveFixture("deepseek-reasoning-content.sse"));
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(error).toBeUndefined();
    const reasoning = ["Okay", ",", " the", " user", " wants", " 2", "+", "2", ".", " That's", " 4", "."];
    expect(events).toEqual([
      ...reasoning.map((delta) => ({ type: "reasoning-delta", delta })),
      { type: "text-delta", delta: "2" },
      { type: "text-delta", delta: " +" },
      { type: "text-delta", delta: " 2" },
      { type: "text-delta", delta: " =" },
      { type: "text-delta", delta: " **4**" },
      { type: "usage", input_tokens: 14, output_tokens: 23, reasoning_tokens: 17, total_tokens: 37 },
      { type: "finish", reason: "stop", system_fingerprint: "fp_5417b77867_prod0225" },
    ]);
  });

  it("Ollama-style delta.reasoning, then a choices:[] usage chunk", async () => {
    const up = await upstream(serveFixture("ollama-reasoning.sse"));
    const { events, error } = await collect(
      new OpenAICompatibleProvider({ baseUrl: up.baseUrl }),
      request({ upstream_model: "qwen3:0.6b" }),
    );
    expect(error).toBeUndefined();
    expect(events).toEqual([
      { type: "reasoning-delta", delta: "Okay" },
      { type: "reasoning-delta", delta: "," },
      { type: "reasoning-delta", delta: " a" },
      { type: "reasoning-delta", delta: " greeting" },
      { type: "reasoning-delta", delta: "." },
      { type: "reasoning-delta", delta: " Reply" },
      { type: "reasoning-delta", delta: " briefly" },
      { type: "reasoning-delta", delta: "." },
      { type: "text-delta", delta: "Hi" },
      { type: "text-delta", delta: " there" },
      { type: "text-delta", delta: "!" },
      { type: "text-delta", delta: " 👋" },
      { type: "usage", input_tokens: 11, output_tokens: 15, total_tokens: 26 },
      { type: "finish", reason: "stop", system_fingerprint: "fp_ollama" },
    ]);
  });

  it("a mid-stream error event (after keep-alive comments) → upstream_error with its message", async () => {
    const up = await upstream(serveFixture("openrouter-mid-stream-error.sse"));
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(events).toEqual([
      { type: "text-delta", delta: "Once" },
      { type: "text-delta", delta: " upon" },
      { type: "text-delta", delta: " a" },
    ]);
    const e = expectSluiceError(error, "upstream_error");
    expect(e.message).toBe("upstream error: Provider returned error: upstream connection reset");
  });

  it("a stream cut off without [DONE] or finish_reason → upstream_error", async () => {
    const up = await upstream(serveFixture("llamacpp-cut-off.sse"));
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(events).toEqual([
      { type: "text-delta", delta: "The" },
      { type: "text-delta", delta: " quick" },
      { type: "text-delta", delta: " brown" },
    ]);
    const e = expectSluiceError(error, "upstream_error");
    expect(e.message).toBe("upstream stream was cut off");
  });

  it("a connection destroyed mid-body (no finish_reason) → upstream_error cut off", async () => {
    const up = await upstream(async (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(fixture("llamacpp-cut-off.sse"));
      await tick(20);
      res.socket?.destroy();
    });
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(events).toHaveLength(3);
    const e = expectSluiceError(error, "upstream_error");
    expect(e.message).toMatch(/^upstream stream was cut off/);
  });
});

describe("OpenAICompatibleProvider: edge cases of the chunk format", () => {
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", created: 1, model: "m", choices, ...extra })}\n\n`;
  const sse =
    (text: string): Handler =>
    (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(text);
    };

  it("ignores choices other than index 0 (n > 1) and maps length; clean end after finish_reason without [DONE]", async () => {
    const up = await upstream(
      sse(
        chunk([{ index: 0, delta: { content: "A" }, finish_reason: null }]) +
          chunk([{ index: 1, delta: { content: "B" }, finish_reason: null }]) +
          chunk([{ index: 1, delta: { content: "B2" }, finish_reason: "stop" }]) +
          chunk([{ index: 0, delta: { content: "A2" }, finish_reason: "length" }]),
      ),
    );
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(error).toBeUndefined();
    expect(events).toEqual([
      { type: "text-delta", delta: "A" },
      { type: "text-delta", delta: "A2" },
      { type: "finish", reason: "length" },
    ]);
  });

  it("maps content_filter and function_call finish reasons; unknown ones → stop", async () => {
    for (const [upstreamReason, reason] of [
      ["content_filter", "content-filter"],
      ["function_call", "tool-calls"],
      ["eos", "stop"],
    ] as const) {
      const up = await upstream(
        sse(`${chunk([{ index: 0, delta: {}, finish_reason: upstreamReason }])}data: [DONE]\n\n`),
      );
      const { events } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
      expect(events).toEqual([{ type: "finish", reason }]);
    }
  });

  it("invalid JSON in a data event → upstream_error", async () => {
    const up = await upstream(
      sse(`${chunk([{ index: 0, delta: { content: "ok" } }])}data: {"choices": [\n\n`),
    );
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(events).toEqual([{ type: "text-delta", delta: "ok" }]);
    expect(expectSluiceError(error, "upstream_error").message).toMatch(/not valid JSON/);
  });

  it("tool call arguments that do not parse → upstream_error saying so", async () => {
    const up = await upstream(
      sse(
        chunk([
          {
            index: 0,
            delta: {
              tool_calls: [
                { index: 0, id: "call_1", type: "function", function: { name: "f", arguments: '{"a":' } },
              ],
            },
          },
        ]) +
          chunk([{ index: 0, delta: {}, finish_reason: "tool_calls" }]) +
          "data: [DONE]\n\n",
      ),
    );
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(events).toEqual([{ type: "tool-call-delta", id: "call_1", name: "f", args_delta: '{"a":' }]);
    expect(expectSluiceError(error, "upstream_error").message).toBe(
      'upstream sent arguments for tool call call_1 (f) that are not valid JSON: {"a":',
    );
  });

  it("prefers reasoning_content when a server sends both reasoning fields", async () => {
    const up = await upstream(
      sse(
        `${chunk([{ index: 0, delta: { reasoning_content: "think", reasoning: "think" } }])}data: [DONE]\n\n`,
      ),
    );
    const { events } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(events).toEqual([
      { type: "reasoning-delta", delta: "think" },
      { type: "finish", reason: "stop" },
    ]);
  });
});

describe("OpenAICompatibleProvider: the request sent upstream", () => {
  it("POSTs /chat/completions with the upstream model, stream options, and no Sluice-only fields", async () => {
    const up = await upstream(serveFixture("openai-text.sse"));
    const provider = new OpenAICompatibleProvider({
      baseUrl: `${up.baseUrl}/`,
      apiKey: "sk-test-123",
      headers: { "x-title": "sluice-test" },
    });
    const tools = [
      {
        type: "function" as const,
        function: { name: "get_weather", parameters: { type: "object", properties: {} } },
      },
    ];
    const { error } = await collect(
      provider,
      request({
        max_tokens: 64,
        temperature: 0.2,
        top_p: 0.9,
        stop: ["\n\n"],
        tools,
        tool_choice: "auto",
        timeout_ms: 30_000,
        on_disconnect: "cancel",
        metadata: { user: "u1" },
        demo: { seed: 7, tokens_per_s: 500 },
      }),
    );
    expect(error).toBeUndefined();
    expect(up.requests).toHaveLength(1);
    const [sent] = up.requests;
    expect(sent?.method).toBe("POST");
    expect(sent?.url).toBe("/v1/chat/completions");
    expect(sent?.headers["content-type"]).toBe("application/json");
    expect(sent?.headers.accept).toBe("text/event-stream");
    expect(sent?.headers.authorization).toBe("Bearer sk-test-123");
    expect(sent?.headers["x-title"]).toBe("sluice-test");
    expect(JSON.parse(sent?.body ?? "")).toEqual({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Say hello" }],
      max_tokens: 64,
      temperature: 0.2,
      top_p: 0.9,
      stop: ["\n\n"],
      tools,
      tool_choice: "auto",
      demo: { seed: 7, tokens_per_s: 500 },
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it("sends no Authorization header without an apiKey and omits absent optional fields", async () => {
    const up = await upstream(serveFixture("openai-text.sse"));
    await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    const [sent] = up.requests;
    expect(sent?.headers.authorization).toBeUndefined();
    expect(JSON.parse(sent?.body ?? "")).toEqual({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Say hello" }],
      stream: true,
      stream_options: { include_usage: true },
    });
  });
});

describe("OpenAICompatibleProvider: HTTP and connection errors", () => {
  it("429 with Retry-After seconds → upstream_error with status, message and retry_after_ms", async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(429, { "content-type": "application/json", "retry-after": "7" });
      res.end(
        JSON.stringify({
          error: {
            message:
              "Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): Limit 3.",
            type: "requests",
            param: null,
            code: "rate_limit_exceeded",
          },
        }),
      );
    });
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(events).toEqual([]);
    const e = expectSluiceError(error, "upstream_error");
    expect(e.message).toBe(
      "upstream answered 429 Too Many Requests: Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): Limit 3.",
    );
    expect(e.details).toEqual({ upstream_status: 429, retry_after_ms: 7000 });
  });

  it("Retry-After as an HTTP date is measured from the clock; retry-after-ms wins when present", async () => {
    const now = Date.parse("2025-04-22T12:00:00Z");
    const clock: Clock = { now: () => now, sleep: realClock.sleep };
    const upDate = await upstream((_req, res) => {
      res.writeHead(503, { "retry-after": new Date(now + 30_000).toUTCString() });
      res.end("Service Unavailable");
    });
    const a = await collect(
      new OpenAICompatibleProvider({ baseUrl: upDate.baseUrl }),
      request(),
      undefined,
      clock,
    );
    const ea = expectSluiceError(a.error, "upstream_error");
    expect(ea.message).toBe("upstream answered 503 Service Unavailable: Service Unavailable");
    expect(ea.details).toEqual({ upstream_status: 503, retry_after_ms: 30_000 });

    const upMs = await upstream((_req, res) => {
      res.writeHead(429, {
        "retry-after": "2",
        "retry-after-ms": "1500",
        "content-type": "application/json",
      });
      res.end('{"error":{"message":"slow down","type":"tokens","code":"rate_limit_exceeded"}}');
    });
    const b = await collect(new OpenAICompatibleProvider({ baseUrl: upMs.baseUrl }));
    expect(expectSluiceError(b.error, "upstream_error").details).toEqual({
      upstream_status: 429,
      retry_after_ms: 1500,
    });
  });

  it("500 with an OpenAI error body → upstream_error with the upstream's message, no retry_after_ms", async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(500, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          error: {
            message: "The server had an error while processing your request. Sorry about that!",
            type: "server_error",
            param: null,
            code: null,
          },
        }),
      );
    });
    const { error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    const e = expectSluiceError(error, "upstream_error");
    expect(e.message).toBe(
      "upstream answered 500 Internal Server Error: The server had an error while processing your request. Sorry about that!",
    );
    expect(e.details).toEqual({ upstream_status: 500 });
    expect(e.retryable).toBe(true);
  });

  it("a 200 JSON error body instead of a stream → upstream_error", async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"error":"model \\"nope\\" not found, try pulling it first"}');
    });
    const { error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(expectSluiceError(error, "upstream_error").message).toBe(
      'upstream error: model "nope" not found, try pulling it first',
    );
  });

  it("connection refused (closed port) → upstream_unreachable", async () => {
    const up = await upstream(() => {});
    await up.close();
    const { events, error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expect(events).toEqual([]);
    const e = expectSluiceError(error, "upstream_unreachable");
    expect(e.message).toMatch(
      /^cannot reach upstream http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions: .*ECONNREFUSED/,
    );
  });

  it("unknown host (DNS failure) → upstream_unreachable", async () => {
    const { error } = await collect(
      new OpenAICompatibleProvider({ baseUrl: "http://sluice-no-such-host.invalid/v1" }),
    );
    expect(expectSluiceError(error, "upstream_unreachable").message).toMatch(/ENOTFOUND|EAI_AGAIN/);
  });

  it("connection reset before any response → upstream_unreachable", async () => {
    const up = await upstream((req) => {
      req.socket.destroy();
    });
    const { error } = await collect(new OpenAICompatibleProvider({ baseUrl: up.baseUrl }));
    expectSluiceError(error, "upstream_unreachable");
  });

  it("no response headers within timeouts.first_byte_ms → upstream_timeout, and the request is closed", async () => {
    let closed!: () => void;
    const closedP = new Promise<void>((r) => {
      closed = r;
    });
    const up = await upstream((_req, res) => {
      res.on("close", () => closed());
    });
    const started = Date.now();
    const { error } = await collect(
      new OpenAICompatibleProvider({ baseUrl: up.baseUrl, timeouts: { first_byte_ms: 150 } }),
    );
    const e = expectSluiceError(error, "upstream_timeout");
    expect(e.message).toMatch(/sent nothing within 150 ms \(first_byte_ms\)/);
    expect(e.details).toEqual({ timeout: "first_byte" });
    expect(e.retryable).toBe(true);
    expect(Date.now() - started).toBeLessThan(2000);
    await closedP;
  });
});

describe("OpenAICompatibleProvider: cancel", () => {
  /** An upstream that sends the first chunks, then holds the stream open and reports when it closes. */
  async function hangingUpstream() {
    let resolveClosed!: (v: { finished: boolean }) => void;
    const closed = new Promise<{ finished: boolean }>((r) => {
      resolveClosed = r;
    });
    const text = fixture("openai-text.sse").toString("utf8");
    const firstTwo = `${text.split("\n\n").slice(0, 2).join("\n\n")}\n\n`;
    const up = await upstream((req, res) => {
      // Not req.on("close"): an IncomingMessage closes as soon as its body has been read.
      // The response (and the socket under it) close only when the client goes away.
      res.on("close", () => resolveClosed({ finished: res.writableFinished }));
      req.socket.on("close", () => resolveClosed({ finished: res.writableFinished }));
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(firstTwo);
      // …and nothing more: a slow generation.
    });
    return { up, closed };
  }

  it("abort while the reader waits for the body → rejects with the reason promptly; the upstream sees its request closed", async () => {
    const { up, closed } = await hangingUpstream();
    const controller = new AbortController();
    const provider = new OpenAICompatibleProvider({ baseUrl: up.baseUrl });
    const it = provider
      .stream(request(), { signal: controller.signal, clock: realClock })
      [Symbol.asyncIterator]();
    expect(await it.next()).toEqual({ done: false, value: { type: "text-delta", delta: "Hello" } });
    const pending = it.next(); // nothing more is coming: this read is pending on the body
    await tick(30);
    const reason = new Error("cancelled by test");
    const t0 = Date.now();
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
    expect(Date.now() - t0).toBeLessThan(500);
    expect(await closed).toEqual({ finished: false });
    // The iterator is done after the rejection.
    expect(await it.next()).toEqual({ done: true, value: undefined });
  });

  it("abort between reads (consumer busy) → the next read rejects with the reason; the upstream sees its request closed", async () => {
    const { up, closed } = await hangingUpstream();
    const controller = new AbortController();
    const provider = new OpenAICompatibleProvider({ baseUrl: up.baseUrl });
    const events: ProviderEvent[] = [];
    const reason = new DOMException("client cancelled", "AbortError");
    let caught: unknown;
    try {
      for await (const e of provider.stream(request(), { signal: controller.signal, clock: realClock })) {
        events.push(e);
        controller.abort(reason);
      }
    } catch (err) {
      caught = err;
    }
    expect(caught).toBe(reason);
    expect(events).toEqual([{ type: "text-delta", delta: "Hello" }]);
    expect(await closed).toEqual({ finished: false });
  });

  it("abort before the upstream answered → rejects with the reason; the upstream sees its request closed", async () => {
    let onRequest!: () => void;
    const requested = new Promise<void>((r) => {
      onRequest = r;
    });
    let onClosed!: () => void;
    const closed = new Promise<void>((r) => {
      onClosed = r;
    });
    const up = await upstream((_req, res) => {
      res.on("close", () => onClosed());
      onRequest(); // never answers
    });
    const controller = new AbortController();
    const provider = new OpenAICompatibleProvider({ baseUrl: up.baseUrl });
    const it = provider
      .stream(request(), { signal: controller.signal, clock: realClock })
      [Symbol.asyncIterator]();
    const first = it.next();
    await requested;
    const reason = new Error("deadline");
    controller.abort(reason);
    await expect(first).rejects.toBe(reason);
    await closed;
  });

  it("an already-aborted signal → rejects with its reason without calling the upstream", async () => {
    const up = await upstream(serveFixture("openai-text.sse"));
    const controller = new AbortController();
    const reason = new Error("too late");
    controller.abort(reason);
    const { error } = await collect(
      new OpenAICompatibleProvider({ baseUrl: up.baseUrl }),
      request(),
      controller.signal,
    );
    expect(error).toBe(reason);
    expect(up.requests).toHaveLength(0);
  });

  it("a consumer that stops iterating (return) closes the upstream request", async () => {
    const { up, closed } = await hangingUpstream();
    const provider = new OpenAICompatibleProvider({ baseUrl: up.baseUrl });
    for await (const e of provider.stream(request(), {
      signal: new AbortController().signal,
      clock: realClock,
    })) {
      expect(e).toEqual({ type: "text-delta", delta: "Hello" });
      break;
    }
    expect(await closed).toEqual({ finished: false });
  });
});

describe("listUpstreamModels", () => {
  it("GETs /models and returns the ids", async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          object: "list",
          data: [
            { id: "llama3.2:latest", object: "model", created: 1745000000, owned_by: "library" },
            { id: "qwen3:0.6b", object: "model", created: 1745000001, owned_by: "library" },
          ],
        }),
      );
    });
    expect(await listUpstreamModels(`${up.baseUrl}/`, "sk-x")).toEqual(["llama3.2:latest", "qwen3:0.6b"]);
    expect(up.requests[0]?.method).toBe("GET");
    expect(up.requests[0]?.url).toBe("/v1/models");
    expect(up.requests[0]?.headers.authorization).toBe("Bearer sk-x");
  });

  it("maps a 401 to upstream_error and a closed port to upstream_unreachable", async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(
        '{"error":{"message":"Incorrect API key provided: sk-x.","type":"invalid_request_error","code":"invalid_api_key"}}',
      );
    });
    const err = await listUpstreamModels(up.baseUrl, "sk-x").catch((e: unknown) => e);
    const e = expectSluiceError(err, "upstream_error");
    // The key the upstream quoted is redacted (it is the key this call sent).
    expect(e.message).toBe("upstream answered 401 Unauthorized: Incorrect API key provided: [REDACTED].");
    expect(e.details).toEqual({ upstream_status: 401 });

    await up.close();
    expectSluiceError(await listUpstreamModels(up.baseUrl).catch((e: unknown) => e), "upstream_unreachable");
  });

  it("rejects with the signal's reason when aborted", async () => {
    const up = await upstream(() => {});
    const controller = new AbortController();
    const reason = new Error("stop");
    const p = listUpstreamModels(up.baseUrl, undefined, controller.signal);
    await tick(20);
    controller.abort(reason);
    await expect(p).rejects.toBe(reason);
  });
});
