import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { demoText, followWithReconnects, json, type SluiceProc, spawnSluice } from "./cluster-helper.js";
import { readAllJson, textOf } from "./helpers.js";
import { startRedis } from "./redis-helper.js";

/** Crash and fault safety with real processes (needs the built CLI and redis-server). */
const dirs: string[] = [];
const procs: SluiceProc[] = [];
afterAll(async () => {
  for (const p of procs) p.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.exited));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "sluice-durable-"));
  dirs.push(d);
  return d;
}

async function node(args: string[], config: Record<string, unknown> = {}): Promise<SluiceProc> {
  const p = await spawnSluice(args, config);
  procs.push(p);
  return p;
}

function body(demo: Record<string, unknown>) {
  return {
    model: "demo",
    messages: [{ role: "user", content: "What survives a crash?" }],
    demo: { ttft_ms: 20, jitter: 0, ...demo },
  };
}

async function start(base: string, b: unknown): Promise<string> {
  const res = await fetch(`${base}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(b),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

async function until(cond: () => Promise<boolean>, what: string, ms = 15_000) {
  const t = Date.now();
  while (!(await cond())) {
    if (Date.now() - t > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function readyStatus(url: string): Promise<number> {
  try {
    return (await fetch(`${url}/readyz`)).status;
  } catch {
    return 0;
  }
}

describe("durability", () => {
  it("Redis restarted mid-generation: nodes report not ready, then continue; nothing acknowledged is lost", async () => {
    const redis = await startRedis({ persist: true });
    try {
      const cfg = { cluster: { lease_ttl_ms: 3000, lease_renew_ms: 500 } };
      const a = await node(["--store", redis.url], cfg);
      const b = await node(["--store", redis.url], cfg);
      const gen = body({ seed: 21, length: 400, tokens_per_s: 100 });
      const expected = demoText(gen);
      const id = await start(a.url, gen);
      const readers = [a, b, b].map((n) =>
        followWithReconnects(n.url, id, { maxPerConnection: 10_000, outages: true }),
      );
      await new Promise((r) => setTimeout(r, 800));
      await redis.stop();
      await until(
        async () => (await readyStatus(a.url)) === 503 && (await readyStatus(b.url)) === 503,
        "not ready",
      );
      // Requests that need the store fail clearly meanwhile.
      const during = await fetch(`${b.url}/v1/streams/${id}/info`);
      expect(during.status).toBe(503);
      expect(await json(during)).toMatchObject({ error: { code: "store_unavailable" } });
      await new Promise((r) => setTimeout(r, 700));
      await redis.restart();
      await until(
        async () => (await readyStatus(a.url)) === 200 && (await readyStatus(b.url)) === 200,
        "ready",
      );
      const results = await Promise.all(readers);
      const stored = await readAllJson(b.url, id);
      expect(stored.at(-1)?.event).toMatchObject({ type: "finish" });
      expect(textOf(stored)).toBe(expected);
      expect(stored.map((e) => e.offset)).toEqual(stored.map((_, i) => String(i + 1).padStart(16, "0")));
      for (const r of results) {
        expect(r.terminal).toMatchObject({ type: "finish" });
        expect(r.text).toBe(expected);
      }
    } finally {
      await redis.close();
    }
  });

  it("kill -9 of a sqlite-backed server mid-generation: after restart the stream ends interrupted with its partial output; finished streams read back exactly", async () => {
    const db = `sqlite:${join(tmp(), "data", "sluice.db")}`;
    const first = await node(["--store", db]);
    const done = body({ seed: 1, length: 60, tokens_per_s: 3000 });
    const doneId = await start(first.url, done);
    const doneRead = await followWithReconnects(first.url, doneId, { maxPerConnection: 1000 });
    expect(doneRead.text).toBe(demoText(done));
    const before = await readAllJson(first.url, doneId);

    const gen = body({ seed: 2, length: 3000, tokens_per_s: 100 });
    const full = demoText(gen);
    const id = await start(first.url, gen);
    // What a reader received was acknowledged by the store (readers only see stored records).
    let acked = "";
    let count = 0;
    const res = await fetch(`${first.url}/v1/streams/${id}`, { headers: { accept: "text/event-stream" } });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const dec = new TextDecoder();
    let buf = "";
    while (count < 40) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buf += dec.decode(value, { stream: true });
      for (let i = buf.indexOf("\n\n"); i >= 0; i = buf.indexOf("\n\n")) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (!data) continue;
        const ev = JSON.parse(data) as { type: string; delta?: string };
        if (ev.type === "text-delta") acked += ev.delta;
        count++;
      }
    }
    // A second server on the same file is refused while the first runs.
    await expect(node(["--store", db])).rejects.toThrow(/in use by another process/);
    first.kill("SIGKILL");
    await first.exited;
    await reader.cancel().catch(() => {});

    const second = await node(["--store", db]);
    const info = await json<{ status: string; error?: { code: string } }>(
      fetch(`${second.url}/v1/streams/${id}/info`),
    );
    expect(info.status).toBe("failed");
    expect(info.error?.code).toBe("interrupted");
    const stored = await readAllJson(second.url, id);
    expect(stored.at(-1)?.event).toMatchObject({ type: "error", code: "interrupted" });
    const text = textOf(stored);
    expect(acked.length).toBeGreaterThan(0);
    expect(text.startsWith(acked)).toBe(true);
    expect(full.startsWith(text)).toBe(true);
    expect(await readAllJson(second.url, doneId)).toEqual(before);
    // And the restarted server works.
    const again = body({ seed: 4, length: 30, tokens_per_s: 3000 });
    const r = await followWithReconnects(second.url, await start(second.url, again));
    expect(r.text).toBe(demoText(again));
  });

  it("SIGTERM: stops accepting, lets short generations finish, closes the rest as interrupted, exits 0", async () => {
    const db = `sqlite:${join(tmp(), "sluice.db")}`;
    const srv = await node(["--store", db], { shutdown_grace_ms: 800 });
    const short = body({ seed: 6, length: 30, tokens_per_s: 100 });
    const shortId = await start(srv.url, short);
    const longId = await start(srv.url, body({ seed: 7, length: 5000, tokens_per_s: 50 }));
    await new Promise((r) => setTimeout(r, 100));
    srv.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 150));
    // No new generations once shutting down (refused connection, or 503 on a kept-alive one).
    const refused = await fetch(`${srv.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(short),
    }).then(
      (r) => r.status,
      () => 0,
    );
    expect([0, 503]).toContain(refused);
    const exit = await srv.exited;
    expect(exit.code).toBe(0);
    const after = await node(["--store", db]);
    const s = await readAllJson(after.url, shortId);
    expect(s.at(-1)?.event).toMatchObject({ type: "finish" });
    expect(textOf(s)).toBe(demoText(short));
    const l = await readAllJson(after.url, longId);
    expect(l.at(-1)?.event).toMatchObject({
      type: "error",
      code: "interrupted",
      message: "the server shut down during the generation",
    });
    expect(textOf(l).length).toBeGreaterThan(0);
  });
});
