import { SluiceError } from "@sluice/protocol";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisQuotas } from "../src/stores/redis-quotas.js";
import { type RedisProc, startRedis } from "./redis-helper.js";

/**
 * Key quotas counted across nodes on one real Redis: each RedisQuotas here is one node (its own
 * connection and node id), as openStore makes one per server on the Redis store.
 */
let redis: RedisProc;
const open: { q: RedisQuotas; c: Redis }[] = [];
let n = 0;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  for (const { q, c } of open) {
    await q.close();
    c.disconnect();
  }
  await redis?.close();
});

async function node(
  prefix: string,
  opts: { leaseTtlMs?: number; renewMs?: number } = {},
): Promise<{ q: RedisQuotas; c: Redis }> {
  const c = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await c.connect();
  const q = new RedisQuotas(c, prefix, {
    nodeId: `node-${++n}`,
    leaseTtlMs: opts.leaseTtlMs ?? 5000,
    renewMs: opts.renewMs ?? 1000,
  });
  const made = { q, c };
  open.push(made);
  return made;
}

async function refused(p: Promise<unknown> | unknown, limit: string): Promise<SluiceError> {
  const err = await Promise.resolve(p).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SluiceError);
  const e = err as SluiceError;
  expect(e.code).toBe("rate_limited");
  expect(e.details).toMatchObject({ limit });
  return e;
}

async function poll(cond: () => Promise<boolean>, boundMs: number): Promise<void> {
  const until = Date.now() + boundMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`not within ${boundMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("key quotas across nodes (Redis)", () => {
  it("concurrent_generations counts every node's generations; a release frees one for any node", async () => {
    const [a, b] = [await node("q1:"), await node("q1:")];
    const limits = { concurrent_generations: 2 };
    const r1 = await a.q.beginGeneration("k", limits);
    await b.q.beginGeneration("k", limits);
    const e = await refused(a.q.beginGeneration("k", limits), "concurrent_generations");
    expect(e.message).toMatch(/runs 2 generations on all nodes \(limit 2\)/);
    await refused(b.q.beginGeneration("k", limits), "concurrent_generations");
    // Another key is counted apart.
    await a.q.beginGeneration("other", limits);
    r1(10);
    r1(10); // idempotent
    await poll(async () => {
      try {
        await b.q.beginGeneration("k", limits);
        return true;
      } catch {
        return false;
      }
    }, 5000);
    await refused(a.q.beginGeneration("k", limits), "concurrent_generations");
  });

  it("connections counts every node's open connections", async () => {
    const [a, b, c] = [await node("q2:"), await node("q2:"), await node("q2:")];
    const limits = { connections: 2 };
    const ra = await a.q.openConnection("k", limits);
    await b.q.openConnection("k", limits);
    await refused(c.q.openConnection("k", limits), "connections");
    ra();
    await poll(async () => {
      try {
        await c.q.openConnection("k", limits);
        return true;
      } catch {
        return false;
      }
    }, 5000);
  });

  it("generations_per_minute and output_tokens_per_minute count every node's, with a Retry-After to the window's end", async () => {
    const [a, b] = [await node("q3:"), await node("q3:")];
    const gpm = { generations_per_minute: 3 };
    for (const q of [a.q, b.q, a.q]) (await q.beginGeneration("k", gpm))(0);
    const e = await refused(b.q.beginGeneration("k", gpm), "generations_per_minute");
    const retry = (e.details as { retry_after_s: number }).retry_after_s;
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);

    const tpm = { output_tokens_per_minute: 100 };
    const release = await a.q.beginGeneration("t", tpm);
    release(150);
    await poll(async () => {
      try {
        (await b.q.beginGeneration("t", tpm))(0);
        return false;
      } catch (err) {
        return (err as SluiceError).details?.limit === "output_tokens_per_minute";
      }
    }, 5000);
  });

  it("a node that stops renewing (dead) stops counting once its lease expires", async () => {
    const lease = { leaseTtlMs: 600, renewMs: 150 };
    const [live, dead] = [await node("q4:", lease), await node("q4:", lease)];
    const limits = { concurrent_generations: 2, connections: 1 };
    await dead.q.beginGeneration("k", limits);
    await dead.q.beginGeneration("k", limits);
    await dead.q.openConnection("k", limits);
    await refused(live.q.beginGeneration("k", limits), "concurrent_generations");
    await refused(live.q.openConnection("k", limits), "connections");
    // The node's connection drops and never comes back: no release, no heartbeat.
    dead.c.disconnect();
    await poll(async () => {
      try {
        await live.q.beginGeneration("k", limits);
        return true;
      } catch {
        return false;
      }
    }, 10_000);
    await live.q.openConnection("k", limits);
  });

  it("a node cut off long enough to be dropped puts its counts back with its next heartbeat", async () => {
    const lease = { leaseTtlMs: 400, renewMs: 100 };
    const [a, b] = [await node("q5:", lease), await node("q5:", lease)];
    const limits = { connections: 1 };
    await a.q.openConnection("k", limits);
    const spy = new Redis(redis.url);
    try {
      // As if a's lease expired while it was cut off: another node's check removed its share.
      await spy.hdel("q5:q:conn:k", (await spy.hkeys("q5:q:conn:k"))[0] as string);
      await poll(async () => (await spy.hlen("q5:q:conn:k")) === 1, 5000);
      await refused(b.q.openConnection("k", limits), "connections");
    } finally {
      spy.disconnect();
    }
  });

  it("a check is one round trip to Redis, made only for a key with the limit", async () => {
    const { q } = await node("q6:", { renewMs: 3_600_000 });
    // Redis's MONITOR shows every command a client sends (and, marked "lua", those a script runs).
    const spy = new Redis(redis.url);
    const monitor = await spy.monitor();
    const sent: string[][] = [];
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      if (source !== "lua" && args.some((a) => a.startsWith("q6:"))) sent.push(args);
    });
    const settle = () => new Promise((r) => setTimeout(r, 100));
    try {
      // Load the script first (the first call is EVALSHA, then EVAL).
      (await q.openConnection("warm", { connections: 5 }))();
      await settle();
      sent.length = 0;
      const release = await q.openConnection("k", { connections: 5 });
      await settle();
      expect(sent.map((a) => a[0]?.toLowerCase())).toEqual(["evalsha"]);
      // No limit: no round trip at all (and the release is local too).
      const free = q.openConnection("k", {});
      expect(typeof free).toBe("function");
      (free as () => void)();
      await settle();
      expect(sent).toHaveLength(1);
      // The release is one more (sent, not waited for by the reader).
      release();
      await settle();
      expect(sent.map((a) => a[0]?.toLowerCase())).toEqual(["evalsha", "evalsha"]);
    } finally {
      monitor.disconnect();
      spy.disconnect();
    }
  });

  it("refuses with store_unavailable (never lets a request through unchecked) while Redis is unreachable", async () => {
    const { q, c } = await node("q7:");
    c.disconnect();
    await expect(q.beginGeneration("k", { concurrent_generations: 1 })).rejects.toMatchObject({
      code: "store_unavailable",
    });
    await expect(Promise.resolve(q.openConnection("k", { connections: 1 }))).rejects.toMatchObject({
      code: "store_unavailable",
    });
  });
});
