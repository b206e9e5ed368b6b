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
