import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../src/config.js";
import { createSluice, type SluiceServer } from "../src/server.js";
import { demoText, followWithReconnects } from "./cluster-helper.js";
import { readAllJson, startStream, textOf } from "./helpers.js";
import { type RedisProc, startRedis } from "./redis-helper.js";

/** In-process Sluice servers on a real redis-server: delivery cost and outage bounds. */
let redis: RedisProc;
const servers: SluiceServer[] = [];
beforeAll(async () => {
  redis = await startRedis({ persist: true });
});
afterAll(async () => {
  for (const s of servers) await s.close().catch(() => {});
  await redis?.close();
});

async function server(extra: Record<string, unknown> = {}): Promise<{ url: string; s: SluiceServer }> {
  const config = parseConfig({
    host: "127.0.0.1",
    port: 0,
    log_level: "silent",
    store: redis.url,
    cluster: { lease_ttl_ms: 3000, lease_renew_ms: 500, ...((extra.cluster as object) ?? {}) },
  });
  const s = await createSluice(config, { env: {} });
  servers.push(s);
  return { url: await s.listen(), s };
}

function body(demo: Record<string, unknown>) {
  return {
    model: "demo",
    messages: [{ role: "user", content: "Count the round trips" }],
    demo: { ttft_ms: 20, jitter: 0, ...demo },
  };
}

describe("redis at runtime", () => {
  it("many readers on another node cost Redis per append, not per token per reader", async () => {
    const a = await server();
    const b = await server();
    const admin = new Redis(redis.url);
    try {
      const gen = body({ seed: 77, length: 300, tokens_per_s: 150 });
      const readersN = 40;
      await admin.config("RESETSTAT");
      const { id } = await startStream(a.url, gen);
      const results = await Promise.all(
        Array.from({ length: readersN }, () =>
          followWithReconnects(b.url, id, { maxPerConnection: 100_000 }),
        ),
      );
      for (const r of results) {
        expect(r.text).toBe(demoText(gen));
        expect(r.retries).toEqual([]);
        expect(r.statuses.every((st) => st === 200)).toBe(true);
      }
      const stats = await admin.info("commandstats");
      const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
      const total = [...stats.matchAll(/calls=(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
      const appends = calls("evalsha") + calls("eval");
      const tokens = 300;
      expect(appends).toBeGreaterThan(0);
      expect(appends).toBeLessThanOrEqual(tokens + 5);
      // One follower on node B: reads from Redis grow with readers joining, not with tokens × readers.
      expect(calls("xrange")).toBeLessThan(readersN * 3 + 50);
      expect(calls("hgetall") + calls("multi")).toBeLessThan(readersN * 4 + 50);
      // commandstats also counts the commands inside each append's script (about 6 per append).
      expect(total).toBeLessThan(appends * 8 + readersN * 12 + 400);
      expect(total).toBeLessThan((tokens * readersN) / 5);
    } finally {
      admin.disconnect();
    }
  });

  it("a generation whose buffered events pass their bound during an outage ends with store_unavailable", async () => {
    const a = await server({ cluster: { max_buffered_events: 15, outage_ms: 20_000 } });
    const gen = body({ seed: 8, length: 5000, tokens_per_s: 200 });
    const { id } = await startStream(a.url, gen);
    await new Promise((r) => setTimeout(r, 300));
    await redis.stop();
    // 15 events at 200/s fill the buffer in well under a second.
    await new Promise((r) => setTimeout(r, 600));
    expect((await fetch(`${a.url}/readyz`)).status).toBe(503);
    await redis.restart();
    await a.s.runner.settled(id);
    const events = await readAllJson(a.url, id);
    expect(events.at(-1)?.event).toMatchObject({ type: "error", code: "store_unavailable" });
    const text = textOf(events);
    expect(text.length).toBeGreaterThan(0);
    expect(demoText(gen).startsWith(text)).toBe(true);
  });
});
