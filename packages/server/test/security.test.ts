import { createHash } from "node:crypto";
import net from "node:net";
import { Writable } from "node:stream";
import fc from "fast-check";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../src/config.js";
import { createLogger, createSluice } from "../src/server.js";
import { demoBody, type Running, readSse, startSluice, textOf } from "./helpers.js";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");
const SECRET = "test-token-secret-0123456789abcdef-0123456789";
const OLD_SECRET = "old-token-secret-0123456789abcdef-0123456789";
const KEYS = {
  adminA: "sk-admin-a-0001",
  producerA: "sk-producer-a-0002",
  readerA: "sk-reader-a-0003",
  adminB: "sk-admin-b-0004",
  limited: "sk-limited-a-0005",
  conn: "sk-conn-a-0006",
};

const authConfig = {
  auth: {
    keys: [
      { id: "admin-a", key_sha256: sha(KEYS.adminA), role: "admin", tenant: "a" },
      { id: "producer-a", key_sha256: sha(KEYS.producerA), role: "producer", tenant: "a" },
      { id: "reader-a", key_sha256: sha(KEYS.readerA), role: "reader", tenant: "a" },
      { id: "admin-b", key_env: "KEY_ADMIN_B", role: "admin", tenant: "b" },
      {
        id: "limited",
        key_sha256: sha(KEYS.limited),
        role: "producer",
        tenant: "a",
        limits: { concurrent_generations: 1, generations_per_minute: 3 },
      },
      { id: "conn", key_sha256: sha(KEYS.conn), role: "reader", tenant: "a", limits: { connections: 1 } },
    ],
    token_secrets: [
      { id: "k2", secret_env: "TOKEN_SECRET" },
      { id: "k1", secret_env: "OLD_TOKEN_SECRET" },
    ],
    token_ttl_s: 600,
  },
  cors: { origins: ["https://app.example"] },
  timeouts: { headers_ms: 800, request_ms: 2000, keep_alive_ms: 5000, check_interval_ms: 200 },
} as const;

let s: Running;
beforeAll(async () => {
  s = await startSluice(authConfig as never, {
    env: { KEY_ADMIN_B: KEYS.adminB, TOKEN_SECRET: SECRET, OLD_TOKEN_SECRET: OLD_SECRET },
  });
});
afterAll(async () => {
  await s.close();
});

function bearer(v: string) {
  return { authorization: `Bearer ${v}` };
}

async function startAs(key: string, body = demoBody({ length: 2000, tokens_per_s: 50 })) {
  const res = await fetch(`${s.url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json", ...bearer(key) },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; read_token: string };
}

async function jwt(
  claims: Record<string, unknown>,
  opts: { secret?: string; kid?: string; exp?: number } = {},
) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", kid: opts.kid ?? "k2" })
    .setIssuer("sluice")
    .setAudience("sluice:stream")
    .setIssuedAt(now - 10)
    .setExpirationTime(opts.exp ?? now + 600)
    .sign(new TextEncoder().encode(opts.secret ?? SECRET));
}

function b64url(s: string) {
  return Buffer.from(s).toString("base64url");
}

describe("access matrix: every route × every kind of caller", () => {
  type Expect = number | "ok";
  type Caller = { name: string; headers: () => Record<string, string>; query?: () => string };
  let target: { id: string; read_token: string };
  let other: { id: string; read_token: string };
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    other = await startAs(KEYS.producerA);
    tokens.otherStream = other.read_token;
    await freshTarget();
  });

  /** A new running target stream, and every token kind minted for it. */
  async function freshTarget() {
    target = await startAs(KEYS.producerA);
    const now = Math.floor(Date.now() / 1000);
    tokens.valid = target.read_token;
    tokens.cancel = await jwt({ sub: target.id, ten: "a", scp: ["read", "cancel"] });
    tokens.oldKey = await jwt({ sub: target.id, ten: "a", scp: ["read"] }, { secret: OLD_SECRET, kid: "k1" });
    tokens.expired = await jwt({ sub: target.id, ten: "a", scp: ["read"] }, { exp: now - 5 });
    tokens.wrongSecret = await jwt({ sub: target.id, ten: "a", scp: ["read"] }, { secret: "x".repeat(40) });
    const [h, p, sig] = target.read_token.split(".") as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, "base64url").toString());
    payload.sub = other.id;
    tokens.tampered = `${h}.${b64url(JSON.stringify(payload))}.${sig}`;
    tokens.algNone = `${b64url(JSON.stringify({ alg: "none", typ: "JWT", kid: "k2" }))}.${b64url(
      JSON.stringify({
        sub: target.id,
        ten: "a",
        scp: ["read", "cancel"],
        iss: "sluice",
        aud: "sluice:stream",
        exp: now + 600,
      }),
    )}.`;
    tokens.otherTenant = await jwt({ sub: target.id, ten: "b", scp: ["read"] });
  }

  const callers: Caller[] = [
    { name: "no credentials", headers: () => ({}) },
    { name: "wrong key", headers: () => bearer("sk-wrong-key") },
    { name: "malformed Authorization", headers: () => ({ authorization: "Basic Zm9vOmJhcg==" }) },
    { name: "other tenant's admin key", headers: () => bearer(KEYS.adminB) },
    { name: "reader key", headers: () => bearer(KEYS.readerA) },
    { name: "reader key via x-api-key", headers: () => ({ "x-api-key": KEYS.readerA }) },
    { name: "producer key", headers: () => bearer(KEYS.producerA) },
    { name: "admin key", headers: () => bearer(KEYS.adminA) },
    { name: "read token (query)", headers: () => ({}), query: () => `token=${tokens.valid}` },
    { name: "read token (header)", headers: () => bearer(tokens.valid as string) },
    {
      name: "token signed with the rotated-out key",
      headers: () => ({}),
      query: () => `token=${tokens.oldKey}`,
    },
    { name: "read+cancel token", headers: () => ({}), query: () => `token=${tokens.cancel}` },
    { name: "token for another stream", headers: () => ({}), query: () => `token=${tokens.otherStream}` },
    { name: "token for another tenant", headers: () => ({}), query: () => `token=${tokens.otherTenant}` },
    { name: "expired token", headers: () => ({}), query: () => `token=${tokens.expired}` },
    { name: "token with a wrong signature", headers: () => ({}), query: () => `token=${tokens.wrongSecret}` },
    { name: "tampered token", headers: () => ({}), query: () => `token=${tokens.tampered}` },
    { name: "alg: none token", headers: () => ({}), query: () => `token=${tokens.algNone}` },
    { name: "API key in the query string", headers: () => ({}), query: () => `token=${KEYS.adminA}` },
  ];
  //                         none wrong malf  B    rdr  rdrX prod adm  tokQ tokH old  tokC othS othT exp  sig  tamp none keyQ
  // biome-ignore format: a table reads best as one row per route
  const matrix: Record<string, Expect[]> = {
    //               none wrong malf  B    rdr  rdrX prod adm  tokQ tokH old  tokC othS othT exp  sig  tamp none keyQ
    start:           [401, 401, 401, "ok", 403, 403, "ok", "ok", 403, 403, 403, 403, 403, 403, 401, 401, 401, 401, 401],
    list:            [401, 401, 401, "ok", "ok", "ok", "ok", "ok", 403, 403, 403, 403, 403, 403, 401, 401, 401, 401, 401],
    read:            [401, 401, 401, 404, "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", 404, 404, 401, 401, 401, 401, 401],
    readSse:         [401, 401, 401, 404, "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", 404, 404, 401, 401, 401, 401, 401],
    readOpenAI:      [401, 401, 401, 404, "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", 404, 404, 401, 401, 401, 401, 401],
    info:            [401, 401, 401, 404, "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", 404, 404, 401, 401, 401, 401, 401],
    mintToken:       [401, 401, 401, 404, 403, 403, "ok", "ok", 403, 403, 403, 403, 404, 404, 401, 401, 401, 401, 401],
    cancel:          [401, 401, 401, 404, 403, 403, "ok", "ok", 403, 403, 403, "ok", 404, 404, 401, 401, 401, 401, 401],
    delete:          [401, 401, 401, 404, 403, 403, 403, "ok", 403, 403, 403, 403, 404, 404, 401, 401, 401, 401, 401],
    models:          [401, 401, 401, "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", 401, 401, 401, 401, 401],
    chatCompletions: [401, 401, 401, "ok", 403, 403, "ok", "ok", 403, 403, 403, 403, 403, 403, 401, 401, 401, 401, 401],
    aiSdkChat:       [401, 401, 401, "ok", 403, 403, "ok", "ok", 403, 403, 403, 403, 403, 403, 401, 401, 401, 401, 401],
    metrics:         [401, 401, 401, "ok", 403, 403, 403, "ok", 403, 403, 403, 403, 403, 403, 401, 401, 401, 401, 401],
    stats:           [401, 401, 401, "ok", 403, 403, 403, "ok", 403, 403, 403, 403, 403, 403, 401, 401, 401, 401, 401],
  };

  async function attempt(route: string, c: Caller, id: string): Promise<Response> {
    const q = c.query ? `?${c.query()}` : "";
    const h = c.headers();
    const json = { "content-type": "application/json" };
    switch (route) {
      case "start":
        return fetch(`${s.url}/v1/streams${q}`, {
          method: "POST",
          headers: { ...h, ...json },
          body: JSON.stringify(demoBody({ length: 3 })),
        });
      case "list":
        return fetch(`${s.url}/v1/streams${q}`, { headers: h });
      case "read":
        return fetch(`${s.url}/v1/streams/${id}${q}`, { headers: h });
      case "readSse":
      case "readOpenAI": {
        const ac = new AbortController();
        const fmt = route === "readOpenAI" ? `${q ? "&" : "?"}format=openai` : "";
        const res = await fetch(`${s.url}/v1/streams/${id}${q}${fmt}`, {
          headers: { ...h, accept: "text/event-stream" },
          signal: ac.signal,
        });
        if (res.status === 200) {
          const body = res.body?.getReader();
          const first = await body?.read();
          ac.abort();
          return new Response(first?.value ?? "", { status: 200 });
        }
        return res;
      }
      case "info":
        return fetch(`${s.url}/v1/streams/${id}/info${q}`, { headers: h });
      case "mintToken":
        return fetch(`${s.url}/v1/streams/${id}/tokens${q}`, {
          method: "POST",
          headers: { ...h, ...json },
          body: "{}",
        });
      case "cancel":
        return fetch(`${s.url}/v1/streams/${id}/cancel${q}`, { method: "POST", headers: h });
      case "delete":
        return fetch(`${s.url}/v1/streams/${id}${q}`, { method: "DELETE", headers: h });
      case "models":
        return fetch(`${s.url}/v1/models${q}`, { headers: h });
      case "chatCompletions":
        return fetch(`${s.url}/v1/chat/completions${q}`, {
          method: "POST",
          headers: { ...h, ...json },
          body: JSON.stringify({ ...demoBody({ length: 3 }), stream: false }),
        });
      case "aiSdkChat":
        return fetch(`${s.url}/v1/ai-sdk/chat${q}`, {
          method: "POST",
          headers: { ...h, ...json },
          body: JSON.stringify({
            id: `chat-${Math.random()}`,
            messages: [{ id: "m1", role: "user", parts: [{ type: "text", text: "hi" }] }],
            model: "demo",
            demo: { length: 3, ttft_ms: 1 },
          }),
        });

      case "metrics":
        return fetch(`${s.url}/metrics${q}`, { headers: h });
      case "stats":
        return fetch(`${s.url}/v1/stats${q}`, { headers: h });
    }
    throw new Error(route);
  }

  for (const [route, row] of Object.entries(matrix)) {
    it(`${route}`, async () => {
      const failures: string[] = [];
      for (let i = 0; i < callers.length; i++) {
        const c = callers[i] as Caller;
        const want = row[i] as Expect;
        const res = await attempt(route, c, target.id);
        const text = await res.text();
        const okStatus = res.status >= 200 && res.status < 300;
        if (want === "ok" ? !okStatus : res.status !== want) {
          failures.push(`${c.name}: want ${want}, got ${res.status} ${text.slice(0, 120)}`);
          continue;
        }
        if (want !== "ok") {
          // A refusal says why with a code, and carries no stream data.
          const body = JSON.parse(text) as { error: { code: string } };
          // (OpenAI routes answer in OpenAI's error shape, whose `code` is still ours.)
          const code = { 401: "unauthorized", 403: "forbidden", 404: "stream_not_found" }[want];
          if (body.error.code !== code) failures.push(`${c.name}: code ${body.error.code}, want ${code}`);
          if (/text-delta|"delta"/.test(text) || text.includes(target.read_token))
            failures.push(`${c.name}: data leaked`);
          if (want === 401 && res.headers.get("www-authenticate") === null && !c.query) {
            failures.push(`${c.name}: 401 without WWW-Authenticate`);
          }
        }
        if (route === "stats" && okStatus) {
          const shown = JSON.stringify(JSON.parse(text).live ?? []);
          if (c.name.startsWith("other tenant") && shown.includes(target.id))
            failures.push(`${c.name}: stats show the stream`);
        }
        if (route === "list" && okStatus) {
          const ids = (JSON.parse(text) as { streams: { id: string }[] }).streams.map((x) => x.id);
          const sees = ids.includes(target.id);
          const shouldSee = !c.name.startsWith("other tenant");
          if (sees !== shouldSee) failures.push(`${c.name}: list ${sees ? "shows" : "hides"} the stream`);
        }
        // Destructive successes need a fresh target for the next caller.
        if (okStatus && (route === "cancel" || route === "delete")) await freshTarget();
      }
      expect(failures).toEqual([]);
    });
  }

  it("a read token minted with scopes [read, cancel] can cancel its stream", async () => {
    const st = await startAs(KEYS.producerA);
    const minted = await fetch(`${s.url}/v1/streams/${st.id}/tokens`, {
      method: "POST",
      headers: { ...bearer(KEYS.producerA), "content-type": "application/json" },
      body: JSON.stringify({ scopes: ["read", "cancel"], ttl_s: 60 }),
    });
    expect(minted.status).toBe(201);
    const { token } = (await minted.json()) as { token: string };
    const c = await fetch(`${s.url}/v1/streams/${st.id}/cancel?token=${token}`, { method: "POST" });
    expect(c.status).toBe(200);
    expect(((await c.json()) as { status: string }).status).toBe("cancelled");
    const bad = await fetch(`${s.url}/v1/streams/${st.id}/tokens`, {
      method: "POST",
      headers: { ...bearer(KEYS.producerA), "content-type": "application/json" },
      body: JSON.stringify({ scopes: ["admin"] }),
    });
    expect(bad.status).toBe(400);
  });

  it("an EventSource-style reader follows a stream with only ?token=", async () => {
    const st = await startAs(KEYS.producerA, demoBody({ length: 30 }));
    const res = await fetch(`${s.url}/v1/streams/${st.id}?token=${st.read_token}`, {
      headers: { accept: "text/event-stream" },
    });
    expect(res.status).toBe(200);
    const msgs = (await readSse(res)).filter((m) => m.event);
    expect(msgs.at(-1)?.event).toBe("finish");
    expect(textOf(msgs).length).toBeGreaterThan(10);
  });
});

describe("quotas", () => {
  it("concurrent generations and generations per minute answer 429 with the limit and Retry-After; running work is unharmed", async () => {
    const first = await startAs(KEYS.limited, demoBody({ length: 40, tokens_per_s: 200 }));
    const second = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json", ...bearer(KEYS.limited) },
      body: JSON.stringify(demoBody({ length: 3 })),
    });
    expect(second.status).toBe(429);
    expect(second.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(((await second.json()) as { error: { code: string; limit: string } }).error).toMatchObject({
      code: "rate_limited",
      limit: "concurrent_generations",
    });
    const msgs = (
      await readSse(
        await fetch(`${s.url}/v1/streams/${first.id}`, {
          headers: { accept: "text/event-stream", ...bearer(KEYS.limited) },
        }),
      )
    ).filter((m) => m.event);
    expect(msgs.at(-1)?.event).toBe("finish");
    // Two more fit in the minute (3 in all), the fourth does not.
    for (let i = 0; i < 2; i++) {
      const st = await startAs(KEYS.limited, demoBody({ length: 2, ttft_ms: 1 }));
      await s.server.runner.settled(st.id);
    }
    const fourth = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json", ...bearer(KEYS.limited) },
      body: JSON.stringify(demoBody({ length: 3 })),
    });
    expect(fourth.status).toBe(429);
    expect(((await fourth.json()) as { error: { limit: string } }).error.limit).toBe(
      "generations_per_minute",
    );
    // Other keys are not affected.
    await startAs(KEYS.producerA, demoBody({ length: 2 }));
  });

  it("open streaming connections per key are bounded", async () => {
    const st = await startAs(KEYS.producerA, demoBody({ length: 500, tokens_per_s: 50 }));
    const ac = new AbortController();
    const one = await fetch(`${s.url}/v1/streams/${st.id}`, {
      headers: { accept: "text/event-stream", ...bearer(KEYS.conn) },
      signal: ac.signal,
    });
    expect(one.status).toBe(200);
    const two = await fetch(`${s.url}/v1/streams/${st.id}`, {
      headers: { accept: "text/event-stream", ...bearer(KEYS.conn) },
    });
    expect(two.status).toBe(429);
    expect(((await two.json()) as { error: { limit: string } }).error.limit).toBe("connections");
    ac.abort();
    await new Promise((r) => setTimeout(r, 100));
    const three = await fetch(`${s.url}/v1/streams/${st.id}?offset=now`, {
      headers: { accept: "application/json", ...bearer(KEYS.conn) },
    });
    expect(three.status).toBe(200);
    const again = new AbortController();
    const four = await fetch(`${s.url}/v1/streams/${st.id}`, {
      headers: { accept: "text/event-stream", ...bearer(KEYS.conn) },
      signal: again.signal,
    });
    expect(four.status).toBe(200);
    again.abort();
  });
});

describe("binding, CORS and logs", () => {
  it("refuses to listen beyond loopback without keys unless --insecure", async () => {
    await expect(
      createSluice(parseConfig({ host: "0.0.0.0", port: 0, log_level: "silent" }), { env: {} }),
    ).rejects.toThrow(ConfigError);
    await expect(
      createSluice(parseConfig({ host: "0.0.0.0", port: 0, log_level: "silent" }), { env: {} }),
    ).rejects.toThrow(/--insecure/);
    const ok = await createSluice(
      parseConfig({ host: "0.0.0.0", port: 0, log_level: "silent", insecure: true }),
      { env: {} },
    );
    await ok.close();
    const withKeys = await createSluice(
      parseConfig({ ...authConfig, host: "0.0.0.0", port: 0, log_level: "silent" } as never),
      { env: { KEY_ADMIN_B: "x", TOKEN_SECRET: SECRET, OLD_TOKEN_SECRET: OLD_SECRET } },
    );
    await withKeys.close();
  });

  it("reports a missing key secret as a config error", async () => {
    await expect(
      createSluice(parseConfig({ ...authConfig, port: 0, log_level: "silent" } as never), { env: {} }),
    ).rejects.toThrow(/KEY_ADMIN_B is not set/);
  });

  it("answers CORS preflights for allowed origins only", async () => {
    const pre = await fetch(`${s.url}/v1/streams/st_x`, {
      method: "OPTIONS",
      headers: {
        origin: "https://app.example",
        "access-control-request-method": "GET",
        "access-control-request-headers": "authorization, last-event-id",
      },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe("https://app.example");
    expect(pre.headers.get("access-control-allow-headers")).toMatch(/authorization/);
    expect(pre.headers.get("access-control-allow-headers")).toMatch(/last-event-id/);
    const evil = await fetch(`${s.url}/v1/streams/st_x`, {
      method: "OPTIONS",
      headers: { origin: "https://evil.example", "access-control-request-method": "GET" },
    });
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();
    const get = await fetch(`${s.url}/v1/models`, {
      headers: { origin: "https://app.example", ...bearer(KEYS.readerA) },
    });
    expect(get.headers.get("access-control-allow-origin")).toBe("https://app.example");
    expect(get.headers.get("access-control-expose-headers")).toMatch(/sluice-stream-id/);
  });

  it("never logs keys or tokens", async () => {
    let logged = "";
    const sink = new Writable({
      write(chunk, _enc, cb) {
        logged += chunk.toString();
        cb();
      },
    });
    const config = parseConfig({ ...authConfig, host: "127.0.0.1", port: 0, log_level: "debug" } as never);
    const server = await createSluice(config, {
      env: { KEY_ADMIN_B: KEYS.adminB, TOKEN_SECRET: SECRET, OLD_TOKEN_SECRET: OLD_SECRET },
      logger: createLogger("debug", sink),
    });
    const url = await server.listen();
    const st = (await (
      await fetch(`${url}/v1/streams`, {
        method: "POST",
        headers: { "content-type": "application/json", ...bearer(KEYS.producerA) },
        body: JSON.stringify(demoBody({ length: 3 })),
      })
    ).json()) as { id: string; read_token: string };
    await fetch(`${url}/v1/streams/${st.id}?token=${st.read_token}`);
    await fetch(`${url}/v1/streams/${st.id}/info`, { headers: { "x-api-key": KEYS.readerA } });
    await fetch(`${url}/v1/streams?token=${KEYS.adminA}`);
    await server.close();
    // The requests were logged (with their stream id), just never their credentials.
    expect(logged).toMatch(/"msg":"request"/);
    expect(logged).toContain(st.id);
    for (const secret of [...Object.values(KEYS), st.read_token, SECRET, OLD_SECRET])
      expect(logged).not.toContain(secret);
  });
});

describe("hostile input", () => {
  it("slowloris: a client trickling headers is cut at the bound while others are served", async () => {
    const port = Number(new URL(s.url).port);
    const sock = net.connect(port, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    sock.write("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    const started = Date.now();
    let closedAt = 0;
    sock.on("close", () => {
      closedAt = Date.now();
    });
    sock.on("error", () => {});
    const trickle = setInterval(() => {
      if (!sock.destroyed) sock.write("X-Slow: a\r\n");
    }, 150);
    try {
      // Meanwhile the server answers everyone else.
      for (let i = 0; i < 5; i++) expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
      const limit = Date.now() + 5000;
      while (!closedAt && Date.now() < limit) await new Promise((r) => setTimeout(r, 50));
    } finally {
      clearInterval(trickle);
      sock.destroy();
    }
    expect(closedAt).toBeGreaterThan(0);
    expect(closedAt - started).toBeLessThan(3000);
  });

  it("oversized headers are refused and the server keeps serving", async () => {
    const res = await new Promise<string>((resolve) => {
      const sock = net.connect(Number(new URL(s.url).port), "127.0.0.1", () => {
        sock.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(40_000)}\r\n\r\n`);
      });
      let data = "";
      sock.on("data", (d) => {
        data += d.toString();
      });
      sock.on("close", () => resolve(data));
      sock.on("error", () => resolve(data));
    });
    expect(res).toMatch(/^HTTP\/1\.1 431/);
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
  });

  it("odd stream ids (traversal, encoded slashes, very long, unicode) are 404s, never 5xx", async () => {
    for (const id of [
      "..",
      "..%2F..%2Fetc%2Fpasswd",
      "%2e%2e",
      "a".repeat(5000),
      "%E2%9C%93",
      "st_%00",
      "%F0%9F%92%A9",
      "st_x;rm",
    ]) {
      const res = await fetch(`${s.url}/v1/streams/${id}`, { headers: bearer(KEYS.adminA) });
      expect([400, 404, 414], id.slice(0, 40)).toContain(res.status);
      const body = (await res.json()) as { error: { code: string } };
      expect(body.error.code).toMatch(/stream_not_found|not_found|invalid_request/);
    }
  });

  it("odd Durable Streams paths (dot segments, encoded slashes, NUL, very long, unicode) are refused, never 5xx", async () => {
    const port = Number(new URL(s.url).port);
    // Raw requests: a client library would normalize the dot segments away before sending.
    const raw = (method: string, path: string) =>
      new Promise<string>((resolve) => {
        const sock = net.connect(port, "127.0.0.1", () => {
          sock.write(
            `${method} ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEYS.adminA}\r\n` +
              "Content-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
          );
        });
        let data = "";
        sock.on("data", (d) => {
          data += d.toString();
        });
        sock.on("close", () => resolve(data));
        sock.on("error", () => resolve(data));
      });
    const odd = [
      "/ds/v1/stream/a/../b",
      "/ds/v1/stream/../../etc/passwd",
      "/ds/v1/stream/./x",
      "/ds/v1/stream/a//b",
      "/ds/v1/stream/..%2F..%2Fetc",
      "/ds/v1/stream/x%00y",
      `/ds/v1/stream/${"p".repeat(5000)}`,
      "/ds/v1/stream/%E2%9C%93",
      "/ds/v1/stream/a%7Cb",
    ];
    for (const path of odd) {
      for (const method of ["PUT", "GET"]) {
        const res = await raw(method, path);
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(res)?.[1]);
        expect([400, 404, 414], `${method} ${path.slice(0, 40)}: ${res.slice(0, 80)}`).toContain(status);
      }
    }
    // And nothing was created by any of them.
    const list = (await (
      await fetch(`${s.url}/v1/streams?limit=1000`, { headers: bearer(KEYS.adminA) })
    ).json()) as {
      streams: { id: string }[];
    };
    // (Generation ids are random base32: one may contain "etc" by chance, so they are not suspects.)
    const suspect = (id: string) => !/^st_[0-9a-z]{20}$/.test(id) && /etc|passwd|\.\.|\||✓/.test(id);
    expect(list.streams.filter((x) => suspect(x.id))).toEqual([]);
  });

  it("fuzzed bodies and query parameters get 4xx with a code, never 5xx; a concurrent stream completes exactly", async () => {
    const legit = await startAs(KEYS.producerA, demoBody({ length: 300, tokens_per_s: 400 }));
    const json = fc.jsonValue({ maxDepth: 3 });
    const bodyArb = fc.oneof(
      json.map((v) => JSON.stringify(v)),
      fc
        .record(
          {
            model: fc.oneof(fc.string(), json),
            messages: fc.oneof(json, fc.array(fc.record({ role: fc.string(), content: json }))),
          },
          { requiredKeys: [] },
        )
        .map((v) => JSON.stringify(v)),
      fc
        .record({ demo: json, max_tokens: json, timeout_ms: json, on_disconnect: json }, { requiredKeys: [] })
        .map((v) => JSON.stringify({ ...demoBody(), ...v })),
      fc.string({ maxLength: 200 }),
    );
    // A Durable Streams JSON stream to append fuzz to.
    const dsPath = `${s.url}/ds/v1/stream/fuzz-${Date.now()}`;
    const put = await fetch(dsPath, {
      method: "PUT",
      headers: { "content-type": "application/json", ...bearer(KEYS.producerA) },
    });
    expect(put.status).toBe(201);
    const targets = ["/v1/streams", "/v1/chat/completions", "/v1/responses", "/v1/ai-sdk/chat", "ds"];
    await fc.assert(
      fc.asyncProperty(bodyArb, fc.constantFrom(...targets), async (body, target) => {
        const ac = new AbortController();
        const res = await fetch(target === "ds" ? dsPath : `${s.url}${target}`, {
          method: "POST",
          headers: { "content-type": "application/json", ...bearer(KEYS.producerA) },
          body,
          signal: ac.signal,
        });
        const streamId = res.headers.get("sluice-stream-id");
        if (res.status < 400 && (res.headers.get("content-type") ?? "").includes("event-stream")) {
          ac.abort(); // a streaming success: enough seen
        } else {
          const text = await res.text();
          expect(res.status, `${target}: ${text}`).toBeLessThan(500);
          if (res.status >= 400) {
            const err = (JSON.parse(text) as { error: { code: string } }).error;
            expect(err.code, target).toMatch(/^[a-z_]+$/);
          }
        }
        if (streamId) {
          await fetch(`${s.url}/v1/streams/${streamId}/cancel`, {
            method: "POST",
            headers: bearer(KEYS.producerA),
          });
        }
      }),
      { numRuns: 300 },
    );
    const queryArb = fc.record(
      {
        offset: fc.string({ maxLength: 30 }),
        limit: fc.string({ maxLength: 8 }),
        format: fc.string({ maxLength: 10 }),
        status: fc.string({ maxLength: 10 }),
      },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(
        queryArb,
        fc.constantFrom("application/json", "text/event-stream", "application/x-ndjson"),
        async (q, accept) => {
          const qs = new URLSearchParams(q as Record<string, string>).toString();
          for (const path of [`/v1/streams/${legit.id}`, "/v1/streams"]) {
            const ac = new AbortController();
            const res = await fetch(`${s.url}${path}?${qs}`, {
              headers: { accept, ...bearer(KEYS.readerA) },
              signal: ac.signal,
            });
            expect(res.status).toBeLessThan(500);
            ac.abort();
          }
        },
      ),
      { numRuns: 100 },
    );
    const res = await fetch(`${s.url}/v1/streams/${legit.id}`, {
      headers: { accept: "text/event-stream", ...bearer(KEYS.readerA) },
    });
    const msgs = (await readSse(res)).filter((m) => m.event);
    expect(msgs.at(-1)?.event).toBe("finish");
    expect(msgs.filter((m) => m.event === "text-delta")).toHaveLength(300);
  });
});
