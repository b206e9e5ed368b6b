import { SluiceError } from "@sluice/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisStore } from "../src/stores/redis.js";
import type { StoreNotice } from "../src/stores/store.js";
import { type RedisProc, startRedis } from "./redis-helper.js";
import { ManualClock, runStoreContract, waitFor } from "./store-contract.js";

let redis: RedisProc;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.close();
});

/** Waits for an asynchronous condition (polling). */
async function until(cond: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!(await cond())) {
    if (Date.now() - start > timeoutMs) throw new Error("until: timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

let n = 0;
runStoreContract({
  name: "redis",
  newStore: async ({ clock, maxRecordsPerStream, defaultTtlS, maxStreams }) => {
    const store = new RedisStore({
      url: redis.url,
      prefix: `c${++n}:`,
      clock,
      sweepIntervalMs: 0,
      ...(maxStreams !== undefined ? { maxStreams } : {}),
      limits: {
        ...(maxRecordsPerStream !== undefined ? { maxRecordsPerStream } : {}),
        ...(defaultTtlS !== undefined ? { defaultTtlS } : {}),
      },
    });
    await store.connected();
    return store;
  },
});

describe("redis store across nodes", () => {
  it("two nodes appending to one stream get strictly increasing seqs; a follower on each hears every record once from when it is live", async () => {
    const a = new RedisStore({ url: redis.url, prefix: "x:", sweepIntervalMs: 0 });
    const b = new RedisStore({ url: redis.url, prefix: "x:", sweepIntervalMs: 0 });
    try {
      await a.connected();
      await b.connected();
      const { id } = await a.create({ id: `st_x_${Date.now()}`, kind: "log", content_type: "text/plain" });
      const heardA: number[] = [];
      const heardB: number[] = [];
      a.subscribe(id, (n) => heardA.push(...n.records.map((r) => r.seq)));
      b.subscribe(id, (n) => heardB.push(...n.records.map((r) => r.seq)));
      // A follower starts where the stream is when its subscription lands in Redis, which can be
      // after the other node's first appends (documented in RedisStore.subscribe; readers catch up
      // with a read). So: append probes until both followers are live, then race the two nodes.
      for (let i = 0; i < 100 && (heardA.length === 0 || heardB.length === 0); i++) {
        await a.append(id, [{ data: "probe" }]);
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(heardA.length).toBeGreaterThan(0);
      expect(heardB.length).toBeGreaterThan(0);
      const live = (await a.info(id))?.length ?? 0;
      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < 50; i++) {
        writes.push(a.append(id, [{ data: `a${i}` }]));
        writes.push(b.append(id, [{ data: `b${i}` }, { data: `b${i}'` }]));
      }
      await Promise.all(writes);
      const total = live + 150;
      await waitFor(() => heardA.at(-1) === total && heardB.at(-1) === total, 15_000).catch((e: Error) => {
        // What each node heard goes into the failure itself, not onto the console.
        throw new Error(`${e.message}; A heard ${heardA.join(",")}; B heard ${heardB.join(",")}`);
      });
      // From the moment each follower was live it heard every record once, in order.
      const racedSeqs = Array.from({ length: 150 }, (_, i) => live + i + 1);
      for (const heard of [heardA, heardB]) {
        const first = heard[0] as number;
        expect(heard).toEqual(Array.from({ length: total - first + 1 }, (_, i) => first + i));
        expect(heard.filter((seq) => seq > live)).toEqual(racedSeqs);
      }
      const page = await b.read(id, 0, 1000);
      expect(page.records.map((r) => r.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
      // Each node's records kept their own order.
      const fromA = page.records.filter((r) => r.data.startsWith("a")).map((r) => r.data);
      expect(fromA).toEqual(Array.from({ length: 50 }, (_, i) => `a${i}`));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("a node's own notices are not delivered twice, and a notice that never arrives is found by the periodic check once the stream is quiet", async () => {
    const a = new RedisStore({ url: redis.url, prefix: "q:", sweepIntervalMs: 0, syncIntervalMs: 0 });
    const b = new RedisStore({ url: redis.url, prefix: "q:", sweepIntervalMs: 0, syncIntervalMs: 100 });
    try {
      await a.connected();
      await b.connected();
      const { id } = await a.create({ id: `st_q_${Date.now()}`, kind: "log", content_type: "text/plain" });
      const heardA: number[] = [];
      const heardB: number[] = [];
      a.subscribe(id, (n) => heardA.push(...n.records.map((r) => r.seq)));
      b.subscribe(id, (n) => heardB.push(...n.records.map((r) => r.seq)));
      for (let i = 0; i < 100 && (heardA.length === 0 || heardB.length === 0); i++) {
        await a.append(id, [{ data: "probe" }]);
        await new Promise((r) => setTimeout(r, 10));
      }
      for (let i = 0; i < 20; i++) await a.append(id, [{ data: `r${i}` }]);
      const len = (await a.info(id))?.length ?? 0;
      await waitFor(() => heardA.at(-1) === len && heardB.at(-1) === len, 10_000);
      // Node A heard its own appends once each (Redis publishes an append only to the other nodes).
      expect(new Set(heardA).size).toBe(heardA.length);
      // A record written without its notice (as if the notice was lost on the way): node B,
      // which checks quiet streams every 100 ms, still delivers it; node A, which never checks, does not.
      await a.client.xadd(`q:l:${id}`, `${len + 1}-0`, "d", "unannounced");
      await a.client.hset(`q:m:${id}`, "length", String(len + 1));
      await waitFor(() => heardB.at(-1) === len + 1, 10_000);
      expect(heardA.at(-1)).toBe(len);
      expect(new Set(heardB).size).toBe(heardB.length);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("publishes an append only to the other nodes that follow the stream, on each node's own channel; appends of one turn go in one script call", async () => {
    const a = new RedisStore({ url: redis.url, prefix: "pub:", sweepIntervalMs: 0 });
    const b = new RedisStore({ url: redis.url, prefix: "pub:", sweepIntervalMs: 0 });
    const spy = a.client.duplicate();
    try {
      await a.connected();
      await b.connected();
      const published: string[] = [];
      spy.on("pmessage", (_p: string, channel: string) => published.push(channel));
      await spy.psubscribe("pub:*");
      const { id } = await a.create({ id: `st_pub_${Date.now()}`, kind: "log", content_type: "text/plain" });
      const heardA: string[] = [];
      a.subscribe(id, (n) => heardA.push(...n.records.map((r) => r.data)));
      await until(async () => (await a.client.smembers(`pub:f:${id}`)).length === 1);
      // Only the writer follows: nothing is published.
      await Promise.all([a.append(id, [{ data: "1" }]), a.append(id, [{ data: "2" }])]);
      await waitFor(() => heardA.length === 2);
      await new Promise((r) => setTimeout(r, 100));
      expect(published).toEqual([]);
      // Node B follows too: each append of A is published once, to B's channel only.
      const heardB: string[] = [];
      b.subscribe(id, (n) => heardB.push(...n.records.map((r) => r.data)));
      await until(async () => (await a.client.smembers(`pub:f:${id}`)).length === 2);
      const before = Number(
        (await a.client.info("commandstats")).match(/cmdstat_evalsha:calls=(\d+)/)?.[1] ?? 0,
      );
      await Promise.all(Array.from({ length: 10 }, (_, i) => a.append(id, [{ data: `x${i}` }])));
      const after = Number(
        (await a.client.info("commandstats")).match(/cmdstat_evalsha:calls=(\d+)/)?.[1] ?? 0,
      );
      // Ten appends issued in one turn: one script call.
      expect(after - before).toBe(1);
      await waitFor(() => heardB.length === 10 && heardA.length === 12);
      expect(heardB).toEqual(Array.from({ length: 10 }, (_, i) => `x${i}`));
      expect(heardA.slice(2)).toEqual(heardB);
      await waitFor(() => published.length === 10);
      expect(new Set(published).size).toBe(1);
      expect(published[0]).toMatch(/^pub:node:[0-9a-f]{16}$/);
    } finally {
      spy.disconnect();
      await a.close();
      await b.close();
    }
  });

  it("appends made while a script call is unanswered wait for it and then go together, in one call, each with its own length", async () => {
    const a = new RedisStore({ url: redis.url, prefix: "gc:", sweepIntervalMs: 0 });
    const admin = a.client.duplicate();
    try {
      await a.connected();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++)
        ids.push(
          (await a.create({ id: `st_gc${i}_${Date.now()}`, kind: "log", content_type: "text/plain" })).id,
        );
      // Script calls: EVALSHA, or EVAL when the script was not loaded yet.
      const calls = async () => {
        const st = await admin.info("commandstats");
        const n = (cmd: string) => Number(st.match(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`))?.[1] ?? 0);
        return n("evalsha") + n("eval");
      };
      const before = await calls();
      // Redis holds every command of normal clients for 300 ms: the first append's call waits.
      await admin.client("PAUSE", 300, "WRITE");
      const done: Promise<unknown>[] = [a.append(ids[0] as string, [{ data: "first" }])];
      // Twenty more appends, one per turn of the event loop, while that call is unanswered.
      for (let i = 0; i < 20; i++) {
        await new Promise((r) => setImmediate(r));
        done.push(a.append(ids[i % 5] as string, [{ data: `n${i}` }, { data: `m${i}` }]));
      }
      const results = (await Promise.all(done)) as { length: number }[];
      // One call for the first append, one for the twenty queued behind it.
      expect((await calls()) - before).toBe(2);
      // Each append got its own reply: stream i%5 grew by two records per append, in order.
      const lengths = results.slice(1).map((r) => r.length);
      const want = Array.from({ length: 20 }, (_, i) => (i % 5 === 0 ? 1 : 0) + 2 * (Math.floor(i / 5) + 1));
      expect(lengths).toEqual(want);
      const page = await a.read(ids[0] as string, 0, 100);
      expect(page.records.map((r) => r.data)).toEqual([
        "first",
        "n0",
        "m0",
        "n5",
        "m5",
        "n10",
        "m10",
        "n15",
        "m15",
      ]);
    } finally {
      await admin.client("UNPAUSE").catch(() => {});
      admin.disconnect();
      await a.close();
    }
  });
  it("a node that lost its place in a follower set (a reconnect to a Redis that forgot it) registers again and hears the other nodes' appends", async () => {
    const a = new RedisStore({ url: redis.url, prefix: "rr:", sweepIntervalMs: 0, syncIntervalMs: 0 });
    const b = new RedisStore({ url: redis.url, prefix: "rr:", sweepIntervalMs: 0, syncIntervalMs: 0 });
    try {
      await a.connected();
      await b.connected();
      const id = `st_rr_${Date.now()}`;
      await a.create({ id, kind: "log", content_type: "text/plain" });
      const heard: string[] = [];
      b.subscribe(id, (n) => heard.push(...n.records.map((r) => r.data)));
      await until(async () => (await a.client.smembers(`rr:f:${id}`)).length === 1);
      // Without its registration B hears nothing of A's appends (the periodic check is off here).
      await a.client.del(`rr:f:${id}`);
      await a.append(id, [{ data: "unheard" }]);
      await new Promise((r) => setTimeout(r, 200));
      expect(heard).toEqual([]);
      // The subscriber connections drop and come back: each node registers its followers again
      // and catches up from the log.
      await a.client.call("CLIENT", "KILL", "TYPE", "pubsub");
      await until(async () => (await a.client.smembers(`rr:f:${id}`)).length === 1, 10_000);
      await waitFor(() => heard.includes("unheard"), 10_000);
      await a.append(id, [{ data: "after" }]);
      await waitFor(() => heard.includes("after"), 10_000);
      expect(heard).toEqual(["unheard", "after"]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("lets Redis expire an ended stream's keys after its TTL (EXPIRE after close), and sweeps the indexes", async () => {
    const s = new RedisStore({ url: redis.url, prefix: "ttl:", sweepIntervalMs: 0 });
    try {
      await s.connected();
      const { id } = await s.create({
        id: `st_t_${Date.now()}`,
        kind: "log",
        content_type: "text/plain",
        ttl_s: 1,
      });
      await s.append(id, [{ data: "x" }]);
      expect(await s.client.pttl(`ttl:m:${id}`)).toBe(-1); // running: no expiry
      await s.append(id, [], { close: "completed" });
      const ttl = await s.client.pttl(`ttl:l:${id}`);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(1000);
      await new Promise((r) => setTimeout(r, 1200));
      expect(await s.client.exists(`ttl:m:${id}`, `ttl:l:${id}`)).toBe(0);
      expect(await s.info(id)).toBeUndefined();
      expect(await s.sweep()).toBe(0);
      expect(await s.client.zscore("ttl:index", id)).toBeNull();
      expect(await s.client.zscore("ttl:expiry", id)).toBeNull();
    } finally {
      await s.close();
    }
  });

  it("a chat set on one node is found on another; its key expires by itself with the retention", async () => {
    const a = new RedisStore({
      url: redis.url,
      prefix: "chat:",
      sweepIntervalMs: 0,
      limits: { defaultTtlS: 1 },
    });
    const b = new RedisStore({
      url: redis.url,
      prefix: "chat:",
      sweepIntervalMs: 0,
      limits: { defaultTtlS: 1 },
    });
    try {
      await a.connected();
      await b.connected();
      const { id } = await a.create({ id: `st_chat_${Date.now()}`, kind: "generation", content_type: "x" });
      const key = JSON.stringify(["default", "c1"]);
      await a.setChat(key, id);
      expect(await b.getChat(key)).toBe(id);
      const ttl = await a.client.pttl(`chat:chat:${key}`);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(1000);
      const until = Date.now() + 5000;
      while ((await a.client.exists(`chat:chat:${key}`)) === 1 && Date.now() < until)
        await new Promise((r) => setTimeout(r, 100));
      expect(await a.client.exists(`chat:chat:${key}`)).toBe(0);
      expect(await b.getChat(key)).toBeUndefined();
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("keeps the keys' TTLs on update()'s expiry (set, and cleared with null), for a log created later too", async () => {
    const s = new RedisStore({ url: redis.url, prefix: "upd:", sweepIntervalMs: 0 });
    try {
      await s.connected();
      const { id } = await s.create({ id: `st_upd_${Date.now()}`, kind: "log", content_type: "text/plain" });
      const keys = [`upd:m:${id}`, `upd:l:${id}`];
      // Running and still empty (no log key yet): the expiry goes on the hash...
      const at = new Date(Date.now() + 60_000).toISOString();
      expect((await s.update(id, { expires_at: at }))?.expires_at).toBe(at);
      const pttl = await s.client.pttl(keys[0] as string);
      expect(pttl).toBeGreaterThan(50_000);
      expect(pttl).toBeLessThanOrEqual(60_000);
      expect(await s.client.zscore("upd:expiry", id)).toBe(String(Date.parse(at)));
      // ...and on the log an append creates afterwards.
      await s.append(id, [{ data: "x" }, { data: "AAE=", encoding: "base64" }]);
      expect(await s.client.pttl(keys[1] as string)).toBeGreaterThan(50_000);
      // The encoding is a field of the log entry; a text record has none.
      const entries = (await s.client.xrange(keys[1] as string, "-", "+")) as [string, string[]][];
      expect(entries.map(([, f]) => f)).toEqual([
        ["d", "x"],
        ["d", "AAE=", "e", "base64"],
      ]);
      // null: never expires, no TTL on any key, out of the expiry index.
      const cleared = await s.update(id, { expires_at: null, metadata: { k: "v" } });
      expect(cleared?.expires_at).toBeUndefined();
      expect(cleared?.metadata).toEqual({ k: "v" });
      for (const k of keys) expect(await s.client.pttl(k)).toBe(-1);
      expect(await s.client.zscore("upd:expiry", id)).toBeNull();
      // Ended streams too: the close's TTL is replaced by the new expiry.
      await s.append(id, [], { close: "completed" });
      const later = new Date(Date.now() + 3_600_000).toISOString();
      await s.update(id, { expires_at: later });
      for (const k of keys) expect(await s.client.pttl(k)).toBeGreaterThan(3_500_000);
    } finally {
      await s.close();
    }
  });

  it("a sweep leaves alone a stream re-created over an expired id (and tells the old one's followers it is gone)", async () => {
    const clock = new ManualClock(Date.now());
    const s = new RedisStore({
      url: redis.url,
      prefix: "recr:",
      clock,
      sweepIntervalMs: 0,
      syncIntervalMs: 0,
    });
    try {
      await s.connected();
      const id = `st_recr_${Date.now()}`;
      await s.create({ id, kind: "log", content_type: "text/plain", ttl_s: 60 });
      const notices: StoreNotice[] = [];
      s.subscribe(id, (n) => notices.push(n));
      await s.append(id, [{ data: "old" }], { close: "completed" });
      clock.t += 61_000;
      const again = await s.create({ id, kind: "log", content_type: "text/plain" });
      expect(again.length).toBe(0);
      await waitFor(() => notices.some((n) => n.deleted), 5000);
      expect(await s.sweep()).toBe(0);
      // A subscriber of the new stream hears its appends.
      const heard: string[] = [];
      s.subscribe(id, (n) => heard.push(...n.records.map((r) => r.data)));
      await new Promise((r) => setTimeout(r, 50));
      await s.append(id, [{ data: "new" }]);
      await waitFor(() => heard.length > 0, 5000);
      expect(heard).toEqual(["new"]);
      expect((await s.read(id, 0, 10)).records.map((r) => r.data)).toEqual(["new"]);
    } finally {
      await s.close();
    }
  });

  it("keeps any text exactly: emoji, CJK, control characters, quotes, JSON", async () => {
    const s = new RedisStore({ url: redis.url, prefix: "u:", sweepIntervalMs: 0 });
    const other = new RedisStore({ url: redis.url, prefix: "u:", sweepIntervalMs: 0 });
    try {
      await s.connected();
      await other.connected();
      const { id } = await s.create({ id: `st_u_${Date.now()}`, kind: "log", content_type: "text/plain" });
      // Heard on another node: the records travel in the published notice.
      const heard: string[] = [];
      other.subscribe(id, (n) => heard.push(...n.records.map((r) => r.data)));
      await new Promise((r) => setTimeout(r, 100));
      const texts = [
        "héllo 👋🏽 世界",
        'a "quoted" \\ back\nslash',
        "\u0000\u0001\t\r\n",
        '{"type":"text-delta","delta":"∑"}',
        "",
      ];
      await s.append(
        id,
        texts.map((data) => ({ data, type: "t-∆" })),
      );
      const page = await s.read(id, 0, 10);
      expect(page.records.map((r) => r.data)).toEqual(texts);
      expect(page.records.every((r) => r.type === "t-∆")).toBe(true);
      await waitFor(() => heard.length >= texts.length);
      expect(heard).toEqual(texts);
    } finally {
      await s.close();
      await other.close();
    }
  });

  it("reports unavailable while Redis is down and continues after it restarts, losing nothing acknowledged", async () => {
    const r2 = await startRedis({ persist: true });
    const s = new RedisStore({ url: r2.url, sweepIntervalMs: 0, outageMs: 20_000 });
    try {
      await s.connected();
      const { id } = await s.create({ id: `st_r_${Date.now()}`, kind: "log", content_type: "text/plain" });
      await s.append(id, [{ data: "1" }, { data: "2" }]);
      await r2.stop();
      await waitFor(() => s.client.status !== "ready" && !s.ready(), 15_000);
      await expect(s.info(id)).rejects.toSatisfy(
        (e: unknown) => e instanceof SluiceError && e.code === "store_unavailable",
      );
      // An append during the outage waits for Redis to come back.
      const pending = s.append(id, [{ data: "3" }]);
      await new Promise((r) => setTimeout(r, 300));
      await r2.restart();
      const res = await pending;
      expect(res.length).toBe(3);
      await s.connected();
      const page = await s.read(id, 0, 10);
      expect(page.records.map((r) => r.data)).toEqual(["1", "2", "3"]);
    } finally {
      await s.close();
      await r2.close();
    }
  });
});
