import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { demoBody, type Running, startSluice } from "./helpers.js";

// Only `Upgrade: websocket` is Sluice's. Any other upgrade (curl sends `Upgrade: h2c` with
// --http2 on http://) is a plain HTTP/1.1 request and must reach the normal routes.

let s: Running;
beforeAll(async () => {
  s = await startSluice();
});
afterAll(async () => {
  await s?.close();
});

/** Sends raw bytes and returns the whole answer (the server closes after it). */
function rawHttp(bytes: string): Promise<{ status: number; head: string; body: string }> {
  const u = new URL(s.url);
  return new Promise((resolve, reject) => {
    const c = net.connect(Number(u.port), u.hostname, () => c.write(bytes));
    let out = "";
    c.setEncoding("utf8");
    c.on("data", (d: string) => {
      out += d;
    });
    c.on("error", reject);
    c.on("close", () => {
      const [head = "", body = ""] = out.split("\r\n\r\n", 2);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head, body });
    });
    setTimeout(() => {
      c.destroy();
      reject(new Error(`no complete answer: ${JSON.stringify(out)}`));
    }, 10_000).unref();
  });
}

const H2C =
  "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";

describe("Upgrade headers other than websocket", () => {
  it("GET with Upgrade: h2c reaches the route", async () => {
    const r = await rawHttp(`GET /v1/models HTTP/1.1\r\nHost: x\r\n${H2C}\r\n`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).data[0].id).toBe("demo");
    const h = await rawHttp(`GET /healthz HTTP/1.1\r\nHost: x\r\n${H2C}\r\n`);
    expect(h.status).toBe(200);
    expect(JSON.parse(h.body)).toEqual({ status: "ok" });
  });

  it("POST with a body and Upgrade: h2c starts a generation", async () => {
    const body = JSON.stringify(demoBody({ length: 5 }));
    const r = await rawHttp(
      `POST /v1/streams HTTP/1.1\r\nHost: x\r\n${H2C}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    expect(r.status).toBe(201);
    expect(JSON.parse(r.body).id).toMatch(/^st_/);
  });

  it("a 404 route is still a 404 of the route, not 'no WebSocket route'", async () => {
    const r = await rawHttp(`GET /nope HTTP/1.1\r\nHost: x\r\n${H2C}\r\n`);
    expect(r.status).toBe(404);
    expect(r.body).not.toContain("WebSocket");
  });

  it("a chunked body with an upgrade header is refused with a clear 400", async () => {
    const r = await rawHttp(
      `POST /v1/streams HTTP/1.1\r\nHost: x\r\n${H2C}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`,
    );
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error.code).toBe("invalid_request");
  });

  it("the WebSocket still upgrades (any case of the header)", async () => {
    const ws = new WebSocket(`${s.url.replace("http", "ws")}/v1/ws`, { headers: {} });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    ws.close();
    // The same by hand, with `Upgrade: WebSocket`: the answer starts with 101.
    const u = new URL(s.url);
    const first = await new Promise<string>((resolve, reject) => {
      const c = net.connect(Number(u.port), u.hostname, () =>
        c.write(
          "GET /v1/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ),
      );
      c.setEncoding("utf8");
      c.once("data", (d: string) => {
        c.destroy();
        resolve(d);
      });
      c.on("error", reject);
    });
    expect(first.startsWith("HTTP/1.1 101 ")).toBe(true);
  });
});
