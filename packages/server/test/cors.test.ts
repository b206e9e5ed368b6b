import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { allowHeaders, MAX_REFLECTED_HEADERS } from "../src/auth/cors.js";
import { parseConfig } from "../src/config.js";
import { createSluice } from "../src/server.js";
import { demoBody, type Running, startSluice, startStream, waitForStatus } from "./helpers.js";

/**
 * CORS as browsers on another origin meet it, on every kind of response: preflights for the
 * headers real SDKs send, the streaming POST doors (which hijack their response), credentials,
 * and the Durable Streams mount honouring `cors.origins`. (Streaming GET reads of every door are
 * checked by the transport contract; the browser itself runs in cors-browser.test.ts.)
 */
const APP = "http://app.test:5173";
const EVIL = "http://evil.test";
// What the `openai` SDK adds to its requests (names from its source: x-stainless-*).
const OPENAI_SDK_HEADERS =
  "authorization, content-type, x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout";

function preflight(url: string, origin: string, method: string, headers: string) {
  return fetch(url, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": method, "access-control-request-headers": headers },
  });
}

function allowed(res: Response): string[] {
  return (res.headers.get("access-control-allow-headers") ?? "")
    .split(",")
    .map((h) => h.trim().toLowerCase());
}

describe("CORS with an origin list", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice({ cors: { origins: [APP] } } as never);
  });
  afterAll(async () => s.close());

  it("a preflight allows the headers the openai SDK sends, for an allowed origin only", async () => {
    const pre = await preflight(`${s.url}/v1/chat/completions`, APP, "POST", OPENAI_SDK_HEADERS);
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe(APP);
    for (const h of OPENAI_SDK_HEADERS.split(", ")) expect(allowed(pre)).toContain(h);
    expect(pre.headers.get("access-control-allow-methods")).toMatch(/POST/);
    expect(pre.headers.get("vary") ?? "").toMatch(/origin/i);
    expect(pre.headers.get("vary") ?? "").toMatch(/access-control-request-headers/i);
    expect(pre.headers.get("access-control-allow-credentials")).toBeNull();

    const evil = await preflight(`${s.url}/v1/chat/completions`, EVIL, "POST", OPENAI_SDK_HEADERS);
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();
    expect(evil.headers.get("access-control-allow-headers")).toBeNull();
  });

  it("reflects only a bounded, well-formed header list", async () => {
    const many = Array.from({ length: MAX_REFLECTED_HEADERS + 1 }, (_, i) => `x-h${i}`).join(", ");
    const pre = await preflight(`${s.url}/v1/streams`, APP, "POST", many);
    expect(pre.headers.get("access-control-allow-origin")).toBe(APP);
    expect(allowed(pre)).not.toContain("x-h0");
    expect(allowed(pre)).toContain("authorization");
    const bad = await preflight(`${s.url}/v1/streams`, APP, "POST", "x-ok, bad header");
    expect(allowed(bad)).not.toContain("x-ok");
    expect(allowHeaders("X-Stainless-OS, x-stainless-os")).toMatch(/x-stainless-os$/);
  });

  it("POST /v1/streams with SSE, /v1/chat/completions stream:true and /v1/ai-sdk/chat stream with CORS headers", async () => {
    const calls: Array<[string, unknown]> = [
      ["/v1/streams", demoBody({ length: 5 })],
      ["/v1/chat/completions", { ...demoBody({ length: 5 }), stream: true }],
      [
        "/v1/ai-sdk/chat",
        {
          id: "c1",
          trigger: "submit-message",
          messages: [{ id: "m1", role: "user", parts: [{ type: "text", text: "hi" }] }],
          demo: { seed: 1, ttft_ms: 5, tokens_per_s: 2000, jitter: 0, length: 5 },
        },
      ],
    ];
    for (const [path, body] of calls) {
      for (const origin of [APP, EVIL]) {
        const res = await fetch(`${s.url}${path}`, {
          method: "POST",
          headers: { origin, "content-type": "application/json", accept: "text/event-stream" },
          body: JSON.stringify(body),
        });
        expect(res.headers.get("content-type") ?? "", path).toMatch(/event-stream/);
        const text = await res.text();
        expect(text.length, path).toBeGreaterThan(0);
        if (origin === APP) {
          expect(res.headers.get("access-control-allow-origin"), path).toBe(APP);
          expect(res.headers.get("access-control-expose-headers") ?? "", path).toMatch(/sluice-stream-id/i);
          expect(res.headers.get("sluice-stream-id"), path).toMatch(/^st_/);
        } else {
          expect(res.headers.get("access-control-allow-origin"), path).toBeNull();
        }
      }
    }
  });

  it("an error answer carries CORS too, so a browser can read why", async () => {
    const res = await fetch(`${s.url}/v1/streams/st_nope`, { headers: { origin: APP } });
    expect(res.status).toBe(404);
    expect(res.headers.get("access-control-allow-origin")).toBe(APP);
  });

  it("Durable Streams honours cors.origins: an allowed origin is named, another gets nothing", async () => {
    const url = `${s.url}/ds/v1/stream/cors-room-${Date.now()}`;
    expect((await fetch(url, { method: "PUT", headers: { "content-type": "text/plain" } })).status).toBe(201);
    const ok = await fetch(`${url}?offset=-1`, { headers: { origin: APP } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("access-control-allow-origin")).toBe(APP);
    expect(ok.headers.get("access-control-expose-headers")).toMatch(/Stream-Next-Offset/);
    const evil = await fetch(`${url}?offset=-1`, { headers: { origin: EVIL } });
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();

    const pre = await preflight(url, APP, "POST", "content-type, producer-id, x-custom-thing");
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe(APP);
    expect(allowed(pre)).toEqual(expect.arrayContaining(["producer-id", "x-custom-thing", "stream-seq"]));
    const evilPre = await preflight(url, EVIL, "POST", "content-type");
    expect(evilPre.headers.get("access-control-allow-origin")).toBeNull();
    expect(evilPre.headers.get("access-control-allow-headers")).toBeNull();

    // A live read (SSE) of a generation through /ds carries them on the hijacked response.
    const { id } = await startStream(s.url, demoBody({ length: 5 }));
    await waitForStatus(s.url, id, (st) => st !== "running");
    const live = await fetch(`${s.url}/ds/v1/stream/${id}?offset=-1&live=sse`, { headers: { origin: APP } });
    expect(live.headers.get("content-type") ?? "").toMatch(/event-stream/);
    expect(live.headers.get("access-control-allow-origin")).toBe(APP);
    await live.body?.cancel();
  });
});

/** Opens /v1/ws with this Origin (or none): "open", or the HTTP status it was refused with. */
function wsOpen(url: string, origin: string | undefined): Promise<string | number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/v1/ws`, origin ? { origin } : {});
    ws.on("open", () => {
      ws.close();
      resolve("open");
    });
    ws.on("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      ws.terminate();
    });
    ws.on("error", () => resolve(-1));
  });
}

describe("WebSocket origins", () => {
  let s: Running;
  let open: Running;
  beforeAll(async () => {
    s = await startSluice({ cors: { origins: [APP] } } as never);
    open = await startSluice();
  });
  afterAll(async () => {
    await s.close();
    await open.close();
  });

  it("a page may open /v1/ws from an allowed origin or the server's own; another origin is refused 403", async () => {
    expect(await wsOpen(s.url, APP)).toBe("open");
    expect(await wsOpen(s.url, undefined)).toBe("open");
    expect(await wsOpen(s.url, s.url)).toBe("open");
    expect(await wsOpen(s.url, EVIL)).toBe(403);
    // No cors.origins (an open loopback server): a page elsewhere cannot use it through a WebSocket.
    expect(await wsOpen(open.url, EVIL)).toBe(403);
    expect(await wsOpen(open.url, "null")).toBe(403);
    expect(await wsOpen(open.url, open.url)).toBe("open");
    expect(await wsOpen(open.url, undefined)).toBe("open");
  });
});

describe("CORS with credentials", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice({ cors: { origins: [APP], credentials: true } } as never);
  });
  afterAll(async () => s.close());

  it("echoes the origin with Allow-Credentials on preflights, JSON, streams and /ds; never for another origin", async () => {
    const pre = await preflight(`${s.url}/v1/streams`, APP, "POST", "content-type");
    expect(pre.headers.get("access-control-allow-origin")).toBe(APP);
    expect(pre.headers.get("access-control-allow-credentials")).toBe("true");
    const res = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { origin: APP, "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(demoBody({ length: 3 })),
    });
    await res.text();
    expect(res.headers.get("access-control-allow-origin")).toBe(APP);
    expect(res.headers.get("access-control-allow-credentials")).toBe("true");
    const ds = await fetch(`${s.url}/ds/v1/stream/nothing-here`, { headers: { origin: APP } });
    expect(ds.headers.get("access-control-allow-origin")).toBe(APP);
    expect(ds.headers.get("access-control-allow-credentials")).toBe("true");
    const evil = await fetch(`${s.url}/v1/models`, { headers: { origin: EVIL } });
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();
    expect(evil.headers.get("access-control-allow-credentials")).toBeNull();
  });

  it("refuses credentials with any origin or none: the config names the origins", async () => {
    for (const origins of [["*"], []]) {
      await expect(
        createSluice(
          parseConfig({ port: 0, log_level: "silent", cors: { origins, credentials: true } } as never),
          {
            env: {},
          },
        ),
      ).rejects.toThrow(/cors\.credentials needs cors\.origins/);
    }
  });
});

describe("CORS with any origin", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice({ cors: { origins: ["*"] } } as never);
  });
  afterAll(async () => s.close());

  it("answers `*` without credentials, and still reflects the SDK's headers", async () => {
    const pre = await preflight(`${s.url}/v1/chat/completions`, EVIL, "POST", OPENAI_SDK_HEADERS);
    expect(pre.headers.get("access-control-allow-origin")).toBe("*");
    expect(allowed(pre)).toContain("x-stainless-os");
    expect(pre.headers.get("access-control-allow-credentials")).toBeNull();
  });
});

describe("CORS with no origins configured", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice();
  });
  afterAll(async () => s.close());

  it("/v1 answers no CORS; /ds answers `*` (the Durable Streams protocol's default)", async () => {
    const v1 = await fetch(`${s.url}/v1/models`, { headers: { origin: APP } });
    expect(v1.headers.get("access-control-allow-origin")).toBeNull();
    const ds = await fetch(`${s.url}/ds/v1/stream/nothing-here`, { headers: { origin: APP } });
    expect(ds.headers.get("access-control-allow-origin")).toBe("*");
    expect(ds.headers.get("access-control-expose-headers")).toMatch(/Stream-Next-Offset/);
    const pre = await preflight(`${s.url}/ds/v1/stream/x`, APP, "PUT", "content-type, stream-ttl");
    expect(pre.headers.get("access-control-allow-origin")).toBe("*");
    expect(allowed(pre)).toContain("stream-ttl");
  });
});
