import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { startRedis } from "./redis-helper.js";
import { makeCert } from "./tls-cert.js";

// SIGTERM on the real CLI process (`sluice serve`) with connections the HTTP server does not
// track by itself: HTTP/2 sessions (TLS) and upgraded WebSockets. The process must exit within
// shutdown_grace_ms + a few seconds, every reader must learn how its stream ended, and the
// SQLite file must be usable by the next process (its lock released).

const CLI = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));
const GRACE_MS = 1500;
/** Generous: the bound is "exits at all, soon after the grace", not a speed measurement. */
const EXIT_BOUND_MS = GRACE_MS + 8000;

let dir: string;
const children: ChildProcess[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "sluice-shutdown-doors-"));
});
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

interface Proc {
  child: ChildProcess;
  url: string;
  out: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `sluice serve` on a free port with the given extra args; resolves once it listens. */
async function serve(args: string[]): Promise<Proc> {
  const config = join(dir, `config-${children.length}.json`);
  writeFileSync(config, JSON.stringify({ shutdown_grace_ms: GRACE_MS, log_level: "warn" }));
  const child = spawn(process.execPath, [CLI, "serve", "--port", "0", "-c", config, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, SLUICE_LOG_LEVEL: "warn" },
  });
  children.push(child);
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal })),
  );
  const start = Date.now();
  for (;;) {
    const m = /listening on (https?:\/\/\S+)/.exec(out);
    if (m) return { child, url: m[1] as string, out: () => out, exit };
    if (child.exitCode !== null) throw new Error(`sluice serve exited: ${out}`);
    if (Date.now() - start > 15_000) throw new Error(`sluice serve did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Sends SIGTERM and waits for the exit, failing (not hanging) past the bound. */
async function terminate(
  p: Proc,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const t0 = Date.now();
  p.child.kill("SIGTERM");
  const timeout = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), EXIT_BOUND_MS).unref());
  const r = await Promise.race([p.exit, timeout]);
  if (r === "timeout") {
    p.child.kill("SIGKILL");
    throw new Error(`no exit ${EXIT_BOUND_MS} ms after SIGTERM; output:\n${p.out()}`);
  }
  return { ...r, ms: Date.now() - t0 };
}

const demo = (length: number, tokens_per_s: number) =>
  JSON.stringify({
    model: "demo",
    messages: [{ role: "user", content: "hi" }],
    demo: { seed: 3, ttft_ms: 5, tokens_per_s, jitter: 0, length },
  });

describe("SIGTERM with HTTP/2 sessions open (TLS)", () => {
  it("closes the sessions, ends the running stream with one terminal event, exits 0 and frees the SQLite file", async () => {
    const { cert, key } = makeCert(dir);
    const db = join(dir, "h2.db");
    const args = ["--store", `sqlite:${db}`, "--tls-cert", cert, "--tls-key", key];
    const p = await serve(args);
    expect(p.url.startsWith("https://")).toBe(true);

    // An idle session, and a session with a live SSE reader of a generation that outlasts the grace.
    const idle = http2.connect(p.url, { rejectUnauthorized: false });
    idle.on("error", () => {});
    await new Promise<void>((resolve, reject) => {
      idle.once("connect", () => resolve());
      idle.once("error", reject);
    });
    const session = http2.connect(p.url, { rejectUnauthorized: false });
    session.on("error", () => {});
    const idleClosed = new Promise<void>((r) => idle.once("close", () => r()));
    const sessionClosed = new Promise<void>((r) => session.once("close", () => r()));
    const req = session.request({
      ":method": "POST",
      ":path": "/v1/streams",
      "content-type": "application/json",
      accept: "text/event-stream",
    });
    req.setEncoding("utf8");
    let body = "";
    let status = 0;
    req.on("response", (h) => {
      status = Number(h[":status"]);
    });
    req.on("data", (d: string) => {
      body += d;
    });
    req.on("error", () => {});
    const ended = new Promise<void>((r) => req.on("close", () => r()));
    req.end(demo(100_000, 20));
    const t0 = Date.now();
    while (!body.includes("text-delta")) {
      if (Date.now() - t0 > 10_000) throw new Error(`no delta: ${status} ${body}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    // An HTTP/1.1 keep-alive connection on the same TLS server, idle after its request.
    const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      https
        .get(`${p.url}/healthz`, { agent }, (res) => {
          res.resume();
          res.on("end", () => resolve());
        })
        .on("error", reject);
    });

    const r = await terminate(p);
    expect(p.out()).not.toMatch(/closeAllConnections|TypeError|uncaught/i);
    expect(r.signal).toBeNull();
    expect(r.code).toBe(0);
    await ended;
    await Promise.all([idleClosed, sessionClosed]);
    agent.destroy();
    expect(status).toBe(200);
    // The reader got the generation's one terminal event (interrupted by the shutdown).
    const terminal = body.match(/event: (finish|error|abort)/g) ?? [];
    expect(terminal).toEqual(["event: error"]);
    expect(body).toContain('"interrupted"');

    // The next process opens the same SQLite file and sees the stream ended.
    const again = await serve(["--store", `sqlite:${db}`]);
    const list = (await (await fetch(`${again.url}/v1/streams`)).json()) as {
      streams: { status: string }[];
    };
    expect(list.streams.length).toBe(1);
    expect(list.streams[0]?.status).toBe("failed");
    const r2 = await terminate(again);
    expect(r2.code).toBe(0);
  });
});

interface WsLog {
  ws: WebSocket;
  msgs: Record<string, unknown>[];
  closed: Promise<{ code: number; reason: string }>;
}

async function openWs(url: string): Promise<WsLog> {
  const ws = new WebSocket(`${url.replace(/^http/, "ws")}/v1/ws`);
  const msgs: Record<string, unknown>[] = [];
  ws.on("message", (d) => msgs.push(JSON.parse(d.toString()) as Record<string, unknown>));
  ws.on("error", () => {});
  const closed = new Promise<{ code: number; reason: string }>((r) =>
    ws.on("close", (code, reason) => r({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  return { ws, msgs, closed };
}

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("SIGTERM with WebSockets open", () => {
  it("closes idle and subscribed sockets with 1001 after the subscriptions' terminal events, exits 0 and frees the SQLite file", async () => {
    const db = join(dir, "ws.db");
    const p = await serve(["--store", `sqlite:${db}`]);
    const idle = await openWs(p.url);
    const busy = await openWs(p.url);
    busy.ws.send(
      JSON.stringify({
        type: "start",
        id: 2,
        model: "demo",
        messages: [{ role: "user", content: "hi" }],
        demo: { seed: 3, ttft_ms: 5, tokens_per_s: 20, jitter: 0, length: 100_000 },
      }),
    );
    await until(
      () => busy.msgs.some((m) => (m.event as { type?: string } | undefined)?.type === "text-delta"),
      "generation deltas",
    );
    const gen = busy.msgs.find((m) => m.type === "started")?.stream as string;

    const r = await terminate(p);
    expect(r.signal).toBeNull();
    expect(r.code).toBe(0);
    const [idleClose, busyClose] = await Promise.all([idle.closed, busy.closed]);
    expect(idleClose).toEqual({ code: 1001, reason: "server shutting down" });
    expect(busyClose).toEqual({ code: 1001, reason: "server shutting down" });
    // The generation's subscription saw its one terminal event, then `end`.
    const genMsgs = busy.msgs.filter((m) => m.stream === gen);
    const terminals = genMsgs.filter((m) =>
      ["finish", "error", "abort"].includes((m.event as { type?: string } | undefined)?.type ?? ""),
    );
    expect(terminals.map((m) => (m.event as { code?: string }).code)).toEqual(["interrupted"]);
    expect(genMsgs.at(-1)).toMatchObject({ type: "end", stream: gen, status: "failed" });

    // The next process opens the same SQLite file and sees the stream ended.
    const again = await serve(["--store", `sqlite:${db}`]);
    const info = (await (await fetch(`${again.url}/v1/streams/${gen}/info`)).json()) as { status: string };
    expect(info.status).toBe("failed");
    const r2 = await terminate(again);
    expect(r2.code).toBe(0);
  });

  it("a subscription to a stream that does not end with this node is told its last offset; resuming there on another node is exact", async () => {
    const redis = await startRedis();
    try {
      const b = await serve(["--store", redis.url]);
      const a = await serve(["--store", redis.url]);
      // The generation runs on node B; node A's socket follows it.
      const res = await fetch(`${b.url}/v1/streams`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: demo(100_000, 30),
      });
      expect(res.status).toBe(201);
      const { id } = (await res.json()) as { id: string };
      const ws = await openWs(a.url);
      ws.ws.send(JSON.stringify({ type: "subscribe", stream: id, offset: "-1" }));
      await until(() => ws.msgs.filter((m) => m.event !== undefined).length >= 5, "events on node A");

      const r = await terminate(a);
      expect(r.code).toBe(0);
      expect(await ws.closed).toEqual({ code: 1001, reason: "server shutting down" });
      const delivered = ws.msgs.filter((m) => m.event !== undefined).map((m) => m.offset as string);
      const closing = ws.msgs.filter((m) => m.type === "closing");
      expect(closing).toEqual([{ type: "closing", stream: id, offset: delivered.at(-1) }]);
      expect(ws.msgs.at(-1)?.type).toBe("closing");

      // Resume on node B from the named offset: the next event is the one right after it.
      const wsB = await openWs(b.url);
      wsB.ws.send(JSON.stringify({ type: "subscribe", stream: id, offset: closing[0]?.offset }));
      await until(() => wsB.msgs.some((m) => m.event !== undefined), "events on node B");
      const first = wsB.msgs.find((m) => m.event !== undefined)?.offset as string;
      expect(Number(first)).toBe(Number(delivered.at(-1)) + 1);
      wsB.ws.close();
      const rb = await terminate(b);
      expect(rb.code).toBe(0);
    } finally {
      await redis.close();
    }
  });
});
