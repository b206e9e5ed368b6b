import { quoteInput, SluiceError } from "@sluice/protocol";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Reader, WriteMark } from "../core/hub.js";
import { SSE_HEARTBEAT } from "../http/context.js";
import { ResponseSink } from "../http/sink.js";
import type { StreamInfo } from "../stores/store.js";
import { bodyOf, codecFor } from "./codecs.js";
import { DsSseSink, LongPollSink, type SseData } from "./live.js";
import {
  dsConfig,
  dsOffset,
  H,
  isClosed,
  isTextual,
  type Mode,
  nextCursor,
  parseDsOffset,
  publicContentType,
  publicPath,
} from "./protocol.js";

import { type DsState, header } from "./state.js";

/** HEAD: the stream's offsets, content type and expiry, no body. */
export async function handleHead(st: DsState, req: FastifyRequest, reply: FastifyReply) {
  const { storeIdFor, allow, load, infoHeaders, pathOf } = st;
  const path = pathOf(req);
  const id = await storeIdFor(req.principal, path);
  const info = await load(id, path, allow(req.principal, "read"));
  infoHeaders(reply, info);
  const cfg = dsConfig(info);
  if (cfg.ttl_s !== undefined) reply.header(H.ttl, String(cfg.ttl_s));
  if (cfg.expires_at !== undefined) reply.header(H.expiresAt, cfg.expires_at);
  reply.header("cache-control", "no-store");
  return reply.code(200).send();
}

/** GET: catch-up (cacheable chunks), long-poll, or SSE. */
export async function handleRead(st: DsState, req: FastifyRequest, reply: FastifyReply) {
  const { storeIdFor, allow, load, modeOfInfo, touch, pathOf, etag, readChunk } = st;
  const path = pathOf(req);
  const q = req.query as Record<string, string | string[] | undefined>;
  const live = q.live;
  if (Array.isArray(live) || (live !== undefined && live !== "long-poll" && live !== "sse")) {
    throw new SluiceError("invalid_request", "live must be long-poll or sse");
  }
  const rawOffset = q.offset;
  if (Array.isArray(rawOffset)) throw new SluiceError("invalid_offset", "give one offset");
  if (rawOffset === "") throw new SluiceError("invalid_offset", "the offset is empty");
  if (live !== undefined && rawOffset === undefined) {
    throw new SluiceError(
      "invalid_offset",
      `live=${live} needs an offset (-1 for the start, now for the tail)`,
    );
  }
  const cursorParam = Array.isArray(q.cursor) ? q.cursor[0] : q.cursor;
  const id = await storeIdFor(req.principal, path);
  const info = await load(id, path, allow(req.principal, "read"));
  let after: number;
  if (rawOffset === undefined || rawOffset === "-1") after = 0;
  else if (rawOffset === "now") after = info.length;
  else {
    const seq = parseDsOffset(rawOffset);
    if (seq === undefined)
      throw new SluiceError("invalid_offset", `${quoteInput(rawOffset)} is not an offset of this stream`);
    if (seq > info.length)
      throw new SluiceError("offset_out_of_range", "the offset is past the end of the stream");
    after = seq;
  }
  await touch(info);
  const mode = modeOfInfo(info);
  if (live === "sse") return sse(st, req, reply, info, after, mode, cursorParam);
  // With credentials, a response is the caller's own (another tenant's same URL is another stream).
  const shared = req.principal.kind === "open" ? "public" : "private";

  const chunk = await readChunk(info.id, after, mode);
  const closedAtTail = chunk.upToDate && chunk.status !== "running";
  reply.header("content-type", publicContentType(info));
  if (live === "long-poll") {
    reply.header(H.cursor, nextCursor(Date.now(), cursorParam));
    reply.header("cache-control", "no-cache");
    if (chunk.last === after && !closedAtTail)
      return longPoll(st, req, reply, info, after, mode, cursorParam);
    if (chunk.last === after) {
      reply.header(H.nextOffset, dsOffset(after));
      reply.header(H.upToDate, "true");
      reply.header(H.closed, "true");
      return reply.code(204).send();
    }
  }
  reply.header(H.nextOffset, dsOffset(chunk.last));
  if (chunk.upToDate) reply.header(H.upToDate, "true");
  if (closedAtTail) reply.header(H.closed, "true");
  if (live === undefined) {
    const tag = etag(info, after, chunk.last, closedAtTail);
    reply.header("etag", tag);
    reply.header(
      "cache-control",
      rawOffset === "now"
        ? "no-store"
        : chunk.upToDate
          ? "no-cache"
          : `${shared}, max-age=60, stale-while-revalidate=300`,
    );
    if (header(req, "if-none-match") === tag) return reply.code(304).send();
  }
  return reply.code(200).send(bodyOf(mode, chunk.encoded));
}

async function longPoll(
  st: DsState,
  req: FastifyRequest,
  reply: FastifyReply,
  info: StreamInfo,
  after: number,
  mode: Mode,
  cursorParam: string | undefined,
): Promise<FastifyReply> {
  const { config, store, hub, live } = st;
  const hold = await live.hold(req, reply, "long-poll");
  if (hold.gone) {
    reply.hijack();
    return reply;
  }
  return new Promise<FastifyReply>((resolve, reject) => {
    let reader: Reader | undefined;
    let cancelDeadline: (() => void) | undefined;
    let unregister: (() => void) | undefined;
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      hold.release();
      cancelDeadline?.();
      unregister?.();
      sink.cancel();
      reader?.detach();
      try {
        fn();
        resolve(reply);
      } catch (err) {
        reject(err);
      }
    };
    const sink = new LongPollSink(
      (chunk: string, mark: WriteMark) =>
        finish(() => {
          reply.header(H.nextOffset, dsOffset(mark.last));
          if (mark.upToDate) reply.header(H.upToDate, "true");
          if (mark.ended) reply.header(H.closed, "true");
          reply.code(200).send(bodyOf(mode, chunk));
        }),
      () =>
        finish(() => {
          // Ended while waiting with nothing new: closed (or deleted).
          void store.info(info.id).then((now) => {
            if (!now) {
              reply.code(404).type("application/json");
              reply.send(new SluiceError("stream_not_found", `no stream at ${publicPath(info.id)}`).toBody());
              return;
            }
            reply.header(H.nextOffset, dsOffset(now.length));
            reply.header(H.upToDate, "true");
            if (isClosed(now)) reply.header(H.closed, "true");
            reply.code(204).send();
          });
        }),
    );
    hold.onClose(() => finish(() => {}));
    // Nothing came in time (or the server is shutting down): 204, read again from here.
    const timeout = () =>
      finish(() => {
        reply.header(H.nextOffset, dsOffset(reader?.seq ?? after));
        reply.header(H.upToDate, "true");
        reply.header(H.cursor, nextCursor(Date.now(), cursorParam));
        reply.code(204).send();
      });
    cancelDeadline = live.deadlines.add(config.long_poll.max_wait_ms, timeout);
    unregister = live.onShutdown(timeout);
    hub.attach(info.id, after, codecFor(mode), sink).then(
      (r) => {
        reader = r;
        if (settled) r.detach();
      },
      (err) => finish(() => reject(err)),
    );
  });
}

async function sse(
  st: DsState,
  req: FastifyRequest,
  reply: FastifyReply,
  info: StreamInfo,
  after: number,
  mode: Mode,
  cursorParam: string | undefined,
): Promise<FastifyReply> {
  const { store, live } = st;
  const res = reply.raw;
  const kind: SseData = mode === "json" ? "json" : isTextual(publicContentType(info)) ? "text" : "base64";
  const headers: Record<string, string> = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
  };
  if (kind === "base64") headers[H.sseEncoding] = "base64";
  // The first cursor moves past the client's; later ones never go back.
  let cursor = nextCursor(Date.now(), cursorParam);
  const makeSink = (inner: ResponseSink) =>
    new DsSseSink(
      inner,
      kind,
      mode,
      () => {
        const c = nextCursor(Date.now(), undefined);
        if (Number(c) > Number(cursor)) cursor = c;
        return cursor;
      },
      (s) => {
        // Closed while this reader sat at the tail: say so; deleted: just end.
        void store.info(info.id).then(
          (now) => (now && isClosed(now) ? s.sendClosed(now.length) : s.inner.end()),
          () => s.inner.end(),
        );
      },
    );
  if (isClosed(info) && after >= info.length) {
    // Nothing more to send: answered at once, not a held connection.
    const sink = makeSink(
      new ResponseSink(res, () => {
        reply.hijack();
        const all: Record<string, string | number | string[]> = {};
        for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) all[k] = v;
        res.writeHead(200, Object.assign(all, headers));
      }),
    );
    sink.sendClosed(info.length);
    return reply;
  }
  await live.stream(req, reply, {
    streamId: info.id,
    after,
    codec: codecFor(mode),
    transport: "sse",
    headers,
    heartbeat: SSE_HEARTBEAT,
    wrap: makeSink,
  });
  return reply;
}
