import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { type ErrorCode, isSluiceError, quoteInput, retryAfterSeconds, SluiceError } from "@sluice/protocol";
import type { FastifyInstance } from "fastify";
import { type RawData, WebSocket, WebSocketServer } from "ws";
import { z } from "zod";
import { originMayConnect } from "../auth/cors.js";
import { OPEN_PRINCIPAL, type Principal } from "../auth/principal.js";
import { credentialFrom, type Identity, resolveCredential } from "../auth/security.js";
import { workerHeader } from "../cluster/messages.js";
import { type Reader, ReaderGroup, type SharedChunk, type Sink } from "../core/hub.js";
import { INTERNAL_ERROR_MESSAGE, isInternalFailure, publicError } from "../core/public-error.js";
import { wsSluice } from "../formats/sluice.js";
import { type AppDeps, type DoorDeps, parseGenerationRequest } from "./context.js";
import { checkJsonDepth } from "./json-body.js";
import { holdConnectionAs, startAs } from "./start.js";
import { readPosition } from "./stream-access.js";
import { isWebSocketUpgrade, serveAsPlainRequest } from "./upgrade-fallback.js";

export const WS_PATH = "/v1/ws";

declare module "fastify" {
  interface FastifyInstance {
    /**
     * Shutdown's last step for WebSockets (after running generations ended): waits up to
     * `settleMs` for ended streams to reach their subscribers, then sends every subscription
     * still held a `closing` message with its last offset and closes each socket with 1001.
     */
    closeWebSockets?: (settleMs: number) => Promise<void>;
  }
}

const base = { id: z.union([z.string().max(256), z.number()]).optional() };
const streamId = z.string().regex(/^[A-Za-z0-9_-]{1,128}$/, "not a stream id");
const flushMs = z.number().int().min(0).max(10_000).optional();
/** A read token for this one message's stream (instead of the socket's own credentials). */
const token = z.string().min(1).max(4096).optional();

const SubscribeSchema = z
  .object({
    ...base,
    type: z.literal("subscribe"),
    stream: streamId,
    offset: z.string().max(32).optional(),
    flush_ms: flushMs,
    /** Compact catch-up: the history this subscription catches up on arrives folded (core/compact.ts). */
    compact: z.boolean().optional(),
    format: z.literal("sluice").optional(),
    token,
  })
  .strict();
const UnsubscribeSchema = z.object({ ...base, type: z.literal("unsubscribe"), stream: streamId }).strict();
const CancelSchema = z.object({ ...base, type: z.literal("cancel"), stream: streamId, token }).strict();

type ClientId = string | number | undefined;

const SHUTDOWN_REASON = "server shutting down";

function describe(err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join(".") : "message"}: ${i.message}`)
    .join("; ");
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  429: "Too Many Requests",
  503: "Service Unavailable",
};

/** Answers an upgrade we refuse with a plain HTTP response, then closes the socket. */
function refuse(
  socket: Duplex,
  status: number,
  code: ErrorCode,
  message: string,
  extra: { details?: Record<string, unknown> | undefined; headers?: Record<string, string> } = {},
): void {
  const body = JSON.stringify({ error: { code, message, ...(extra.details ?? {}) } });
  let head = `HTTP/1.1 ${status} ${REASONS[status] ?? "Bad Request"}\r\n`;
  for (const [k, v] of Object.entries(extra.headers ?? {})) head += `${k}: ${v}\r\n`;
  socket.end(
    `${head}content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

function refuseWith(socket: Duplex, err: unknown): void {
  const e = publicError(err);
  const headers: Record<string, string> = {};
  if (e.code === "unauthorized") headers["www-authenticate"] = 'Bearer realm="sluice"';
  const retry = retryAfterSeconds(e);
  if (retry !== undefined) headers["retry-after"] = String(retry);
  refuse(socket, e.status, e.code, e.message, { details: e.details, headers });
}

/**
 * Who opens a socket: `Authorization: Bearer` / `x-api-key`, or a read token in `?token=`
 * (browsers cannot set headers on a WebSocket). With keys configured, none → unauthorized.
 */
async function authenticateUpgrade(req: IncomingMessage, deps: AppDeps): Promise<Identity> {
  const query = new URLSearchParams((req.url ?? "").split("?")[1] ?? "");
  const cred = credentialFrom(req.headers.authorization, req.headers["x-api-key"], query.get("token"));
  if (!cred) {
    throw new SluiceError(
      "unauthorized",
      "this WebSocket needs an API key (Authorization: Bearer … or x-api-key) or a read token (?token=…)",
    );
  }
  return resolveCredential(deps.security, cred);
}

/** How many ticks one ping interval is cut into (each tick pings one slice of the sockets). */
export const PING_SLICES = 10;

/** The shared ping timer's tick for a `ws.ping_interval_ms`. */
export function pingTickMs(intervalMs: number): number {
  return Math.max(1, Math.round(intervalMs / PING_SLICES));
}

/**
 * `GET /v1/ws`: one WebSocket carries many streams. Client messages are JSON objects
 * (`subscribe`, `unsubscribe`, `start`, `cancel`, each with an optional `id` echoed in the
 * answer); records arrive as `{stream, offset, event}` (bytes shared across sockets via the
 * `ws:sluice` codec). A bad message gets an error message and never affects the socket's
 * other subscriptions. One shared timer pings the sockets, a tenth of them per tick so each is
 * pinged once per `ping_interval_ms` without a burst of every socket at once; one that missed the
 * previous ping's pong is terminated.
 */
export function registerWebSocket(app: FastifyInstance, deps: DoorDeps): void {
  const { config, connections } = deps;
  if (!config.ws.enabled) return;
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    maxPayload: config.ws.max_payload_bytes,
    perMessageDeflate: config.ws.per_message_deflate
      ? { threshold: 256, concurrencyLimit: 10, zlibDeflateOptions: { level: 1 } }
      : false,
  });
  const worker = workerHeader();
  if (worker !== undefined) wss.on("headers", (headers) => headers.push(`Sluice-Worker: ${worker}`));
  const sockets = new Set<WsConnection>();
  // Sockets dealt round-robin into PING_SLICES slices; each tick of the one timer pings one slice.
  const slices = Array.from({ length: PING_SLICES }, () => new Set<WsConnection>());
  let dealt = 0;
  let tick = 0;
  let pinger: NodeJS.Timeout | undefined;

  const ping = () => {
    const slice = slices[tick++ % PING_SLICES] as Set<WsConnection>;
    for (const c of slice) c.ping();
  };

  app.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? "").split("?")[0];
    if (!isWebSocketUpgrade(req)) {
      // Not ours (e.g. `Upgrade: h2c`): unless another module takes it, answer it as plain HTTP.
      if (app.server.listenerCount("upgrade") > 1) return;
      socket.on("error", () => socket.destroy());
      const served = serveAsPlainRequest(
        (r, res) => app.server.emit("request", r, res),
        req,
        socket,
        head,
        config.timeouts.request_ms,
      );
      if (!served) {
        refuse(
          socket,
          400,
          "invalid_request",
          "a chunked body cannot come with an Upgrade header; send it without",
        );
      }
      return;
    }
    if (path !== WS_PATH) {
      // Another module may serve this upgrade; refuse only when nobody else listens.
      if (app.server.listenerCount("upgrade") <= 1) {
        refuse(socket, 404, "not_found", `no WebSocket route ${path}`);
      }
      return;
    }
    const origin = req.headers.origin;
    if (!originMayConnect(deps.security.cors, origin, req.headers.host)) {
      refuse(
        socket,
        403,
        "forbidden",
        `a page on ${quoteInput(origin, 100)} may not open this WebSocket (cors.origins does not list it)`,
      );
      return;
    }
    if (!deps.security.enabled) {
      accept(req, socket, head, { principal: OPEN_PRINCIPAL, apiKey: undefined });
      return;
    }
    // Node drops its own error listener on upgrade: keep a reset during authentication harmless.
    socket.on("error", () => socket.destroy());
    authenticateUpgrade(req, deps).then(
      (identity) => {
        if (!socket.destroyed) accept(req, socket, head, identity);
      },
      (err: unknown) => {
        if (!socket.destroyed) refuseWith(socket, err);
      },
    );
  });

  function accept(req: IncomingMessage, socket: Duplex, head: Buffer, identity: Identity): void {
    // The socket is one streaming connection for the server's limit and for the key's quota.
    let releaseGate: () => void;
    try {
      releaseGate = connections.acquire();
    } catch (err) {
      refuseWith(socket, err);
      return;
    }
    let releaseKey: (() => void) | undefined;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      releaseGate();
      releaseKey?.();
    };
    // A handshake ws rejects never reaches the callback: the socket's close frees the slots.
    socket.once("close", release);
    // The key's quota may need a round trip (counted across nodes on Redis).
    holdConnectionAs(identity.apiKey, deps.security).then(
      (r) => {
        if (released || socket.destroyed) {
          r();
          release();
          return;
        }
        releaseKey = r;
        upgrade(req, socket, head, identity, release);
      },
      (err: unknown) => {
        release();
        if (!socket.destroyed) refuseWith(socket, err);
      },
    );
  }

  function upgrade(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    identity: Identity,
    release: () => void,
  ) {
    wss.handleUpgrade(req, socket, head, (ws) => {
      const gauge = deps.metrics?.connections.labels("ws");
      gauge?.inc();
      const slice = slices[dealt++ % PING_SLICES] as Set<WsConnection>;
      const conn = new WsConnection(ws, deps, identity, () => {
        if (!sockets.delete(conn)) return;
        slice.delete(conn);
        gauge?.dec();
        release();
        if (sockets.size === 0 && pinger) {
          clearInterval(pinger);
          pinger = undefined;
        }
      });
      sockets.add(conn);
      slice.add(conn);
      if (!pinger) {
        pinger = setInterval(ping, pingTickMs(config.ws.ping_interval_ms));
        pinger.unref();
      }
    });
  }

  // Shutdown, first step (app.close() runs this before it stops the HTTP server, which would
  // otherwise wait for upgraded sockets forever): idle sockets close now, the others as soon as
  // their last subscription ends, and closeWebSockets closes whatever is left after the grace.
  app.addHook("preClose", async () => {
    for (const c of [...sockets]) c.drain();
  });
  app.decorate("closeWebSockets", async (settleMs: number) => {
    const until = Date.now() + settleMs;
    while ([...sockets].some((c) => c.settling) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 10));
    }
    for (const c of [...sockets]) c.shutdown();
  });
  app.addHook("onClose", async () => {
    if (pinger) clearInterval(pinger);
    pinger = undefined;
    for (const c of [...sockets]) c.shutdown();
    wss.close();
  });
}

interface Subscription {
  stream: string;
  reader: Reader | undefined;
  sink: SubscriptionSink;
}

/** ws's WebSocket.OPEN (a constant, not looked up on the class on every write). */
const OPEN = 1;

/**
 * One subscription's view of the socket: frames go out as WebSocket messages. The hot path
 * (every record, every reader) touches no per-write ws machinery: frames go to the raw socket as
 * ready-made bytes shared by every socket at the same place in the stream.
 */
class SubscriptionSink implements Sink {
  ended = false;

  constructor(
    private readonly conn: WsConnection,
    readonly stream: string,
    readonly flushMs: number | undefined,
  ) {}

  /**
   * The connection's group while the socket carries more than one subscription (their records
   * then go out in one corked write per flush); a lone subscription, or one with its own
   * `flush_ms`, is flushed by itself, at its own cadence, like an SSE response.
   */
  get group(): ReaderGroup | undefined {
    return this.flushMs === undefined && this.conn.subscriptions > 1 ? this.conn.group : undefined;
  }

  write(chunk: string): void {
    if (!this.closed) this.conn.ws.send(chunk);
  }

  writeFrames(frames: string[], shared?: SharedChunk): void {
    if (this.closed) return;
    const conn = this.conn;
    const raw = conn.rawSocket();
    if (raw) {
      // One write of ready-framed bytes, made once per batch and shared by every socket
      // following the stream at the same place (as the SSE path shares its chunk framing).
      if (!shared) raw.write(textFrames(frames));
      else {
        shared.wsFramed ??= textFrames(frames);
        raw.write(shared.wsFramed);
      }
      return;
    }
    const ws = conn.ws;
    const socket = conn.socket;
    // Catch-up pages arrive outside the group's flush: cork here too (nested corks are fine).
    socket?.cork();
    for (const f of frames) ws.send(f);
    socket?.uncork();
  }

  get buffered(): number {
    const conn = this.conn;
    // Raw writes queue in the socket only (ws's sender queues nothing without an extension).
    return conn.raw === true && conn.socket ? conn.socket.writableLength : conn.ws.bufferedAmount;
  }

  onDrain(cb: () => void): void {
    this.conn.onDrain(cb);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.conn.ended(this);
  }

  cut(offset: string, message: string): void {
    if (this.ended) return;
    this.ended = true;
    this.conn.cutSubscription(this, offset, message);
  }

  get closed(): boolean {
    return this.ended || this.conn.ws.readyState !== OPEN;
  }
}

class WsConnection {
  private readonly subs = new Map<string, Subscription>();
  private alive = true;
  readonly group: ReaderGroup;
  readonly socket: Duplex | undefined;
  private drainWaiters: (() => void)[] = [];
  private closedDown = false;
  private draining = false;
  /** The server is closing this socket (shutdown), not its client: nothing is cancelled. */
  private serverClosing = false;
  /** Generations this socket started with `on_disconnect: cancel` (the request's or the route's). */
  private readonly cancelOnClose = new Set<string>();
  /** Whether records may go to the socket as ready-made frames (see rawSocket); decided once. */
  raw: boolean | undefined;

  constructor(
    readonly ws: WebSocket,
    private readonly deps: DoorDeps,
    /** Who opened the socket; a subscribe/cancel may name a read token of its own. */
    private readonly identity: Identity,
    private readonly onGone: () => void,
  ) {
    // ws keeps its net socket in _socket: corking it around a flush turns every message
    // for every subscription into one writev.
    this.socket = (ws as unknown as { _socket?: Duplex })._socket;
    const socket = this.socket;
    this.group = new ReaderGroup(socket ? { before: () => socket.cork(), after: () => socket.uncork() } : {});
    socket?.on("drain", () => this.drained());
    ws.on("pong", () => {
      this.alive = true;
    });
    ws.on("message", (data, isBinary) => {
      this.alive = true;
      this.onMessage(data, isBinary);
    });
    ws.on("close", () => this.gone());
    ws.on("error", () => this.gone());
  }

  /**
   * The socket, when record frames may be written to it directly as ready-made bytes: the
   * connection is open and no extension (permessage-deflate) transforms messages, so ws's
   * own sender writes synchronously and in order — a direct write keeps that order.
   */
  rawSocket(): Duplex | undefined {
    if (this.raw === false) return undefined;
    const ws = this.ws;
    if (ws.readyState !== OPEN) return undefined;
    if (this.raw === undefined) {
      const sender = (ws as unknown as { _sender?: { _state?: number; _queue?: unknown[] } })._sender;
      const plain = ws.extensions === "" && sender?._state === 0 && Array.isArray(sender._queue);
      this.raw = plain;
      if (!plain) return undefined;
    }
    const socket = this.socket;
    return socket && !socket.destroyed ? socket : undefined;
  }

  /** Subscriptions this socket holds. */
  get subscriptions(): number {
    return this.subs.size;
  }

  ping(): void {
    if (!this.alive) {
      this.ws.terminate();
      this.gone();
      return;
    }
    this.alive = false;
    try {
      this.ws.ping();
    } catch {
      this.gone();
    }
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
    this.gone();
  }

  /** Shutdown has begun: close once no subscription is left (now, if there is none). */
  drain(): void {
    this.draining = true;
    this.serverClosing = true;
    if (this.subs.size === 0) this.close(1001, SHUTDOWN_REASON);
  }

  /** True while a subscription's stream has ended but its end has not been delivered yet. */
  get settling(): boolean {
    for (const s of this.subs.values()) if (s.reader && s.reader.status !== "running") return true;
    return false;
  }

  /**
   * Shutdown: every subscription still held learns the last offset it delivered (`closing`), so
   * its client resumes exactly there on another node or after the restart; then close 1001.
   */
  shutdown(): void {
    if (this.closedDown) return;
    this.serverClosing = true;
    for (const sub of this.subs.values()) {
      sub.sink.ended = true;
      const msg: Record<string, unknown> = { type: "closing", stream: sub.stream };
      if (sub.reader) msg.offset = sub.reader.offset;
      sub.reader?.detach();
      this.send(msg);
    }
    this.subs.clear();
    this.close(1001, SHUTDOWN_REASON);
  }

  onDrain(cb: () => void): void {
    if (this.ws.readyState !== WebSocket.OPEN) {
      setImmediate(cb);
      return;
    }
    if (this.socket && !this.socket.writableNeedDrain) {
      // The backlog is in ws's own queue (permessage-deflate), not the socket: look again shortly.
      setTimeout(cb, 5).unref();
      return;
    }
    this.drainWaiters.push(cb);
  }

  private drained(): void {
    if (this.drainWaiters.length === 0) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const cb of waiters) cb();
  }

  private gone(): void {
    if (this.closedDown) return;
    this.closedDown = true;
    const { runner } = this.deps;
    if (!this.serverClosing) {
      for (const id of this.cancelOnClose) {
        if (runner.isRunning(id)) void runner.cancel(id, "client-disconnect", "client disconnected");
      }
    }
    this.cancelOnClose.clear();
    for (const s of this.subs.values()) s.reader?.detach();
    this.subs.clear();
    this.deps.hub.flow.remove(this.group);
    this.drained();
    this.onGone();
  }

  private send(msg: Record<string, unknown>): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  private sendError(
    code: ErrorCode,
    message: string,
    extra: { stream?: string; id?: ClientId; details?: Record<string, unknown> | undefined } = {},
  ): void {
    const msg: Record<string, unknown> = { ...(extra.details ?? {}), type: "error", code, message };
    if (extra.stream !== undefined) msg.stream = extra.stream;
    if (extra.id !== undefined) msg.id = extra.id;
    this.send(msg);
  }

  /** A subscription's reader reached the end of its stream. */
  ended(sink: SubscriptionSink): void {
    const sub = this.subs.get(sink.stream);
    if (!sub || sub.sink !== sink) return;
    this.subs.delete(sink.stream);
    const status = sub.reader?.status ?? "running";
    this.send({ type: "end", stream: sink.stream, status });
    this.closeIfDrained();
  }

  private closeIfDrained(): void {
    if (this.draining && this.subs.size === 0) this.close(1001, SHUTDOWN_REASON);
  }

  cutSubscription(sink: SubscriptionSink, offset: string, message: string): void {
    const sub = this.subs.get(sink.stream);
    if (sub && sub.sink === sink) this.subs.delete(sink.stream);
    this.send({ type: "error", code: "slow_reader", stream: sink.stream, offset, message });
    this.closeIfDrained();
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    if (isBinary) {
      this.sendError("invalid_request", "messages are JSON text frames");
      return;
    }
    let msg: unknown;
    const text = data.toString();
    try {
      checkJsonDepth(text, this.deps.config.limits.json_max_depth, "the message");
    } catch (err) {
      this.sendError("invalid_request", (err as Error).message);
      return;
    }
    try {
      msg = JSON.parse(text);
    } catch (err) {
      this.sendError("invalid_json", `the message is not valid JSON: ${(err as Error).message}`);
      return;
    }
    if (typeof msg !== "object" || msg === null || Array.isArray(msg)) {
      this.sendError("invalid_request", "a message is a JSON object with a type");
      return;
    }
    const m = msg as Record<string, unknown>;
    const id = typeof m.id === "string" || typeof m.id === "number" ? m.id : undefined;
    const handled = () => {
      switch (m.type) {
        case "subscribe":
          return this.subscribe(m, id);
        case "unsubscribe":
          return this.unsubscribe(m, id);
        case "start":
          return this.start(m, id);
        case "cancel":
          return this.cancel(m, id);
        default:
          throw new SluiceError(
            "invalid_request",
            `unknown message type ${JSON.stringify(m.type ?? null)}; expected subscribe, unsubscribe, start or cancel`,
          );
      }
    };
    Promise.resolve()
      .then(handled)
      .catch((err: unknown) => {
        const stream = typeof m.stream === "string" ? m.stream : undefined;
        if (isInternalFailure(err)) {
          // Its text (a store's exception, say) goes to the log only.
          if (this.deps.logger) this.deps.logger.error({ err }, "websocket message failed");
          this.sendError("internal_error", INTERNAL_ERROR_MESSAGE, { id });
        } else if (isSluiceError(err)) {
          this.sendError(err.code, err.message, { ...(stream ? { stream } : {}), id, details: err.details });
        }
      });
  }

  private parse<T>(schema: z.ZodType<T>, m: unknown): T {
    const r = schema.safeParse(m);
    if (!r.success) throw new SluiceError("invalid_request", describe(r.error));
    return r.data;
  }

  /** The principal a message acts as: its own read token if it names one, else the socket's. */
  private async principalFor(token: string | undefined): Promise<Principal> {
    if (!this.deps.security.enabled) return OPEN_PRINCIPAL;
    if (token === undefined) return this.identity.principal;
    // Only read tokens here: an API key in a message would be one more place keys travel.
    return (await resolveCredential(this.deps.security, { value: token, from: "query" })).principal;
  }

  private async subscribe(m: unknown, id: ClientId, fromSeq?: number): Promise<void> {
    const msg = this.parse(SubscribeSchema, m);
    // Input first (as every door): a bad offset is invalid_offset whatever the stream.
    if (fromSeq === undefined) readPosition(msg.offset);
    await this.deps.access.generation(await this.principalFor(msg.token), "read", msg.stream);
    if (this.closedDown) return;
    await this.attach(msg.stream, msg.offset, msg.flush_ms, id, fromSeq, msg.compact === true);
  }

  private async attach(
    stream: string,
    rawOffset: string | undefined,
    flush: number | undefined,
    id: ClientId,
    fromSeq?: number,
    compact = false,
  ): Promise<void> {
    if (this.subs.has(stream)) {
      throw new SluiceError("invalid_request", `already subscribed to ${stream}; unsubscribe first`);
    }
    if (this.subs.size >= this.deps.config.ws.max_subscriptions) {
      throw new SluiceError(
        "too_many_subscriptions",
        `this socket holds its maximum of ${this.deps.config.ws.max_subscriptions} subscriptions`,
      );
    }
    let after: number | "now";
    if (fromSeq !== undefined) {
      after = fromSeq;
    } else {
      const pos = readPosition(rawOffset);
      after = pos.kind === "now" ? "now" : pos.seq;
    }
    const sink = new SubscriptionSink(this, stream, flush);
    const sub: Subscription = { stream, reader: undefined, sink };
    this.subs.set(stream, sub);
    try {
      const reader = await this.deps.hub.attach(stream, after, wsSluice, sink, { compact });
      if (this.closedDown || this.subs.get(stream) !== sub) {
        reader.detach();
        return;
      }
      sub.reader = reader;
      const ack: Record<string, unknown> = { type: "subscribed", stream, offset: reader.offset };
      if (id !== undefined) ack.id = id;
      this.send(ack);
    } catch (err) {
      if (this.subs.get(stream) === sub) this.subs.delete(stream);
      throw err;
    }
  }

  private async unsubscribe(m: unknown, id: ClientId): Promise<void> {
    const msg = this.parse(UnsubscribeSchema, m);
    const sub = this.subs.get(msg.stream);
    if (!sub) throw new SluiceError("invalid_request", `not subscribed to ${msg.stream}`);
    this.subs.delete(msg.stream);
    sub.sink.ended = true;
    const offset = sub.reader?.offset;
    sub.reader?.detach();
    const ack: Record<string, unknown> = { type: "unsubscribed", stream: msg.stream };
    if (offset !== undefined) ack.offset = offset;
    if (id !== undefined) ack.id = id;
    this.send(ack);
    this.closeIfDrained();
  }

  private async start(m: Record<string, unknown>, id: ClientId): Promise<void> {
    const { type: _type, id: _id, subscribe, flush_ms, ...request } = m;
    if (subscribe !== undefined && typeof subscribe !== "boolean") {
      throw new SluiceError("invalid_request", "subscribe must be a boolean");
    }
    const flush = flush_ms === undefined ? undefined : this.parse(flushMs, flush_ms);
    const parsed = parseGenerationRequest(request);
    const { principal, apiKey } = this.deps.security.enabled
      ? this.identity
      : { principal: OPEN_PRINCIPAL, apiKey: undefined };
    const info = await startAs(principal, apiKey, this.deps, parsed);
    const onDisconnect = parsed.on_disconnect ?? this.deps.routes.resolve(parsed.model).on_disconnect;
    if (onDisconnect === "cancel") this.cancelOnDisconnect(info.id);
    const started: Record<string, unknown> = {
      type: "started",
      stream: info.id,
      status: info.status,
      model: info.model,
      created_at: info.created_at,
    };
    if (id !== undefined) started.id = id;
    this.send(started);
    if (subscribe !== false && !this.closedDown) {
      // Subscribed from the first event, so nothing is missed.
      await this.attach(info.id, undefined, flush, undefined, 0);
    }
  }

  /** Cancels `id` if this socket's client leaves first (bounded: ended generations are dropped). */
  private cancelOnDisconnect(id: string): void {
    if (this.closedDown) {
      if (!this.serverClosing && this.deps.runner.isRunning(id)) {
        void this.deps.runner.cancel(id, "client-disconnect", "client disconnected");
      }
      return;
    }
    if (this.cancelOnClose.size >= 64) {
      for (const other of this.cancelOnClose)
        if (!this.deps.runner.isRunning(other)) this.cancelOnClose.delete(other);
    }
    this.cancelOnClose.add(id);
  }

  private async cancel(m: unknown, id: ClientId): Promise<void> {
    const msg = this.parse(CancelSchema, m);
    const info = await this.deps.access.cancel(await this.principalFor(msg.token), msg.stream);
    const ack: Record<string, unknown> = { type: "cancelled", stream: msg.stream, status: info.status };
    if (id !== undefined) ack.id = id;
    this.send(ack);
  }
}

/**
 * Server-to-client WebSocket text frames (RFC 6455 §5.2: FIN + opcode 1, unmasked, 7/16/64-bit
 * length) for each message, in one buffer.
 */
export function textFrames(messages: readonly string[]): Buffer {
  let total = 0;
  const lengths = new Array<number>(messages.length);
  for (let i = 0; i < messages.length; i++) {
    const n = Buffer.byteLength(messages[i] as string);
    lengths[i] = n;
    total += n + (n < 126 ? 2 : n < 65536 ? 4 : 10);
  }
  const buf = Buffer.allocUnsafe(total);
  let at = 0;
  for (let i = 0; i < messages.length; i++) {
    const n = lengths[i] as number;
    buf[at] = 0x81;
    if (n < 126) {
      buf[at + 1] = n;
      at += 2;
    } else if (n < 65536) {
      buf[at + 1] = 126;
      buf.writeUInt16BE(n, at + 2);
      at += 4;
    } else {
      buf[at + 1] = 127;
      buf.writeUInt32BE(Math.floor(n / 2 ** 32), at + 2);
      buf.writeUInt32BE(n >>> 0, at + 6);
      at += 10;
    }
    at += buf.write(messages[i] as string, at, "utf8");
  }
  return buf;
}
