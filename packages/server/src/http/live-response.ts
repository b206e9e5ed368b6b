/**
 * The one path every streaming HTTP door takes (`/v1/streams` SSE and NDJSON, long-poll, the
 * OpenAI and AI SDK façades, Durable Streams SSE and long-poll): the connection slot
 * (`limits.max_connections`) and the key's `connections` quota, the open-connections gauge,
 * the headers already on the reply (CORS, `Sluice-Stream-Id`) carried onto the hijacked
 * response, compression, the node's one heartbeat timer, close → detach (or cancel when asked),
 * and the end of every open response on shutdown. A door only parses its request and names a
 * codec (and, for protocol framing, a sink).
 *
 * Release is tied to the response's lifetime: a slot is taken and its release registered on
 * the response's `close` in one synchronous step (the key's quota, which may wait for Redis,
 * joins that release when granted), and a request whose client already left (during token
 * verification or a store lookup) takes nothing — so no exit path keeps a slot.
 */
import type { ServerResponse } from "node:http";
import type { Http2ServerResponse } from "node:http2";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Security } from "../auth/security.js";
import type { Config } from "../config.js";
import type { Hub, Reader, Sink } from "../core/hub.js";
import { type ConnectionGate, Deadlines } from "../core/limits.js";
import type { Runner } from "../core/runner.js";
import type { Codec } from "../formats/codec.js";
import type { Metrics } from "../observability/metrics.js";
import { STREAM_ID_HEADER } from "./context.js";
import { Heartbeats, pickEncoding, ResponseSink } from "./sink.js";

declare module "fastify" {
  interface FastifyInstance {
    /** The node's live-response path (its open responses end on shutdown). */
    live: LiveResponses;
  }
}

type Res = ServerResponse | Http2ServerResponse;

/** The label of the open-connections gauge. */
export type LiveTransport = "sse" | "ndjson" | "long-poll";

/** True once a response can no longer be written: its client left or it already ended. */
export function responseGone(res: Res): boolean {
  const r = res as ServerResponse & { stream?: { destroyed: boolean; closed: boolean } };
  if (r.stream) return r.stream.destroyed || r.stream.closed;
  return r.destroyed || r.closed;
}

/** A held streaming connection: its slots are released once, when the response closes. */
export interface Hold {
  /** The client had already gone when the hold was asked for: nothing was taken. */
  readonly gone: boolean;
  /** Runs `fn` when the response closes (at once when it already has). */
  onClose(fn: () => void): void;
  /** Releases the slots now (idempotent; the close releases them anyway). */
  release(): void;
}

const GONE: Hold = { gone: true, onClose: (fn) => fn(), release: () => {} };

export interface LiveStreamOptions {
  streamId: string;
  /** Deliver records after this seq (0 = from the start; "now" = only what comes next). */
  after: number | "now";
  /** SSE events of the record after `after` the client already has (resumed at `<offset>.<k>`). */
  skipEvents?: number | undefined;
  /** Compact catch-up (`?compact=true`): history folded, the live tail as it comes (core/compact.ts). */
  compact?: boolean | undefined;
  codec: Codec;
  transport: LiveTransport;
  /** The door's own headers (content type, protocol headers); those already on the reply are kept. */
  headers: Record<string, string>;
  /** Written to a connection that stayed quiet for a heartbeat interval; none = no heartbeat. */
  heartbeat?: string;
  /** Written right after the headers (an SSE `retry:` line). */
  preamble?: string;
  /** The final message of a slow reader that is cut (its offset, a message). */
  cutMessage?: (offset: string, message: string) => string;
  /** The reader's own flush cadence (`?flush_ms=`). */
  flushMs?: number | undefined;
  /** Honour Accept-Encoding (per `compression`). */
  compress?: boolean;
  /** Cancel the generation when this client goes away before the end (`on_disconnect: cancel`). */
  cancelOnDisconnect?: boolean;
  /** A door that frames batches itself wraps the response sink (Durable Streams SSE). */
  wrap?: (inner: ResponseSink) => Sink;
}

export interface LiveDeps {
  config: Config;
  hub: Hub;
  runner: Runner;
  security: Security;
  connections: ConnectionGate;
  metrics?: Metrics | undefined;
}

export class LiveResponses {
  /** One timer for every open streaming response on this node. */
  readonly heartbeats: Heartbeats;
  /** One timer structure for every long-poll deadline on this node. */
  readonly deadlines = new Deadlines();
  /** What ends each open response at shutdown. */
  private readonly open = new Set<() => void>();

  constructor(private readonly deps: LiveDeps) {
    this.heartbeats = new Heartbeats(deps.config.sse.heartbeat_ms);
  }

  /** Open streaming responses on this node. */
  get size(): number {
    return this.open.size;
  }

  /**
   * Takes a connection slot and the key's connection quota for this request, released when its
   * response closes. Throws `too_many_connections` / `rate_limited` (nothing kept) when full.
   * The slot is taken and its release tied to the response's close in one synchronous step;
   * the key's quota may need a round trip (counted across nodes on Redis): a response that
   * closes meanwhile gets the quota released as soon as it is granted.
   */
  async hold(req: FastifyRequest, reply: FastifyReply, transport: LiveTransport): Promise<Hold> {
    const res = reply.raw;
    if (responseGone(res)) return GONE;
    const releaseGate = this.deps.connections.acquire();
    const gauge = this.deps.metrics?.connections.labels(transport);
    gauge?.inc();
    let closed = false;
    let released = false;
    let releaseKey: (() => void) | undefined;
    const fns: (() => void)[] = [];
    const release = () => {
      if (released) return;
      released = true;
      releaseGate();
      releaseKey?.();
      gauge?.dec();
    };
    res.once("close", () => {
      closed = true;
      release();
      for (const fn of fns.splice(0)) fn();
    });
    const key = req.apiKey;
    if (key) {
      try {
        const taken = this.deps.security.quotas.openConnection(key.id, key.limits);
        const r = typeof taken === "function" ? taken : await taken;
        if (released) r();
        else releaseKey = r;
      } catch (err) {
        release();
        throw err;
      }
    }
    return {
      get gone() {
        return closed;
      },
      onClose(fn) {
        if (closed) fn();
        else fns.push(fn);
      },
      release,
    };
  }

  /**
   * The start of every door that starts a generation and may stream it to this response: when
   * `streaming`, the connection slot is held first (a full server refuses before any generation
   * starts) and given back if starting fails; then the stream-id header is set.
   */
  async start<T extends { id: string }>(
    req: FastifyRequest,
    reply: FastifyReply,
    streaming: boolean,
    begin: () => Promise<T>,
  ): Promise<{ info: T; hold: Hold | undefined }> {
    const hold = streaming ? await this.hold(req, reply, "sse") : undefined;
    const info = await begin().catch((err) => {
      hold?.release();
      throw err;
    });
    reply.header(STREAM_ID_HEADER, info.id);
    return { info, hold };
  }

  /**
   * Streams a stream's records from `after` to this response and follows it live (`held`: the
   * slot this request already holds). Errors
   * before anything is sent (offset past the end, too many readers) are thrown for the door to
   * answer as JSON; after that the response is the stream's.
   */
  async stream(req: FastifyRequest, reply: FastifyReply, o: LiveStreamOptions, held?: Hold): Promise<void> {
    const { config, hub, runner } = this.deps;
    // A door that starts the generation it streams holds the slot first (held), so a full
    // server refuses before any generation starts.
    const hold = held ?? (await this.hold(req, reply, o.transport));
    if (hold.gone) {
      reply.hijack();
      return;
    }
    const res = reply.raw;
    const headers: Record<string, string | number | string[]> = {};
    for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) headers[k] = v;
    Object.assign(headers, o.headers);
    if (req.raw.httpVersionMajor === 1) headers.connection = "keep-alive";
    const encoding =
      o.compress && config.compression.enabled
        ? pickEncoding(req.headers["accept-encoding"], config.compression.encodings)
        : undefined;
    if (encoding) {
      headers["content-encoding"] = encoding;
      headers.vary = headers.vary ? `${headers.vary}, accept-encoding` : "accept-encoding";
    }
    const inner: ResponseSink = new ResponseSink(
      res,
      () => {
        reply.hijack();
        res.writeHead(200, headers);
        if (o.preamble) inner.write(o.preamble);
      },
      { encoding, flushMs: o.flushMs, ...(o.cutMessage ? { cutMessage: o.cutMessage } : {}) },
    );
    const sink = o.wrap ? o.wrap(inner) : inner;
    let reader: Reader | undefined;
    // On shutdown the response just ends: the client resumes from its last offset elsewhere.
    const stop = () => {
      reader?.detach();
      inner.end();
    };
    this.open.add(stop);
    hold.onClose(() => {
      this.open.delete(stop);
      this.heartbeats.delete(inner);
      reader?.detach();
      if (o.cancelOnDisconnect && !res.writableFinished && runner.isRunning(o.streamId)) {
        req.log.info({ stream: o.streamId }, "client disconnected; cancelling (on_disconnect: cancel)");
        void runner.cancel(o.streamId, "client-disconnect", "client disconnected");
      }
    });
    try {
      reader = await hub.attach(o.streamId, o.after, o.codec, sink, {
        skipEvents: o.skipEvents,
        compact: o.compact,
      });
    } catch (err) {
      this.open.delete(stop);
      hold.release();
      throw err;
    }
    if (hold.gone) {
      // The client left while the reader was being attached.
      reader.detach();
      return;
    }
    inner.open();
    if (!inner.closed && o.heartbeat !== undefined) this.heartbeats.add(inner, o.heartbeat);
  }

  /**
   * A door answering once the generation has ended (non-streaming OpenAI / Anthropic): waits for
   * it; a client leaving first cancels it only with `on_disconnect: cancel`.
   */
  async settled(reply: FastifyReply, streamId: string, cancelOnDisconnect: boolean): Promise<void> {
    const { runner } = this.deps;
    reply.raw.on("close", () => {
      if (reply.raw.writableFinished) return;
      if (cancelOnDisconnect && runner.isRunning(streamId)) {
        void runner.cancel(streamId, "client-disconnect", "client disconnected");
      }
    });
    await runner.settled(streamId);
  }

  /**
   * Registers what ends a response held some other way (a long-poll) at shutdown; returns
   * the function that unregisters it.
   */
  onShutdown(stop: () => void): () => void {
    this.open.add(stop);
    return () => this.open.delete(stop);
  }

  /**
   * Shutdown: waits up to `ms` for open responses to end by themselves (their generations
   * end with a terminal event), then ends the rest; their clients resume elsewhere.
   */
  async shutdown(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (this.open.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    for (const stop of [...this.open]) {
      try {
        stop();
      } catch {
        // one response's failure to end is its own
      }
    }
    this.open.clear();
  }

  stop(): void {
    this.heartbeats.stop();
    this.deadlines.stop();
  }
}
