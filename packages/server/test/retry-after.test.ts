import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { demoBody, type Running, startSluice } from "./helpers.js";

// errors.md calls every 429/503 code retryable; a client (or proxy) learns when to retry from
// Retry-After, so each such answer carries it, on every route that sends errors.

let s: Running;
beforeAll(async () => {
  // One stream and one long-lived connection: the second of each is refused.
  s = await startSluice({ limits: { max_streams: 1, max_connections: 1 } } as never);
  const res = await fetch(`${s.url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(demoBody({ tokens_per_s: 5, length: 100_000 })),
  });
  expect(res.status).toBe(201);
});
afterAll(async () => {
  await s?.close();
});

function expectRetryAfter(res: Response) {
  const v = res.headers.get("retry-after");
  expect(v, `${res.status} without Retry-After`).not.toBeNull();
  expect(Number(v)).toBeGreaterThanOrEqual(1);
}

describe("Retry-After on every retryable 429/503", () => {
  it("capacity_exceeded (503) on POST /v1/streams", async () => {
    const res = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(demoBody()),
    });
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("capacity_exceeded");
    expectRetryAfter(res);
  });

  it("capacity_exceeded (503) on the OpenAI façade and the AI SDK route", async () => {
    const oa = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(oa.status).toBe(503);
    expectRetryAfter(oa);
    const ai = await fetch(`${s.url}/v1/ai-sdk/chat`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        id: "c1",
        messages: [{ id: "m1", role: "user", parts: [{ type: "text", text: "hi" }] }],
        model: "demo",
      }),
    });
    expect(ai.status).toBe(503);
    expectRetryAfter(ai);
  });

  it("too_many_connections (503) on a streaming read and on the WebSocket upgrade", async () => {
    const list = (await (await fetch(`${s.url}/v1/streams`)).json()) as { streams: { id: string }[] };
    const id = list.streams[0]?.id as string;
    const ac = new AbortController();
    const first = await fetch(`${s.url}/v1/streams/${id}`, {
      headers: { accept: "text/event-stream" },
      signal: ac.signal,
    });
    expect(first.status).toBe(200);
    try {
      const second = await fetch(`${s.url}/v1/streams/${id}`, { headers: { accept: "text/event-stream" } });
      expect(second.status).toBe(503);
      expect(((await second.json()) as { error: { code: string } }).error.code).toBe("too_many_connections");
      expectRetryAfter(second);
      const upgrade = await new Promise<{ status: number; retryAfter: string | undefined }>(
        (resolve, reject) => {
          const ws = new WebSocket(`${s.url.replace("http", "ws")}/v1/ws`);
          ws.on("unexpected-response", (_req, res) => {
            resolve({
              status: res.statusCode ?? 0,
              retryAfter: res.headers["retry-after"] as string | undefined,
            });
            res.resume();
            ws.terminate();
          });
          ws.on("open", () => reject(new Error("the upgrade was accepted")));
          ws.on("error", () => {});
        },
      );
      expect(upgrade.status).toBe(503);
      expect(Number(upgrade.retryAfter)).toBeGreaterThanOrEqual(1);
    } finally {
      ac.abort();
    }
  });
});
