/**
 * The Anthropic provider: recorded Messages API streams replayed by a real node:http server,
 * and end to end over HTTP against `sluice mock-upstream`'s /v1/messages.
 */
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type MockUpstream, startMockUpstream } from "@sluice/mock-upstream";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../src/config.js";
import { createSluice } from "../src/server.js";
import { type Running, readAllJson, startSluice, textOf, waitForStatus } from "./helpers.js";

const fixture = (name: string) => readFileSync(new URL(`./fixtures/anthropic/${name}`, import.meta.url));

interface Seen {
  headers: IncomingMessage["headers"];
  body: Record<string, unknown>;
  url: string;
}

let replay: Server;
let replayUrl: string;
let current = "anthropic-text.sse";
let status = 200;
let statusHeaders: Record<string, string> = {};
const seen: Seen[] = [];
let s: Running;

beforeAll(async () => {
  replay = createServer(async (req, res) => {
    let raw = "";
    for await (const c of req) raw += c;
    seen.push({ headers: req.headers, body: JSON.parse(raw), url: req.url ?? "" });
    if (status !== 200) {
      res.writeHead(status, { "content-type": "application/json", ...statusHeaders });
      res.end(JSON.stringify({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } }));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8" });
    // In small pieces, so events straddle reads.
    const data = fixture(current);
    for (let i = 0; i < data.length; i += 97) {
      res.write(data.subarray(i, i + 97));
      await new Promise((r) => setImmediate(r));
    }
    res.end();
  });
  await new Promise<void>((r) => replay.listen(0, "127.0.0.1", r));
  replayUrl = `http://127.0.0.1:${(replay.address() as AddressInfo).port}`;
  s = await startSluice({
    routes: {
      claude: {
        provider: "anthropic",
        base_url: replayUrl,
        api_key: "sk-ant-test",
        model: "claude-sonnet-4-5",
        retry: { max_attempts: 1 },
      },
    },
  });
});
afterAll(async () => {
  await s.close();
  await new Promise<void>((r) => replay.close(() => r()));
});

async function generate(fixtureName: string, extra: Record<string, unknown> = {}) {
  current = fixtureName;
  const res = await fetch(`${s.url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "claude",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hello" },
      ],
      ...extra,
    }),
  });
  expect(res.status).toBe(201);
  const { id } = (await res.json()) as { id: string };
  const info = await waitForStatus(s.url, id, (st) => st !== "running");
  const events = (await readAllJson(s.url, id)).map((e) => e.event);
  return { id, info, events };
}

describe("anthropic provider (recorded streams)", () => {
  it("text: deltas, usage, end_turn → finish stop; the request carries the Anthropic headers and body", async () => {
    const { info, events } = await generate("anthropic-text.sse", { max_tokens: 100, temperature: 0.5 });
    expect(info.status).toBe("completed");
    expect(textOf(events.map((event) => ({ event })))).toBe(
      "Hello! A durable stream keeps every token in an append-only log, so readers can resume from any offset.",
    );
    expect(events.find((e) => e.type === "usage")).toMatchObject({ input_tokens: 25, output_tokens: 21 });
    expect(events[events.length - 1]).toEqual({ type: "finish", reason: "stop" });
    const req = seen[seen.length - 1] as Seen;
    expect(req.url).toBe("/v1/messages");
    expect(req.headers["x-api-key"]).toBe("sk-ant-test");
    expect(req.headers["anthropic-version"]).toBe("2023-06-01");
    expect(req.body).toMatchObject({
      model: "claude-sonnet-4-5",
      max_tokens: 100,
      stream: true,
      system: "Be brief.",
      temperature: 0.5,
      messages: [{ role: "user", content: [{ type: "text", text: "Hello" }] }],
    });
  });

  it("tool_use: input_json_delta → tool-call-delta, block stop → tool-call with parsed input", async () => {
    const { events } = await generate("anthropic-tool-use.sse", {
      tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
      tool_choice: "required",
    });
    const deltas = events.filter((e) => e.type === "tool-call-delta");
    expect(deltas[0]).toMatchObject({ id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", name: "get_weather", index: 0 });
    expect(deltas.map((d) => d.args_delta).join("")).toBe(
      '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
    );
    expect(events.find((e) => e.type === "tool-call")).toMatchObject({
      name: "get_weather",
      args: { location: "San Francisco, CA", unit: "fahrenheit" },
    });
    expect(events[events.length - 1]).toEqual({ type: "finish", reason: "tool-calls" });
    const req = seen[seen.length - 1] as Seen;
    expect(req.body.tools).toEqual([{ name: "get_weather", input_schema: { type: "object" } }]);
    expect(req.body.tool_choice).toEqual({ type: "any" });
  });

  it("thinking_delta → reasoning-delta; signature_delta is ignored", async () => {
    const { events } = await generate("anthropic-thinking.sse");
    const reasoning = events
      .filter((e) => e.type === "reasoning-delta")
      .map((e) => e.delta)
      .join("");
    expect(reasoning).toContain("Euclidean algorithm");
    expect(reasoning).not.toContain("EqQB");
    expect(textOf(events.map((event) => ({ event })))).toBe(
      "The greatest common divisor of 1071 and 462 is **21**.",
    );
  });

  it("event: error mid-stream → terminal upstream_error keeping the partial text", async () => {
    const { info, events } = await generate("anthropic-overloaded-error.sse");
    expect(info.status).toBe("failed");
    const last = events[events.length - 1];
    expect(last).toMatchObject({ type: "error", code: "upstream_error" });
    expect(String(last?.message)).toContain("overloaded_error");
    expect(textOf(events.map((event) => ({ event })))).toBe("Here is the first part of the answer");
  });

  it("unknown event and delta types are ignored; max_tokens → finish length", async () => {
    const { info, events } = await generate("anthropic-unknown-events.sse");
    expect(info.status).toBe("completed");
    expect(textOf(events.map((event) => ({ event })))).toBe("Sources say the log is");
    expect(events[events.length - 1]).toEqual({ type: "finish", reason: "length" });
  });

  it("an HTTP error before the stream → upstream_error with the status and Retry-After", async () => {
    status = 529;
    statusHeaders = { "retry-after": "3" };
    try {
      const { info, events } = await generate("anthropic-text.sse");
      expect(info.status).toBe("failed");
      expect(String(events[events.length - 1]?.message)).toContain("529");
      const attempts = info.attempts as { error?: { upstream_status?: number } }[];
      expect(attempts[0]?.error?.upstream_status).toBe(529);
    } finally {
      status = 200;
      statusHeaders = {};
    }
  });
});

describe("anthropic provider against sluice mock-upstream over HTTP", () => {
  let mock: MockUpstream;
  let s2: Running;
  beforeAll(async () => {
    mock = await startMockUpstream({ apiKey: "sk-ant-mock" });
    s2 = await startSluice({
      routes: {
        claude: { provider: "anthropic", base_url: `http://127.0.0.1:${mock.port}`, api_key: "sk-ant-mock" },
      },
    });
  });
  afterAll(async () => {
    await s2.close();
    await mock.close();
  });

  const demo = (extra: Record<string, unknown> = {}) => ({
    seed: 3,
    ttft_ms: 5,
    tokens_per_s: 2000,
    jitter: 0,
    length: 30,
    ...extra,
  });

  it("an OpenAI SDK client streams a Claude route end to end; text equals the stream", async () => {
    const client = new OpenAI({ baseURL: `${s2.url}/v1`, apiKey: "x", maxRetries: 0 });
    const { data: stream, response } = await client.chat.completions
      .create({
        model: "claude",
        messages: [{ role: "user", content: "Explain durable streams" }],
        stream: true,
        stream_options: { include_usage: true },
        demo: demo(),
      } as OpenAI.Chat.Completions.ChatCompletionCreateParamsStreaming)
      .withResponse();
    const id = response.headers.get("sluice-stream-id") as string;
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of stream) {
      text += c.choices[0]?.delta.content ?? "";
      if (c.usage) usage = c.usage;
    }
    expect(text.length).toBeGreaterThan(20);
    expect(text).toBe(textOf(await readAllJson(s2.url, id)));
    expect(usage?.completion_tokens).toBe(30);
    expect(mock.requests[mock.requests.length - 1]?.status).toBe("completed");
  });

  it("reasoning and tool calls through the mock's Messages stream", async () => {
    const r = await fetch(`${s2.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "claude",
        messages: [{ role: "user", content: "think" }],
        demo: demo({ kind: "reasoning", length: 20 }),
      }),
    });
    const { id } = (await r.json()) as { id: string };
    await waitForStatus(s2.url, id, (st) => st === "completed");
    const events = (await readAllJson(s2.url, id)).map((e) => e.event);
    expect(events.some((e) => e.type === "reasoning-delta")).toBe(true);
    expect(events.some((e) => e.type === "text-delta")).toBe(true);

    const t = await fetch(`${s2.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "claude",
        messages: [{ role: "user", content: "weather?" }],
        tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
        tool_choice: "required",
        demo: demo({ kind: "tool-call", length: undefined }),
      }),
    });
    const tid = ((await t.json()) as { id: string }).id;
    const info = await waitForStatus(s2.url, tid, (st) => st !== "running");
    expect(info.status).toBe("completed");
    expect(info.finish_reason).toBe("tool-calls");
    const tevents = (await readAllJson(s2.url, tid)).map((e) => e.event);
    const call = tevents.find((e) => e.type === "tool-call");
    expect(call?.name).toBe("get_weather");
    expect(typeof call?.args).toBe("object");
  });

  it("cancel reaches the upstream: the mock sees its client go away", async () => {
    const aborted = new Promise((resolve) => mock.events.once("abort", resolve));
    const r = await fetch(`${s2.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "claude",
        messages: [{ role: "user", content: "long" }],
        demo: demo({ tokens_per_s: 50, length: 500 }),
      }),
    });
    const { id } = (await r.json()) as { id: string };
    await new Promise((res) => setTimeout(res, 150));
    const c = await fetch(`${s2.url}/v1/streams/${id}/cancel`, { method: "POST" });
    expect(((await c.json()) as { status: string }).status).toBe("cancelled");
    const rec = (await aborted) as { status: string; tokens: number };
    expect(rec.status).toBe("aborted");
    expect(rec.tokens).toBeLessThan(500);
  });

  it("a failure mid-stream (event: error) → upstream_error keeping the partial output", async () => {
    const r = await fetch(`${s2.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "claude",
        messages: [{ role: "user", content: "fail" }],
        demo: demo({ fail_after_tokens: 6 }),
      }),
    });
    const { id } = (await r.json()) as { id: string };
    const info = await waitForStatus(s2.url, id, (st) => st !== "running");
    expect(info.status).toBe("failed");
    const events = (await readAllJson(s2.url, id)).map((e) => e.event);
    expect(events.filter((e) => e.type === "text-delta")).toHaveLength(6);
    expect(String(events[events.length - 1]?.message)).toContain("overloaded_error");
  });

  it("ANTHROPIC_API_KEY adds the Claude routes (ANTHROPIC_BASE_URL points them at the mock)", async () => {
    const config = parseConfig({ host: "127.0.0.1", port: 0, log_level: "silent" });
    const server = await createSluice(config, {
      env: { ANTHROPIC_API_KEY: "sk-ant-mock", ANTHROPIC_BASE_URL: `http://127.0.0.1:${mock.port}` },
    });
    const url = await server.listen();
    try {
      const models = (await (await fetch(`${url}/v1/models`)).json()) as {
        data: { id: string; owned_by: string }[];
      };
      expect(models.data.find((m) => m.id === "claude-haiku-4-5")?.owned_by).toBe("anthropic");
      const r = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "claude-haiku-4-5",
          messages: [{ role: "user", content: "hi" }],
          demo: demo({ length: 7 }),
        }),
      });
      expect(r.status).toBe(200);
      const b = (await r.json()) as {
        usage: { completion_tokens: number };
        choices: { message: { content: string } }[];
      };
      expect(b.usage.completion_tokens).toBe(7);
      expect(b.choices[0]?.message.content.length).toBeGreaterThan(0);
      expect(mock.requests[mock.requests.length - 1]?.model).toBe("claude-haiku-4-5");
    } finally {
      await server.close();
    }
  });

  it("the mock answers non-streaming Messages requests and checks x-api-key", async () => {
    const res = await fetch(`http://127.0.0.1:${mock.port}/v1/messages`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-api-key": "sk-ant-mock",
        "anthropic-version": "2023-06-01",
      },
      body: JSON.stringify({
        model: "claude",
        max_tokens: 10,
        messages: [{ role: "user", content: "hi" }],
        demo: demo({ length: 30 }),
      }),
    });
    expect(res.status).toBe(200);
    const b = (await res.json()) as {
      type: string;
      content: { type: string; text: string }[];
      stop_reason: string;
      usage: { output_tokens: number };
    };
    expect(b.type).toBe("message");
    expect(b.stop_reason).toBe("max_tokens");
    expect(b.usage.output_tokens).toBe(10);
    expect(b.content[0]?.type).toBe("text");
    const bad = await fetch(`http://127.0.0.1:${mock.port}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": "wrong" },
      body: "{}",
    });
    expect(bad.status).toBe(401);
  });
});
