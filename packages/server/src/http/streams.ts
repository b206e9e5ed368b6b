/**
 * The native HTTP API of streams (`/v1/streams`): start a generation (JSON, or SSE at once), list,
 * read (SSE, NDJSON, JSON pages, long-poll) on the live-response path, cancel, mint read tokens,
 * info, delete. Who may do what is the access layer's (stream-access.ts).
 */
import { type ReadPosition, SluiceError } from "@sluice/protocol";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { requireAction } from "../auth/principal.js";
import { foldRecords } from "../core/compact.js";
import type { Sink } from "../core/hub.js";
import { publicPath } from "../durable-streams/protocol.js";
import type { Codec } from "../formats/codec.js";
import type { FoldedSse } from "../formats/table.js";
import type { StreamInfo } from "../stores/store.js";
import {
  type DoorDeps,
  parseCompact,
  parseGenerationRequest,
  SSE_HEARTBEAT,
  STREAM_ID_HEADER,
} from "./context.js";
import type { Hold } from "./live-response.js";
import { startFor } from "./start.js";
import { httpReadPosition } from "./stream-access.js";

type Transport = "sse" | "ndjson" | "json";

function pickTransport(req: FastifyRequest): Transport {
  const accept = String(req.headers.accept ?? "");
  if (accept.includes("text/event-stream")) return "sse";
  if (accept.includes("application/x-ndjson")) return "ndjson";
  return "json";
}

export function streamLinks(id: string) {
  const self = `/v1/streams/${id}`;
  return { self, events: self, cancel: `${self}/cancel`, info: `${self}/info` };
}

export function registerStreams(app: FastifyInstance, doors: DoorDeps): void {
  const { config, store, hub, runner, routes, security, formats, live, access } = doors;

  // ── start a generation ────────────────────────────────────────────────────
  app.post("/v1/streams", async (req, reply) => {
    const request = parseGenerationRequest(req.body);
    const { info, hold } = await live.start(req, reply, pickTransport(req) === "sse", () =>
      startFor(req, doors, request),
    );
    if (hold) {
      const codec = codecFor(undefined, "sse");
      const onDisconnect = request.on_disconnect ?? routes.resolve(request.model).on_disconnect ?? "continue";
      await streamTo(req, reply, info, 0, "sse", codec, onDisconnect === "cancel", hold);
      return reply;
    }
    const token = await security.tokens.mint(info.id, info.tenant, ["read"]);
    return reply.code(201).send({
      id: info.id,
      status: info.status,
      model: info.model,
      created_at: info.created_at,
      read_token: token.token,
      read_token_expires_at: token.expires_at,
      links: streamLinks(info.id),
    });
  });

  app.get("/v1/streams", async (req) => {
    requireAction(req.principal, "list");
    const q = req.query as Record<string, string | undefined>;
    // Checked here, not by each store (they disagreed on -1): digits only, 1 to 1000.
    const limit = q.limit === undefined ? 100 : /^\d{1,4}$/.test(q.limit) ? Number(q.limit) : 0;
    if (limit < 1 || limit > 1000) {
      throw new SluiceError("invalid_request", "limit must be an integer from 1 to 1000");
    }
    const status = q.status;
    if (status !== undefined && !["running", "completed", "failed", "cancelled"].includes(status)) {
      throw new SluiceError("invalid_request", "status must be one of running, completed, failed, cancelled");
    }
    const tenant = req.principal.tenant;
    const streams = await store.list({
      limit,
      ...(tenant !== undefined ? { tenant } : {}),
      ...(status ? { status: status as StreamInfo["status"] } : {}),
    });
    return { streams: streams.map(publicInfo) };
  });

  // ── read ──────────────────────────────────────────────────────────────────
  app.get("/v1/streams/:id", async (req, reply) => {
    const { id } = req.params as { id: string };
    const q = req.query as Record<string, string | undefined>;
    // Input first (as every door): a bad offset is invalid_offset whatever the stream.
    const pos = httpReadPosition(req.headers["last-event-id"], q.offset);
    const compact = parseCompact(q.compact);
    const info = await access.generation(req.principal, "read", id);
    reply.header(STREAM_ID_HEADER, id);
    const transport = pickTransport(req);
    // An SSE event id inside a record (`<offset>.<k>`, formats/codec.ts sseRecord) is a read
    // position for SSE only.
    if (pos.skipEvents !== undefined && transport !== "sse") {
      throw new SluiceError(
        "invalid_offset",
        "an SSE event id (<offset>.<k>) is a read position for SSE only",
      );
    }
    if (transport === "json") return readPage(req, reply, info, pos, q, compact);
    const fold = transport === "sse" ? foldFor(q.format) : undefined;
    if (fold && compact) {
      // Its event numbers count every record of the log: a folded history would renumber them.
      throw new SluiceError(
        "invalid_request",
        `compact is not available with format ${q.format}: its sequence numbers count every record, so resume would not be exact`,
      );
    }
    const codec = fold ? fold.codec : codecFor(q.format, transport);
    const after = pos.kind === "now" ? info.length : pos.seq;
    if (after > info.length) {
      throw new SluiceError("offset_out_of_range", `the offset is past the end of stream ${id}`);
    }
    if (info.status !== "running" && after >= info.length) {
      // Nothing more will ever come: 204 tells an EventSource to stop reconnecting.
      return reply.code(204).send();
    }
    if (fold) {
      // A folded format reads the log from its start and sends only what follows the position.
      const start = { afterRecord: after, skipEvents: pos.skipEvents };
      const wrap = (inner: Sink) => fold.sink(inner, info, start);
      await streamTo(req, reply, info, 0, transport, codec, false, undefined, undefined, false, wrap);
      return reply;
    }
    await streamTo(req, reply, info, after, transport, codec, false, undefined, pos.skipEvents, compact);
    return reply;
  });

  async function readPage(
    req: FastifyRequest,
    reply: FastifyReply,
    info: StreamInfo,
    pos: ReadPosition,
    q: Record<string, string | undefined>,
    compact: boolean,
  ) {
    if (q.format !== undefined && q.format !== "sluice") {
      throw new SluiceError(
        "unsupported_format",
        "JSON pages are in the sluice format; use SSE or NDJSON for other formats",
      );
    }
    const max = config.limits.page_limit_max;
    const limit = q.limit === undefined ? 100 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > max) {
      throw new SluiceError("invalid_request", `limit must be an integer from 1 to ${max}`);
    }
    const id = info.id;
    const after = pos.kind === "now" ? info.length : pos.seq;
    const wait = q.live === undefined ? undefined : longPollWait(q.live, q.timeout_ms);
    let page = await store.read(id, after, limit);
    // What a page holds at once is history (folded when compact); what a long-poll waited for is
    // the live tail, as it came.
    let records = compact ? foldRecords(page.records, hub.compactMaxChars) : page.records;
    if (wait !== undefined && page.records.length === 0 && page.status === "running") {
      await longPoll(req, reply, id, after, wait);
      page = await store.read(id, after, limit);
      records = page.records;
    }
    // The record data is already JSON: assemble the page without parsing it.
    let events = "";
    for (const rec of records) {
      if (events.length > 0) events += ",";
      events += `{"offset":"${rec.offset}","event":${rec.data}}`;
    }
    const body = `{"stream_id":${JSON.stringify(id)},"status":"${page.status}","events":[${events}],"next_offset":"${page.next_offset}","up_to_date":${page.up_to_date}}`;
    return reply.type("application/json").send(body);
  }

  /** `?live=long-poll&timeout_ms=`: how long to wait (ms), within long_poll.max_wait_ms. */
  function longPollWait(mode: string, rawTimeout: string | undefined): number {
    if (mode !== "long-poll") {
      throw new SluiceError(
        "invalid_request",
        "live must be long-poll on JSON reads (use SSE or NDJSON to stream)",
      );
    }
    const max = config.long_poll.max_wait_ms;
    const wait = rawTimeout === undefined ? max : Number(rawTimeout);
    if (!Number.isInteger(wait) || wait < 0 || wait > max) {
      throw new SluiceError("invalid_request", `timeout_ms must be an integer from 0 to ${max}`);
    }
    return wait;
  }

  /**
   * Waits (up to the bound) until the stream has something after `after` or ends, on the Hub's
   * notices, holding a connection slot; the node's one deadline structure times it out, and
   * shutdown answers it at once.
   */
  async function longPoll(req: FastifyRequest, reply: FastifyReply, id: string, after: number, wait: number) {
    const hold = await live.hold(req, reply, "long-poll");
    if (hold.gone) return;
    const ac = new AbortController();
    const abort = () => ac.abort();
    const cancel = live.deadlines.add(wait, abort);
    const unregister = live.onShutdown(abort);
    hold.onClose(abort);
    try {
      await hub.waitFor(id, after, ac.signal);
    } finally {
      cancel();
      unregister();
      hold.release();
    }
  }

  /** The folded SSE format named by `?format=` (formats/table.ts FoldedSse), if it is one. */
  function foldFor(format: string | undefined): FoldedSse | undefined {
    if (format === undefined || !Object.hasOwn(formats, format)) return undefined;
    return formats[format]?.sseFold;
  }

  function codecFor(format: string | undefined, transport: "sse" | "ndjson"): Codec {
    const name = format ?? "sluice";
    const codec = Object.hasOwn(formats, name) ? formats[name]?.[transport] : undefined;
    if (!codec) {
      const known = Object.keys(formats).join(", ");
      const shown = name.length <= 64 ? `"${name}"` : "(too long)";
      throw new SluiceError(
        "unsupported_format",
        `format ${shown} is not available over ${transport}; known formats: ${known}`,
      );
    }
    return codec;
  }

  function streamTo(
    req: FastifyRequest,
    reply: FastifyReply,
    info: StreamInfo,
    after: number,
    transport: "sse" | "ndjson",
    codec: Codec,
    cancelOnDisconnect: boolean,
    held?: Hold,
    skipEvents?: number,
    compact?: boolean,
    wrap?: (inner: Sink) => Sink,
  ): Promise<void> {
    const sse = transport === "sse";
    return live.stream(
      req,
      reply,
      {
        streamId: info.id,
        after,
        skipEvents,
        compact,
        codec,
        transport,
        headers: {
          "content-type": sse ? "text/event-stream; charset=utf-8" : "application/x-ndjson; charset=utf-8",
          "cache-control": "no-cache, no-transform",
          "x-accel-buffering": "no",
        },
        heartbeat: sse ? SSE_HEARTBEAT : "\n",
        ...(sse && config.sse.retry_ms > 0 ? { preamble: `retry: ${config.sse.retry_ms}\n\n` } : {}),
        cutMessage: sse ? sseCut : ndjsonCut,
        flushMs: parseFlushMs((req.query as Record<string, string | undefined>).flush_ms),
        compress: true,
        cancelOnDisconnect,
        ...(wrap ? { wrap } : {}),
      },
      held,
    );
  }

  // ── cancel, info, delete ──────────────────────────────────────────────────
  app.post("/v1/streams/:id/cancel", async (req, reply) => {
    const { id } = req.params as { id: string };
    const info = await access.cancel(req.principal, id);
    reply.header(STREAM_ID_HEADER, id);
    return publicInfo(info);
  });

  app.post("/v1/streams/:id/tokens", async (req, reply) => {
    const { id } = req.params as { id: string };
    const info = await access.stream(req.principal, "mint_token", id);
    if (
      req.body !== undefined &&
      (typeof req.body !== "object" || req.body === null || Array.isArray(req.body))
    ) {
      throw new SluiceError("invalid_request", "the body must be a JSON object (or absent)");
    }
    const body = (req.body ?? {}) as { scopes?: unknown; ttl_s?: unknown };
    const scopes = body.scopes ?? ["read"];
    if (
      !Array.isArray(scopes) ||
      scopes.length === 0 ||
      !scopes.every((x) => x === "read" || x === "cancel")
    ) {
      throw new SluiceError("invalid_request", 'scopes must be a non-empty array of "read" and "cancel"');
    }
    const maxTtl = config.auth.token_ttl_s;
    const ttl = body.ttl_s ?? maxTtl;
    if (typeof ttl !== "number" || !Number.isInteger(ttl) || ttl < 1 || ttl > maxTtl) {
      throw new SluiceError("invalid_request", `ttl_s must be an integer from 1 to ${maxTtl}`);
    }
    reply.header(STREAM_ID_HEADER, id);
    const t = await security.tokens.mint(id, info.tenant, [...new Set(scopes as string[])], ttl);
    return reply.code(201).send({ token: t.token, expires_at: t.expires_at, scopes });
  });

  app.get("/v1/streams/:id/info", async (req, reply) => {
    const { id } = req.params as { id: string };
    const info = await access.stream(req.principal, "info", id);
    reply.header(STREAM_ID_HEADER, id);
    return { ...publicInfo(info), readers: hub.readerCount(id), running_here: runner.isRunning(id) };
  });

  app.delete("/v1/streams/:id", async (req, reply) => {
    const { id } = req.params as { id: string };
    const before = await access.stream(req.principal, "delete", id);
    reply.header(STREAM_ID_HEADER, id);
    // A generation running here or on another node is stopped first (its upstream aborted).
    if (before.status === "running" && before.kind === "generation")
      await runner.cancel(id, "client", "deleted");
    const deleted = await store.delete(id);
    if (!deleted) throw new SluiceError("stream_not_found", `no stream ${id}`);
    return { id, deleted: true };
  });
}

/** `?flush_ms=`: a reader's own flush cadence (fewer, larger batches on a poor network). */
export function parseFlushMs(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 10_000) {
    throw new SluiceError("invalid_request", "flush_ms must be an integer from 0 to 10000");
  }
  return n;
}

/** The last thing a slow SSE reader sees: a comment naming its offset (EventSource resumes by Last-Event-ID). */
function sseCut(offset: string, message: string): string {
  return `: slow_reader ${offset} ${message.replace(/[\r\n]/g, " ")}\n\n`;
}

function ndjsonCut(offset: string, message: string): string {
  return `${JSON.stringify({ error: { code: "slow_reader", message, offset } })}\n`;
}

/** Stream info as the API shows it. */
export function publicInfo(info: StreamInfo) {
  const { metadata, ...rest } = info;
  // A tenant's Durable Streams stream is shown by its DS path, not its namespaced store id.
  const id = info.kind === "log" ? publicPath(info.id) : info.id;
  const out: Record<string, unknown> = { ...rest, id, links: streamLinks(id) };
  for (const k of ["usage", "finish_reason", "error", "output_tokens", "route", "provider", "attempts"]) {
    if (metadata[k] !== undefined) out[k] = metadata[k];
  }
  if (metadata.request !== undefined) out.metadata = metadata.request;
  return out;
}
