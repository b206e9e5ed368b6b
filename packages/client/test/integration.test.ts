import { type ConnectionState, MessageAccumulator, SluiceClient } from "@sluice/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  demoBody,
  type Running,
  readAllJson,
  startSluice,
  textOf,
  waitForStatus,
} from "../../server/test/helpers.js";
import { type CuttingProxy, startCuttingProxy } from "./proxy.js";

/** The SDK against a real server, through a TCP proxy that cuts connections at random points. */
let s: Running;
let proxy: CuttingProxy;
beforeAll(async () => {
  s = await startSluice({ sse: { heartbeat_ms: 200, retry_ms: 50 } });
  proxy = await startCuttingProxy(s.url);
});
afterAll(async () => {
  await proxy.close();
  await s.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A client through the cutting proxy; compact catch-up is the SDK's default. */
function client(compact?: boolean) {
  return new SluiceClient({
    baseUrl: proxy.url,
    backoff: { initialMs: 20, maxMs: 200 },
    idleTimeoutMs: 2000,
    ...(compact !== undefined ? { compact } : {}),
  });
}

describe("client SDK over SSE against a real server", () => {
  for (const [drops, compact] of [
    [3, false],
    [8, false],
    [3, true],
    [8, true],
  ] as const) {
    it(`assembles exactly the generation's text when the connection drops ${drops} times at random points (compact: ${compact})`, async () => {
      const c = client(compact);
      const info = await c.start(demoBody({ length: 400, tokens_per_s: 400, seed: drops }));
      const states: ConnectionState["status"][] = [];
      const f = c.follow(info.id, { onState: (st) => states.push(st.status) });
      const acc = new MessageAccumulator();
      const offsets: number[] = [];
      let cuts = 0;
      const cutter = (async () => {
        while (cuts < drops) {
          await sleep(30 + Math.random() * 120);
          if (f.state.status === "ended") break;
          if (proxy.cutAll() > 0) cuts++;
        }
      })();
      for await (const se of f) {
        offsets.push(Number(se.offset));
        acc.apply(se);
      }
      await cutter;
      const log = await readAllJson(s.url, info.id);
      expect(acc.message.text).toBe(textOf(log));
      expect(acc.message.status).toBe("completed");
      if (compact) {
        // What a resume caught up on came folded: fewer events, offsets increasing, each a
        // record's, the last the terminal one.
        const real = new Set(log.map((e) => Number(e.offset)));
        expect(offsets.every((o, i) => real.has(o) && (i === 0 || o > (offsets[i - 1] as number)))).toBe(
          true,
        );
        expect(offsets.at(-1)).toBe(Number(log.at(-1)?.offset));
      } else {
        // Every event exactly once, in order.
        expect(offsets).toEqual(log.map((e) => Number(e.offset)));
      }
      expect(cuts).toBeGreaterThan(0);
      expect(states.filter((x) => x === "reconnecting").length).toBeGreaterThanOrEqual(cuts);
      expect(states.at(-1)).toBe("ended");
    });
  }

  it("catches up compact by default (same text, a few events); compact: false reads every event", async () => {
    const info = await client().start(demoBody({ length: 500, seed: 4 }));
    await waitForStatus(s.url, info.id, (st) => st !== "running");
    const log = await readAllJson(s.url, info.id);
    const read = async (c: SluiceClient) => {
      const acc = new MessageAccumulator();
      const offsets: string[] = [];
      for await (const se of c.follow(info.id)) {
        acc.apply(se);
        offsets.push(se.offset);
      }
      return { acc, offsets };
    };
    const compact = await read(client());
    const plain = await read(client(false));
    expect(compact.acc.message.text).toBe(textOf(log));
    expect(plain.acc.message.text).toBe(textOf(log));
    expect(compact.acc.message.status).toBe("completed");
    expect(plain.offsets).toEqual(log.map((e) => e.offset));
    expect(compact.offsets.length).toBeLessThan(log.length / 10);
    expect(compact.offsets.at(-1)).toBe(log.at(-1)?.offset);
  });

  it("keeps retrying while the server is unreachable and resumes when it is back", async () => {
    const c = client();
    const info = await c.start(demoBody({ length: 150, tokens_per_s: 300, seed: 11 }));
    const f = c.follow(info.id);
    const acc = new MessageAccumulator();
    let paused = false;
    for await (const se of f) {
      acc.apply(se);
      if (!paused && acc.message.deltas === 20) {
        paused = true;
        proxy.pause();
        proxy.cutAll();
        setTimeout(() => proxy.resume(), 600);
      }
    }
    expect(paused).toBe(true);
    expect(acc.message.text).toBe(textOf(await readAllJson(s.url, info.id)));
  });

  it("follows from an offset, and a finished stream read from its end ends cleanly", async () => {
    const c = client(false);
    const info = await c.start(demoBody({ length: 30 }));
    await waitForStatus(s.url, info.id, (st) => st !== "running");
    const log = await readAllJson(s.url, info.id);
    const mid = log[10]?.offset as string;
    const rest: string[] = [];
    for await (const se of c.follow(info.id, { offset: mid })) rest.push(se.offset);
    expect(rest).toEqual(log.slice(11).map((e) => e.offset));
    const end = c.follow(info.id, { offset: log.at(-1)?.offset as string });
    for await (const _ of end) throw new Error("nothing should come");
    expect(end.state.status).toBe("ended");
  });

  it("cancel stops the generation: the follower gets the abort event and the stream is cancelled", async () => {
    const c = client();
    const info = await c.start(demoBody({ length: 2000, tokens_per_s: 100 }));
    const acc = new MessageAccumulator();
    let cancelled: Promise<unknown> | undefined;
    for await (const se of c.follow(info.id)) {
      acc.apply(se);
      if (acc.message.deltas === 5 && !cancelled) cancelled = c.cancel(info.id);
    }
    const final = (await cancelled) as { status: string };
    expect(final.status).toBe("cancelled");
    expect(acc.message.status).toBe("cancelled");
    expect(acc.message.abort?.by).toBe("client");
    expect(acc.message.deltas).toBeLessThan(2000);
    expect((await c.info(info.id)).status).toBe("cancelled");
  });

  it("errors carry the catalogue code: unknown stream, bad offset, unknown model", async () => {
    const c = client();
    await expect(
      (async () => {
        for await (const _ of c.follow("st_doesnotexist000000000")) {
        }
      })(),
    ).rejects.toMatchObject({ code: "stream_not_found", retryable: false });
    const info = await c.start(demoBody({ length: 5 }));
    await expect(
      (async () => {
        for await (const _ of c.follow(info.id, { offset: "bogus" })) {
        }
      })(),
    ).rejects.toMatchObject({ code: "invalid_offset" });
    await expect(
      c.start({ model: "nope", messages: [{ role: "user", content: "hi" }] }),
    ).rejects.toMatchObject({
      code: "unknown_model",
      retryable: false,
    });
    expect((await c.models()).map((m) => m.id)).toContain("demo");
  });
});
