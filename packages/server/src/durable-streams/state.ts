import { createHash } from "node:crypto";
import { SluiceError } from "@sluice/protocol";
import type { FastifyReply, FastifyRequest } from "fastify";
import { type Action, type Principal, requireStreamAccess } from "../auth/principal.js";
import type { Security } from "../auth/security.js";
import type { Config } from "../config.js";
import type { Hub } from "../core/hub.js";
import { checkJsonDepth } from "../http/json-body.js";
import type { LiveResponses } from "../http/live-response.js";
import type { RecordInput, Store, StreamInfo } from "../stores/store.js";
import { bytesRecord, encodeRecords, jsonMessages } from "./codecs.js";
import {
  checkPath,
  type DsConfig,
  dsConfig,
  dsOffset,
  forkRefs,
  H,
  isClosed,
  isGeneration,
  isSoftDeleted,
  META,
  MOUNT,
  type Mode,
  modeOf,
  parseExpiresAt,
  parseUint,
  publicContentType,
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

export const DEFAULT_CONTENT_TYPE = "application/octet-stream";
export const READ_PAGE = 256;
export const COPY_PAGE = 512;

export function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  if (Array.isArray(v)) return v.join(", ");
  return v;
}

export function flag(req: FastifyRequest, name: string): boolean {
  return (header(req, name) ?? "").trim().toLowerCase() === "true";
}

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** A DS error: Sluice's error body, plus protocol headers the client needs to recover. */
export function dsError(
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
/**
 * The state and helpers every Durable Streams handler shares: the store, the per-stream
 * mutation locks, loading a stream as a caller may see it, expiry, request parsing, the
 * catch-up reader. One per mount (registerDurableStreams makes it).
 */
export function dsState(deps: DurableStreamsDeps) {
  const { config, store, hub, live } = deps;
  const opts = config.durable_streams;
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

  return {
    deps,
    config,
    store,
    hub,
    live,
    opts,
    jsonMaxDepth,
    locked,
    liveRefs,
    hardDelete,
    storeIdFor,
    allow,
    load,
    modeOfInfo,
    touch,
    applyExpiry,
    infoHeaders,
    pathOf,
    bodyOfReq,
    recordsFor,
    parseTtlHeaders,
    etag,
    readChunk,
  };
}

export type DsState = ReturnType<typeof dsState>;
