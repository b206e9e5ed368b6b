import { createHash } from "node:crypto";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  demoText,
  followWithReconnects,
  json,
  type NginxProc,
  type SluiceProc,
  spawnSluice,
  startNginx,
} from "./cluster-helper.js";
import { readAllJson, textOf } from "./helpers.js";
import { type RedisProc, startRedis } from "./redis-helper.js";

/**
 * Three Sluice processes on one real Redis, behind a real nginx using docs/examples/nginx.conf.
 * Needs the built CLI (npx tsc -b packages/protocol packages/server), redis-server and nginx.
 */
const LEASE = { lease_ttl_ms: 2000, lease_renew_ms: 500 };

let redis: RedisProc;
let nodes: SluiceProc[] = [];
let lb: NginxProc;

function body(demo: Record<string, unknown>) {
  return {
    model: "demo",
    messages: [{ role: "user", content: "How do Redis streams carry tokens across nodes?" }],
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

async function info(base: string, id: string) {
  return json<{ status: string; readers: number; running_here: boolean; error?: { code: string } }>(
    fetch(`${base}/v1/streams/${id}/info`),
  );
}

/** A counter or gauge on one node's /metrics: the sum of the samples with these labels (0 if none). */
async function metric(base: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const fams = parsePrometheusTextFormat(await (await fetch(`${base}/metrics`)).text());
  return (fams.find((f) => f.name === name)?.metrics ?? [])
    .filter((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v))
    .reduce((n, x) => n + Number(x.value ?? 0), 0);
}

describe("three nodes on one Redis behind nginx", () => {
  beforeAll(async () => {
    redis = await startRedis();
    nodes = await Promise.all(
      [0, 1, 2].map(() => spawnSluice(["--store", redis.url], { cluster: LEASE, shutdown_grace_ms: 1000 })),
    );
    lb = await startNginx(nodes.map((n) => n.port));
  }, 60_000);

  afterAll(async () => {
    await lb?.close();
    for (const n of nodes) n.kill("SIGKILL");
    await Promise.all(nodes.map((n) => n.exited));
    await redis?.close();
  });

  it("every node is ready and serves streams started anywhere", async () => {
    for (const n of nodes) expect((await fetch(`${n.url}/readyz`)).status).toBe(200);
    const b = body({ seed: 11, length: 30, tokens_per_s: 2000 });
    const id = await start(nodes[0]?.url as string, b);
    for (const n of nodes) {
      const r = await followWithReconnects(n.url, id, { maxPerConnection: 1000 });
      expect(r.text).toBe(demoText(b));
      expect(r.terminal?.type).toBe("finish");
      expect(r.retries).toEqual([]);
      expect(r.statuses.every((st) => st === 200)).toBe(true);
    }
  });

  it("readers spread across nodes with random reconnects each get exactly the generation's text", async () => {
    const b = body({ seed: 42, length: 260, tokens_per_s: 120 });
    const expected = demoText(b);
    const id = await start(lb.url, b);
    const readers = Array.from({ length: 9 }, () =>
      followWithReconnects(lb.url, id, { maxPerConnection: 30 }),
    );
    // While they read, the readers are attached on more than one node.
    let spread = 0;
    for (let i = 0; i < 40 && spread < 2; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const counts = await Promise.all(nodes.map((n) => info(n.url, id).then((x) => x.readers)));
      spread = counts.filter((c) => c > 0).length;
    }
    expect(spread).toBeGreaterThanOrEqual(2);
    const results = await Promise.all(readers);
    const stored = await readAllJson(lb.url, id);
    expect(textOf(stored)).toBe(expected);
    for (const r of results) {
      expect(r.terminal).toMatchObject({ type: "finish" });
      expect(r.text).toBe(expected);
      expect(r.events.map((e) => e.id)).toEqual(stored.map((e) => e.offset));
      // Every reconnect was the reader's own choice: no 5xx from nginx or a node, no broken connection.
      expect(r.retries).toEqual([]);
      expect(r.statuses.every((st) => st === 200)).toBe(true);
    }
    // Reconnects really happened.
    expect(results.reduce((n, r) => n + r.connections, 0)).toBeGreaterThan(results.length * 3);
  });

  it("a cancel sent to another node reaches the owner and answers with the terminal state", async () => {
    const [a, b] = nodes as [SluiceProc, SluiceProc];
    const id = await start(a.url, body({ seed: 5, length: 2000, tokens_per_s: 100 }));
    expect((await info(a.url, id)).running_here).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    const res = await fetch(`${b.url}/v1/streams/${id}/cancel`, { method: "POST" });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id, status: "cancelled" });
    const events = await readAllJson(b.url, id);
    expect(events.at(-1)?.event).toMatchObject({ type: "abort", by: "client" });
    expect((await info(a.url, id)).running_here).toBe(false);
  });

  it("DELETE through another node stops the generation on its owner, then deletes it", async () => {
    const [a, , c] = nodes as [SluiceProc, SluiceProc, SluiceProc];
    const cancelledBefore = await metric(a.url, "sluice_streams_ended_total", { status: "cancelled" });
    const id = await start(a.url, body({ seed: 12, length: 2000, tokens_per_s: 100 }));
    expect((await info(a.url, id)).running_here).toBe(true);
    // The reader is attached on the owner (and has read some of the generation) before the DELETE.
    // One connection for the whole read (no deliberate drop: a resume after the DELETE is a 404).
    const reader = followWithReconnects(a.url, id, { maxPerConnection: 10_000, rand: () => 0.999 });
    // (Awaited below; this only keeps an early failure from also surfacing as unhandled.)
    reader.catch(() => undefined);
    for (let i = 0; i < 500 && (await info(a.url, id)).readers < 1; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect((await info(a.url, id)).readers).toBe(1);
    const res = await fetch(`${c.url}/v1/streams/${id}`, { method: "DELETE" });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ id, deleted: true });
    expect((await fetch(`${a.url}/v1/streams/${id}/info`)).status).toBe(404);
    // The owner's reader saw the generation stop: it ends with the abort, on one connection.
    const r = await reader;
    expect(r.terminal).toMatchObject({ type: "abort", by: "client", reason: "deleted" });
    expect(r.retries).toEqual([]);
    expect(r.statuses).toEqual([200]);
    // And the owner no longer runs it: it ended there as cancelled, nothing runs on it now.
    expect(await metric(a.url, "sluice_streams_ended_total", { status: "cancelled" })).toBe(
      cancelledBefore + 1,
    );
    expect(await metric(a.url, "sluice_live_streams")).toBe(0);
  });

  it("kill -9 of the owner: the stream ends interrupted within the lease bound on the survivors", async () => {
    const [owner, b, c] = nodes as [SluiceProc, SluiceProc, SluiceProc];
    const gen = body({ seed: 9, length: 3000, tokens_per_s: 80 });
    const full = demoText(gen);
    const id = await start(owner.url, gen);
    const readers = [b, c].map((n) =>
      followWithReconnects(n.url, id, { maxPerConnection: 10_000, outages: true }),
    );
    await new Promise((r) => setTimeout(r, 800));
    owner.kill("SIGKILL");
    const killedAt = Date.now();
    await owner.exited;
    const results = await Promise.all(readers);
    const endedAfter = Date.now() - killedAt;
    // Lease TTL + one check period + slack for a busy machine.
    expect(endedAfter).toBeLessThan(LEASE.lease_ttl_ms + 2 * LEASE.lease_renew_ms + 4000);
    const stored = await readAllJson(b.url, id);
    const storedText = textOf(stored);
    expect(stored.at(-1)?.event).toMatchObject({ type: "error", code: "interrupted" });
    expect(storedText.length).toBeGreaterThan(0);
    expect(full.startsWith(storedText)).toBe(true);
    for (const r of results) {
      expect(r.terminal).toMatchObject({ type: "error", code: "interrupted" });
      expect(r.text).toBe(storedText);
    }
    expect((await info(c.url, id)).status).toBe("failed");
    // The survivors (and nginx, skipping the dead node) still run new generations.
    const next = body({ seed: 3, length: 40, tokens_per_s: 2000 });
    for (let i = 0; i < 3; i++) {
      const nid = await start(lb.url, next);
      const r = await followWithReconnects(lb.url, nid, { maxPerConnection: 1000, outages: true });
      expect(r.text).toBe(demoText(next));
    }
  });
});

/**
 * The same cluster with API keys: the AI SDK chat map and the key quotas live in Redis, so a
 * chat resumes and stops on any node and a key's limits hold for all nodes together.
 */
describe("three nodes on one Redis: chats and key quotas are cluster-wide", () => {
  let redis2: RedisProc;
  let ns: SluiceProc[] = [];
  let lb2: NginxProc;
  const secret = (id: string) => `sk-cluster-test-${id}-0123456789abcdef`;
  const sha = (v: string) => createHash("sha256").update(v).digest("hex");
  const KEYS = {
    chat: {},
    gen2: { concurrent_generations: 2 },
    conn2: { connections: 2 },
    gpm3: { generations_per_minute: 3 },
    kill2: { concurrent_generations: 2 },
  } as const;
  type KeyName = keyof typeof KEYS;
  const auth = (k: KeyName) => ({ authorization: `Bearer ${secret(k)}` });

  beforeAll(async () => {
    redis2 = await startRedis();
    const config = {
      cluster: LEASE,
      shutdown_grace_ms: 1000,
      auth: {
        keys: Object.entries(KEYS).map(([id, limits]) => ({
          id,
          key_sha256: sha(secret(id)),
          role: "producer",
          limits,
        })),
      },
    };
    ns = await Promise.all([0, 1, 2].map(() => spawnSluice(["--store", redis2.url], config)));
    lb2 = await startNginx(ns.map((n) => n.port));
  }, 60_000);

  afterAll(async () => {
    await lb2?.close();
    for (const n of ns) n.kill("SIGKILL");
    await Promise.all(ns.map((n) => n.exited));
    await redis2?.close();
  });

  function post(base: string, path: string, key: KeyName, b: unknown): Promise<Response> {
    return fetch(`${base}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...auth(key) },
      body: JSON.stringify(b),
    });
  }

  async function startAs(base: string, key: KeyName, b: unknown): Promise<string> {
    const res = await post(base, "/v1/streams", key, b);
    expect(res.status).toBe(201);
    return ((await res.json()) as { id: string }).id;
  }

  /** A refusal: 429, the stable code, the limit that refused, a Retry-After. */
  async function expectLimited(res: Response, limit: string) {
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await res.json()).toMatchObject({ error: { code: "rate_limited", limit } });
  }

  /** Polls `attempt` until it answers true, at most `boundMs` (a bound, not a timing assertion). */
  async function until(attempt: () => Promise<boolean>, boundMs: number, what: string) {
    const end = Date.now() + boundMs;
    while (!(await attempt())) {
      if (Date.now() > end) throw new Error(`${what}: not within ${boundMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Reads an SSE response until `enough` of the text has been seen, then drops it. */
  async function readSome(res: Response, enough: (text: string) => boolean): Promise<string> {
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const dec = new TextDecoder();
    let text = "";
    try {
      while (!enough(text)) {
        const { value, done } = await reader.read();
        if (done) break;
        text += dec.decode(value, { stream: true });
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
    return text;
  }

  it("an AI SDK chat started on node 1 resumes on node 2 and stops on node 3", async () => {
    const [n1, n2, n3] = ns as [SluiceProc, SluiceProc, SluiceProc];
    const chatId = `chat-${Date.now()}`;
    const started = await post(n1.url, "/v1/ai-sdk/chat", "chat", {
      id: chatId,
      messages: [{ id: "m1", role: "user", parts: [{ type: "text", text: "Tell me about clusters." }] }],
      on_disconnect: "continue",
      demo: { length: 3000, tokens_per_s: 60, ttft_ms: 20, jitter: 0 },
    });
    expect(started.status).toBe(200);
    const streamId = started.headers.get("sluice-stream-id");
    expect(streamId).toMatch(/^st_/);
    await readSome(started, (t) => t.includes('"text-delta"'));
    // Another node knows the chat: it replays the generation from its start and follows it.
    const resumed = await fetch(`${n2.url}/v1/ai-sdk/chat/${chatId}/stream`, { headers: auth("chat") });
    expect(resumed.status).toBe(200);
    expect(resumed.headers.get("sluice-stream-id")).toBe(streamId);
    const replay = await readSome(resumed, (t) => (t.match(/"text-delta"/g) ?? []).length >= 3);
    expect(replay).toMatch(/data: \{"type":"start"/);
    // An unknown chat is nothing to stop.
    expect(await json(post(n3.url, "/v1/ai-sdk/chat/nope/stop", "chat", {}))).toEqual({
      chat_id: "nope",
      stopped: false,
    });
    // A third node stops it: the owner (node 1) cancels it.
    const stopped = await json(post(n3.url, `/v1/ai-sdk/chat/${chatId}/stop`, "chat", {}));
    expect(stopped).toMatchObject({
      chat_id: chatId,
      stopped: true,
      stream_id: streamId,
      status: "cancelled",
    });
    const ended = await json<{ status: string }>(
      fetch(`${n1.url}/v1/streams/${streamId}/info`, { headers: auth("chat") }),
    );
    expect(ended.status).toBe("cancelled");
    // Nothing runs for the chat any more: resume answers 204 on every node.
    for (const n of ns) {
      const r = await fetch(`${n.url}/v1/ai-sdk/chat/${chatId}/stream`, { headers: auth("chat") });
      expect(r.status).toBe(204);
    }
  });

  it("concurrent_generations: 2 across 3 nodes: the 3rd is refused (429 rate_limited) and admitted once one ends", async () => {
    const [n1, n2, n3] = ns as [SluiceProc, SluiceProc, SluiceProc];
    const long = body({ seed: 21, length: 5000, tokens_per_s: 50 });
    const a = await startAs(n1.url, "gen2", long);
    await startAs(n2.url, "gen2", long);
    await expectLimited(await post(n3.url, "/v1/streams", "gen2", long), "concurrent_generations");
    await expectLimited(await post(lb2.url, "/v1/streams", "gen2", long), "concurrent_generations");
    // One ends (cancelled through another node): its owner releases the slot for every node.
    const cancel = await post(n3.url, `/v1/streams/${a}/cancel`, "gen2", {});
    expect(cancel.status).toBe(200);
    let third = "";
    await until(
      async () => {
        const res = await post(n3.url, "/v1/streams", "gen2", long);
        if (res.status === 201) third = ((await res.json()) as { id: string }).id;
        else await res.body?.cancel();
        return res.status === 201;
      },
      10_000,
      "a slot freed by the end of a generation",
    );
    expect(third).toMatch(/^st_/);
    await expectLimited(await post(n1.url, "/v1/streams", "gen2", long), "concurrent_generations");
  });

  it("connections: 2 across 3 nodes: a 3rd reader is refused, and admitted once one leaves", async () => {
    const [n1, n2, n3] = ns as [SluiceProc, SluiceProc, SluiceProc];
    // A generation that stays quiet (its first token is minutes away): long-polls really wait.
    const id = await startAs(n1.url, "conn2", body({ seed: 22, length: 50, ttft_ms: 600_000 }));
    const sse = { accept: "text/event-stream", ...auth("conn2") };
    const open1 = new AbortController();
    const r1 = await fetch(`${n1.url}/v1/streams/${id}`, { headers: sse, signal: open1.signal });
    expect(r1.status).toBe(200);
    const r2 = await fetch(`${n2.url}/v1/streams/${id}`, { headers: sse });
    expect(r2.status).toBe(200);
    await expectLimited(await fetch(`${n3.url}/v1/streams/${id}`, { headers: sse }), "connections");
    // Long-polls count too.
    await expectLimited(
      await fetch(`${n3.url}/v1/streams/${id}?live=long-poll&offset=now`, { headers: auth("conn2") }),
      "connections",
    );
    open1.abort();
    await r1.body?.cancel().catch(() => {});
    await until(
      async () => {
        const r = await fetch(`${n3.url}/v1/streams/${id}`, { headers: sse });
        await r.body?.cancel().catch(() => {});
        return r.status === 200;
      },
      10_000,
      "a connection freed by a reader leaving",
    );
    await r2.body?.cancel().catch(() => {});
  });

  it("generations_per_minute: 3 across nodes: the 4th start in the minute is refused on any node", async () => {
    // Not across a minute boundary (the window is Redis's wall-clock minute).
    const intoMinute = Date.now() % 60_000;
    if (intoMinute > 50_000) await new Promise((r) => setTimeout(r, 60_500 - intoMinute));
    const short = body({ seed: 23, length: 5, tokens_per_s: 2000 });
    for (const n of ns) await startAs(n.url, "gpm3", short);
    for (const base of [...ns.map((n) => n.url), lb2.url]) {
      await expectLimited(await post(base, "/v1/streams", "gpm3", short), "generations_per_minute");
    }
  }, 30_000);

  it("a node killed (SIGKILL) holding generations: its share of the quota is freed once its lease expires", async () => {
    const [n1, n2, n3] = ns as [SluiceProc, SluiceProc, SluiceProc];
    const long = body({ seed: 24, length: 5000, tokens_per_s: 50 });
    await startAs(n3.url, "kill2", long);
    await startAs(n3.url, "kill2", long);
    await expectLimited(await post(n1.url, "/v1/streams", "kill2", long), "concurrent_generations");
    n3.kill("SIGKILL");
    await n3.exited;
    // No release ever comes from the dead node: only its lease expiring frees the two slots.
    await until(
      async () => {
        const res = await post(n1.url, "/v1/streams", "kill2", long);
        await res.body?.cancel().catch(() => {});
        return res.status === 201;
      },
      LEASE.lease_ttl_ms + 10_000,
      "the dead node's share expiring",
    );
    await startAs(n2.url, "kill2", long);
    await expectLimited(await post(n2.url, "/v1/streams", "kill2", long), "concurrent_generations");
  });
});
