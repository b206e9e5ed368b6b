/**
 * The doors that start the generation they stream (`POST /v1/streams` with SSE, the OpenAI
 * façade with `stream: true`, AI SDK chat) and the AI SDK resume route take a connection slot
 * like every other door: with `limits.max_connections` full they answer 503 too_many_connections
 * (in their own error shape, with Retry-After) and start nothing; slots come back when readers
 * leave. Real clients: the `openai` SDK and fetch.
 */
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { demoBody, type Running, startSluice } from "./helpers.js";

const MAX = 3;
let s: Running;
const aborts: AbortController[] = [];

beforeAll(async () => {
  s = await startSluice({ limits: { max_connections: MAX } } as never);
});
afterEach(async () => {
  for (const a of aborts.splice(0)) a.abort();
  const end = Date.now() + 5000;
  while (s.server.connections.size > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  expect(s.server.connections.size).toBe(0);
  const running = (await (await fetch(`${s.url}/v1/streams?status=running&limit=1000`)).json()) as {
    streams: { id: string }[];
  };
  for (const { id } of running.streams) await s.server.runner.cancel(id, "client", "test over");
});
afterAll(async () => {
  await s.close();
});

const slow = demoBody({ ttft_ms: 5000, length: 5 });

/** Opens a streaming POST and leaves it open; resolves with its status once headers arrive. */
async function openPost(path: string, body: unknown, accept = "text/event-stream"): Promise<Response> {
  const ac = new AbortController();
  aborts.push(ac);
  return fetch(`${s.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", accept },
    body: JSON.stringify(body),
    signal: ac.signal,
  });
}

async function fill(): Promise<void> {
  for (let n = 0; n < MAX; n++) {
    const r = await openPost("/v1/streams", slow);
    expect(r.status).toBe(200);
  }
  expect(s.server.connections.size).toBe(MAX);
}

async function generationsStarted(): Promise<number> {
  const list = (await (await fetch(`${s.url}/v1/streams?limit=1000`)).json()) as { streams: unknown[] };
  return list.streams.length;
}

describe("doors that start a generation hold a connection slot first", () => {
  it("POST /v1/streams with SSE: 503 too_many_connections + Retry-After, nothing started", async () => {
    await fill();
    const before = await generationsStarted();
    const r = await openPost("/v1/streams", slow);
    expect(r.status).toBe(503);
    expect(r.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe("too_many_connections");
    expect(await generationsStarted()).toBe(before);
  });

  it("POST /v1/chat/completions stream: true (the openai SDK): 503 in OpenAI's error shape, nothing started", async () => {
    await fill();
    const before = await generationsStarted();
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const err = await client.chat.completions
      .create({ model: "demo", messages: [{ role: "user", content: "hi" }], stream: true })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(OpenAI.APIError);
    const e = err as InstanceType<typeof OpenAI.APIError>;
    expect(e.status).toBe(503);
    expect((e.error as { code?: string }).code).toBe("too_many_connections");
    expect(await generationsStarted()).toBe(before);
  });

  it("POST /v1/responses stream: true (the openai SDK): 503 in OpenAI's error shape, nothing started", async () => {
    await fill();
    const before = await generationsStarted();
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const err = await client.responses.create({ model: "demo", input: "hi", stream: true }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OpenAI.APIError);
    const e = err as InstanceType<typeof OpenAI.APIError>;
    expect(e.status).toBe(503);
    expect((e.error as { code?: string }).code).toBe("too_many_connections");
    expect(await generationsStarted()).toBe(before);
  });

  it("300 concurrent streaming chat completions against a limit of 3: 3 served, the rest refused", async () => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const ac = new AbortController();
    aborts.push(ac);
    const results = await Promise.all(
      Array.from({ length: 300 }, () =>
        client.chat.completions
          .create(
            {
              model: "demo",
              messages: [{ role: "user", content: "hi" }],
              stream: true,
              demo: { ttft_ms: 5000, length: 5 },
            } as never,
            { signal: ac.signal },
          )
          .then(
            () => "served",
            (e: unknown) => String((e as { status?: number }).status ?? e),
          ),
      ),
    );
    expect(results.filter((r) => r === "served")).toHaveLength(MAX);
    expect(results.filter((r) => r === "503")).toHaveLength(300 - MAX);
    expect(s.server.connections.size).toBe(MAX);
  });

  it("POST /v1/ai-sdk/chat and the resume route hold slots too", async () => {
    const chat = {
      id: "chat-limits",
      messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: "hi" }] }],
      demo: { ttft_ms: 5000, length: 5 },
    };
    const first = await openPost("/v1/ai-sdk/chat", chat);
    expect(first.status).toBe(200);
    for (let n = 1; n < MAX; n++) {
      const ac = new AbortController();
      aborts.push(ac);
      const r = await fetch(`${s.url}/v1/ai-sdk/chat/chat-limits/stream`, { signal: ac.signal });
      expect(r.status).toBe(200);
    }
    expect(s.server.connections.size).toBe(MAX);
    const resume = await fetch(`${s.url}/v1/ai-sdk/chat/chat-limits/stream`);
    expect(resume.status).toBe(503);
    const start = await openPost("/v1/ai-sdk/chat", { ...chat, id: "chat-limits-2" });
    expect(start.status).toBe(503);
    expect(((await start.json()) as { error: { code: string } }).error.code).toBe("too_many_connections");
  });
});
