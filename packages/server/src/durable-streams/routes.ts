import { createHash } from "node:crypto";
import { isSluiceError, SluiceError } from "@sluice/protocol";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { type Action, type Principal, requireAction, requireStreamAccess } from "../auth/principal.js";
import type { Security } from "../auth/security.js";
import type { Config } from "../config.js";
import type { Hub, Reader, WriteMark } from "../core/hub.js";
import { SSE_HEARTBEAT } from "../http/context.js";
import { checkJsonDepth } from "../http/json-body.js";
import type { LiveResponses } from "../http/live-response.js";
import { ResponseSink } from "../http/sink.js";
import type { RecordInput, Store, StreamInfo } from "../stores/store.js";
import {
  bodyOf,
  bytesRecord,
  codecFor,
  encodeRecords,
  jsonMessages,
  recordBytes,
  recordMessages,
} from "./codecs.js";
import { DsSseSink, LongPollSink, type SseData } from "./live.js";
import {
  ALLOWED_HEADERS,
  checkPath,
  type DsConfig,
  dsConfig,
  dsOffset,
  EXPOSED_HEADERS,
  forkRefs,
  H,
  isClosed,
  isGeneration,
  isSoftDeleted,
  isTextual,
  META,
  MOUNT,
  type Mode,
  mediaType,
  modeOf,
  nextCursor,
  parseDsOffset,
  parseExpiresAt,
  parseForkSource,
  parseUint,
  producerState,
  publicContentType,
  publicPath,
  tenantStreamId,
} from "./protocol.js";

export interface DurableStreamsDeps {
  config: Config;
  store: Store;
  hub: Hub;
  security: Security;
  /** The live-response path: connection slots and quotas, heartbeats, deadlines, shutdown. */
  live: LiveResponses;
}

const DEFAULT_CONTENT_TYPE = "application/octet-stream";
const READ_PAGE = 256;
const COPY_PAGE = 512;

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  if (Array.isArray(v)) return v.join(", ");
  return v;
}

function flag(req: FastifyRequest, name: string): boolean {
  return (header(req, name) ?? "").trim().toLowerCase() === "true";
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** A DS error: Sluice's error body, plus protocol headers the client needs to recover. */
function dsError(
  code: ConstructorParameters<typeof SluiceError>[0],
  message: string,
  headers: Record<string, string> = {},
) {
  const err = new SluiceError(code, message) as SluiceError & { dsHeaders?: Record<string, string> };
  err.dsHeaders = headers;
  return err;
}

/**
 * The Durable Streams protocol under /ds: streams at /ds/v1/stream/{path}, kept in Sluice's Store
 * (one record per append; DS state in stream metadata), live reads fanned out by the Hub.
 * Generation streams are readable here too, read-only, in JSON mode.
 *
 * Access control is Sluice's (docs/security.md): every route checks the caller's role, and with
 * API keys a tenant's streams live in its own namespace (tenantStreamId), so another tenant's
 * stream at the same path is simply a different stream; a read token reads its own stream only.
 */
export function registerDurableStreams(app: FastifyInstance, deps: DurableStreamsDeps): void {
  const { config, store, hub, live } = deps;
  const opts = config.durable_streams;
  if (!opts.enabled) return;
  const jsonMaxDepth = config.limits.json_max_depth;

  /** Mutations of one stream run one at a time on this node (read-check-append stays consistent). */
  const locks = new Map<string, Promise<unknown>>();
  async function locked<T>(path: string, fn: () => Promise<T>): Promise<T> {
    const prev = locks.get(path) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => {});
    locks.set(path, tail);
    try {
      return await run;
    } finally {
      if (locks.get(path) === tail) locks.delete(path);
    }
  }

  // ── stream state helpers ─────────────────────────────────────────────────
  async function liveRefs(info: StreamInfo): Promise<string[]> {
    const out: string[] = [];
    for (const fork of forkRefs(info)) {
      const f = await store.info(fork);
      if (f && dsConfig(f).fork?.from === info.id) out.push(fork);
    }
    return out;
  }

  /** Removes a stream for good; a fork releases its source (which goes too if it was only kept for forks). */
  async function hardDelete(info: StreamInfo): Promise<void> {
    await store.delete(info.id);
    const from = dsConfig(info).fork?.from;
    if (!from) return;
    const src = await store.update(from, { metadata: { [META.ref(info.id)]: false } });
    if (src && isSoftDeleted(src) && (await liveRefs(src)).length === 0) await hardDelete(src);
  }

  /**
   * The store id `path` names for this caller. Open mode: the path itself. An API key: a generation
   * of its tenant keeps its own id (so /ds/v1/stream/{generation id} reads it); anything else is in
   * the tenant's namespace. A read token: the path itself, and allow() lets it read only the
   * stream it was minted for.
   */
  async function storeIdFor(p: Principal, path: string): Promise<string> {
    if (p.kind !== "key") return path;
    const plain = await store.info(path);
    if (plain && isGeneration(plain) && plain.tenant === p.tenant) return path;
    return tenantStreamId(p.tenant, path);
  }

  /** Checks `action` on a loaded stream: 404 when it is not the caller's to see, 403 when the role does not allow it. */
  const allow = (p: Principal, action: Action) => (info: StreamInfo) => requireStreamAccess(p, action, info);

  /**
   * The stream with store id `id` (addressed as `path`): 404 when none (or expired), or when
   * `check` says the caller may not see it; 410 when deleted but kept for its forks.
   */
  async function load(id: string, path: string, check?: (info: StreamInfo) => void): Promise<StreamInfo> {
    const info = await store.info(id);
    if (!info) throw new SluiceError("stream_not_found", `no stream at ${MOUNT}/v1/stream/${path}`);
    check?.(info);
    if (isSoftDeleted(info)) {
      if ((await liveRefs(info)).length === 0) {
        await hardDelete(info);
        throw new SluiceError("stream_not_found", `no stream at ${MOUNT}/v1/stream/${path}`);
      }
      throw new SluiceError("stream_gone", `the stream at ${path} was deleted (forks still inherit from it)`);
    }
    return info;
  }

  function modeOfInfo(info: StreamInfo): Mode {
    return modeOf(info.content_type);
  }

  /** Sliding TTL: any read or write moves the expiry to now + TTL. */
  async function touch(info: StreamInfo): Promise<void> {
    const cfg = dsConfig(info);
    if (cfg.ttl_s !== undefined)
      await store.update(info.id, { expires_at: iso(Date.now() + cfg.ttl_s * 1000) });
  }

  /** After a close the store applies its retention; a DS expiry (TTL or Expires-At) wins over it. */
  async function applyExpiry(id: string, cfg: DsConfig): Promise<void> {
    if (cfg.ttl_s !== undefined) await store.update(id, { expires_at: iso(Date.now() + cfg.ttl_s * 1000) });
    else if (cfg.expires_at !== undefined) await store.update(id, { expires_at: cfg.expires_at });
  }

  function infoHeaders(reply: FastifyReply, info: StreamInfo): void {
    reply.header("content-type", publicContentType(info));
    reply.header(H.nextOffset, dsOffset(info.length));
    if (isClosed(info)) reply.header(H.closed, "true");
  }

  function pathOf(req: FastifyRequest): string {
    const raw = (req.params as Record<string, string>)["*"] ?? "";
    return checkPath(raw);
  }

  function bodyOfReq(req: FastifyRequest): Buffer {
    const b = req.body;
    if (b === undefined || b === null) return Buffer.alloc(0);
    if (Buffer.isBuffer(b)) return b;
    return Buffer.from(String(b));
  }

  function recordsFor(mode: Mode, body: Buffer, allowEmptyArray: boolean): RecordInput[] {
    if (body.length === 0) return [];
    if (mode === "bytes") return [bytesRecord(body)];
    let messages: string[];
    const text = body.toString("utf8");
    checkJsonDepth(text, jsonMaxDepth);
    try {
      messages = jsonMessages(text);
    } catch (err) {
      throw new SluiceError("invalid_json", `the body is not valid JSON: ${(err as Error).message}`);
    }
    if (messages.length === 0) {
      if (allowEmptyArray) return [];
      throw new SluiceError(
        "invalid_request",
        "an empty JSON array appends nothing; send at least one value",
      );
    }
    return [{ data: messages.join(",") }];
  }

  function parseTtlHeaders(req: FastifyRequest): { ttl_s?: number; expires_at?: string } {
    const ttl = header(req, H.ttl);
    const exp = header(req, H.expiresAt);
    if (ttl !== undefined && exp !== undefined) {
      throw new SluiceError("invalid_request", "send Stream-TTL or Stream-Expires-At, not both");
    }
    const out: { ttl_s?: number; expires_at?: string } = {};
    if (ttl !== undefined) out.ttl_s = parseUint(ttl.trim(), "Stream-TTL");
    if (exp !== undefined) out.expires_at = parseExpiresAt(exp);
    return out;
  }

  // ── the plugin ───────────────────────────────────────────────────────────
  app.register(
    async (ds) => {
      ds.removeAllContentTypeParsers();
      ds.addContentTypeParser(
        "*",
        { parseAs: "buffer", bodyLimit: opts.max_append_bytes },
        (_req, body, done) => done(null, body),
      );

      ds.addHook("onRequest", async (_req, reply) => {
        reply.header("x-content-type-options", "nosniff");
        reply.header("cross-origin-resource-policy", "cross-origin");
        reply.header("access-control-allow-origin", "*");
        reply.header("access-control-expose-headers", EXPOSED_HEADERS);
      });

      ds.setErrorHandler((err: unknown, _req, reply) => {
        // A 401 from the security hook comes before this plugin's onRequest: browsers must read it too.
        if (!reply.hasHeader("access-control-allow-origin")) {
          reply.header("x-content-type-options", "nosniff");
          reply.header("access-control-allow-origin", "*");
          reply.header("access-control-expose-headers", `${EXPOSED_HEADERS}, WWW-Authenticate, Retry-After`);
        }
        const extra = (err as { dsHeaders?: Record<string, string> }).dsHeaders;
        if (extra) for (const [k, v] of Object.entries(extra)) reply.header(k, v);
        if ((err as { code?: string }).code === "FST_ERR_CTP_BODY_TOO_LARGE") {
          throw new SluiceError(
            "body_too_large",
            `an append carries at most ${opts.max_append_bytes} bytes (durable_streams.max_append_bytes)`,
          );
        }
        // Everything else is the app's error handling (catalogue codes, JSON bodies).
        throw err;
      });

      ds.options("/*", async (req, reply) => {
        const asked = header(req, "access-control-request-headers");
        reply.header("access-control-allow-methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS");
        reply.header(
          "access-control-allow-headers",
          asked ? `${ALLOWED_HEADERS}, ${asked}` : ALLOWED_HEADERS,
        );
        reply.header("access-control-max-age", "86400");
        return reply.code(204).send();
      });

      // ── PUT: create (or fork) ──────────────────────────────────────────
      ds.put("/v1/stream/*", async (req, reply) => {
        const path = pathOf(req);
        const principal = req.principal;
        requireAction(principal, "create");
        const ctHeader = header(req, "content-type")?.trim() || undefined;
        const ttl = parseTtlHeaders(req);
        const closed = flag(req, H.closed);
        const forkFromRaw = header(req, H.forkedFrom);
        const forkOffsetRaw = header(req, H.forkOffset);
        const subRaw = header(req, H.forkSubOffset);
        if (forkFromRaw === undefined && (forkOffsetRaw !== undefined || subRaw !== undefined)) {
          throw new SluiceError(
            "invalid_request",
            "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
          );
        }
        const sub = subRaw === undefined ? 0 : parseUint(subRaw.trim(), "Stream-Fork-Sub-Offset");
        if (sub > 0 && forkOffsetRaw === undefined) {
          throw new SluiceError("invalid_request", "Stream-Fork-Sub-Offset needs Stream-Fork-Offset");
        }
        let forkSeqAsked: number | undefined;
        if (forkOffsetRaw !== undefined) {
          forkSeqAsked = parseDsOffset(forkOffsetRaw.trim());
          if (forkSeqAsked === undefined)
            throw new SluiceError("invalid_offset", "Stream-Fork-Offset is not an offset");
        }
        const forkPath = forkFromRaw === undefined ? undefined : parseForkSource(forkFromRaw);
        // The source is looked up like any path the caller names: in its own tenant only.
        const forkFrom = forkPath === undefined ? undefined : await storeIdFor(principal, forkPath);
        const id = await storeIdFor(principal, path);
        const body = bodyOfReq(req);

        /** PUT on a stream that exists: 200 for the same configuration, 409 otherwise. */
        const answerExisting = (existing: StreamInfo): FastifyReply => {
          if (isGeneration(existing)) {
            throw new SluiceError("stream_exists", `${path} is a generation stream (read-only here)`);
          }
          if (isSoftDeleted(existing)) {
            throw new SluiceError("stream_exists", `${path} was deleted but forks still inherit from it`);
          }
          const cfg = dsConfig(existing);
          // A fork without TTL headers inherited its source's: any inherited value matches.
          const ttlSame =
            forkFrom !== undefined && ttl.ttl_s === undefined && ttl.expires_at === undefined
              ? true
              : cfg.ttl_s === ttl.ttl_s && cfg.expires_at === ttl.expires_at;
          const same =
            (ctHeader === undefined
              ? forkFrom !== undefined || mediaType(existing.content_type) === DEFAULT_CONTENT_TYPE
              : mediaType(ctHeader) === mediaType(existing.content_type)) &&
            ttlSame &&
            (cfg.fork?.from ?? undefined) === forkFrom &&
            (forkSeqAsked === undefined || cfg.fork?.seq === forkSeqAsked) &&
            (cfg.fork?.sub ?? 0) === sub;
          if (!same) {
            throw new SluiceError(
              "stream_exists",
              `a stream with a different configuration exists at ${path}`,
            );
          }
          infoHeaders(reply, existing);
          return reply.code(200).send();
        };

        return locked(id, async () => {
          let existing = await store.info(id);
          if (existing && isSoftDeleted(existing) && (await liveRefs(existing)).length === 0) {
            await hardDelete(existing);
            existing = undefined;
          }
          if (existing) return answerExisting(existing);

          let cfg: DsConfig = { ...ttl };
          let contentType = ctHeader ?? DEFAULT_CONTENT_TYPE;
          let src: StreamInfo | undefined;
          let forkSeq = 0;
          if (forkFrom !== undefined) {
            src = await store.info(forkFrom);
            if (!src) throw new SluiceError("stream_not_found", `no stream at ${forkPath} to fork from`);
            requireStreamAccess(principal, "read", src);
            if (isSoftDeleted(src))
              throw new SluiceError("stream_exists", `${forkPath} was deleted; it cannot be forked`);
            const srcType = publicContentType(src);
            if (ctHeader !== undefined && mediaType(ctHeader) !== mediaType(srcType)) {
              throw new SluiceError(
                "content_type_mismatch",
                `the fork's Content-Type must be the source's (${srcType})`,
              );
            }
            contentType = ctHeader ?? srcType;
            forkSeq = forkSeqAsked ?? src.length;
            if (forkSeq > src.length) {
              throw new SluiceError(
                "offset_out_of_range",
                "Stream-Fork-Offset is past the end of the source",
              );
            }
            if (ttl.ttl_s === undefined && ttl.expires_at === undefined) {
              const s = dsConfig(src);
              if (s.ttl_s !== undefined) cfg.ttl_s = s.ttl_s;
              else if (s.expires_at !== undefined) cfg.expires_at = s.expires_at;
            }
            cfg = { ...cfg, fork: { from: forkFrom, seq: forkSeq, sub } };
          }
          const mode = modeOf(contentType);
          const initial = recordsFor(mode, body, true);

          // Sub-offset: the first `sub` bytes (bytes mode) or messages (JSON mode) of the record after forkSeq.
          let partial: RecordInput | undefined;
          if (src && sub > 0) {
            const next = (await store.read(src.id, forkSeq, 1)).records[0];
            if (!next)
              throw new SluiceError(
                "offset_out_of_range",
                "Stream-Fork-Sub-Offset is past the end of the source",
              );
            if (mode === "json") {
              const msgs = recordMessages(next);
              if (sub > msgs.length) {
                throw new SluiceError(
                  "offset_out_of_range",
                  `Stream-Fork-Sub-Offset ${sub} > ${msgs.length} messages`,
                );
              }
              partial = { data: msgs.slice(0, sub).join(",") };
            } else {
              const bytes = recordBytes(next);
              if (sub > bytes.length) {
                throw new SluiceError(
                  "offset_out_of_range",
                  `Stream-Fork-Sub-Offset ${sub} > ${bytes.length} bytes`,
                );
              }
              partial = bytesRecord(bytes.subarray(0, sub));
            }
          }

          try {
            await store.create({
              id,
              kind: "log",
              ...(principal.tenant !== undefined ? { tenant: principal.tenant } : {}),
              content_type: contentType,
              metadata: { [META.config]: cfg },
            });
          } catch (err) {
            // Created meanwhile by another node: answer as for any existing stream.
            const now = isSluiceError(err) && err.code === "stream_exists" ? await store.info(id) : undefined;
            if (now) return answerExisting(now);
            throw err;
          }
          try {
            if (src) {
              // A fork copies what it inherits (same offsets as the source), then lives on its own.
              let after = 0;
              while (after < forkSeq) {
                const page = await store.read(src.id, after, Math.min(COPY_PAGE, forkSeq - after));
                if (page.records.length === 0) break;
                await store.append(
                  id,
                  page.records.map((r) => {
                    const rec: RecordInput = { data: r.data };
                    if (r.encoding !== undefined) rec.encoding = r.encoding;
                    return rec;
                  }),
                );
                after = (page.records[page.records.length - 1] as { seq: number }).seq;
              }
              if (partial) await store.append(id, [partial]);
              await store.update(src.id, { metadata: { [META.ref(id)]: true } });
            }
            if (initial.length > 0 || closed) {
              await store.append(id, initial, closed ? { close: "completed" } : {});
            }
            await applyExpiry(id, cfg);
          } catch (err) {
            await store.delete(id).catch(() => {});
            throw err;
          }
          const info = (await store.info(id)) as StreamInfo;
          infoHeaders(reply, info);
          reply.header(
            "location",
            `${req.protocol}://${req.headers.host ?? "localhost"}${MOUNT}/v1/stream/${path}`,
          );
          return reply.code(201).send();
        });
      });

      // ── POST: append / close ───────────────────────────────────────────
      ds.post("/v1/stream/*", async (req, reply) => {
        const path = pathOf(req);
        const close = flag(req, H.closed);
        const body = bodyOfReq(req);
        const pid = header(req, H.producerId);
        const pEpochRaw = header(req, H.producerEpoch);
        const pSeqRaw = header(req, H.producerSeq);
        const streamSeq = header(req, H.seq);
        const check = allow(req.principal, "append");
        const id = await storeIdFor(req.principal, path);
        const first = await load(id, path, check);
        if (isGeneration(first)) {
          throw new SluiceError(
            "stream_read_only",
            `${path} is a generation stream: only its generation writes to it`,
          );
        }
        if (body.length === 0 && !close) {
          throw new SluiceError(
            "invalid_request",
            "an append needs a non-empty body (or Stream-Closed: true to close)",
          );
        }
        let records: RecordInput[] = [];
        if (body.length > 0) {
          const ct = header(req, "content-type");
          if (!ct) throw new SluiceError("invalid_request", "an append needs a Content-Type");
          if (mediaType(ct) !== mediaType(first.content_type)) {
            throw new SluiceError(
              "content_type_mismatch",
              `the stream's Content-Type is ${first.content_type}, the append's ${ct}`,
            );
          }
          records = recordsFor(modeOfInfo(first), body, false);
        }
        const anyProducer = pid !== undefined || pEpochRaw !== undefined || pSeqRaw !== undefined;
        let producer: { id: string; epoch: number; seq: number } | undefined;
        if (anyProducer) {
          if (pid === undefined || pEpochRaw === undefined || pSeqRaw === undefined) {
            throw new SluiceError(
              "invalid_request",
              "Producer-Id, Producer-Epoch and Producer-Seq go together",
            );
          }
          if (pid.trim() === "") throw new SluiceError("invalid_request", "Producer-Id must not be empty");
          producer = {
            id: pid,
            epoch: parseUint(pEpochRaw.trim(), "Producer-Epoch"),
            seq: parseUint(pSeqRaw.trim(), "Producer-Seq"),
          };
        }

        // Decided on a read, applied with compare-and-append: if another node appended in
        // between, the store refuses and the checks run again on the new state.
        const attempt = async (): Promise<FastifyReply> => {
          const info = await load(id, path, check);
          const cfg = dsConfig(info);
          const tail = () => ({
            [H.nextOffset]: dsOffset(info.length),
            ...(isClosed(info) ? { [H.closed]: "true" } : {}),
          });
          const metadata: Record<string, unknown> = {};
          if (producer) {
            const st = producerState(info, producer.id);
            if (st && producer.epoch < st.e) {
              throw dsError("producer_fenced", `producer ${producer.id} is at epoch ${st.e}`, {
                [H.producerEpoch]: String(st.e),
              });
            }
            if (st && producer.epoch === st.e && producer.seq <= st.s) {
              // Already applied: acknowledge without writing again.
              for (const [k, v] of Object.entries(tail())) reply.header(k, v);
              reply.header(H.producerEpoch, String(st.e));
              reply.header(H.producerSeq, String(st.s));
              return reply.code(204).send();
            }
            const expected = st && producer.epoch === st.e ? st.s + 1 : 0;
            if (st && producer.epoch > st.e && producer.seq !== 0) {
              throw new SluiceError("invalid_request", "a new Producer-Epoch starts at Producer-Seq 0");
            }
            if (producer.seq !== expected) {
              throw dsError("sequence_conflict", `expected Producer-Seq ${expected}, got ${producer.seq}`, {
                [H.expectedSeq]: String(expected),
                [H.receivedSeq]: String(producer.seq),
              });
            }
            metadata[META.producer(producer.id)] = { e: producer.epoch, s: producer.seq };
          }
          if (isClosed(info)) {
            if (records.length === 0 && close) {
              for (const [k, v] of Object.entries(tail())) reply.header(k, v);
              return reply.code(204).send();
            }
            throw dsError("stream_closed", `the stream at ${path} is closed`, tail());
          }
          if (streamSeq !== undefined) {
            if (cfg.seq !== undefined && !(streamSeq > cfg.seq)) {
              throw new SluiceError("sequence_conflict", `Stream-Seq ${streamSeq} is not after ${cfg.seq}`);
            }
            metadata[META.config] = { ...cfg, seq: streamSeq };
          }
          const res = await store.append(id, records, {
            ...(close ? { close: "completed" as const } : {}),
            ...(Object.keys(metadata).length > 0 ? { metadata } : {}),
            if_length: info.length,
          });
          if (cfg.ttl_s !== undefined || close) await applyExpiry(id, cfg);
          reply.header(H.nextOffset, dsOffset(res.length));
          if (res.status !== "running") reply.header(H.closed, "true");
          if (producer) {
            reply.header(H.producerEpoch, String(producer.epoch));
            reply.header(H.producerSeq, String(producer.seq));
            return reply.code(records.length > 0 ? 200 : 204).send();
          }
          return reply.code(204).send();
        };
        return locked(id, async () => {
          for (let tries = 1; ; tries++) {
            try {
              return await attempt();
            } catch (err) {
              if (!(isSluiceError(err) && err.code === "append_conflict" && tries < 8)) throw err;
            }
          }
        });
      });

      // ── HEAD ───────────────────────────────────────────────────────────
      ds.route({
        method: "HEAD",
        url: "/v1/stream/*",
        handler: async (req, reply) => {
          const path = pathOf(req);
          const id = await storeIdFor(req.principal, path);
          const info = await load(id, path, allow(req.principal, "read"));
          infoHeaders(reply, info);
          const cfg = dsConfig(info);
          if (cfg.ttl_s !== undefined) reply.header(H.ttl, String(cfg.ttl_s));
          if (cfg.expires_at !== undefined) reply.header(H.expiresAt, cfg.expires_at);
          reply.header("cache-control", "no-store");
          return reply.code(200).send();
        },
      });

      // ── DELETE ─────────────────────────────────────────────────────────
      ds.delete("/v1/stream/*", async (req, reply) => {
        const path = pathOf(req);
        const id = await storeIdFor(req.principal, path);
        return locked(id, async () => {
          const info = await load(id, path, allow(req.principal, "delete"));
          if (isGeneration(info)) {
            throw new SluiceError(
              "stream_read_only",
              `${path} is a generation stream: delete it through /v1/streams`,
            );
          }
          if ((await liveRefs(info)).length > 0) {
            // Forks inherit from it: the name stays taken (410) until the last fork is gone.
            await store.update(id, { metadata: { [META.deleted]: true } });
          } else {
            await hardDelete(info);
          }
          return reply.code(204).send();
        });
      });

      // ── GET: catch-up, long-poll, SSE ──────────────────────────────────
      ds.route({
        method: "GET",
        url: "/v1/stream/*",
        exposeHeadRoute: false,
        handler: async (req, reply) => {
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
              throw new SluiceError("invalid_offset", `"${rawOffset}" is not an offset of this stream`);
            if (seq > info.length)
              throw new SluiceError("offset_out_of_range", "the offset is past the end of the stream");
            after = seq;
          }
          await touch(info);
          const mode = modeOfInfo(info);
          if (live === "sse") return sse(req, reply, info, after, mode, cursorParam);
          // With credentials, a response is the caller's own (another tenant's same URL is another stream).
          const shared = req.principal.kind === "open" ? "public" : "private";

          const chunk = await readChunk(info.id, after, mode);
          const closedAtTail = chunk.upToDate && chunk.status !== "running";
          reply.header("content-type", publicContentType(info));
          if (live === "long-poll") {
            reply.header(H.cursor, nextCursor(Date.now(), cursorParam));
            reply.header("cache-control", "no-cache");
            if (chunk.last === after && !closedAtTail)
              return longPoll(req, reply, info, after, mode, cursorParam);
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
        },
      });
    },
    { prefix: MOUNT },
  );

  function etag(info: StreamInfo, after: number, last: number, closed: boolean): string {
    const who = createHash("sha1").update(`${info.id}\n${info.created_at}`).digest("base64url").slice(0, 12);
    return `"${who}:${after}:${last}${closed ? ":c" : ""}"`;
  }

  /** Records after `after`, up to about max_read_bytes (at least one record). */
  async function readChunk(id: string, after: number, mode: Mode) {
    let encoded = "";
    let last = after;
    for (;;) {
      const page = await store.read(id, last, READ_PAGE);
      for (const rec of page.records) {
        const e = encodeRecords(mode, [rec]);
        if (encoded.length > 0 && encoded.length + e.length > opts.max_read_bytes) {
          return { encoded, last, upToDate: false, status: page.status };
        }
        encoded += e;
        last = rec.seq;
      }
      if (page.up_to_date || page.records.length === 0) {
        return { encoded, last, upToDate: page.up_to_date, status: page.status };
      }
    }
  }

  async function longPoll(
    req: FastifyRequest,
    reply: FastifyReply,
    info: StreamInfo,
    after: number,
    mode: Mode,
    cursorParam: string | undefined,
  ): Promise<FastifyReply> {
    const hold = live.hold(req, reply, "long-poll");
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
                reply.send(
                  new SluiceError("stream_not_found", `no stream at ${publicPath(info.id)}`).toBody(),
                );
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
    req: FastifyRequest,
    reply: FastifyReply,
    info: StreamInfo,
    after: number,
    mode: Mode,
    cursorParam: string | undefined,
  ): Promise<FastifyReply> {
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
}
