import { ManualClock, SluiceClient, type WebSocketLike } from "@sluice/client";
import { describe, expect, it } from "vitest";

/**
 * The WebSocket transport's multiplexing and resume logic, with a scripted socket (the
 * server's /v1/ws is built on another branch; the end-to-end test runs over SSE).
 */
class ScriptedSocket implements WebSocketLike {
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: unknown) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(readonly url: string) {}
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.drop();
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  emit(msg: unknown) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  drop() {
    this.readyState = 3;
    this.onclose?.({});
  }
}

const off = (n: number) => String(n).padStart(16, "0");
const delta = (stream: string, n: number) => ({
  stream,
  offset: off(n),
  event: { type: "text-delta", delta: `${stream}${n} ` },
});
const finish = (stream: string, n: number) => ({
  stream,
  offset: off(n),
  event: { type: "finish", reason: "stop" },
});

async function until(cond: () => boolean) {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setImmediate(r));
  if (!cond()) throw new Error("condition never held");
}

describe("WebSocket transport (one socket, many streams)", () => {
  it("multiplexes streams on one socket and resubscribes each from its own offset after the socket drops", async () => {
    const sockets: ScriptedSocket[] = [];
    const clock = new ManualClock();
    const client = new SluiceClient({
      baseUrl: "http://127.0.0.1:1",
      transport: "ws",
      webSocket: (url) => {
        const s = new ScriptedSocket(url);
        sockets.push(s);
        return s;
      },
      clock,
      random: () => 0.5,
      backoff: { initialMs: 100 },
    });
    const texts: Record<string, string> = { a: "", b: "" };
    const run = (id: string) =>
      (async () => {
        for await (const { event } of client.follow(id))
          if (event.type === "text-delta") texts[id] += event.delta;
      })();
    const ra = run("a");
    const rb = run("b");
    await until(() => sockets.length === 1);
    expect(sockets[0]?.url).toBe("ws://127.0.0.1:1/v1/ws");
    sockets[0]?.open();
    await until(() => (sockets[0]?.sent.length ?? 0) === 2);
    expect(sockets[0]?.sent).toEqual([
      { type: "subscribe", stream: "a", offset: "-1", compact: true },
      { type: "subscribe", stream: "b", offset: "-1", compact: true },
    ]);
    const s0 = sockets[0] as ScriptedSocket;
    s0.emit(delta("a", 1));
    s0.emit(delta("b", 1));
    s0.emit(delta("a", 2));
    s0.emit(delta("x", 1)); // a stream nobody follows: ignored
    await until(() => texts.a === "a1 a2 " && texts.b === "b1 ");
    s0.drop();
    await until(() => clock.pending === 2);
    clock.advance(100);
    await until(() => sockets.length === 2);
    const s1 = sockets[1] as ScriptedSocket;
    s1.open();
    await until(() => s1.sent.length === 2);
    expect(s1.sent).toContainEqual({ type: "subscribe", stream: "a", offset: off(2), compact: true });
    expect(s1.sent).toContainEqual({ type: "subscribe", stream: "b", offset: off(1), compact: true });
    s1.emit(delta("a", 2)); // a replayed event is not applied twice
    s1.emit(delta("a", 3));
    s1.emit(finish("a", 4));
    s1.emit(delta("b", 2));
    s1.emit(finish("b", 3));
    await Promise.all([ra, rb]);
    expect(texts).toEqual({ a: "a1 a2 a3 ", b: "b1 b2 " });
    // A finished follower unsubscribes.
    expect(
      s1.sent
        .filter((m) => m.type === "unsubscribe")
        .map((m) => m.stream)
        .sort(),
    ).toEqual(["a", "b"]);
  });

  it("subscribes with compact catch-up unless the client says compact: false", async () => {
    const sockets: ScriptedSocket[] = [];
    const client = new SluiceClient({
      baseUrl: "http://127.0.0.1:1",
      transport: "ws",
      compact: false,
      webSocket: (url) => {
        const s = new ScriptedSocket(url);
        sockets.push(s);
        return s;
      },
    });
    const f = client.follow("a");
    const run = (async () => {
      for await (const _ of f) {
      }
    })();
    await until(() => sockets.length === 1);
    const s0 = sockets[0] as ScriptedSocket;
    s0.open();
    await until(() => s0.sent.length === 1);
    expect(s0.sent[0]).toEqual({ type: "subscribe", stream: "a", offset: "-1" });
    s0.emit(finish("a", 1));
    await run;
  });

  it("a slow_reader cut resubscribes from the offset reached; end after the terminal event is harmless", async () => {
    const sockets: ScriptedSocket[] = [];
    const clock = new ManualClock();
    const client = new SluiceClient({
      baseUrl: "http://127.0.0.1:1",
      transport: "ws",
      webSocket: (url) => {
        const s = new ScriptedSocket(url);
        sockets.push(s);
        return s;
      },
      clock,
      random: () => 0,
    });
    let text = "";
    const run = (async () => {
      for await (const { event } of client.follow("a")) if (event.type === "text-delta") text += event.delta;
    })();
    await until(() => sockets.length === 1);
    const s0 = sockets[0] as ScriptedSocket;
    s0.open();
    await until(() => s0.sent.length === 1);
    s0.emit({ type: "subscribed", stream: "a", offset: off(0) });
    s0.emit(delta("a", 1));
    s0.emit({ type: "error", code: "slow_reader", stream: "a", offset: off(1), message: "too slow" });
    await until(() => clock.pending === 1);
    clock.advance(0);
    await until(() => s0.sent.length === 2);
    expect(s0.sent[1]).toEqual({ type: "subscribe", stream: "a", offset: off(1), compact: true });
    s0.emit(delta("a", 2));
    s0.emit(finish("a", 3));
    s0.emit({ type: "end", stream: "a", status: "completed" });
    await run;
    expect(text).toBe("a1 a2 ");
    expect(sockets.length).toBe(1);
  });

  it("an error message with a code fails that follower only", async () => {
    const sockets: ScriptedSocket[] = [];
    const client = new SluiceClient({
      baseUrl: "http://127.0.0.1:1",
      transport: "ws",
      webSocket: (url) => {
        const s = new ScriptedSocket(url);
        sockets.push(s);
        return s;
      },
    });
    const bad = (async () => {
      for await (const _ of client.follow("gone")) {
      }
    })();
    await until(() => sockets.length === 1);
    sockets[0]?.open();
    await until(() => (sockets[0]?.sent.length ?? 0) === 1);
    sockets[0]?.emit({ type: "error", stream: "gone", code: "stream_not_found", message: "no stream gone" });
    await expect(bad).rejects.toMatchObject({ code: "stream_not_found" });
    client.close();
  });
});
