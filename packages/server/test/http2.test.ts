import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { createParser } from "eventsource-parser";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { demoBody, type Running, startSluice } from "./helpers.js";
import { makeCert } from "./tls-cert.js";

function _runOpenssl(cert: string, key: string): void {
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ],
    { stdio: "ignore" },
  );
}

interface H2Response {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: string;
  firstDataAt: number;
  endAt: number;
}

function h2request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: string,
): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers);
    let out = "";
    let status = 0;
    let hdrs: http2.IncomingHttpHeaders = {};
    let firstDataAt = 0;
    req.setEncoding("utf8");
    req.on("response", (h) => {
      status = Number(h[":status"]);
      hdrs = h;
    });
    req.on("data", (d: string) => {
      if (!firstDataAt) firstDataAt = performance.now();
      out += d;
    });
    req.on("end", () => resolve({ status, headers: hdrs, body: out, firstDataAt, endAt: performance.now() }));
    req.on("error", reject);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

function parseSse(text: string): { id?: string; event?: string; data: string }[] {
  const out: { id?: string; event?: string; data: string }[] = [];
  const p = createParser({
    onEvent: (e) =>
      out.push({ ...(e.id ? { id: e.id } : {}), ...(e.event ? { event: e.event } : {}), data: e.data }),
  });
  p.feed(text);
  return out;
}

describe("HTTP/2 with TLS (sluice serve --tls-cert --tls-key)", () => {
  let dir: string;
  let s: Running;
  let ca: Buffer;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "sluice-h2-"));
    const { cert, key } = makeCert(dir);
    ca = readFileSync(cert);
    s = await startSluice({ tls: { cert, key } });
  });
  afterAll(async () => {
    await s?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("listens on https", async () => {
    expect(s.url.startsWith("https://")).toBe(true);
    // A real TLS handshake with the given certificate, over HTTP/1.1 as well as HTTP/2.
    const h1 = await new Promise<{ status: number; encrypted: boolean; cn: unknown; alpn: unknown }>(
      (resolve, reject) => {
        const req = https.get(`${s.url}/healthz`, { ca }, (res) => {
          const sock = res.socket as TLSSocket;
          resolve({
            status: res.statusCode ?? 0,
            encrypted: sock.encrypted,
            cn: sock.getPeerCertificate().subject?.CN,
            alpn: sock.alpnProtocol,
          });
          res.resume();
        });
        req.on("error", reject);
      },
    );
    expect(h1).toEqual({ status: 200, encrypted: true, cn: "localhost", alpn: false });
    const session = http2.connect(s.url, { ca });
    try {
      const r = await h2request(session, { ":path": "/healthz" });
      expect(r.status).toBe(200);
      expect(session.alpnProtocol).toBe("h2");
    } finally {
      session.close();
    }
    // Plain HTTP on the same port is not served.
    const plain = s.url.replace("https://", "http://");
    await expect(fetch(`${plain}/healthz`, { signal: AbortSignal.timeout(10_000) })).rejects.toThrow();
  });

  it("holds several SSE streams at once on one HTTP/2 connection", async () => {
    const session = http2.connect(s.url, { ca });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        const r = await h2request(
          session,
          { ":method": "POST", ":path": "/v1/streams", "content-type": "application/json" },
          JSON.stringify(demoBody({ seed: i, length: 30, tokens_per_s: 60 })),
        );
        expect(r.status).toBe(201);
        ids.push(JSON.parse(r.body).id);
      }
      // More than the 6-per-origin limit browsers apply to HTTP/1.1, all on this one session.
      const reads = await Promise.all(
        ids.map((id) =>
          h2request(session, {
            ":path": `/v1/streams/${id}?offset=-1`,
            accept: "text/event-stream",
            "accept-encoding": "identity",
          }),
        ),
      );
      for (const [i, r] of reads.entries()) {
        expect(r.status).toBe(200);
        expect(r.headers["content-type"]).toContain("text/event-stream");
        expect(r.headers.connection).toBeUndefined();
        const msgs = parseSse(r.body).filter((m) => m.id);
        const page = await h2request(session, { ":path": `/v1/streams/${ids[i]}?offset=-1&limit=1000` });
        const events = JSON.parse(page.body).events as { offset: string }[];
        expect(msgs.map((m) => m.id)).toEqual(events.map((e) => e.offset));
        expect(msgs.at(-1)?.event).toBe("finish");
      }
      // They were open concurrently: every stream had data before any of them ended.
      const lastFirst = Math.max(...reads.map((r) => r.firstDataAt));
      const firstEnd = Math.min(...reads.map((r) => r.endAt));
      expect(lastFirst).toBeLessThan(firstEnd);
    } finally {
      session.close();
    }
  });

  it("compresses over HTTP/2 too when asked", async () => {
    const session = http2.connect(s.url, { ca });
    try {
      const start = await h2request(
        session,
        { ":method": "POST", ":path": "/v1/streams", "content-type": "application/json" },
        JSON.stringify(demoBody({ length: 10 })),
      );
      const id = JSON.parse(start.body).id;
      const req = session.request({
        ":path": `/v1/streams/${id}`,
        accept: "text/event-stream",
        "accept-encoding": "gzip",
      });
      const zlib = await import("node:zlib");
      const text = await new Promise<string>((resolve, reject) => {
        req.on("response", (h) => expect(h["content-encoding"]).toBe("gzip"));
        const gunzip = zlib.createGunzip();
        let t = "";
        req.pipe(gunzip);
        gunzip.on("data", (d: Buffer) => {
          t += d.toString();
        });
        gunzip.on("end", () => resolve(t));
        gunzip.on("error", reject);
      });
      expect(parseSse(text).at(-1)?.event).toBe("finish");
    } finally {
      session.close();
    }
  });

  it("falls back to HTTP/1.1 for clients without HTTP/2", async () => {
    const r = await new Promise<{ version: string; status: number; body: string }>((resolve, reject) => {
      https
        .get(`${s.url}/v1/models`, { ca }, (res) => {
          let b = "";
          res.on("data", (d) => {
            b += d;
          });
          res.on("end", () => resolve({ version: res.httpVersion, status: res.statusCode ?? 0, body: b }));
        })
        .on("error", reject);
    });
    expect(r.version).toBe("1.1");
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).data.length).toBeGreaterThan(0);
  });

  it("serves the WebSocket over TLS (wss://, HTTP/1.1 upgrade)", async () => {
    const ws = new WebSocket(`${s.url.replace("https", "wss")}/v1/ws`, { ca });
    const end = await new Promise<Record<string, unknown>>((resolve, reject) => {
      ws.on("open", () => ws.send(JSON.stringify({ type: "start", ...demoBody({ length: 5 }) })));
      ws.on("message", (d) => {
        const m = JSON.parse(String(d));
        if (m.type === "end") resolve(m);
      });
      ws.on("error", reject);
    });
    expect(end.status).toBe("completed");
    ws.close();
  });
});
