/**
 * SIGTERM on a loaded node, as an operator's restart does it: the real CLI over TLS (HTTP/2 and
 * HTTP/1.1) on SQLite, with 50 running generations, HTTP/2 sessions (one reading, one idle),
 * WebSockets (one idle, one subscribed) and HTTP/1.1 SSE readers open. The process must exit
 * within shutdown_grace_ms plus a few seconds; a restart on the same file must succeed (the lock
 * is released); every generation must end with exactly one terminal event; WebSockets must get a
 * close frame (1001).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { demoBody } from "./helpers.js";
import { makeCert } from "./tls-cert.js";

const CLI = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));
const GRACE_MS = 1500;
const dir = mkdtempSync(join(tmpdir(), "sluice-shutdown-"));
const children: ChildProcess[] = [];

afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

function serve(configFile: string): Promise<{ child: ChildProcess; url: string; exited: Promise<number> }> {
  const child = spawn(process.execPath, [CLI, "serve", "--config", configFile], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, SLUICE_LOG_LEVEL: "warn" },
  });
  children.push(child);
  const exited = new Promise<number>((resolve) => child.on("exit", (code) => resolve(code ?? 128)));
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening on (https?:\/\/\S+)/.exec(out);
      if (m) resolve({ child, url: m[1] as string, exited });
    });
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("exit", (code) => reject(new Error(`serve exited ${code}: ${err}`)));
  });
}

const agent = new https.Agent({ rejectUnauthorized: false, keepAlive: true });

function request(
  url: string,
  method: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      { method, agent, headers: { "content-type": "application/json", ...headers } },
      (res) => {
        let text = "";
        res.on("data", (d: Buffer) => {
          text += d.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

describe("SIGTERM with WebSockets, HTTP/2 sessions and 50 running generations", () => {
  it("exits within the grace, every stream ends with one terminal event, and a restart takes the file", async () => {
    const { cert, key } = makeCert(dir);
    const configFile = join(dir, "sluice.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        host: "127.0.0.1",
        port: 0,
        store: `sqlite:${join(dir, "sluice.db")}`,
        tls: { cert, key },
        shutdown_grace_ms: GRACE_MS,
        ws: { ping_interval_ms: 60_000 },
      }),
    );
    const first = await serve(configFile);
    const url = first.url;

    const ids: string[] = [];
    for (let n = 0; n < 50; n++) {
      const r = await request(
        `${url}/v1/streams`,
        "POST",
        demoBody({ length: 5000, tokens_per_s: 20, ttft_ms: 10 }),
      );
      expect(r.status).toBe(201);
      ids.push((JSON.parse(r.body) as { id: string }).id);
    }

    // HTTP/1.1 SSE readers over TLS on five of them.
    const sse = ids.slice(0, 5).map(
      (id) =>
        new Promise<string>((resolve) => {
          const req = https.get(
            `${url}/v1/streams/${id}`,
            {
              agent: new https.Agent({ rejectUnauthorized: false }),
              headers: { accept: "text/event-stream" },
            },
            (res) => {
              let text = "";
              res.on("data", (d: Buffer) => {
                text += d.toString();
              });
              res.on("end", () => resolve(text));
              res.on("error", () => resolve(text));
              res.on("close", () => resolve(text));
            },
          );
          req.on("error", () => resolve(""));
        }),
    );

    // HTTP/2: one session reading a stream, one idle.
    const h2 = http2.connect(url, { rejectUnauthorized: false });
    const h2idle = http2.connect(url, { rejectUnauthorized: false });
    h2idle.on("error", () => {});
    h2.on("error", () => {});
    const h2read = new Promise<string>((resolve) => {
      const req = h2.request({ ":path": `/v1/streams/${ids[5]}`, accept: "text/event-stream" });
      let text = "";
      req.on("data", (d: Buffer) => {
        text += d.toString();
      });
      req.on("end", () => resolve(text));
      req.on("close", () => resolve(text));
      req.on("error", () => resolve(text));
    });
    await new Promise<void>((resolve) => h2idle.once("connect", () => resolve()));

    // WebSockets: one idle, one subscribed.
    const wsUrl = `${url.replace(/^https/, "wss")}/v1/ws`;
    const closeOf = (ws: WebSocket) =>
      new Promise<number>((resolve) => {
        ws.on("close", (code) => resolve(code));
        ws.on("error", () => {});
      });
    const idle = new WebSocket(wsUrl, { rejectUnauthorized: false });
    const sub = new WebSocket(wsUrl, { rejectUnauthorized: false });
    const idleClosed = closeOf(idle);
    const subClosed = closeOf(sub);
    await Promise.all([idle, sub].map((w) => new Promise((r) => w.once("open", r))));
    const subscribed = new Promise<void>((resolve) =>
      sub.on("message", (d) => {
        if ((JSON.parse(d.toString()) as { type: string }).type === "subscribed") resolve();
      }),
    );
    sub.send(JSON.stringify({ type: "subscribe", stream: ids[6], offset: "-1" }));
    await subscribed;
    await new Promise((r) => setTimeout(r, 300)); // tokens flowing everywhere

    const t0 = Date.now();
    first.child.kill("SIGTERM");
    const code = await first.exited;
    const took = Date.now() - t0;
    expect(code).toBe(0);
    expect(took).toBeLessThan(GRACE_MS + 5000);
    expect(await idleClosed).toBe(1001);
    expect(await subClosed).toBe(1001);
    const sseTexts = await Promise.all(sse);
    for (const t of sseTexts) expect(t).toContain("interrupted");
    expect(await h2read).toContain("interrupted");
    h2.destroy();
    h2idle.destroy();

    // A restart on the same file works (the lock was released) and every stream ended once.
    const second = await serve(configFile);
    try {
      for (const id of ids) {
        const page = await request(`${second.url}/v1/streams/${id}?limit=1000&offset=-1`, "GET");
        const info = JSON.parse((await request(`${second.url}/v1/streams/${id}/info`, "GET")).body) as {
          status: string;
          length: number;
        };
        expect(info.status).not.toBe("running");
        // The last page holds the terminal event: exactly one in the whole stream.
        let terminals = 0;
        let offset = "-1";
        let body = JSON.parse(page.body) as {
          events: { event: { type: string } }[];
          next_offset: string;
          up_to_date: boolean;
        };
        for (;;) {
          terminals += body.events.filter((e) => ["finish", "error", "abort"].includes(e.event.type)).length;
          if (body.up_to_date) break;
          offset = body.next_offset;
          body = JSON.parse(
            (await request(`${second.url}/v1/streams/${id}?limit=1000&offset=${offset}`, "GET")).body,
          );
        }
        expect(terminals, `stream ${id}`).toBe(1);
      }
    } finally {
      second.child.kill("SIGTERM");
      await second.exited;
    }
  }, 90_000);
});
