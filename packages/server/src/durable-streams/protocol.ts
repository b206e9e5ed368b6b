import { formatOffset, SluiceError } from "@sluice/protocol";
import { EVENTS_CONTENT_TYPE, type StreamInfo } from "../stores/store.js";

/**
 * Wire-level pieces of the Durable Streams protocol: header names, offsets, header parsing,
 * and the per-stream state Sluice keeps in the Store's stream metadata.
 */

export const H = {
  nextOffset: "stream-next-offset",
  upToDate: "stream-up-to-date",
  closed: "stream-closed",
  cursor: "stream-cursor",
  seq: "stream-seq",
  ttl: "stream-ttl",
  expiresAt: "stream-expires-at",
  forkedFrom: "stream-forked-from",
  forkOffset: "stream-fork-offset",
  forkSubOffset: "stream-fork-sub-offset",
  producerId: "producer-id",
  producerEpoch: "producer-epoch",
  producerSeq: "producer-seq",
  expectedSeq: "producer-expected-seq",
  receivedSeq: "producer-received-seq",
  sseEncoding: "stream-sse-data-encoding",
} as const;

/** Headers a browser client may read (CORS). */
export const EXPOSED_HEADERS = [
  "Stream-Next-Offset",
  "Stream-Up-To-Date",
  "Stream-Closed",
  "Stream-Cursor",
  "Stream-TTL",
  "Stream-Expires-At",
  "Stream-SSE-Data-Encoding",
  "Producer-Epoch",
  "Producer-Seq",
  "Producer-Expected-Seq",
  "Producer-Received-Seq",
  "ETag",
  "Location",
  "Content-Type",
  "WWW-Authenticate",
  "Retry-After",
].join(", ");

/** Request headers a browser client may send (CORS preflight). */
export const ALLOWED_HEADERS = [
  "Content-Type",
  "Authorization",
  "If-None-Match",
  "Last-Event-ID",
  "Stream-Seq",
  "Stream-TTL",
  "Stream-Expires-At",
  "Stream-Closed",
  "Stream-Forked-From",
  "Stream-Fork-Offset",
  "Stream-Fork-Sub-Offset",
  "Producer-Id",
  "Producer-Epoch",
  "Producer-Seq",
];

/** Where the protocol is mounted, and the streams' prefix under it. */
export const MOUNT = "/ds";
export const STREAM_PREFIX = "/v1/stream/";

/**
 * DS offsets: `<16-digit Sluice offset>_<16 zeros>`. The first half is the Sluice offset of the
 * last record included (so it reads the same through /v1/streams); the second half is reserved
 * for positions inside a record and always zero. Plain 16-digit Sluice offsets are accepted too.
 */
const ZERO16 = "0".repeat(16);
const DS_OFFSET_RE = /^(\d{16})(?:_(\d{16}))?$/;

export function dsOffset(seq: number): string {
  return `${formatOffset(seq)}_${ZERO16}`;
}

/** Sequence number of a DS offset, or undefined when malformed. */
export function parseDsOffset(value: string): number | undefined {
  const m = DS_OFFSET_RE.exec(value);
  if (!m) return undefined;
  if (m[2] !== undefined && m[2] !== ZERO16) return undefined;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

export type Mode = "json" | "bytes";

/** The media type without parameters, lower case ("Application/JSON; charset=utf-8" → "application/json"). */
export function mediaType(contentType: string): string {
  return (contentType.split(";")[0] ?? "").trim().toLowerCase();
}

/** JSON mode keeps message boundaries; everything else is a byte stream. */
export function modeOf(contentType: string): Mode {
  const m = mediaType(contentType);
  return m === "application/json" || contentType === EVENTS_CONTENT_TYPE ? "json" : "bytes";
}

/** SSE carries text as is and anything else as base64. */
export function isTextual(contentType: string): boolean {
  const m = mediaType(contentType);
  return m.startsWith("text/") || m === "application/json" || m.endsWith("+json");
}

/** A stream path: what follows /v1/stream/. Conservative: no control characters, no dot segments. */
const PATH_RE = /^[A-Za-z0-9._~!$&'()*+,;=:@/-]{1,256}$/;

export function checkPath(path: string): string {
  if (!PATH_RE.test(path) || path.split("/").some((seg) => seg === "" || seg === "." || seg === "..")) {
    throw new SluiceError("stream_not_found", "no stream at that path");
  }
  return path;
}

/** Stream-Forked-From names a stream by its path (`/v1/stream/x`, optionally under /ds, or a full URL). */
export function parseForkSource(value: string): string {
  let p = value.trim();
  if (/^https?:\/\//i.test(p)) {
    try {
      p = new URL(p).pathname;
    } catch {
      throw new SluiceError("invalid_request", "Stream-Forked-From is not a stream path or URL");
    }
  }
  if (p.startsWith(MOUNT + STREAM_PREFIX)) p = p.slice(MOUNT.length);
  if (!p.startsWith(STREAM_PREFIX)) {
    throw new SluiceError(
      "invalid_request",
      `Stream-Forked-From must be a stream path like ${STREAM_PREFIX}name`,
    );
  }
  let path: string;
  try {
    path = decodeURIComponent(p.slice(STREAM_PREFIX.length));
  } catch {
    throw new SluiceError("invalid_request", "Stream-Forked-From is not a valid path");
  }
  if (!PATH_RE.test(path))
    throw new SluiceError("stream_not_found", "no stream at the Stream-Forked-From path");
  return path;
}

const UINT_RE = /^(0|[1-9]\d*)$/;

/** A non-negative integer header without sign, leading zeros, fraction or exponent. */
export function parseUint(value: string, name: string): number {
  if (!UINT_RE.test(value))
    throw new SluiceError("invalid_request", `${name} must be a non-negative integer`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new SluiceError("invalid_request", `${name} is too large`);
  return n;
}

const RFC3339_RE = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

export function parseExpiresAt(value: string): string {
  const ms = RFC3339_RE.test(value.trim()) ? Date.parse(value.trim()) : Number.NaN;
  if (Number.isNaN(ms))
    throw new SluiceError("invalid_request", "Stream-Expires-At must be an RFC 3339 timestamp");
  return new Date(ms).toISOString();
}

/** Long-poll / SSE cursors: the current 20-second interval, always past the one the client sent. */
const CURSOR_INTERVAL_MS = 20_000;

export function nextCursor(now: number, clientCursor: string | undefined): string {
  let cursor = Math.floor(now / CURSOR_INTERVAL_MS);
  if (clientCursor !== undefined && UINT_RE.test(clientCursor)) {
    const c = Number(clientCursor);
    if (Number.isSafeInteger(c) && c >= cursor) cursor = c + 1 + Math.floor(Math.random() * 3);
  }
  return String(cursor);
}

// ── state kept in stream metadata ───────────────────────────────────────────

/** The DS configuration of a stream (metadata key `ds`). */
export interface DsConfig {
  /** Stream-TTL in seconds: the stream expires this long after its last read or write. */
  ttl_s?: number;
  /** Stream-Expires-At (absolute). */
  expires_at?: string;
  /** The last Stream-Seq accepted. */
  seq?: string;
  /** Where this stream was forked from. */
  fork?: { from: string; seq: number; sub: number };
}

/** Per producer (metadata key `ds_p:<id>`): the epoch and the last sequence number accepted in it. */
export interface ProducerState {
  e: number;
  s: number;
}

export const META = {
  config: "ds",
  producer: (id: string) => `ds_p:${id}`,
  /** Set on a source for each fork that inherits from it (value true; false once that fork is gone). */
  ref: (forkPath: string) => `ds_ref:${forkPath}`,
  refPrefix: "ds_ref:",
  /** Set when a stream was deleted while forks still referenced it (410 from then on). */
  deleted: "ds_deleted",
} as const;

export function dsConfig(info: StreamInfo): DsConfig {
  const c = info.metadata[META.config];
  return c && typeof c === "object" ? (c as DsConfig) : {};
}

export function producerState(info: StreamInfo, id: string): ProducerState | undefined {
  const p = info.metadata[META.producer(id)];
  return p && typeof p === "object" ? (p as ProducerState) : undefined;
}

export function forkRefs(info: StreamInfo): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(info.metadata)) {
    if (v === true && k.startsWith(META.refPrefix)) out.push(k.slice(META.refPrefix.length));
  }
  return out;
}

export function isSoftDeleted(info: StreamInfo): boolean {
  return info.metadata[META.deleted] === true;
}

/** A generation stream (written by the Runner): readable through DS in JSON mode, never writable. */
export function isGeneration(info: StreamInfo): boolean {
  return info.kind === "generation";
}

/** The Content-Type DS clients see: generation streams are plain JSON-mode streams to them. */
export function publicContentType(info: StreamInfo): string {
  return isGeneration(info) ? "application/json" : info.content_type;
}

export function isClosed(info: StreamInfo): boolean {
  return info.status !== "running";
}

// ── tenants ─────────────────────────────────────────────────────────────────

/**
 * With API keys, a tenant's DS streams live in its own namespace in the Store: the path `x` of
 * tenant `a` is the store id `ds|a|x`. `|` is neither in a DS path (PATH_RE) nor in a stream id,
 * and the tenant is percent-encoded, so no namespace can collide with another or with a
 * generation id. In open mode (no tenant) the store id is the path itself.
 */
const NS_PREFIX = "ds|";

export function tenantStreamId(tenant: string | undefined, path: string): string {
  return tenant === undefined ? path : `${NS_PREFIX}${encodeURIComponent(tenant)}|${path}`;
}

/** The DS path a store id is addressed by (what clients see in messages). */
export function publicPath(id: string): string {
  if (!id.startsWith(NS_PREFIX)) return id;
  const bar = id.indexOf("|", NS_PREFIX.length);
  return bar < 0 ? id : id.slice(bar + 1);
}
