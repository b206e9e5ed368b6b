import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoText, followWithReconnects } from "./cluster-helper.js";
import { demoBody, type Running, readAllJson, readSse, startSluice, startStream, textOf } from "./helpers.js";
import { type RedisProc, startRedis } from "./redis-helper.js";

/** The HTTP API over each durable store, in process: the Hub, the runner and the store together. */
let redis: RedisProc;
const dir = mkdtempSync(join(tmpdir(), "sluice-e2e-"));
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.close();
  rmSync(dir, { recursive: true, force: true });
});

const stores: [string, () => string][] = [
  ["sqlite", () => `sqlite:${join(dir, `e2e-${Math.random().toString(36).slice(2)}.db`)}`],
  ["redis", () => redis.url],
];

describe.each(stores)("HTTP API on the %s store", (_name, spec) => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice({ store: spec() });
  });
  afterAll(async () => {
    await s?.close();
  });

  it("streams a generation over SSE with exactly the model's text, and reads it back as JSON pages", async () => {
    const body = demoBody({ seed: 31, length: 120 });
    const res = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(200);
    const id = res.headers.get("sluice-stream-id") as string;
    const msgs = (await readSse(res)).filter((m) => m.event);
    expect(textOf(msgs)).toBe(demoText(body));
    expect(msgs.at(-1)?.event).toBe("finish");
    const pages = await readAllJson(s.url, id);
    expect(pages.map((e) => e.offset)).toEqual(msgs.map((m) => m.id));
  });

  it("resumes mid-generation from random offsets with nothing lost or duplicated", async () => {
    const body = demoBody({ seed: 32, length: 200, tokens_per_s: 400 });
    const { id } = await startStream(s.url, body);
    const readers = await Promise.all(
      Array.from({ length: 5 }, () => followWithReconnects(s.url, id, { maxPerConnection: 25 })),
    );
    const stored = await readAllJson(s.url, id);
    for (const r of readers) {
      expect(r.text).toBe(demoText(body));
      expect(r.events.map((e) => e.id)).toEqual(stored.map((e) => e.offset));
      // Only the reader's own drops: no 5xx, no broken connection it had to recover from.
      expect(r.retries).toEqual([]);
      expect(r.statuses.every((st) => st === 200)).toBe(true);
    }
  });

  it("cancels a running generation and lists streams by status", async () => {
    const { id } = await startStream(s.url, demoBody({ seed: 33, length: 5000, tokens_per_s: 100 }));
    await new Promise((r) => setTimeout(r, 100));
    const res = await fetch(`${s.url}/v1/streams/${id}/cancel`, { method: "POST" });
    expect(await res.json()).toMatchObject({ id, status: "cancelled" });
    const events = await readAllJson(s.url, id);
    expect(events.at(-1)?.event).toMatchObject({ type: "abort" });
    const list = (await (await fetch(`${s.url}/v1/streams?status=cancelled`)).json()) as {
      streams: { id: string }[];
    };
    expect(list.streams.map((x) => x.id)).toContain(id);
    expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
  });
});
