import { type DemoOptions, planDemo } from "@sluice/server/demo";
import { EventSourceParserStream } from "eventsource-parser/stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type MockRequestRecord, type MockUpstream, startMockUpstream } from "../src/index.js";

let mock: MockUpstream;
const logLines: string[] = [];

beforeAll(async () => {
  mock = await startMockUpstream({ port: 0, log: (line) => logLines.push(line) });
});
afterAll(async () => {
  await mock.close();
});

const PROMPT = "How should I size a connection pool for PostgreSQL?";
const FAST: DemoOptions = { ttft_ms: 2, tokens_per_s: 2000 };

function body(demo: DemoOptions, extra: Record<string, unknown> = {}) {
  return {
    model: "demo",
    stream: true,
    messages: [{ role: "user", content: PROMPT }],
    demo: { ...FAST, ...demo },
    ...extra,
  };
}

function post(payload: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${mock.url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof payload === "string" ? payload : JSON.stringify(payload),
    ...init,
  });
}

/** Every SSE `data:` of a response, parsed by eventsource-parser. */
async function readData(res: Response, stopAfter = Number.POSITIVE_INFINITY): Promise<string[]> {
  const reader = (res.body as ReadableStream<Uint8Array>)
    .pipeThrough(new TextDecoderStream() as unknown as ReadableWritablePair<string, Uint8Array>)
    .pipeThrough(new EventSourceParserStream())
    .getReader();
  const out: string[] = [];
  while (out.length < stopAfter) {
    const { value, done } = await reader.read();
    if (done) break;
    expect(value.event).toBeUndefined();
    expect(value.id).toBeUndefined();
    out.push(value.data);
  }
  return out;
}

interface Chunk {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: Array<{ index: number; delta: Record<string, unknown>; finish_reason: string | null }>;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
  sluice_due: number;
}

interface ToolFragment {
  index: number;
  id?: string;
  type?: string;
  function: { name?: string; arguments: string };
}

/** What the demo generator writes for the same request: the mock must stream exactly this. */
function expected(demo: DemoOptions, extra: Record<string, unknown> = {}) {
  const plan = planDemo({
    model: "demo",
    messages: [{ role: "user", content: PROMPT }],
    demo: { ...FAST, ...demo },
    ...extra,
  });
  const text = plan.events.map((e) => (e.type === "text-delta" ? e.delta : "")).join("");
  return { plan, text };
}

function waitFor<T>(event: string, ms = 3000): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no "${event}" event in ${ms} ms`)), ms);
    mock.events.once(event, (value: T) => {
      clearTimeout(t);
      resolve(value);
    });
  });
}

describe("mock-upstream: streaming Chat Completions", () => {
  it("streams well-formed chunks whose content is the demo generator's text, usage, then [DONE]", async () => {
    const demo = { seed: 7, length: 80 };
    const res = await post(body(demo, { stream_options: { include_usage: true } }));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const data = await readData(res);
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as Chunk);
    const id = chunks[0]?.id as string;
    expect(id).toMatch(/^chatcmpl-[A-Za-z0-9]{20,}$/);
    for (const c of chunks) {
      expect(c.id).toBe(id);
      expect(c.object).toBe("chat.completion.chunk");
      expect(c.model).toBe("demo");
      expect(Number.isInteger(c.created)).toBe(true);
      expect(typeof c.sluice_due).toBe("number");
      expect(c).toHaveProperty("usage");
    }
    const withChoice = chunks.slice(0, -1);
    expect(withChoice.every((c) => c.usage === null && c.choices.length === 1)).toBe(true);
    expect(withChoice[0]?.choices[0]?.delta.role).toBe("assistant");
    expect(withChoice.slice(1).every((c) => c.choices[0]?.delta.role === undefined)).toBe(true);
    const content = withChoice.map((c) => (c.choices[0]?.delta.content as string | undefined) ?? "").join("");
    expect(content).toBe(expected(demo).text);
    expect(withChoice.filter((c) => typeof c.choices[0]?.delta.content === "string")).toHaveLength(80);
    const finish = withChoice.at(-1);
    expect(finish?.choices[0]).toMatchObject({ delta: {}, finish_reason: "stop" });
    expect(withChoice.slice(0, -1).every((c) => c.choices[0]?.finish_reason === null)).toBe(true);
    const usage = chunks.at(-1);
    expect(usage?.choices).toEqual([]);
    expect(usage?.usage).toEqual({ prompt_tokens: 9, completion_tokens: 80, total_tokens: 89 });
    const dues = chunks.map((c) => c.sluice_due);
    expect(dues).toEqual([...dues].sort((a, b) => a - b));
    const rec = mock.requests.find((r) => r.id === id);
    expect(rec).toMatchObject({
      status: "completed",
      stream: true,
      chunks_sent: 82,
      tokens: 80,
      model: "demo",
    });
  });

  it("has no usage field without include_usage; is paced: first token due at ttft after the start", async () => {
    const res = await post(body({ seed: 3, length: 10, ttft_ms: 60, tokens_per_s: 100, jitter: 0 }));
    const t0 = Date.now();
    const chunks = (await readData(res)).slice(0, -1).map((d) => JSON.parse(d) as Chunk);
    expect(chunks.every((c) => !("usage" in c))).toBe(true);
    const rec = mock.requests.find((r) => r.id === chunks[0]?.id) as MockRequestRecord;
    // Due ttft after the generation began; the record is stamped a moment earlier, and on a loaded
    // machine that moment can stretch, so only the lower bound is tight (exact pacing is tested
    // with a virtual clock in demo.test.ts).
    const firstDue = (chunks[0]?.sluice_due as number) - rec.started_at;
    expect(firstDue).toBeGreaterThanOrEqual(59);
    expect(firstDue).toBeLessThan(60 + 100);
    expect((chunks[9]?.sluice_due as number) - (chunks[0]?.sluice_due as number)).toBeGreaterThanOrEqual(89);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(60);
  });

  it("streams tool calls as tool_calls deltas: id, type and name first, then argument pieces", async () => {
    const tools = [
      {
        type: "function",
        function: {
          name: "lookup_pool",
          parameters: { type: "object", properties: { db: { type: "string" }, max: { type: "integer" } } },
        },
      },
    ];
    const res = await post(body({ kind: "tool-call", seed: 4 }, { tools }));
    const data = await readData(res);
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as Chunk);
    const frags = chunks.flatMap((c) => (c.choices[0]?.delta.tool_calls as ToolFragment[] | undefined) ?? []);
    expect(frags.length).toBeGreaterThan(3);
    expect(frags[0]).toMatchObject({ index: 0, type: "function", function: { name: "lookup_pool" } });
    expect(frags[0]?.id).toMatch(/^call_/);
    for (const f of frags.slice(1)) expect(Object.keys(f).sort()).toEqual(["function", "index"]);
    expect(frags.slice(1).every((f) => Object.keys(f.function).join() === "arguments")).toBe(true);
    const args = JSON.parse(frags.map((f) => f.function.arguments).join("")) as { db: unknown; max: unknown };
    expect(typeof args.db).toBe("string");
    expect(Number.isInteger(args.max)).toBe(true);
    expect(chunks[0]?.choices[0]?.delta).toMatchObject({ role: "assistant", content: null });
    expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe("tool_calls");
  });

  it("streams reasoning as reasoning_content before the content", async () => {
    const chunks = (await readData(await post(body({ kind: "reasoning", seed: 5, length: 60 }))))
      .slice(0, -1)
      .map((d) => JSON.parse(d) as Chunk);
    const kinds = chunks.map((c) =>
      c.choices[0]?.delta.reasoning_content ? "r" : c.choices[0]?.delta.content ? "c" : "-",
    );
    const seq = kinds.join("").replace(/-/g, "");
    expect(seq).toMatch(/^r+c+$/);
  });

  it("max_tokens ends with finish_reason length", async () => {
    const res = await post(
      body({ seed: 1, length: 50 }, { max_tokens: 7, stream_options: { include_usage: true } }),
    );
    const chunks = (await readData(res)).slice(0, -1).map((d) => JSON.parse(d) as Chunk);
    expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe("length");
    expect(chunks.at(-1)?.usage?.completion_tokens).toBe(7);
  });
});

describe("mock-upstream: non-streaming", () => {
  it("returns a whole chat.completion after the generation", async () => {
    const demo = { seed: 8, length: 40 };
    const res = await post(body(demo, { stream: false }));
    expect(res.status).toBe(200);
    const json = (await res.json()) as {
      id: string;
      object: string;
      choices: Array<{ message: { role: string; content: string }; finish_reason: string }>;
      usage: { completion_tokens: number };
    };
    expect(json.id).toMatch(/^chatcmpl-/);
    expect(json.object).toBe("chat.completion");
    expect(json.choices[0]?.message).toMatchObject({ role: "assistant", content: expected(demo).text });
    expect(json.choices[0]?.finish_reason).toBe("stop");
    expect(json.usage.completion_tokens).toBe(40);
  });

  it("returns tool_calls for the tool-call kind", async () => {
    const res = await post(body({ kind: "tool-call" }, { stream: false }));
    const json = (await res.json()) as {
      choices: Array<{
        message: {
          content: null;
          tool_calls: Array<{ id: string; function: { name: string; arguments: string } }>;
        };
        finish_reason: string;
      }>;
    };
    const call = json.choices[0]?.message.tool_calls[0];
    expect(json.choices[0]?.message.content).toBeNull();
    expect(call?.function.name).toBe("get_weather");
    expect(JSON.parse(call?.function.arguments as string)).toHaveProperty("location");
    expect(json.choices[0]?.finish_reason).toBe("tool_calls");
  });
});

describe("mock-upstream: aborts and faults", () => {
  it("a client abort stops the generation, marks the record aborted, emits abort and logs it", async () => {
    const ac = new AbortController();
    const aborted = waitFor<MockRequestRecord>("abort");
    const res = await post(body({ length: 5000, tokens_per_s: 200 }), { signal: ac.signal });
    await readData(res, 3).catch(() => []);
    ac.abort();
    const rec = await aborted;
    expect(rec.status).toBe("aborted");
    expect(rec.chunks_sent).toBeGreaterThanOrEqual(3);
    expect(rec.chunks_sent).toBeLessThan(100);
    expect(rec.ended_at).toBeGreaterThanOrEqual(rec.started_at);
    expect(
      logLines.some(
        (l) => l === `mock-upstream: client aborted request ${rec.id} after ${rec.chunks_sent} chunks`,
      ),
    ).toBe(true);
    // Stopped for real: nothing more gets generated.
    const sent = rec.chunks_sent;
    await new Promise((r) => setTimeout(r, 50));
    expect(rec.chunks_sent).toBe(sent);
    const listed = (await (await fetch(mock.url.replace(/\/v1$/, "/mock/requests"))).json()) as {
      requests: MockRequestRecord[];
    };
    expect(listed.requests.find((r) => r.id === rec.id)?.status).toBe("aborted");
  });

  it("fail_after_tokens sends an error chunk after N tokens and ends without [DONE]", async () => {
    const completed = waitFor<MockRequestRecord>("complete");
    const data = await readData(await post(body({ seed: 2, length: 60, fail_after_tokens: 5 })));
    expect(data).not.toContain("[DONE]");
    const last = JSON.parse(data.at(-1) as string) as {
      error: { message: string; type: string; code: string };
    };
    expect(last.error).toMatchObject({ type: "server_error", code: "upstream_failure" });
    expect(last.error.message).toMatch(/failed after 5 tokens/);
    const contents = data.slice(0, -1).map((d) => JSON.parse(d) as Chunk);
    expect(contents).toHaveLength(5);
    expect(contents.map((c) => c.choices[0]?.delta.content).join("")).toBe(
      expected({ seed: 2, length: 60 })
        .plan.events.slice(0, 5)
        .map((e) => ("delta" in e ? e.delta : ""))
        .join(""),
    );
    expect((await completed).status).toBe("failed");
  });

  it("mock.status answers that HTTP error, OpenAI-shaped, with Retry-After", async () => {
    const res = await post(body({}, { mock: { status: 429, retry_after: 3 } }));
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("3");
    const json = (await res.json()) as { error: Record<string, unknown> };
    expect(Object.keys(json.error).sort()).toEqual(["code", "message", "param", "type"]);
    expect(json.error.code).toBe("rate_limit_exceeded");
    const down = await post(body({}, { mock: { status: 503 } }));
    expect(down.status).toBe(503);
    expect(((await down.json()) as { error: { type: string } }).error.type).toBe("server_error");
  });

  it("rejects bad JSON and bad shapes with 400 and OpenAI's error shape", async () => {
    const bad = await post("{not json");
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { type: string } }).error.type).toBe("invalid_request_error");
    const missing = await post({ model: "demo" });
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({
      error: { type: "invalid_request_error", param: "messages", code: "missing_required_parameter" },
    });
    const badDemo = await post(body({ tokens_per_s: -1 }));
    expect(badDemo.status).toBe(400);
    expect(((await badDemo.json()) as { error: { param: string } }).error.param).toBe("demo.tokens_per_s");
  });
});

describe("mock-upstream: other routes", () => {
  it("lists models, 404s unknown routes, and requires the API key when one is set", async () => {
    const models = (await (await fetch(`${mock.url}/models`)).json()) as {
      object: string;
      data: Array<{ id: string; owned_by: string }>;
    };
    expect(models.object).toBe("list");
    expect(models.data.map((m) => m.id)).toEqual(["demo", "demo-fast"]);
    expect(models.data[0]?.owned_by).toBe("sluice-mock");
    const nope = await fetch(`${mock.url}/embeddings`, { method: "POST" });
    expect(nope.status).toBe(404);
    expect(((await nope.json()) as { error: { type: string } }).error.type).toBe("invalid_request_error");

    const locked = await startMockUpstream({ port: 0, apiKey: "sk-test" });
    try {
      const denied = await fetch(`${locked.url}/models`);
      expect(denied.status).toBe(401);
      expect(((await denied.json()) as { error: { code: string } }).error.code).toBe("invalid_api_key");
      const ok = await fetch(`${locked.url}/chat/completions`, {
        method: "POST",
        headers: { authorization: "Bearer sk-test", "content-type": "application/json" },
        body: JSON.stringify(body({ length: 3 }, { stream: false })),
      });
      expect(ok.status).toBe(200);
    } finally {
      await locked.close();
    }
  });

  it("keeps at most the last 1000 request records", async () => {
    const small = await startMockUpstream({ port: 0 });
    try {
      const send = () =>
        fetch(`${small.url}/chat/completions`, {
          method: "POST",
          body: JSON.stringify(body({}, { stream: false, mock: { status: 500 } })),
        }).then((r) => r.arrayBuffer());
      for (let i = 0; i < 21; i++) await Promise.all(Array.from({ length: 50 }, send));
      expect(small.requests).toHaveLength(1000);
    } finally {
      await small.close();
    }
  });
});
