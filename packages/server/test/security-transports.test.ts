import { createHash } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ERROR_CODES } from "@sluice/protocol";
import fc from "fast-check";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { PROTO_OPTIONS, PROTO_PATH } from "../src/grpc/server.js";
import { demoBody, type Running, startSluice } from "./helpers.js";

// The access matrix of security.test.ts, over the two transports that live outside Fastify's
// routing: the WebSocket (`GET /v1/ws`, authenticated at the upgrade and per message) and gRPC
// (credentials in call metadata). Real `ws` and @grpc/grpc-js clients against a real server.

const sha = (s: string) => createHash("sha256").update(s).digest("hex");
const SECRET = "test-token-secret-0123456789abcdef-0123456789";
const KEYS = {
  adminA: "sk-admin-a-0001",
  producerA: "sk-producer-a-0002",
  readerA: "sk-reader-a-0003",
  adminB: "sk-admin-b-0004",
  conn: "sk-conn-a-0006",
  limited: "sk-limited-a-0007",
};

const authConfig = {
  grpc_port: 0,
  auth: {
    keys: [
      { id: "admin-a", key_sha256: sha(KEYS.adminA), role: "admin", tenant: "a" },
      { id: "producer-a", key_sha256: sha(KEYS.producerA), role: "producer", tenant: "a" },
      { id: "reader-a", key_sha256: sha(KEYS.readerA), role: "reader", tenant: "a" },
      { id: "admin-b", key_sha256: sha(KEYS.adminB), role: "admin", tenant: "b" },
      { id: "conn", key_sha256: sha(KEYS.conn), role: "reader", tenant: "a", limits: { connections: 1 } },
      {
        id: "limited",
        key_sha256: sha(KEYS.limited),
        role: "producer",
        tenant: "a",
        limits: { concurrent_generations: 1 },
      },
    ],
    token_secrets: [{ id: "k2", secret_env: "TOKEN_SECRET" }],
    token_ttl_s: 600,
  },
} as const;

let s: Running;
let grpcClient: GrpcClient;
beforeAll(async () => {
  s = await startSluice(authConfig as never, { env: { TOKEN_SECRET: SECRET } });
  const def = protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    sluice: { v1: { Sluice: grpc.ServiceClientConstructor } };
  };
  grpcClient = new pkg.sluice.v1.Sluice(
    s.server.grpc?.address as string,
    grpc.credentials.createInsecure(),
  ) as unknown as GrpcClient;
});
afterAll(async () => {
  grpcClient?.close();
  await s?.close();
});

const bearer = (v: string) => ({ authorization: `Bearer ${v}` });
const slow = () => demoBody({ length: 1000, tokens_per_s: 20 });
const quick = () => demoBody({ length: 20 });

/** A long-running stream started over HTTP by a key, with its read token. */
async function startAs(key: string, body: unknown = slow()) {
  const res = await fetch(`${s.url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json", ...bearer(key) },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; read_token: string };
}

async function statusOf(id: string, key = KEYS.adminA): Promise<string> {
  const res = await fetch(`${s.url}/v1/streams/${id}/info`, { headers: bearer(key) });
  const body = (await res.json()) as { status?: string; error?: { code: string } };
  return body.status ?? body.error?.code ?? "?";
}

/** A stream started over a transport belongs to the caller's tenant: only that tenant sees it. */
async function expectTenant(id: string, tenant: "a" | "b"): Promise<void> {
  const [own, stranger] = tenant === "a" ? [KEYS.adminA, KEYS.adminB] : [KEYS.adminB, KEYS.adminA];
  expect(await statusOf(id, own)).toMatch(/^(running|completed)$/);
  expect(await statusOf(id, stranger)).toBe("stream_not_found");
}

async function jwt(claims: Record<string, unknown>, opts: { secret?: string; exp?: number } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", kid: "k2" })
    .setIssuer("sluice")
    .setAudience("sluice:stream")
    .setIssuedAt(now - 10)
    .setExpirationTime(opts.exp ?? now + 600)
    .sign(new TextEncoder().encode(opts.secret ?? SECRET));
}

const b64url = (v: string) => Buffer.from(v).toString("base64url");

/** Every kind of token, for one target stream (and `other`, a second stream of the same tenant). */
async function tokensFor(
  target: { id: string; read_token: string },
  other: { id: string; read_token: string },
) {
  const now = Math.floor(Date.now() / 1000);
  const [h, p, sig] = target.read_token.split(".") as [string, string, string];
  const payload = JSON.parse(Buffer.from(p, "base64url").toString());
  payload.sub = other.id;
  return {
    valid: target.read_token,
    cancel: await jwt({ sub: target.id, ten: "a", scp: ["read", "cancel"] }),
    otherStream: other.read_token,
    otherTenant: await jwt({ sub: target.id, ten: "b", scp: ["read", "cancel"] }),
    expired: await jwt({ sub: target.id, ten: "a", scp: ["read"] }, { exp: now - 5 }),
    wrongSecret: await jwt({ sub: target.id, ten: "a", scp: ["read"] }, { secret: "x".repeat(40) }),
    tampered: `${h}.${b64url(JSON.stringify(payload))}.${sig}`,
    algNone: `${b64url(JSON.stringify({ alg: "none", typ: "JWT", kid: "k2" }))}.${b64url(
      JSON.stringify({
        sub: target.id,
        ten: "a",
        scp: ["read", "cancel"],
        iss: "sluice",
        aud: "sluice:stream",
        exp: now + 600,
      }),
    )}.`,
  };
}
type Tokens = Awaited<ReturnType<typeof tokensFor>>;

/** How a caller presents itself: headers / gRPC metadata, or a `?token=` in the WebSocket URL. */
interface Caller {
  name: string;
  headers?: (t: Tokens) => Record<string, string>;
  query?: (t: Tokens) => string;
  /** Expected answers: "ok", or the catalogue code of the refusal. */
  subscribe: string;
  start: string;
  cancel: string;
}

const UNAUTH = { subscribe: "unauthorized", start: "unauthorized", cancel: "unauthorized" };
const callers: Caller[] = [
  { name: "no credentials", ...UNAUTH },
  { name: "wrong key", headers: () => bearer("sk-wrong-key"), ...UNAUTH },
  { name: "malformed Authorization", headers: () => ({ authorization: "Basic Zm9vOmJhcg==" }), ...UNAUTH },
  { name: "API key where a token goes", headers: () => ({}), query: () => KEYS.adminA, ...UNAUTH },
  { name: "expired token", query: (t) => t.expired, ...UNAUTH },
  { name: "tampered token", query: (t) => t.tampered, ...UNAUTH },
  { name: "alg:none token", headers: (t) => bearer(t.algNone), query: (t) => t.algNone, ...UNAUTH },
  { name: "token signed with an unknown secret", headers: (t) => bearer(t.wrongSecret), ...UNAUTH },
  {
    name: "other tenant's admin key",
    headers: () => bearer(KEYS.adminB),
    subscribe: "stream_not_found",
    start: "ok",
    cancel: "stream_not_found",
  },
  {
    name: "reader key",
    headers: () => bearer(KEYS.readerA),
    subscribe: "ok",
    start: "forbidden",
    cancel: "forbidden",
  },
  {
    name: "reader key via x-api-key",
    headers: () => ({ "x-api-key": KEYS.readerA }),
    subscribe: "ok",
    start: "forbidden",
    cancel: "forbidden",
  },
  { name: "producer key", headers: () => bearer(KEYS.producerA), subscribe: "ok", start: "ok", cancel: "ok" },
  { name: "admin key", headers: () => bearer(KEYS.adminA), subscribe: "ok", start: "ok", cancel: "ok" },
  {
    name: "read token for the stream",
    headers: (t) => bearer(t.valid),
    query: (t) => t.valid,
    subscribe: "ok",
    start: "forbidden",
    cancel: "forbidden",
  },
  {
    name: "read+cancel token for the stream",
    headers: (t) => bearer(t.cancel),
    query: (t) => t.cancel,
    subscribe: "ok",
    start: "forbidden",
    cancel: "ok",
  },
  {
    name: "token for another stream",
    headers: (t) => bearer(t.otherStream),
    query: (t) => t.otherStream,
    subscribe: "stream_not_found",
    start: "forbidden",
    cancel: "stream_not_found",
  },
  {
    name: "token naming another tenant",
    headers: (t) => bearer(t.otherTenant),
    query: (t) => t.otherTenant,
    subscribe: "stream_not_found",
    start: "forbidden",
    cancel: "stream_not_found",
  },
];

// ── WebSocket ─────────────────────────────────────────────────────────────────

type Msg = Record<string, unknown> & { type?: string; stream?: string; id?: unknown; event?: unknown };

class WsClient {
  readonly msgs: Msg[] = [];
  private waiters: { pred: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];

  constructor(readonly ws: WebSocket) {
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
  }

  send(m: unknown): void {
    this.ws.send(JSON.stringify(m));
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

  /** The answer to a message sent with this id. */
  reply(id: string): Promise<Msg> {
    return this.next((m) => m.id === id);
  }

  events(stream: string): Msg[] {
    return this.msgs.filter((m) => m.stream === stream && m.event !== undefined);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once("close", () => resolve());
      this.ws.close();
    });
  }
}

type Opened =
  | { client: WsClient; refused?: undefined }
  | { client?: undefined; refused: { status: number; headers: IncomingHttpHeaders; body: string } };

async function openWs(cred: { headers?: Record<string, string>; query?: string }): Promise<Opened> {
  const q = cred.query !== undefined ? `?token=${encodeURIComponent(cred.query)}` : "";
  const ws = new WebSocket(`${s.url.replace(/^http/, "ws")}/v1/ws${q}`, { headers: cred.headers ?? {} });
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve({ client: new WsClient(ws) }));
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => {
        ws.on("error", () => {});
        ws.terminate();
        resolve({ refused: { status: res.statusCode ?? 0, headers: res.headers, body } });
      });
    });
    ws.once("error", reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("WebSocket access matrix: every caller × {subscribe, start, cancel}", () => {
  let other: { id: string; read_token: string };
  beforeAll(async () => {
    other = await startAs(KEYS.producerA);
  });

  for (const c of callers) {
    it(c.name, async () => {
      const target = await startAs(KEYS.producerA);
      const t = await tokensFor(target, other);
      const opened = await openWs({
        ...(c.headers ? { headers: c.headers(t) } : {}),
        ...(c.query ? { query: c.query(t) } : {}),
      });
      if (c.subscribe === "unauthorized") {
        // Refused at the upgrade with a proper HTTP answer: 401, a JSON error, no stream data.
        expect(opened.refused?.status).toBe(401);
        expect(opened.refused?.headers["www-authenticate"]).toMatch(/^Bearer/);
        expect(opened.refused?.headers["content-type"]).toBe("application/json");
        const body = JSON.parse(opened.refused?.body ?? "{}");
        expect(Object.keys(body)).toEqual(["error"]);
        expect(body.error.code).toBe("unauthorized");
        expect(opened.refused?.body).not.toContain(target.id);
        expect(await statusOf(target.id)).toBe("running");
        return;
      }
      const ws = opened.client as WsClient;
      try {
        // subscribe
        ws.send({ type: "subscribe", stream: target.id, id: "sub" });
        const sub = await ws.reply("sub");
        if (c.subscribe === "ok") {
          expect(sub.type).toBe("subscribed");
          await ws.next((m) => m.stream === target.id && m.event !== undefined);
        } else {
          expect(sub).toMatchObject({ type: "error", code: c.subscribe, stream: target.id });
          // The same answer as for a stream that does not exist: nothing leaks.
          ws.send({ type: "subscribe", stream: "st_does_not_exist_0000", id: "missing" });
          const missing = await ws.reply("missing");
          expect(missing.code).toBe("stream_not_found");
          expect(missing.message).toBe(sub.message);
        }

        // start
        ws.send({ type: "start", id: "start", ...quick() });
        const st = await ws.reply("start");
        if (c.start === "ok") {
          expect(st.type).toBe("started");
          await expectTenant(st.stream as string, c.name.startsWith("other tenant") ? "b" : "a");
          await ws.next((m) => m.type === "end" && m.stream === st.stream);
          expect(ws.events(st.stream as string).length).toBeGreaterThan(0);
        } else {
          expect(st).toMatchObject({ type: "error", code: c.start });
          expect(st.stream).toBeUndefined();
        }

        // cancel
        ws.send({ type: "cancel", stream: target.id, id: "cancel" });
        const cancel = await ws.reply("cancel");
        if (c.cancel === "ok") {
          expect(cancel).toMatchObject({ type: "cancelled", stream: target.id, status: "cancelled" });
          expect(await statusOf(target.id)).toBe("cancelled");
        } else {
          expect(cancel).toMatchObject({ type: "error", code: c.cancel, stream: target.id });
          // Nothing already running is harmed.
          expect(await statusOf(target.id)).toBe("running");
        }

        if (c.subscribe !== "ok") {
          // A refused subscription never delivered a byte of the stream.
          await sleep(150);
          expect(ws.events(target.id)).toEqual([]);
        }
        // The socket survived every refusal.
        expect(ws.ws.readyState).toBe(WebSocket.OPEN);
      } finally {
        await ws.close();
      }
    });
  }

  it("a subscribe may carry its own read token: one socket follows several streams, each by its own token", async () => {
    const a = await startAs(KEYS.producerA);
    const b = await startAs(KEYS.producerA);
    const bTenant = await startAs(KEYS.adminB);
    const target = await startAs(KEYS.producerA);
    const t = await tokensFor(target, a);
    // The socket itself holds a read token for `a` only.
    const ws = (await openWs({ query: a.read_token })).client as WsClient;
    try {
      ws.send({ type: "subscribe", stream: a.id, id: "a" });
      expect((await ws.reply("a")).type).toBe("subscribed");
      // b is not a's: refused without its own token…
      ws.send({ type: "subscribe", stream: b.id, id: "b0" });
      expect(await ws.reply("b0")).toMatchObject({ type: "error", code: "stream_not_found", stream: b.id });
      // …and followed with it; even another tenant's stream, when its token says so.
      ws.send({ type: "subscribe", stream: b.id, token: b.read_token, id: "b" });
      expect((await ws.reply("b")).type).toBe("subscribed");
      ws.send({ type: "subscribe", stream: bTenant.id, token: bTenant.read_token, id: "bt" });
      expect((await ws.reply("bt")).type).toBe("subscribed");

      // Refusals, each answered on its own; the working subscriptions go on.
      const refusals: [string, unknown, string][] = [
        ["wrong stream", a.read_token, "stream_not_found"],
        ["other tenant", t.otherTenant, "stream_not_found"],
        ["expired", t.expired, "unauthorized"],
        ["tampered", t.tampered, "unauthorized"],
        ["alg none", t.algNone, "unauthorized"],
        ["unknown secret", t.wrongSecret, "unauthorized"],
        ["an API key", KEYS.adminA, "unauthorized"],
        ["not a string", 42, "invalid_request"],
      ];
      const before = ws.events(a.id).length + ws.events(b.id).length;
      for (const [name, token, code] of refusals) {
        ws.send({ type: "subscribe", stream: target.id, token, id: name });
        expect(await ws.reply(name)).toMatchObject({ type: "error", code });
      }
      await ws.next((m) => m.stream === a.id && m.event !== undefined && ws.events(a.id).length > 3);
      await ws.next((m) => m.stream === b.id && m.event !== undefined && ws.events(b.id).length > 3);
      await ws.next((m) => m.stream === bTenant.id && m.event !== undefined);
      expect(ws.events(a.id).length + ws.events(b.id).length).toBeGreaterThan(before);
      expect(ws.events(target.id)).toEqual([]);

      // The target, with its own valid token, works on the same socket.
      ws.send({ type: "subscribe", stream: target.id, token: t.valid, id: "ok" });
      expect((await ws.reply("ok")).type).toBe("subscribed");
      await ws.next((m) => m.stream === target.id && m.event !== undefined);

      // A cancel may carry a token too: only a cancel-scoped one for that stream works.
      ws.send({ type: "cancel", stream: b.id, id: "c0" });
      expect(await ws.reply("c0")).toMatchObject({ type: "error", code: "stream_not_found" });
      ws.send({ type: "cancel", stream: target.id, token: t.valid, id: "c1" });
      expect(await ws.reply("c1")).toMatchObject({ type: "error", code: "forbidden" });
      expect(await statusOf(target.id)).toBe("running");
      ws.send({ type: "cancel", stream: target.id, token: t.cancel, id: "c2" });
      expect(await ws.reply("c2")).toMatchObject({ type: "cancelled", status: "cancelled" });
      await ws.next((m) => m.type === "end" && m.stream === target.id);
      expect(await statusOf(target.id)).toBe("cancelled");
      // The others are untouched.
      expect(await statusOf(a.id)).toBe("running");
      expect(await statusOf(b.id)).toBe("running");
    } finally {
      await ws.close();
    }
  });
});

// ── gRPC ──────────────────────────────────────────────────────────────────────

type GrpcClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function metadata(headers: Record<string, string>): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return md;
}

function unary<T>(method: string, req: unknown, md: grpc.Metadata): Promise<T> {
  return new Promise((resolve, reject) => {
    (
      grpcClient[method] as (
        r: unknown,
        m: grpc.Metadata,
        o: object,
        cb: (e: grpc.ServiceError | null, v: T) => void,
      ) => void
    )(req, md, { deadline: Date.now() + 10_000 }, (err, v) => (err ? reject(err) : resolve(v)));
  });
}

async function refusal(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error("the call was not refused");
}

/** Follows until the first event (then cancels the call), or until the call ends. */
function followFirst(
  req: { stream: string; offset?: string },
  md: grpc.Metadata,
): Promise<{ events: number; error: grpc.ServiceError | undefined }> {
  const call = (
    grpcClient.Follow as (r: unknown, m: grpc.Metadata, o: object) => grpc.ClientReadableStream<unknown>
  )(req, md, { deadline: Date.now() + 10_000 });
  let events = 0;
  let error: grpc.ServiceError | undefined;
  return new Promise((resolve) => {
    call.on("data", () => {
      events++;
      call.cancel();
    });
    call.on("error", (err: grpc.ServiceError) => {
      error = err;
    });
    call.on("close", () => setImmediate(() => resolve({ events, error })));
  });
}

const GRPC_STATUS: Record<string, grpc.status> = {
  unauthorized: grpc.status.UNAUTHENTICATED,
  forbidden: grpc.status.PERMISSION_DENIED,
  stream_not_found: grpc.status.NOT_FOUND,
};

function expectRefused(err: grpc.ServiceError | undefined, code: string): void {
  expect(err?.code).toBe(GRPC_STATUS[code]);
  expect(err?.metadata.get("sluice-error-code")).toEqual([code]);
}

describe("gRPC access matrix: every caller × {Follow, Start, Cancel}", () => {
  let other: { id: string; read_token: string };
  beforeAll(async () => {
    other = await startAs(KEYS.producerA);
  });

  // gRPC has no URL: a caller's query credential travels in `authorization` metadata instead.
  for (const c of callers) {
    it(c.name, async () => {
      const target = await startAs(KEYS.producerA);
      const t = await tokensFor(target, other);
      const md = () => metadata(c.headers ? c.headers(t) : c.query ? bearer(c.query(t)) : {});

      const f = await followFirst({ stream: target.id, offset: "-1" }, md());
      if (c.subscribe === "ok") {
        expect(f.events).toBe(1);
        expect(f.error?.code).toBe(grpc.status.CANCELLED);
      } else {
        expect(f.events).toBe(0);
        expectRefused(f.error, c.subscribe);
        if (c.subscribe === "stream_not_found") {
          const missing = await followFirst({ stream: "st_does_not_exist_0000" }, md());
          expect(missing.error?.details).toBe(f.error?.details);
        }
      }

      const start = unary<{ id: string; status: string }>(
        "Start",
        { request_json: JSON.stringify(quick()) },
        md(),
      );
      if (c.start === "ok") {
        const info = await start;
        expect(info.id).toMatch(/^st_/);
        await expectTenant(info.id, c.name.startsWith("other tenant") ? "b" : "a");
      } else {
        expectRefused(await refusal(start), c.start);
      }

      const cancel = unary<{ id: string; status: string }>("Cancel", { stream: target.id }, md());
      if (c.cancel === "ok") {
        expect((await cancel).status).toBe("cancelled");
      } else {
        expectRefused(await refusal(cancel), c.cancel);
        expect(await statusOf(target.id)).toBe("running");
      }
    });
  }
});

// ── connection quota ──────────────────────────────────────────────────────────

describe("a socket is one streaming connection against the key's quota", () => {
  it("a second socket (or gRPC follow, or SSE read) of a key at its limit is refused with 429; closing frees the slot", async () => {
    const stream = await startAs(KEYS.producerA);
    const first = (await openWs({ headers: bearer(KEYS.conn) })).client as WsClient;
    first.send({ type: "subscribe", stream: stream.id, id: "s" });
    expect((await first.reply("s")).type).toBe("subscribed");

    const second = await openWs({ headers: bearer(KEYS.conn) });
    expect(second.refused?.status).toBe(429);
    expect(second.refused?.headers["retry-after"]).toBe("1");
    const body = JSON.parse(second.refused?.body ?? "{}");
    expect(body.error).toMatchObject({ code: "rate_limited", limit: "connections" });

    // The same quota across transports.
    const f = await followFirst({ stream: stream.id }, metadata(bearer(KEYS.conn)));
    expect(f.events).toBe(0);
    expect(f.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(f.error?.metadata.get("sluice-error-code")).toEqual(["rate_limited"]);
    expect(f.error?.metadata.get("sluice-limit")).toEqual(["connections"]);
    const sse = await fetch(`${s.url}/v1/streams/${stream.id}`, {
      headers: { accept: "text/event-stream", ...bearer(KEYS.conn) },
    });
    expect(sse.status).toBe(429);
    await sse.body?.cancel();

    // Other keys are not affected, and the first socket keeps streaming.
    const reader = (await openWs({ headers: bearer(KEYS.readerA) })).client as WsClient;
    await reader.close();
    const n = first.events(stream.id).length;
    await first.next(
      (m) => m.stream === stream.id && m.event !== undefined && first.events(stream.id).length > n,
    );

    await first.close();
    let third: Opened | undefined;
    for (let i = 0; i < 50; i++) {
      third = await openWs({ headers: bearer(KEYS.conn) });
      if (third.client) break;
      await sleep(50);
    }
    expect(third?.client).toBeDefined();
    await third?.client?.close();
    // Released again: a gRPC follow now fits.
    let g = await followFirst({ stream: stream.id }, metadata(bearer(KEYS.conn)));
    for (let i = 0; i < 50 && g.events === 0; i++) {
      await sleep(50);
      g = await followFirst({ stream: stream.id }, metadata(bearer(KEYS.conn)));
    }
    expect(g.events).toBe(1);
  });
});

describe("quotas apply to starts over both transports", () => {
  it("a key at its concurrent-generations limit is refused (WS error message / RESOURCE_EXHAUSTED) and its running generation is unharmed", async () => {
    const ws = (await openWs({ headers: bearer(KEYS.limited) })).client as WsClient;
    try {
      ws.send({ type: "start", id: "one", subscribe: false, ...slow() });
      const one = await ws.reply("one");
      expect(one.type).toBe("started");
      ws.send({ type: "start", id: "two", ...slow() });
      expect(await ws.reply("two")).toMatchObject({
        type: "error",
        code: "rate_limited",
        limit: "concurrent_generations",
        retry_after_s: 1,
      });
      const err = await refusal(
        unary("Start", { request_json: JSON.stringify(slow()) }, metadata(bearer(KEYS.limited))),
      );
      expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(err.metadata.get("sluice-error-code")).toEqual(["rate_limited"]);
      expect(err.metadata.get("sluice-limit")).toEqual(["concurrent_generations"]);
      expect(err.metadata.get("retry-after")).toEqual(["1"]);
      expect(await statusOf(one.stream as string)).toBe("running");
      // The socket is still usable, and the slot frees when the generation ends.
      ws.send({ type: "cancel", stream: one.stream, id: "c" });
      expect((await ws.reply("c")).type).toBe("cancelled");
      ws.send({ type: "start", id: "three", ...quick() });
      expect((await ws.reply("three")).type).toBe("started");
    } finally {
      await ws.close();
    }
  });
});

describe("fuzzed WebSocket messages with keys configured", () => {
  it("every message gets an answer with a catalogue code (never internal_error), and no hidden stream's data ever arrives", async () => {
    const hidden = await startAs(KEYS.adminB);
    const own = await startAs(KEYS.producerA);
    const t = await tokensFor(own, hidden);
    const ws = (await openWs({ headers: bearer(KEYS.readerA) })).client as WsClient;
    try {
      const streamArb = fc.constantFrom(hidden.id, own.id, "st_nope", "../x", "", 7);
      const tokenArb = fc.oneof(
        fc.constantFrom(t.expired, t.tampered, t.algNone, t.wrongSecret, t.otherTenant, KEYS.adminA),
        fc.string({ maxLength: 40 }),
        fc.constant(undefined),
      );
      const msgArb = fc.record(
        {
          type: fc.constantFrom("subscribe", "unsubscribe", "start", "cancel", "nope"),
          stream: streamArb,
          token: tokenArb,
          offset: fc.oneof(fc.constantFrom("-1", "now", "0000000000000001"), fc.string({ maxLength: 20 })),
          model: fc.constantFrom("demo", "nope"),
          extra: fc.jsonValue({ maxDepth: 2 }),
        },
        { requiredKeys: ["type"] },
      );
      let n = 0;
      await fc.assert(
        fc.asyncProperty(msgArb, async (m) => {
          const id = `f${n++}`;
          ws.send({ ...m, id });
          const answer = await ws.reply(id);
          if (answer.type === "error") {
            expect(Object.keys(ERROR_CODES)).toContain(answer.code);
            expect(answer.code).not.toBe("internal_error");
          } else {
            // A reader key may only ever subscribe to its own tenant's stream.
            expect(answer).toMatchObject({ type: expect.stringMatching(/^(subscribed|unsubscribed)$/) });
            expect(answer.stream).toBe(own.id);
          }
          if (answer.type === "subscribed") {
            ws.send({ type: "unsubscribe", stream: own.id, id: `${id}u` });
            await ws.reply(`${id}u`);
          }
        }),
        { numRuns: 150 },
      );
      await sleep(100);
      expect(ws.events(hidden.id)).toEqual([]);
      expect(ws.ws.readyState).toBe(WebSocket.OPEN);
      expect(await statusOf(hidden.id, KEYS.adminB)).toBe("running");
      expect(await statusOf(own.id)).toBe("running");
    } finally {
      await ws.close();
    }
  });
});
