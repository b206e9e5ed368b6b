import { createHash } from "node:crypto";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoBody, type Running, readSse, startSluice } from "./helpers.js";

/** Access control on the Durable Streams mount (/ds): roles, tenants, read tokens, quotas. */

const sha = (s: string) => createHash("sha256").update(s).digest("hex");
const SECRET = "ds-token-secret-0123456789abcdef-0123456789";
const OLD_SECRET = "ds-old-token-secret-0123456789abcdef-012345";
const KEYS = {
  adminA: "sk-ds-admin-a-0001",
  producerA: "sk-ds-producer-a-0002",
  readerA: "sk-ds-reader-a-0003",
  adminB: "sk-ds-admin-b-0004",
  producerB: "sk-ds-producer-b-0005",
  conn: "sk-ds-conn-a-0006",
};

const config = {
  auth: {
    keys: [
      { id: "admin-a", key_sha256: sha(KEYS.adminA), role: "admin", tenant: "a" },
      { id: "producer-a", key_sha256: sha(KEYS.producerA), role: "producer", tenant: "a" },
      { id: "reader-a", key_sha256: sha(KEYS.readerA), role: "reader", tenant: "a" },
      { id: "admin-b", key_sha256: sha(KEYS.adminB), role: "admin", tenant: "b" },
      { id: "producer-b", key_sha256: sha(KEYS.producerB), role: "producer", tenant: "b" },
      { id: "conn", key_sha256: sha(KEYS.conn), role: "reader", tenant: "a", limits: { connections: 1 } },
    ],
    token_secrets: [
      { id: "k2", secret_env: "TOKEN_SECRET" },
      { id: "k1", secret_env: "OLD_TOKEN_SECRET" },
    ],
    token_ttl_s: 600,
  },
  long_poll: { max_wait_ms: 300 },
  durable_streams: {
    enabled: true,
    max_append_bytes: 64 * 1024,
    max_read_bytes: 64 * 1024,
  },
} as const;

/** What tenant A's DS streams hold: a refusal must never show it. */
const MARKER = "tenant-a-secret-payload";

let s: Running;
let n = 0;
beforeAll(async () => {
  s = await startSluice(config as never, { env: { TOKEN_SECRET: SECRET, OLD_TOKEN_SECRET: OLD_SECRET } });
});
afterAll(async () => {
  await s.close();
});

const bearer = (v: string) => ({ authorization: `Bearer ${v}` });
const ds = (path: string, q = "") => `${s.url}/ds/v1/stream/${path}${q ? `?${q}` : ""}`;
const freshPath = (what: string) => `${what}/${process.pid}-${++n}`;
const JSON_CT = { "content-type": "application/json" };

/** A generation of tenant A (long enough to still run during the matrix) and its read token. */
async function startGeneration(key = KEYS.producerA, length = 3000) {
  const res = await fetch(`${s.url}/v1/streams`, {
    method: "POST",
    headers: { ...JSON_CT, ...bearer(key) },
    body: JSON.stringify(demoBody({ length, tokens_per_s: 50 })),
  });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; read_token: string };
}

/** A running JSON-mode DS stream of the key's tenant holding one message with MARKER. */
async function createDs(key = KEYS.producerA, path = freshPath("room")): Promise<string> {
  const put = await fetch(ds(path), { method: "PUT", headers: { ...JSON_CT, ...bearer(key) } });
  expect(put.status).toBe(201);
  const post = await fetch(ds(path), {
    method: "POST",
    headers: { ...JSON_CT, ...bearer(key) },
    body: JSON.stringify([{ text: MARKER }]),
  });
  expect(post.status).toBe(204);
  return path;
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

const b64url = (v: string) => Buffer.from(v).toString("base64url");

/** Reads the first chunk of a live response, then hangs up. */
async function firstChunk(url: string, headers: Record<string, string>): Promise<Response> {
  const ac = new AbortController();
  const res = await fetch(url, { headers, signal: ac.signal });
  if (res.status !== 200) return res;
  const first = await res.body?.getReader().read();
  ac.abort();
  return new Response(first?.value ?? "", { status: 200, headers: res.headers });
}

describe("/ds access matrix: every route × every kind of caller", () => {
  type Expect = number | "ok";
  type Caller = { name: string; headers: () => Record<string, string>; query?: () => string };
  let gen: { id: string; read_token: string };
  let target: string;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    const other = await startGeneration();
    tokens.otherStream = other.read_token;
    gen = await startGeneration();
    const now = Math.floor(Date.now() / 1000);
    tokens.valid = gen.read_token;
    tokens.cancel = await jwt({ sub: gen.id, ten: "a", scp: ["read", "cancel"] });
    tokens.oldKey = await jwt({ sub: gen.id, ten: "a", scp: ["read"] }, { secret: OLD_SECRET, kid: "k1" });
    tokens.expired = await jwt({ sub: gen.id, ten: "a", scp: ["read"] }, { exp: now - 5 });
    tokens.wrongSecret = await jwt({ sub: gen.id, ten: "a", scp: ["read"] }, { secret: "x".repeat(40) });
    const [h, p, sig] = gen.read_token.split(".") as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, "base64url").toString());
    payload.sub = other.id;
    tokens.tampered = `${h}.${b64url(JSON.stringify(payload))}.${sig}`;
    tokens.algNone = `${b64url(JSON.stringify({ alg: "none", typ: "JWT", kid: "k2" }))}.${b64url(
      JSON.stringify({
        sub: gen.id,
        ten: "a",
        scp: ["read"],
        iss: "sluice",
        aud: "sluice:stream",
        exp: now + 600,
      }),
    )}.`;
    tokens.otherTenant = await jwt({ sub: gen.id, ten: "b", scp: ["read"] });
    target = await createDs();
  });

  const callers: Caller[] = [
    { name: "no credentials", headers: () => ({}) },
    { name: "wrong key", headers: () => bearer("sk-wrong-key") },
    { name: "malformed Authorization", headers: () => ({ authorization: "Basic Zm9vOmJhcg==" }) },
    { name: "other tenant's admin key", headers: () => bearer(KEYS.adminB) },
    { name: "reader key", headers: () => bearer(KEYS.readerA) },
    { name: "reader key via x-api-key", headers: () => ({ "x-api-key": KEYS.readerA }) },
    { name: "producer key", headers: () => bearer(KEYS.producerA) },
    { name: "admin key", headers: () => bearer(KEYS.adminA) },
    { name: "generation read token (query)", headers: () => ({}), query: () => `token=${tokens.valid}` },
    { name: "generation read token (header)", headers: () => bearer(tokens.valid as string) },
    { name: "token of the rotated-out key", headers: () => ({}), query: () => `token=${tokens.oldKey}` },
    { name: "read+cancel token", headers: () => ({}), query: () => `token=${tokens.cancel}` },
    { name: "token for another stream", headers: () => ({}), query: () => `token=${tokens.otherStream}` },
    { name: "token for another tenant", headers: () => ({}), query: () => `token=${tokens.otherTenant}` },
    { name: "expired token", headers: () => ({}), query: () => `token=${tokens.expired}` },
    { name: "token with a wrong signature", headers: () => ({}), query: () => `token=${tokens.wrongSecret}` },
    { name: "tampered token", headers: () => ({}), query: () => `token=${tokens.tampered}` },
    { name: "alg: none token", headers: () => ({}), query: () => `token=${tokens.algNone}` },
    { name: "API key in the query string", headers: () => ({}), query: () => `token=${KEYS.adminA}` },
  ];
  const unauth = [401, 401, 401, 401, 401] as const;
  const ok = "ok" as const;
  // Columns: none wrong malf B rdr rdrX prod adm tokQ tokH old tokC othS othT | exp sig tamp none keyQ
  // A read token is scoped to its generation: tenant A's own DS streams are "another stream" to it (404).
  const dsRead: Expect[] = [401, 401, 401, 404, ok, ok, ok, ok, 404, 404, 404, 404, 404, 404, ...unauth];
  const genRead: Expect[] = [401, 401, 401, 404, ok, ok, ok, ok, ok, ok, ok, ok, 404, 404, ...unauth];
  const matrix: Record<string, Expect[]> = {
    // tenant A's own DS stream
    "GET catch-up": dsRead,
    "GET long-poll": dsRead,
    "GET sse": dsRead,
    HEAD: dsRead,
    // B's PUT creates B's own stream at that path (another namespace): 201, exactly as for a new path.
    "PUT create": [401, 401, 401, ok, 403, 403, ok, ok, 403, 403, 403, 403, 403, 403, ...unauth],
    "POST append": [401, 401, 401, 404, 403, 403, ok, ok, 404, 404, 404, 404, 404, 404, ...unauth],
    "PUT fork": [401, 401, 401, 404, 403, 403, ok, ok, 403, 403, 403, 403, 403, 403, ...unauth],
    DELETE: [401, 401, 401, 404, 403, 403, 403, ok, 404, 404, 404, 404, 404, 404, ...unauth],
    // tenant A's generation through /ds (read-only for everyone: writes are 403 stream_read_only)
    "GET generation": genRead,
    "GET generation sse": genRead,
    "HEAD generation": genRead,
    "POST generation": [401, 401, 401, 404, 403, 403, 403, 403, 403, 403, 403, 403, 404, 404, ...unauth],
    "DELETE generation": [401, 401, 401, 404, 403, 403, 403, 403, 403, 403, 403, 403, 404, 404, ...unauth],
  };

  async function attempt(route: string, c: Caller): Promise<Response> {
    const q = c.query ? c.query() : "";
    const amp = q ? `&${q}` : "";
    const h = c.headers();
    switch (route) {
      case "GET catch-up":
        return fetch(ds(target, `offset=-1${amp}`), { headers: h });
      case "GET long-poll":
        return fetch(ds(target, `offset=-1&live=long-poll${amp}`), { headers: h });
      case "GET sse":
        return firstChunk(ds(target, `offset=-1&live=sse${amp}`), h);
      case "HEAD":
        return fetch(ds(target, q), { method: "HEAD", headers: h });
      case "PUT create":
        return fetch(ds(target, q), { method: "PUT", headers: { ...h, ...JSON_CT } });
      case "POST append":
        return fetch(ds(target, q), {
          method: "POST",
          headers: { ...h, ...JSON_CT },
          body: JSON.stringify({ text: "appended" }),
        });
      case "PUT fork":
        return fetch(ds(freshPath("fork"), q), {
          method: "PUT",
          headers: { ...h, "stream-forked-from": `/v1/stream/${target}` },
        });
      case "DELETE":
        return fetch(ds(target, q), { method: "DELETE", headers: h });
      case "GET generation":
        return fetch(ds(gen.id, `offset=-1${amp}`), { headers: h });
      case "GET generation sse":
        return firstChunk(ds(gen.id, `offset=-1&live=sse${amp}`), h);
      case "HEAD generation":
        return fetch(ds(gen.id, q), { method: "HEAD", headers: h });
      case "POST generation":
        return fetch(ds(gen.id, q), {
          method: "POST",
          headers: { ...h, ...JSON_CT },
          body: JSON.stringify({ type: "text-delta", delta: "forged" }),
        });
      case "DELETE generation":
        return fetch(ds(gen.id, q), { method: "DELETE", headers: h });
    }
    throw new Error(route);
  }

  for (const [route, row] of Object.entries(matrix)) {
    it(route, async () => {
      expect(row).toHaveLength(callers.length);
      // The fork row left forks inheriting from the target (a delete would keep it as 410): start afresh.
      if (route === "DELETE") target = await createDs();
      const failures: string[] = [];
      for (let i = 0; i < callers.length; i++) {
        const c = callers[i] as Caller;
        const want = row[i] as Expect;
        const res = await attempt(route, c);
        const text = await res.text();
        const okStatus = res.status >= 200 && res.status < 300;
        if (want === "ok" ? !okStatus : res.status !== want) {
          failures.push(`${c.name}: want ${want}, got ${res.status} ${text.slice(0, 120)}`);
          continue;
        }
        if (want !== "ok") {
          // A refusal says why with a code, and carries no stream data (no body, no stream headers).
          if (!route.startsWith("HEAD")) {
            const code = (JSON.parse(text) as { error: { code: string } }).error.code;
            const codes = {
              401: ["unauthorized"],
              403: ["forbidden", "stream_read_only"],
              404: ["stream_not_found"],
            }[want];
            if (!codes?.includes(code)) failures.push(`${c.name}: code ${code}, want ${codes}`);
          }
          if (text.includes(MARKER) || /text-delta|"delta"/.test(text) || text.includes("ds|"))
            failures.push(`${c.name}: data leaked: ${text.slice(0, 120)}`);
          for (const hdr of [
            "stream-next-offset",
            "stream-closed",
            "stream-up-to-date",
            "etag",
            "location",
          ]) {
            if (res.headers.get(hdr) !== null) failures.push(`${c.name}: refusal carries ${hdr}`);
          }
          if (want === 401 && res.headers.get("www-authenticate") === null && !c.query) {
            failures.push(`${c.name}: 401 without WWW-Authenticate`);
          }
          // Browsers (CORS) can read the refusal too.
          if (res.headers.get("access-control-allow-origin") !== "*")
            failures.push(`${c.name}: refusal without CORS headers`);
        } else if (route.startsWith("GET") && route !== "GET generation sse" && route !== "GET sse") {
          const sees = route.includes("generation") ? /"type":"start"/.test(text) : text.includes(MARKER);
          if (!sees) failures.push(`${c.name}: read did not return the stream's data: ${text.slice(0, 120)}`);
        }
        if (okStatus && route === "GET catch-up") {
          // Authenticated history is the caller's own: never cacheable by a shared cache.
          if (/public/.test(res.headers.get("cache-control") ?? ""))
            failures.push(`${c.name}: cache-control ${res.headers.get("cache-control")}`);
        }
        if (okStatus && route === "PUT create" && c.name.startsWith("other tenant")) {
          // Not 200 (same config) or 409: B made a new stream of its own, and learnt nothing.
          if (res.status !== 201) failures.push(`${c.name}: PUT answered ${res.status}, want 201`);
          const del = await fetch(ds(target), { method: "DELETE", headers: bearer(KEYS.adminB) });
          if (del.status !== 204) failures.push(`${c.name}: could not delete its own stream (${del.status})`);
        }
        // A successful delete needs a fresh target for the next caller.
        if (okStatus && route === "DELETE") {
          const gone = await fetch(ds(target, "offset=-1"), { headers: bearer(KEYS.adminA) });
          if (gone.status !== 404)
            failures.push(`${c.name}: stream still there after DELETE (${gone.status})`);
          target = await createDs();
        }
      }
      expect(failures).toEqual([]);
    });
  }

  it("preflights on /ds stay unauthenticated (the protocol's CORS)", async () => {
    const pre = await fetch(ds(target), {
      method: "OPTIONS",
      headers: {
        origin: "https://anywhere.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, producer-id",
      },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe("*");
    expect(pre.headers.get("access-control-allow-headers")).toMatch(/authorization/i);
    expect(await pre.text()).toBe("");
  });
});

describe("/ds tenants", () => {
  it("tenant B cannot read, follow, append to, delete or fork tenant A's DS stream; its own stream at the same path is a different one", async () => {
    const path = await createDs(KEYS.producerA);
    const B = bearer(KEYS.adminB);
    const refused = async (res: Response, status = 404) => {
      const text = await res.text();
      expect(res.status).toBe(status);
      expect(text).not.toContain(MARKER);
      expect(res.headers.get("stream-next-offset")).toBeNull();
    };
    await refused(await fetch(ds(path, "offset=-1"), { headers: B }));
    await refused(await fetch(ds(path, "offset=-1&live=long-poll"), { headers: B }));
    await refused(await fetch(ds(path, "offset=-1&live=sse"), { headers: B }));
    await refused(await fetch(ds(path), { method: "HEAD", headers: B }));
    await refused(
      await fetch(ds(path), { method: "POST", headers: { ...B, ...JSON_CT }, body: '{"text":"from b"}' }),
    );
    await refused(await fetch(ds(path), { method: "DELETE", headers: B }));
    // A fork of A's stream, by path or by full URL: the source does not exist for B.
    for (const from of [`/v1/stream/${path}`, `/ds/v1/stream/${path}`, ds(path)]) {
      await refused(
        await fetch(ds(freshPath("b-fork")), {
          method: "PUT",
          headers: { ...B, "stream-forked-from": from },
        }),
      );
    }
    // A missing path answers B exactly the same.
    const missing = await fetch(ds(freshPath("nothing"), "offset=-1"), { headers: B });
    expect(missing.status).toBe(404);

    // B's PUT at A's path creates B's own (empty) stream: 201, as for any new path.
    const put = await fetch(ds(path), { method: "PUT", headers: { ...B, ...JSON_CT } });
    expect(put.status).toBe(201);
    const bAppend = await fetch(ds(path), {
      method: "POST",
      headers: { ...B, ...JSON_CT },
      body: JSON.stringify({ text: "b's own" }),
    });
    expect(bAppend.status).toBe(204);
    const bRead = await fetch(ds(path, "offset=-1"), { headers: B });
    expect(await bRead.json()).toEqual([{ text: "b's own" }]);
    // A's stream is untouched, and B's writes are not in it.
    const aRead = await fetch(ds(path, "offset=-1"), { headers: bearer(KEYS.readerA) });
    expect(await aRead.json()).toEqual([{ text: MARKER }]);
    // Forks stay in their tenant: B forks its own stream, A forks its own.
    const bFork = await fetch(ds(freshPath("b-fork")), {
      method: "PUT",
      headers: { ...B, "stream-forked-from": `/v1/stream/${path}` },
    });
    expect(bFork.status).toBe(201);
    const bForkRead = await fetch(bFork.headers.get("location") as string, { headers: B });
    expect(await bForkRead.json()).toEqual([{ text: "b's own" }]);
    const aForkPath = freshPath("a-fork");
    const aFork = await fetch(ds(aForkPath), {
      method: "PUT",
      headers: { ...bearer(KEYS.producerA), "stream-forked-from": `/v1/stream/${path}` },
    });
    expect(aFork.status).toBe(201);
    expect(await (await fetch(ds(aForkPath), { headers: bearer(KEYS.readerA) })).json()).toEqual([
      { text: MARKER },
    ]);
    // The A fork is not visible to B either.
    await refused(await fetch(ds(aForkPath), { headers: B }));
    // Listing: each tenant sees its own stream at that path, by its DS path (never a store id).
    for (const [key, tenant] of [
      [KEYS.readerA, "a"],
      [KEYS.adminB, "b"],
    ] as const) {
      const list = await fetch(`${s.url}/v1/streams?limit=1000`, { headers: bearer(key) });
      const text = await list.text();
      expect(text).not.toContain("ds|");
      const mine = (JSON.parse(text) as { streams: { id: string; tenant: string }[] }).streams.filter(
        (x) => x.id === path,
      );
      expect(mine.map((x) => x.tenant)).toEqual([tenant]);
    }
    // B deleting "its" path deletes its own stream only.
    expect((await fetch(ds(path), { method: "DELETE", headers: B })).status).toBe(204);
    expect((await fetch(ds(path, "offset=-1"), { headers: bearer(KEYS.readerA) })).status).toBe(200);
  });

  it("a generation is readable by its tenant and its read token through /ds, by no one else", async () => {
    const g = await startGeneration(KEYS.producerA, 20);
    await s.server.runner.settled(g.id);
    // The read token (query, as EventSource would send it) reads the whole generation.
    const viaToken = await fetch(ds(g.id, `offset=-1&token=${g.read_token}`));
    expect(viaToken.status).toBe(200);
    expect(viaToken.headers.get("stream-closed")).toBe("true");
    const events = (await viaToken.json()) as { type: string }[];
    expect(events[0]?.type).toBe("start");
    expect(events.at(-1)?.type).toBe("finish");
    // Live through SSE with the token in the header.
    const live = await fetch(ds(g.id, "offset=-1&live=sse"), { headers: bearer(g.read_token) });
    expect(live.status).toBe(200);
    const msgs = await readSse(live);
    expect(msgs.some((m) => m.event === "data" && m.data.includes('"type":"finish"'))).toBe(true);
    // The same tenant's keys read it.
    expect((await fetch(ds(g.id, "offset=-1"), { headers: bearer(KEYS.readerA) })).status).toBe(200);
    // Tenant B: 404 on every method, and a PUT there is B's own new stream, not A's generation.
    const B = bearer(KEYS.producerB);
    for (const method of ["GET", "HEAD", "POST"]) {
      const res = await fetch(ds(g.id, method === "GET" ? "offset=-1" : ""), {
        method,
        headers: { ...B, ...(method === "POST" ? JSON_CT : {}) },
        ...(method === "POST" ? { body: '{"type":"text-delta","delta":"forged"}' } : {}),
      });
      expect(res.status, method).toBe(404);
      expect(await res.text()).not.toMatch(/"type":"start"/);
    }
    const fork = await fetch(ds(freshPath("gen-fork")), {
      method: "PUT",
      headers: { ...B, "stream-forked-from": `/v1/stream/${g.id}` },
    });
    expect(fork.status).toBe(404);
    const bPut = await fetch(ds(g.id), { method: "PUT", headers: { ...B, ...JSON_CT } });
    expect(bPut.status).toBe(201);
    expect(await (await fetch(ds(g.id, "offset=-1"), { headers: B })).json()).toEqual([]);
    // A still reads its generation there, unchanged; A's PUT there is the generation's 409.
    const again = (await (await fetch(ds(g.id, `offset=-1&token=${g.read_token}`))).json()) as unknown[];
    expect(again).toEqual(events);
    const aPut = await fetch(ds(g.id), { method: "PUT", headers: { ...bearer(KEYS.producerA), ...JSON_CT } });
    expect(aPut.status).toBe(409);
    // A read token never reads the tenant's other streams, nor writes its own.
    const other = await createDs(KEYS.producerA);
    expect((await fetch(ds(other, `offset=-1&token=${g.read_token}`))).status).toBe(404);
    const write = await fetch(ds(g.id, `token=${g.read_token}`), {
      method: "POST",
      headers: JSON_CT,
      body: '{"type":"text-delta","delta":"forged"}',
    });
    expect(write.status).toBe(403);
  });
});

describe("/ds store ids are not addressable", () => {
  it("a namespaced store id (raw, encoded, as a fork source) is a 404 for everyone, never a 5xx", async () => {
    const path = await createDs(KEYS.producerA);
    const ids = [
      `ds|a|${path}`,
      `ds%7Ca%7C${path}`,
      `ds%7Ca%7C${encodeURIComponent(path)}`,
      "ds|a|..",
      "..%2Fds|a",
    ];
    for (const key of [KEYS.adminA, KEYS.adminB]) {
      for (const id of ids) {
        const res = await fetch(`${s.url}/ds/v1/stream/${id}?offset=-1`, { headers: bearer(key) });
        const text = await res.text();
        expect([400, 404], `${id}: ${res.status}`).toContain(res.status);
        expect(text).not.toContain(MARKER);
      }
      const fork = await fetch(ds(freshPath("f")), {
        method: "PUT",
        headers: { ...bearer(key), "stream-forked-from": `/v1/stream/ds%7Ca%7C${path}` },
      });
      expect([400, 404]).toContain(fork.status);
    }
  });
});

describe("/ds caching with credentials", () => {
  it("cacheable history is private: a shared cache never serves one tenant's response to another", async () => {
    const path = freshPath("big");
    const A = { ...bearer(KEYS.producerA), ...JSON_CT };
    expect((await fetch(ds(path), { method: "PUT", headers: A })).status).toBe(201);
    for (let i = 0; i < 3; i++) {
      const post = await fetch(ds(path), {
        method: "POST",
        headers: A,
        body: JSON.stringify({ i, pad: MARKER.repeat(1500) }),
      });
      expect(post.status).toBe(204);
    }
    // More than max_read_bytes: the first page is history, not the tail.
    const page = await fetch(ds(path, "offset=-1"), { headers: bearer(KEYS.readerA) });
    expect(page.status).toBe(200);
    expect(page.headers.get("stream-up-to-date")).toBeNull();
    expect(page.headers.get("cache-control")).toBe("private, max-age=60, stale-while-revalidate=300");
    await page.text();
  });
});

describe("/ds quotas", () => {
  it("open long-poll and SSE reads count against the key's connections limit", async () => {
    const path = await createDs(KEYS.producerA);
    const conn = bearer(KEYS.conn);
    const ac = new AbortController();
    const one = await fetch(ds(path, "offset=now&live=sse"), { headers: conn, signal: ac.signal });
    expect(one.status).toBe(200);
    const two = await fetch(ds(path, "offset=now&live=sse"), { headers: conn });
    expect(two.status).toBe(429);
    expect(two.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(((await two.json()) as { error: { code: string; limit: string } }).error).toMatchObject({
      code: "rate_limited",
      limit: "connections",
    });
    const poll = await fetch(ds(path, "offset=now&live=long-poll"), { headers: conn });
    expect(poll.status).toBe(429);
    await poll.text();
    // A catch-up read is not a held connection: still served.
    const catchUp = await fetch(ds(path, "offset=-1"), { headers: conn });
    expect(catchUp.status).toBe(200);
    await catchUp.text();
    // Other keys of the tenant are not affected.
    const other = await fetch(ds(path, "offset=now&live=long-poll"), { headers: bearer(KEYS.readerA) });
    expect(other.status).toBe(204);
    ac.abort();
    // Released on hang-up: a long-poll fits again (and times out with 204), then SSE again.
    let poll2: Response | undefined;
    for (let i = 0; i < 50; i++) {
      poll2 = await fetch(ds(path, "offset=now&live=long-poll"), { headers: conn });
      if (poll2.status !== 429) break;
      await poll2.text();
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(poll2?.status).toBe(204);
    const again = new AbortController();
    const three = await fetch(ds(path, "offset=now&live=sse"), { headers: conn, signal: again.signal });
    expect(three.status).toBe(200);
    again.abort();
  });
});
