import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import WebSocket from "ws";
import { pingTickMs } from "../src/http/ws.js";
import {
  demoBody,
  type Running,
  readAllJson,
  startSluice,
  startStream,
  textOf,
  waitForStatus,
} from "./helpers.js";

type Msg = Record<string, unknown> & {
  type?: string;
  stream?: string;
  offset?: string;
  event?: Record<string, unknown>;
};

/** A real `ws` client that records every message and waits on predicates. */
class Client {
  readonly msgs: Msg[] = [];
  private waiters: { pred: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];
  closed = false;

  private constructor(readonly ws: WebSocket) {
    ws.on("message", (data) => {
      const m = JSON.parse(String(data)) as Msg;
      this.msgs.push(m);
      for (const w of [...this.waiters]) {
        if (w.pred(m)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    });
    ws.on("close", () => {
      this.closed = true;
    });
  }

  static async open(url: string, opts: WebSocket.ClientOptions = {}): Promise<Client> {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/v1/ws`, opts);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    return new Client(ws);
  }

  send(m: unknown): void {
    this.ws.send(typeof m === "string" ? m : JSON.stringify(m));
  }

  next(pred: (m: Msg) => boolean, timeoutMs = 10_000): Promise<Msg> {
    const found = this.msgs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`timed out; got ${JSON.stringify(this.msgs.slice(-5))}`)),
        timeoutMs,
      );
      this.waiters.push({
        pred,
        resolve: (m) => {
          clearTimeout(t);
          resolve(m);
        },
      });
    });
  }

  events(stream: string): Msg[] {
    return this.msgs.filter((m) => m.stream === stream && m.event !== undefined);
  }

  close(): void {
    this.ws.close();
  }
}

describe("WebSocket /v1/ws", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice({ ws: { ping_interval_ms: 200, max_subscriptions: 5 } });
  });
  afterAll(async () => {
    await s.close();
  });

  it("subscribes from -1 and gets every event of a stream, then end", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 30 }));
    const c = await Client.open(s.url);
    c.send({ type: "subscribe", stream: id, offset: "-1", id: "a1" });
    const ack = await c.next((m) => m.type === "subscribed");
    expect(ack).toMatchObject({ stream: id, id: "a1" });
    const end = await c.next((m) => m.type === "end" && m.stream === id);
    expect(end.status).toBe("completed");
    const got = c.events(id);
    const all = await readAllJson(s.url, id);
    expect(got.map((m) => m.offset)).toEqual(all.map((e) => e.offset));
    expect(got.map((m) => m.event)).toEqual(all.map((e) => e.event));
    // The end message comes after the terminal event.
    expect(c.msgs.indexOf(end)).toBeGreaterThan(c.msgs.indexOf(got[got.length - 1] as Msg));
    c.close();
  });

  it("flush_ms gives a subscription its own cadence: fewer, larger batches, same records", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 150, tokens_per_s: 300 }));
    const c = await Client.open(s.url);
    const before = s.server.flow.flushes;
    c.send({ type: "subscribe", stream: id, offset: "-1", flush_ms: 200 });
    await c.next((m) => m.type === "end" && m.stream === id);
    const flushes = s.server.flow.flushes - before;
    const all = await readAllJson(s.url, id);
    expect(c.events(id).map((m) => m.offset)).toEqual(all.map((e) => e.offset));
    // ~0.5 s of generation at one flush per 200 ms: a handful of writes for ~150 events.
    expect(flushes).toBeLessThan(15);
    c.close();
  });

  it("resumes from an offset with nothing lost or duplicated", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 40, tokens_per_s: 400 }));
    const c1 = await Client.open(s.url);
    c1.send({ type: "subscribe", stream: id, offset: "-1" });
    await c1.next(() => c1.events(id).length >= 8);
    c1.ws.terminate();
    const seen = c1.events(id);
    const lastOffset = seen[seen.length - 1]?.offset as string;
    const c2 = await Client.open(s.url);
    c2.send({ type: "subscribe", stream: id, offset: lastOffset });
    await c2.next((m) => m.type === "end" && m.stream === id);
    const joined = [...seen, ...c2.events(id)];
    const all = await readAllJson(s.url, id);
    expect(joined.map((m) => m.offset)).toEqual(all.map((e) => e.offset));
    expect(textOf(joined as { event: Record<string, unknown> }[])).toBe(textOf(all));
    c2.close();
  });

  it("starts a generation over the socket and follows it from its first event", async () => {
    const c = await Client.open(s.url);
    c.send({ type: "start", id: 7, ...demoBody({ length: 20 }) });
    const started = await c.next((m) => m.type === "started");
    expect(started.id).toBe(7);
    const stream = started.stream as string;
    expect(stream).toMatch(/^st_/);
    await c.next((m) => m.type === "end" && m.stream === stream);
    const evs = c.events(stream);
    expect(evs[0]?.event?.type).toBe("start");
    expect(evs[evs.length - 1]?.event?.type).toBe("finish");
    expect(evs.map((m) => m.offset)).toEqual((await readAllJson(s.url, stream)).map((e) => e.offset));
    c.close();
  });

  it("cancels a generation: it ends with abort, and the socket lives on", async () => {
    const c = await Client.open(s.url);
    c.send({ type: "start", id: "s", ...demoBody({ length: 5000, tokens_per_s: 50 }) });
    const started = await c.next((m) => m.type === "started" && m.id === "s");
    const stream = started.stream as string;
    await c.next((m) => m.stream === stream && m.event?.type === "text-delta");
    c.send({ type: "cancel", stream, id: "c" });
    const cancelled = await c.next((m) => m.type === "cancelled");
    expect(cancelled).toMatchObject({ stream, status: "cancelled", id: "c" });
    const end = await c.next((m) => m.type === "end" && m.stream === stream);
    expect(end.status).toBe("cancelled");
    expect(c.events(stream).at(-1)?.event?.type).toBe("abort");
    // Still usable.
    c.send({ type: "start", id: "again", ...demoBody({ length: 3 }) });
    await c.next((m) => m.type === "started" && m.id === "again");
    c.close();
  });

  it("a socket that leaves cancels what it started with on_disconnect: cancel, and nothing else", async () => {
    const c = await Client.open(s.url);
    const slow = { length: 5000, tokens_per_s: 50 };
    c.send({ type: "start", id: "cut", on_disconnect: "cancel", ...demoBody(slow) });
    c.send({ type: "start", id: "keep", ...demoBody(slow) });
    c.send({ type: "start", id: "bg", subscribe: false, on_disconnect: "cancel", ...demoBody(slow) });
    const cut = (await c.next((m) => m.type === "started" && m.id === "cut")).stream as string;
    const keep = (await c.next((m) => m.type === "started" && m.id === "keep")).stream as string;
    const bg = (await c.next((m) => m.type === "started" && m.id === "bg")).stream as string;
    await c.next((m) => m.stream === cut && m.event?.type === "text-delta");
    c.ws.terminate();
    await waitForStatus(s.url, cut, (st) => st === "cancelled");
    await waitForStatus(s.url, bg, (st) => st === "cancelled");
    const events = await readAllJson(s.url, cut);
    expect(events.at(-1)?.event).toMatchObject({ type: "abort", by: "client-disconnect" });
    // The default (continue): still running after the socket is gone.
    const info = (await (await fetch(`${s.url}/v1/streams/${keep}/info`)).json()) as { status: string };
    expect(info.status).toBe("running");
    await fetch(`${s.url}/v1/streams/${keep}/cancel`, { method: "POST" });
  });

  it("carries many streams on one socket, each complete and in order", async () => {
    const c = await Client.open(s.url);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await startStream(s.url, demoBody({ seed: i, length: 25 }))).id);
    for (const id of ids) c.send({ type: "subscribe", stream: id, offset: "-1" });
    for (const id of ids) await c.next((m) => m.type === "end" && m.stream === id);
    for (const id of ids) {
      const all = await readAllJson(s.url, id);
      expect(c.events(id).map((m) => m.offset)).toEqual(all.map((e) => e.offset));
      expect(c.events(id).map((m) => m.event)).toEqual(all.map((e) => e.event));
    }
    c.close();
  });

  it("unsubscribe stops delivery for that stream only", async () => {
    const a = await startStream(s.url, demoBody({ length: 400, tokens_per_s: 200 }));
    const b = await startStream(s.url, demoBody({ length: 60, tokens_per_s: 200, seed: 3 }));
    const c = await Client.open(s.url);
    c.send({ type: "subscribe", stream: a.id });
    c.send({ type: "subscribe", stream: b.id });
    await c.next((m) => m.stream === a.id && m.event?.type === "text-delta");
    c.send({ type: "unsubscribe", stream: a.id, id: "u" });
    const un = await c.next((m) => m.type === "unsubscribed");
    expect(un.id).toBe("u");
    const countAtUnsub = c.events(a.id).length;
    await c.next((m) => m.type === "end" && m.stream === b.id);
    expect(c.events(a.id).length).toBe(countAtUnsub);
    expect(c.events(b.id).at(-1)?.event?.type).toBe("finish");
    await s.server.runner.cancel(a.id);
    c.close();
  });

  it("answers malformed messages with coded errors and keeps other subscriptions alive", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 120, tokens_per_s: 300 }));
    const c = await Client.open(s.url);
    c.send({ type: "subscribe", stream: id });
    await c.next((m) => m.type === "subscribed");
    c.send("{not json");
    expect((await c.next((m) => m.type === "error" && m.code === "invalid_json")).message).toMatch(/JSON/);
    c.send("[1,2]");
    await c.next((m) => m.type === "error" && m.code === "invalid_request");
    c.send({ type: "dance", id: "x" });
    expect(await c.next((m) => m.type === "error" && m.id === "x")).toMatchObject({
      code: "invalid_request",
    });
    c.send({ type: "subscribe", stream: "st_nope", id: "nf" });
    expect(await c.next((m) => m.id === "nf")).toMatchObject({
      type: "error",
      code: "stream_not_found",
      stream: "st_nope",
    });
    // Input is checked before anything else: a bad offset is invalid_offset even on a stream
    // this socket already follows (which, with a good offset, is invalid_request).
    c.send({ type: "subscribe", stream: id, offset: "banana", id: "bo" });
    expect(await c.next((m) => m.id === "bo")).toMatchObject({ code: "invalid_offset" });
    c.send({ type: "subscribe", stream: id, offset: "-1", id: "dup" });
    expect(await c.next((m) => m.id === "dup")).toMatchObject({ code: "invalid_request" });
    c.send({ type: "subscribe", stream: "x", offset: "banana", id: "bo2" });
    expect(await c.next((m) => m.id === "bo2")).toMatchObject({ type: "error", code: "invalid_offset" });
    c.send({ type: "subscribe", stream: "a b", id: "bad-id" });
    expect(await c.next((m) => m.id === "bad-id")).toMatchObject({ code: "invalid_request" });
    c.send({ type: "start", id: "bad-start", model: "demo" });
    expect(await c.next((m) => m.id === "bad-start")).toMatchObject({ code: "invalid_request" });
    c.send({ type: "start", id: "um", model: "no-such-model", messages: [{ role: "user", content: "hi" }] });
    expect(await c.next((m) => m.id === "um")).toMatchObject({ code: "unknown_model" });
    c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    await c.next((m) => m.type === "error" && m.message === "messages are JSON text frames");
    // The first subscription was never disturbed: it completes with every event.
    await c.next((m) => m.type === "end" && m.stream === id);
    const all = await readAllJson(s.url, id);
    expect(c.events(id).map((m) => m.offset)).toEqual(all.map((e) => e.offset));
    expect(c.closed).toBe(false);
    c.close();
  });

  it("bounds subscriptions per socket and rejects a duplicate subscription", async () => {
    const c = await Client.open(s.url);
    const ids: string[] = [];
    for (let i = 0; i < 6; i++)
      ids.push((await startStream(s.url, demoBody({ length: 2000, tokens_per_s: 20 }))).id);
    for (let i = 0; i < 5; i++) c.send({ type: "subscribe", stream: ids[i], id: i });
    for (let i = 0; i < 5; i++) await c.next((m) => m.type === "subscribed" && m.id === i);
    c.send({ type: "subscribe", stream: ids[0], id: "dup" });
    expect(await c.next((m) => m.id === "dup")).toMatchObject({ type: "error", code: "invalid_request" });
    c.send({ type: "subscribe", stream: ids[5], id: "six" });
    expect(await c.next((m) => m.id === "six")).toMatchObject({
      type: "error",
      code: "too_many_subscriptions",
    });
    for (const id of ids) await s.server.runner.cancel(id);
    c.close();
  });

  it("terminates a socket that stops answering pings (one shared ping timer)", async () => {
    // A ping tick no other timer here uses, so the spy counts only the pinger's intervals.
    const PING_MS = 230;
    const TICK = pingTickMs(PING_MS);
    expect(TICK).toBe(23);
    const intervals = vi.spyOn(globalThis, "setInterval");
    const pingTimers = () => intervals.mock.calls.filter((c) => c[1] === TICK).length;
    const srv = await startSluice({ ws: { ping_interval_ms: PING_MS } });
    try {
      const live = await Client.open(srv.url);
      let pings = 0;
      live.ws.on("ping", () => pings++);
      const deaf = await Promise.all([0, 1, 2].map(() => Client.open(srv.url, { autoPong: false })));
      // Four sockets, one interval; it stops with the last socket and starts again with the next.
      expect(pingTimers()).toBe(1);
      const codes = await Promise.all(
        deaf.map((c) => new Promise<number>((resolve) => c.ws.once("close", (code) => resolve(code)))),
      );
      // Terminated (no close frame), not closed politely.
      expect(codes).toEqual([1006, 1006, 1006]);
      // The socket that answers its pings is still open several pings later.
      for (let i = 0; i < 1000 && pings < 4; i++) await new Promise((r) => setTimeout(r, 10));
      expect(pings).toBeGreaterThanOrEqual(4);
      expect(live.closed).toBe(false);
      const pinger = intervals.mock.results[intervals.mock.calls.findIndex((c) => c[1] === TICK)]?.value;
      const cleared = vi.spyOn(globalThis, "clearInterval");
      const pingerCleared = () => cleared.mock.calls.some((c) => c[0] === pinger);
      live.close();
      for (let i = 0; i < 1000 && !pingerCleared(); i++) await new Promise((r) => setTimeout(r, 10));
      expect(pingerCleared()).toBe(true);
      cleared.mockRestore();
      const again = await Client.open(srv.url);
      expect(pingTimers()).toBe(2);
      again.close();
    } finally {
      intervals.mockRestore();
      await srv.close();
    }
  });

  it("rejects an oversized message by closing with 1009", async () => {
    const small = await startSluice({ ws: { max_payload_bytes: 2048 } });
    try {
      const c = await Client.open(small.url);
      const code = new Promise<number>((resolve) => c.ws.once("close", (code) => resolve(code)));
      c.send({ type: "subscribe", stream: "x".repeat(5000) });
      expect(await code).toBe(1009);
    } finally {
      await small.close();
    }
  });

  it("answers 404 on other upgrade paths", async () => {
    const ws = new WebSocket(`${s.url.replace("http", "ws")}/v1/nope`);
    const status = await new Promise<number>((resolve) =>
      ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0)),
    );
    expect(status).toBe(404);
  });

  it("negotiates permessage-deflate only when enabled", async () => {
    const c = await Client.open(s.url, { perMessageDeflate: true });
    expect(c.ws.extensions).toBe("");
    c.close();
    const d = await startSluice({ ws: { per_message_deflate: true } });
    try {
      const c2 = await Client.open(d.url, { perMessageDeflate: true });
      expect(c2.ws.extensions).toContain("permessage-deflate");
      const { id } = await startStream(d.url, demoBody({ length: 30 }));
      c2.send({ type: "subscribe", stream: id });
      await c2.next((m) => m.type === "end" && m.stream === id);
      expect(c2.events(id).map((m) => m.offset)).toEqual((await readAllJson(d.url, id)).map((e) => e.offset));
      c2.close();
    } finally {
      await d.close();
    }
  });

  it("a finished stream subscribed at its end sends just end", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 3 }));
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    const c = await Client.open(s.url);
    c.send({ type: "subscribe", stream: id, offset: info.next_offset });
    const end = await c.next((m) => m.type === "end");
    expect(end.status).toBe("completed");
    expect(c.events(id)).toHaveLength(0);
    c.close();
  });

  it("cuts a stalled socket's subscription with slow_reader and its last offset; the socket survives", async () => {
    const slow = await startSluice({
      flow: {
        high_water_bytes: 16 * 1024,
        slow_reader_lag_bytes: 256 * 1024,
        slow_reader_ms: 0,
        adaptive: false,
      },
    });
    try {
      const { id } = await startStream(
        slow.url,
        demoBody({ length: 100_000, tokens_per_s: 25_000, ttft_ms: 50 }),
      );
      const stalled = await Client.open(slow.url);
      const healthy = await Client.open(slow.url);
      stalled.send({ type: "subscribe", stream: id });
      healthy.send({ type: "subscribe", stream: id });
      await stalled.next((m) => m.type === "subscribed");
      stalled.ws.pause(); // stop reading the socket
      const t0 = Date.now();
      while (slow.server.hub.slowReaderCuts === 0 && Date.now() - t0 < 20_000)
        await new Promise((r) => setTimeout(r, 20));
      expect(slow.server.hub.slowReaderCuts).toBe(1);
      stalled.ws.resume();
      const err = await stalled.next((m) => m.type === "error" && m.code === "slow_reader", 20_000);
      expect(err.stream).toBe(id);
      const delivered = stalled.events(id);
      expect(err.offset).toBe(delivered.at(-1)?.offset);
      // The socket is still usable, and resuming from the named offset completes the stream.
      stalled.send({ type: "subscribe", stream: id, offset: err.offset, id: "resume" });
      await stalled.next((m) => m.type === "end" && m.stream === id, 60_000);
      await healthy.next((m) => m.type === "end" && m.stream === id, 60_000);
      const n = (await (await fetch(`${slow.url}/v1/streams/${id}/info`)).json()) as { length: number };
      const offsets = stalled.events(id).map((m) => Number(m.offset));
      expect(offsets.length).toBe(n.length);
      expect(offsets.every((o, i) => o === i + 1)).toBe(true);
      expect(healthy.events(id).length).toBe(n.length);
      stalled.close();
      healthy.close();
    } finally {
      await slow.close();
    }
  }, 90_000);
});
