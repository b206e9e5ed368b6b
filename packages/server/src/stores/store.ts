import { SluiceError, type StreamStatus } from "@sluice/protocol";

/** Content type of generation streams: each record's data is one Sluice event as JSON. */
export const EVENTS_CONTENT_TYPE = "application/vnd.sluice.events+json";

export type EndStatus = Exclude<StreamStatus, "running">;

/**
 * How a record's `data` string holds its bytes: absent = the bytes are UTF-8 text and `data` is
 * that text; "base64" = arbitrary bytes, `data` is their standard base64 (with padding). Stores
 * keep the field as given and return it unchanged; they never decode.
 */
export type RecordEncoding = "base64";

/** What a producer appends: bytes (as a string) and, for event streams, the event type. */
export interface RecordInput {
  type?: string;
  data: string;
  encoding?: RecordEncoding;
}

/** A record as stored: its sequence number (1-based) and its offset (the fixed-width form of seq). */
export interface StoredRecord {
  seq: number;
  offset: string;
  type?: string;
  data: string;
  encoding?: RecordEncoding;
  /**
   * Set only on a record folded by compact catch-up (core/compact.ts), never stored: the offset
   * of the first record folded into it (`offset` is the last one's).
   */
  first?: string;
}

export interface CreateStream {
  id: string;
  content_type: string;
  kind: "generation" | "log";
  tenant?: string;
  model?: string;
  metadata?: Record<string, unknown>;
  /** Seconds a stream is kept after it ends (the store's default when absent). */
  ttl_s?: number;
}

export interface StreamInfo {
  id: string;
  kind: "generation" | "log";
  content_type: string;
  status: StreamStatus;
  tenant?: string;
  model?: string;
  metadata: Record<string, unknown>;
  created_at: string;
  ended_at?: string;
  expires_at?: string;
  /** Number of records; also the sequence number of the last one. */
  length: number;
  /** Offset of the last record (ZERO_OFFSET when empty): reading after it returns only what comes next. */
  next_offset: string;
  bytes: number;
}

export interface ReadResult {
  records: StoredRecord[];
  /** Offset of the last record returned, or the position read from when none. */
  next_offset: string;
  /** True when the read reached the current end of the stream. */
  up_to_date: boolean;
  status: StreamStatus;
}

export interface AppendOptions {
  /** Ends the stream in the same step (atomically with the records). */
  close?: EndStatus;
  /** Metadata merged into the stream's metadata in the same step. */
  metadata?: Record<string, unknown>;
  /**
   * Compare-and-append: only if the stream holds exactly this many records, else nothing changes
   * and the append fails with `append_conflict`. Lets a caller that decided from a read (producer
   * dedup, sequence checks) append atomically across nodes.
   */
  if_length?: number;
}

/** A change to a stream that is not an append: allowed in any status (running or ended). */
export interface StreamPatch {
  /** Merged into the metadata at the top level (a key given replaces that key's value). */
  metadata?: Record<string, unknown>;
  /** New expiry (ISO 8601): the stream is gone once it passes. `null` = never expires. */
  expires_at?: string | null;
}

export interface AppendResult {
  /** Offset of the last record now in the stream. */
  next_offset: string;
  length: number;
  status: StreamStatus;
}

/** What subscribers of a stream hear after each append on this node. */
export interface StoreNotice {
  records: StoredRecord[];
  status: StreamStatus;
  deleted?: boolean;
}

export interface ListOptions {
  tenant?: string;
  status?: StreamStatus;
  limit: number;
}

/**
 * The one storage seam. Every implementation passes the same contract suite
 * (test/store-contract.ts). Errors are SluiceErrors: stream_not_found, stream_exists,
 * stream_closed, stream_too_large.
 */
export interface Store {
  readonly name: string;
  create(init: CreateStream): Promise<StreamInfo>;
  append(id: string, records: RecordInput[], opts?: AppendOptions): Promise<AppendResult>;
  /** Records with seq > afterSeq, at most `limit`. */
  read(id: string, afterSeq: number, limit: number): Promise<ReadResult>;
  info(id: string): Promise<StreamInfo | undefined>;
  /**
   * Changes metadata and/or expiry without appending, whatever the stream's status (an append
   * with `metadata` needs a running stream). Resolves to the new info, or undefined when there is
   * no such stream (or it expired). Does not notify subscribers.
   */
  update(id: string, patch: StreamPatch): Promise<StreamInfo | undefined>;
  delete(id: string): Promise<boolean>;
  list(opts: ListOptions): Promise<StreamInfo[]>;
  /** Live notices for one stream (after each append/close/delete). Returns the unsubscribe function. */
  subscribe(id: string, listener: (notice: StoreNotice) => void): () => void;
  /** Removes expired streams now (also done periodically by stores that need it). */
  sweep(): Promise<number>;
  /**
   * The AI SDK chat map: chat `key` (tenant and chat id, see http/ai-sdk.ts) now names the
   * stream `streamId` (replacing what it named). The entry is kept no longer than the stream's
   * retention (`ttl_s` seconds from now, the store's default when absent) and goes with the
   * stream when the stream is deleted or expires. Every node of a shared store sees it.
   */
  setChat(key: string, streamId: string, ttlS?: number): Promise<void>;
  /** The stream a chat last started (undefined when none, or when that stream is gone). */
  getChat(key: string): Promise<string | undefined>;
  /** Whether the store can serve requests now (false while Redis is unreachable); absent = always. */
  ready?(): boolean;
  close(): Promise<void>;
}

export interface StoreLimits {
  /** Most records one stream may hold. */
  maxRecordsPerStream: number;
  /** Most bytes (sum of record data lengths) one stream may hold. */
  maxBytesPerStream: number;
  /** Seconds an ended stream is kept. */
  defaultTtlS: number;
}

/** The stream-count bound every store enforces (`limits.max_streams`). */
export function capacityExceeded(store: string, maxStreams: number): SluiceError {
  return new SluiceError(
    "capacity_exceeded",
    `the ${store} store holds its maximum of ${maxStreams} running streams (limits.max_streams)`,
    { retry_after_s: 1 },
  );
}

export const DEFAULT_STORE_LIMITS: StoreLimits = {
  maxRecordsPerStream: 1_000_000,
  maxBytesPerStream: 64 * 1024 * 1024,
  defaultTtlS: 24 * 3600,
};

/**
 * The checks every store makes before an append, against the stream as it is now: open,
 * `if_length` matches, and within the per-stream bounds. A closing append of one record (the
 * terminal event) is always accepted, so a stream that hit its bound can still end with an
 * error event that says so. Returns the appended bytes (sum of data lengths).
 */
export function checkAppend(
  id: string,
  current: { status: string; length: number; bytes: number },
  inputs: RecordInput[],
  opts: AppendOptions,
  limits: StoreLimits,
): number {
  if (current.status !== "running")
    throw new SluiceError("stream_closed", `stream ${id} has ended (${current.status})`);
  if (opts.if_length !== undefined && opts.if_length !== current.length) {
    throw new SluiceError(
      "append_conflict",
      `stream ${id} holds ${current.length} records, not ${opts.if_length}`,
    );
  }
  let bytes = 0;
  for (const r of inputs) bytes += r.data.length;
  const closing = opts.close !== undefined && inputs.length <= 1;
  if (!closing && current.length + inputs.length > limits.maxRecordsPerStream) {
    throw new SluiceError(
      "stream_too_large",
      `stream ${id} would exceed ${limits.maxRecordsPerStream} records`,
    );
  }
  if (!closing && current.bytes + bytes > limits.maxBytesPerStream) {
    throw new SluiceError("stream_too_large", `stream ${id} would exceed ${limits.maxBytesPerStream} bytes`);
  }
  return bytes;
}

/**
 * A store's own failure (a driver exception, a Redis error reply) as `internal_error`: fixed text
 * that names only the store, with the exception as `cause` for the log. Its text never reaches a
 * client (it may name files, keys, hosts or quote a stack overflow).
 */
export function storeFailure(store: string, cause: unknown): SluiceError {
  const err = new SluiceError("internal_error", `the ${store} store failed`);
  err.cause = cause;
  return err;
}
