import { formatOffset, SluiceError, type StreamStatus } from "@sluice/protocol";
import { RECORD_COST_BYTES } from "../core/budget.js";
import type { Clock } from "../core/clock.js";
import { realClock } from "../core/clock.js";
import {
  type AppendOptions,
  type AppendResult,
  type CreateStream,
  checkAppend,
  DEFAULT_STORE_LIMITS,
  type ListOptions,
  type ReadResult,
  type RecordEncoding,
  type RecordInput,
  type Store,
  type StoredRecord,
  type StoreLimits,
  type StoreNotice,
  type StreamInfo,
  type StreamPatch,
} from "./store.js";

interface MemStream {
  info: StreamInfo;
  /** The records of a running stream, one object each (they are what live readers share). */
  records: StoredRecord[];
  /** An ended stream's records, packed (see pack); `records` is then empty. */
  packed?: Packed;
  expiresAtMs?: number;
  listeners: Set<(n: StoreNotice) => void>;
  /** Its estimated heap cost, as counted in the store's total (see costOf). */
  cost: number;
}

/** A packed record's cost beyond its data: its end (4 bytes) and type index (1–2). */
const PACKED_RECORD_BYTES = 6;

/** Estimated heap held by a stream: its data, plus per record an object (running) or a few bytes (packed). */
function costOf(s: MemStream): number {
  return s.info.bytes + s.info.length * (s.packed ? PACKED_RECORD_BYTES : RECORD_COST_BYTES);
}

/**
 * An ended stream's records in a handful of objects instead of three per record: every data
 * string joined into one flat string, where each ends, and the types as small indices into a
 * table. A node that keeps hours of history holds millions of records; as objects, every major
 * GC must visit each of them, and the cost of that grows with the history (seen in the bench:
 * CPU per delivered event rising as finished streams piled up). Packed, history costs the GC
 * next to nothing; a read of an ended stream rebuilds the page it returns.
 */
interface Packed {
  data: string;
  /** ends[i] = end of record i+1's data in `data` (start = ends[i-1], or 0). */
  ends: Uint32Array;
  types: (string | undefined)[];
  /** typeIdx[i] indexes `types` for record i+1 (absent: `types` holds one type per record). */
  typeIdx: Uint8Array | Uint16Array | undefined;
  encodings?: (RecordEncoding | undefined)[];
}

/** Streams with more data than this (characters) are not packed (V8 strings top out near 2^29). */
const PACK_MAX_CHARS = 256 * 1024 * 1024;

function pack(records: StoredRecord[]): Packed {
  const n = records.length;
  const ends = new Uint32Array(n);
  const parts: string[] = new Array(n);
  const table = new Map<string | undefined, number>();
  const types: (string | undefined)[] = [];
  const typeIdx = new Uint16Array(n);
  let encodings: (RecordEncoding | undefined)[] | undefined;
  let end = 0;
  for (let i = 0; i < n; i++) {
    const r = records[i] as StoredRecord;
    parts[i] = r.data;
    end += r.data.length;
    ends[i] = end;
    let t = table.get(r.type);
    if (t === undefined) {
      t = types.length;
      types.push(r.type);
      table.set(r.type, t);
    }
    typeIdx[i] = t;
    if (r.encoding !== undefined) {
      encodings ??= new Array(n).fill(undefined);
      encodings[i] = r.encoding;
    }
  }
  const packed: Packed = { data: parts.join(""), ends, types, typeIdx };
  if (types.length <= 256) packed.typeIdx = Uint8Array.from(typeIdx);
  else if (types.length > 65_536) {
    // Too many distinct types for 16-bit indices: keep each record's type as it is.
    packed.types = records.map((r) => r.type);
    packed.typeIdx = undefined;
  }
  if (encodings) packed.encodings = encodings;
  return packed;
}

/** Records seq from+1 … from+count of a packed stream, as objects. */
function unpack(p: Packed, from: number, count: number): StoredRecord[] {
  const out: StoredRecord[] = new Array(count);
  for (let k = 0; k < count; k++) {
    const i = from + k;
    const start = i === 0 ? 0 : (p.ends[i - 1] as number);
    const seq = i + 1;
    const rec: StoredRecord = { seq, offset: formatOffset(seq), data: p.data.slice(start, p.ends[i]) };
    const type = p.typeIdx ? p.types[p.typeIdx[i] as number] : p.types[i];
    if (type !== undefined) rec.type = type;
    const enc = p.encodings?.[i];
    if (enc !== undefined) rec.encoding = enc;
    out[k] = rec;
  }
  return out;
}

export interface MemoryStoreOptions {
  limits?: Partial<StoreLimits>;
  /** Most streams held at once; when full, the oldest ended stream is evicted, and if none has ended, create fails. */
  maxStreams?: number;
  clock?: Clock;
  /** How often expired streams are swept (ms); 0 disables the timer (call sweep()). */
  sweepIntervalMs?: number;
  /**
   * Most bytes (estimated heap) all streams may hold together (`limits.memory_store_bytes`): past
   * it the oldest ended streams are evicted, and when only running ones are left, create and
   * append fail with `capacity_exceeded`. Unbounded when absent.
   */
  maxBytes?: number;
}

/** The default store: everything in this process's memory, bounded per stream and in stream count. */
export class MemoryStore implements Store {
  readonly name = "memory";
  private readonly streams = new Map<string, MemStream>();
  /** Chat key → stream id (insertion order = oldest first; bounded by maxStreams). */
  private readonly chats = new Map<string, string>();
  private readonly limits: StoreLimits;
  private readonly maxStreams: number;
  private readonly maxBytes: number;
  /** Sum of every stream's cost. */
  private heldBytes = 0;
  private readonly clock: Clock;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(opts: MemoryStoreOptions = {}) {
    this.limits = { ...DEFAULT_STORE_LIMITS, ...opts.limits };
    this.maxStreams = opts.maxStreams ?? 100_000;
    this.maxBytes = opts.maxBytes ?? Number.POSITIVE_INFINITY;
    this.clock = opts.clock ?? realClock;
    const every = opts.sweepIntervalMs ?? 60_000;
    if (every > 0) {
      this.timer = setInterval(() => void this.sweep(), every);
      this.timer.unref();
    }
  }

  async create(init: CreateStream): Promise<StreamInfo> {
    const old = this.streams.get(init.id);
    if (old && this.expired(old)) this.remove(init.id, old);
    else if (old) throw new SluiceError("stream_exists", `stream ${init.id} already exists`);
    if (this.streams.size >= this.maxStreams) this.evictOne();
    this.makeRoom(0);
    const info: StreamInfo = {
      id: init.id,
      kind: init.kind,
      content_type: init.content_type,
      status: "running",
      metadata: { ...(init.metadata ?? {}) },
      created_at: new Date(this.clock.now()).toISOString(),
      length: 0,
      next_offset: formatOffset(0),
      bytes: 0,
    };
    if (init.tenant !== undefined) info.tenant = init.tenant;
    if (init.model !== undefined) info.model = init.model;
    if (init.ttl_s !== undefined) info.metadata.ttl_s = init.ttl_s;
    this.streams.set(init.id, { info, records: [], listeners: new Set(), cost: 0 });
    return { ...info, metadata: { ...info.metadata } };
  }

  private evictOne(): void {
    // Map iteration order is insertion order: the first ended stream is the oldest.
    for (const [id, s] of this.streams) {
      if (s.info.status !== "running") {
        this.remove(id, s);
        return;
      }
    }
    throw new SluiceError(
      "capacity_exceeded",
      `the memory store holds its maximum of ${this.maxStreams} running streams`,
    );
  }

  /**
   * Evicts the oldest ended streams until `bytes` more fit under maxBytes; throws
   * capacity_exceeded when they cannot (everything left is running).
   */
  private makeRoom(bytes: number): void {
    if (this.heldBytes + bytes <= this.maxBytes) return;
    for (const [id, s] of this.streams) {
      if (s.info.status === "running") continue;
      this.remove(id, s);
      if (this.heldBytes + bytes <= this.maxBytes) return;
    }
    throw new SluiceError(
      "capacity_exceeded",
      `the memory store holds its maximum of ${this.maxBytes} bytes (limits.memory_store_bytes) in running streams`,
      { retry_after_s: 1 },
    );
  }

  private get(id: string): MemStream {
    const s = this.streams.get(id);
    if (!s || this.expired(s)) throw new SluiceError("stream_not_found", `no stream ${id}`);
    return s;
  }

  private expired(s: MemStream): boolean {
    return s.expiresAtMs !== undefined && s.expiresAtMs <= this.clock.now();
  }

  async append(id: string, inputs: RecordInput[], opts: AppendOptions = {}): Promise<AppendResult> {
    const s = this.get(id);
    const info = s.info;
    const bytes = checkAppend(id, info, inputs, opts, this.limits);
    // A closing append of one record always fits (every stream can end with its terminal event).
    if (inputs.length > 0 && !(opts.close !== undefined && inputs.length === 1))
      this.makeRoom(bytes + inputs.length * RECORD_COST_BYTES);
    const added: StoredRecord[] = new Array(inputs.length);
    for (let i = 0; i < inputs.length; i++) {
      const input = inputs[i] as RecordInput;
      const seq = info.length + 1;
      const rec: StoredRecord = { seq, offset: formatOffset(seq), data: input.data };
      if (input.type !== undefined) rec.type = input.type;
      if (input.encoding !== undefined) rec.encoding = input.encoding;
      s.records.push(rec);
      added[i] = rec;
      info.length = seq;
    }
    info.bytes += bytes;
    if (added.length > 0) info.next_offset = (added[added.length - 1] as StoredRecord).offset;
    if (opts.metadata) Object.assign(info.metadata, opts.metadata);
    if (opts.close) {
      info.status = opts.close;
      const now = this.clock.now();
      info.ended_at = new Date(now).toISOString();
      const ttl = typeof info.metadata.ttl_s === "number" ? info.metadata.ttl_s : this.limits.defaultTtlS;
      s.expiresAtMs = now + ttl * 1000;
      info.expires_at = new Date(s.expiresAtMs).toISOString();
    }
    this.notify(s, { records: added, status: info.status });
    // (A stream past PACK_MAX_CHARS stays as objects: one string that long is near V8's limit.)
    if (opts.close && s.records.length > 0 && info.bytes <= PACK_MAX_CHARS) {
      s.packed = pack(s.records);
      s.records = [];
    }
    const cost = costOf(s);
    this.heldBytes += cost - s.cost;
    s.cost = cost;
    return { next_offset: info.next_offset, length: info.length, status: info.status };
  }

  private notify(s: MemStream, notice: StoreNotice): void {
    for (const l of s.listeners) l(notice);
  }

  async read(id: string, afterSeq: number, limit: number): Promise<ReadResult> {
    const s = this.get(id);
    if (afterSeq > s.info.length) {
      throw new SluiceError(
        "offset_out_of_range",
        `offset ${formatOffset(afterSeq)} is past the end of stream ${id}`,
      );
    }
    const want = Math.max(0, limit);
    const records = s.packed
      ? unpack(s.packed, afterSeq, Math.max(0, Math.min(want, s.info.length - afterSeq)))
      : s.records.slice(afterSeq, afterSeq + want);
    const last = records.length > 0 ? (records[records.length - 1] as StoredRecord).seq : afterSeq;
    return {
      records,
      next_offset: formatOffset(last),
      up_to_date: last >= s.info.length,
      status: s.info.status,
    };
  }

  async info(id: string): Promise<StreamInfo | undefined> {
    const s = this.streams.get(id);
    if (!s || this.expired(s)) return undefined;
    return { ...s.info, metadata: { ...s.info.metadata } };
  }

  async update(id: string, patch: StreamPatch): Promise<StreamInfo | undefined> {
    const s = this.streams.get(id);
    if (!s || this.expired(s)) return undefined;
    if (patch.metadata) Object.assign(s.info.metadata, patch.metadata);
    if (patch.expires_at === null) {
      delete s.expiresAtMs;
      delete s.info.expires_at;
    } else if (patch.expires_at !== undefined) {
      const at = Date.parse(patch.expires_at);
      if (Number.isNaN(at)) throw new SluiceError("invalid_request", `bad expiry ${patch.expires_at}`);
      s.expiresAtMs = at;
      s.info.expires_at = new Date(at).toISOString();
    }
    return { ...s.info, metadata: { ...s.info.metadata } };
  }

  async delete(id: string): Promise<boolean> {
    const s = this.streams.get(id);
    if (!s) return false;
    this.remove(id, s);
    return true;
  }

  private remove(id: string, s: MemStream): void {
    if (this.streams.get(id) === s) this.heldBytes -= s.cost;
    this.streams.delete(id);
    this.notify(s, { records: [], status: s.info.status, deleted: true });
    s.listeners.clear();
  }

  async list(opts: ListOptions): Promise<StreamInfo[]> {
    const out: StreamInfo[] = [];
    // Newest first.
    const all = [...this.streams.values()];
    for (let i = all.length - 1; i >= 0 && out.length < opts.limit; i--) {
      const s = all[i] as MemStream;
      if (this.expired(s)) continue;
      if (opts.tenant !== undefined && s.info.tenant !== opts.tenant) continue;
      if (opts.status !== undefined && s.info.status !== opts.status) continue;
      out.push({ ...s.info, metadata: { ...s.info.metadata } });
    }
    return out;
  }

  async setChat(key: string, streamId: string): Promise<void> {
    this.chats.delete(key);
    this.chats.set(key, streamId);
    // Entries of streams that are gone are dropped on sight; past the bound the oldest go.
    while (this.chats.size > this.maxStreams) {
      const oldest = this.chats.keys().next().value as string;
      this.chats.delete(oldest);
    }
  }

  async getChat(key: string): Promise<string | undefined> {
    const id = this.chats.get(key);
    if (id === undefined) return undefined;
    const s = this.streams.get(id);
    if (!s || this.expired(s)) {
      this.chats.delete(key);
      return undefined;
    }
    return id;
  }

  subscribe(id: string, listener: (notice: StoreNotice) => void): () => void {
    const s = this.streams.get(id);
    if (!s) return () => {};
    s.listeners.add(listener);
    return () => s.listeners.delete(listener);
  }

  async sweep(): Promise<number> {
    let n = 0;
    for (const [id, s] of this.streams) {
      if (this.expired(s)) {
        this.remove(id, s);
        n++;
      }
    }
    return n;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
  }

  /** Estimated bytes all streams hold (see maxBytes). */
  get bytes(): number {
    return this.heldBytes;
  }

  /** Current stream count (for metrics/tests). */
  get size(): number {
    return this.streams.size;
  }
}

export type { StreamStatus };
