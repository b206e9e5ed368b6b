// Spare upstream connections (issue 15, TTFT): against a real node:http upstream that numbers
// its connections, a request that needs a new connection goes out on one opened before it was
// made, and spares that are too old, closed by the upstream, or left at close() are not used.
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { UpstreamHttp } from "../src/providers/upstream-http.js";
import { startSluice } from "./helpers.js";

interface Upstream {
  url: string;
  /** Sockets in accept order (1-based ids: sockets[0] is #1). */
  sockets: Socket[];
  closed: Set<number>;
  /** The socket id each request arrived on, in arrival order. */
  requests: number[];
  close(): Promise<void>;
}

/**
 * An SSE upstream that answers at once and holds every response open until it is closed, or
 * (`complete`) sends one OpenAI-style chunk and ends.
 */
async function upstream(complete = false): Promise<Upstream> {
  const sockets: Socket[] = [];
  const closed = new Set<number>();
  const requests: number[] = [];
  const ids = new WeakMap<Socket, number>();
  const server = http.createServer((req, res) => {
    requests.push(ids.get(req.socket) ?? 0);
    req.resume();
    res.writeHead(200, { "content-type": "text/event-stream" });
    if (!complete) {
      res.write("data: {}\n\n");
      return;
    }
    const chunk = { choices: [{ index: 0, delta: { content: "hi" }, finish_reason: "stop" }] };
    res.end(`data: ${JSON.stringify(chunk)}\n\ndata: [DONE]\n\n`);
  });
  server.on("connection", (s: Socket) => {
    sockets.push(s);
    const id = sockets.length;
    ids.set(s, id);
    s.on("close", () => closed.add(id));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1/chat/completions`,
    sockets,
    closed,
    requests,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

const post = (h: UpstreamHttp, url: string) =>
  h.postSse({
    url,
    headers: { "content-type": "application/json" },
    body: "{}",
    signal: new AbortController().signal,
    now: Date.now(),
  });

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function setup(opts: ConstructorParameters<typeof UpstreamHttp>[0] = {}) {
  const up = await upstream();
  const h = new UpstreamHttp(opts);
  cleanup.push(() => up.close());
  cleanup.push(() => h.close());
  return { up, h };
}

describe("spare upstream connections", () => {
  it("a request that needs a new connection takes the spare opened before it, and a new spare follows", async () => {
    const { up, h } = await setup();
    const a = await post(h, up.url);
    await until(() => up.sockets.length === 2); // #1 carries a, #2 is the spare
    expect(up.requests).toEqual([1]);
    const b = await post(h, up.url); // a still streams: b needs another connection
    expect(up.requests).toEqual([1, 2]);
    await until(() => up.sockets.length === 3); // the next spare
    const c = await post(h, up.url);
    expect(up.requests).toEqual([1, 2, 3]);
    for (const s of [a, b, c]) s.close();
    expect(up.closed.size).toBe(0); // nothing was thrown away
  });

  it("a spare older than its idle bound is closed, not used", async () => {
    const { up, h } = await setup({ spareMaxIdleMs: 50 });
    const a = await post(h, up.url);
    await until(() => up.sockets.length === 2);
    await new Promise((r) => setTimeout(r, 120));
    const b = await post(h, up.url);
    expect(up.requests).toEqual([1, 3]); // on a connection of its own, not spare #2
    await until(() => up.closed.has(2));
    a.close();
    b.close();
  });

  it("spares a route stopped needing are closed by the sweep after their idle bound", async () => {
    const { up, h } = await setup({ spareMaxIdleMs: 50 });
    const a = await post(h, up.url);
    await until(() => up.sockets.length === 2);
    await until(() => up.closed.has(2), 1000); // no request came: the sweep closed it
    expect(up.closed.has(1)).toBe(false); // the one carrying a stays
    a.close();
  });

  it("Sluice's shutdown closes its upstream connections, the spare included", async () => {
    const up = await upstream(true);
    cleanup.push(() => up.close());
    const s = await startSluice({
      routes: {
        up: { provider: "openai-compatible", base_url: up.url.replace("/chat/completions", ""), model: "m" },
      },
    });
    const res = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "up", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.status).toBe(200);
    expect(
      ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]?.message.content,
    ).toBe("hi");
    await until(() => up.sockets.length === 2); // #1 pooled (keep-alive), #2 the spare
    await s.close();
    await until(() => up.closed.has(1) && up.closed.has(2), 1000);
  });

  it("a spare the upstream closed is dropped and the next request still gets through", async () => {
    const { up, h } = await setup();
    const a = await post(h, up.url);
    await until(() => up.sockets.length === 2);
    up.sockets[1]?.destroy(); // the upstream drops the idle spare
    await until(() => up.closed.has(2));
    await new Promise((r) => setTimeout(r, 20)); // its close reaches this side
    const b = await post(h, up.url);
    expect(b.statusCode).toBe(200);
    expect(up.requests).toEqual([1, 3]);
    a.close();
    b.close();
  });

  it("close() closes the spares; spares: 0 opens none", async () => {
    const { up, h } = await setup();
    const a = await post(h, up.url);
    await until(() => up.sockets.length === 2);
    a.close();
    await h.close();
    await until(() => up.closed.has(1) && up.closed.has(2));

    const none = await setup({ spares: 0 });
    const b = await post(none.h, none.up.url);
    await new Promise((r) => setTimeout(r, 100));
    expect(none.up.sockets.length).toBe(1);
    b.close();
  });
});
