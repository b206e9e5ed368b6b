import { formatOffset, isSluiceError, SluiceError, type StreamStatus } from "@sluice/protocol";
import { type Codec, lite, type StreamInfoLite } from "../formats/codec.js";
import type { Store, StoredRecord, StoreNotice } from "../stores/store.js";
import { COMPACT_MAX_CHARS, Folder } from "./compact.js";
import { FlowScheduler, type Flushable } from "./flow.js";

/**
 * The transport side of a reader: where encoded bytes go. Transports (SSE, NDJSON,
 * WebSocket, gRPC) implement it over a connection.
 */
export interface Sink {
  /**
   * One batch of encoded records, joined (byte-stream transports); `mark` says where the
   * reader now stands (transports that frame batches, like Durable Streams, use it).
   */
  write(chunk: string, mark: WriteMark, shared?: SharedChunk): void;
  /** Optional: called each time the reader has delivered everything and waits for more. */
  idle?(seq: number): void;
  /**
   * Message transports (WebSocket, gRPC) take one frame per record instead; when present,
   * readers call it rather than `write`.
   */
  writeFrames?(frames: string[], shared?: SharedChunk): void;
  /** Bytes accepted but not yet flushed to the kernel. */
  readonly buffered: number;
  /** Calls cb once when the buffer has drained (or the connection closed). */
  onDrain(cb: () => void): void;
  /** Ends this reader's output (the stream ended, or it was deleted). */
  end(): void;
  readonly closed: boolean;
  /**
   * The reader fell too far behind and is being disconnected: say where it got to (the
   * offset of the last record written to it) and close.
   */
  cut(offset: string, message: string): void;
  /** The reader's own flush cadence in ms (it asked for one); undefined = the node's. */
  readonly flushMs?: number | undefined;
  /**
   * Set when several readers share one connection (a WebSocket): the connection is then the
   * unit that is flushed, so all its readers' records go out together.
   */
  readonly group?: ReaderGroup | undefined;
}

/**
 * One batch as the hub hands it to sinks. Readers at the same place in a stream (fan-out)
 * get the same object, so a sink can keep the batch's wire bytes on it and every other
 * reader's sink reuses them: the bytes are produced once per batch per node, not per reader.
 */
export interface SharedChunk {
  /** HTTP/1.1 chunked framing of the chunk, as bytes (ResponseSink). */
  framed?: Buffer;
  /** The frames as WebSocket text messages, as bytes (the WebSocket sink). */
  wsFramed?: Buffer;
}

/** Where a reader stands after a write. */
export interface WriteMark {
  /** Seq of the last record in the chunk. */
  last: number;
  /** The chunk reaches the stream's current end. */
  upToDate: boolean;
  /** The stream has ended (closed) and the chunk reaches its end: nothing more will come. */
  ended: boolean;
}

/**
 * Readers sharing one connection; flushed as one (e.g. corked WebSocket writes). Nothing is
 * allocated per flush: the first pending reader has a slot of its own (the common case, one
 * reader pending per round), the rest a list made when first needed and reused.
 */
export class ReaderGroup implements Flushable {
  lastFlushAt = Number.NEGATIVE_INFINITY;
  flowState = 0;
  flushMs: number | undefined;
  private first: Reader | undefined;
  private rest: Reader[] | undefined;
  private restLength = 0;

  constructor(private readonly around: { before?: () => void; after?: () => void } = {}) {}

  /** Readers waiting for this group's flush. */
  get size(): number {
    return (this.first === undefined ? 0 : 1) + this.restLength;
  }

  /** @internal `r` has something to write (Reader.schedule; a reader is added at most once). */
  add(r: Reader): void {
    if (this.first === undefined) this.first = r;
    else {
      this.rest ??= [];
      this.rest[this.restLength++] = r;
    }
  }

  /** @internal `r` detached before the flush. */
  delete(r: Reader): void {
    if (this.first === r) {
      this.first = undefined;
      return;
    }
    const rest = this.rest;
    if (!rest) return;
    const i = rest.indexOf(r);
    if (i < 0 || i >= this.restLength) return;
    rest.splice(i, 1);
    this.restLength--;
  }

  flush(): void {
    const first = this.first;
    const n = this.restLength;
    // One reader writes once: nothing to gather (the common case).
    if (n === 0) {
      if (first === undefined) return;
      this.first = undefined;
      first.flush();
      return;
    }
    const rest = this.rest as Reader[];
    // Taken out before flushing: a reader may be scheduled again meanwhile (into a fresh list).
    this.first = undefined;
    this.rest = undefined;
    this.restLength = 0;
    this.around.before?.();
    try {
      first?.flush();
      for (let i = 0; i < n; i++) (rest[i] as Reader).flush();
    } finally {
      this.around.after?.();
    }
    rest.length = 0;
    this.rest ??= rest;
  }
}

interface Entry {
  rec: StoredRecord;
  /** Encoded bytes per codec index, filled on first use and shared by every reader. */
  enc: (string | undefined)[];
  /** Sum of record data lengths up to and including this record (a cheap byte measure). */
  cum: number;
}

export interface HubOptions {
  /** Records kept in memory per live stream for readers that are slightly behind. */
  windowSize?: number;
  /** A reader whose connection holds more than this many unflushed bytes waits for drain. */
  highWaterBytes?: number;
  /** Records per store read when catching up. */
  catchUpPage?: number;
  /** The coalescing scheduler (one per node). A default one (next-tick flushes) is made if absent. */
  flow?: FlowScheduler;
  /**
   * A reader waiting for drain while its stream grew by more than this many bytes is
   * disconnected (it resumes from its last offset). 0 disables.
   */
  slowReaderLagBytes?: number;
  /** A reader whose connection has not drained for this long is disconnected. 0 disables. */
  slowReaderMs?: number;
  /** Most readers attached to one stream on this node. */
  maxReadersPerStream?: number;
  /** Compact catch-up: most characters of delta in one folded event (core/compact.ts). */
  compactMaxChars?: number;
}

/** How a reader reads (Hub.attach). */
export interface AttachOptions {
  /** SSE events of the record after `after` the client already has (resumed at `<offset>.<k>`). */
  skipEvents?: number | undefined;
  /**
   * Compact catch-up (core/compact.ts): the records already in the log when the reader attaches
   * are delivered with runs of deltas folded; what arrives after (the live tail) is not.
   */
  compact?: boolean | undefined;
}

/**
 * Live fan-out. All readers of a stream on this node share one Tail: one store
 * subscription, one window of recent records, one encoding per record per codec.
 * A reader is a cursor (its last delivered seq). A notice marks its connection dirty in
 * the node's one FlowScheduler, which flushes every pending record of the connection in
 * one write at its next slot (coalescing). Readers behind the window catch up from the
 * store; a reader whose connection is full waits for drain (its next batch is then
 * larger), and one that stays stuck too long or falls too far behind is disconnected
 * with its last offset, so memory per reader is bounded no matter how slow it is.
 */
export class Hub {
  private readonly tails = new Map<string, Tail>();
  readonly windowSize: number;
  readonly highWaterBytes: number;
  readonly catchUpPage: number;
  readonly flow: FlowScheduler;
  private readonly ownFlow: boolean;
  readonly slowReaderLagBytes: number;
  readonly slowReaderMs: number;
  readonly maxReadersPerStream: number;
  readonly compactMaxChars: number;
  /** Readers waiting for drain, checked by one shared timer for the stall bound. */
  private readonly blocked = new Set<Reader>();
  private stallTimer: NodeJS.Timeout | undefined;
  /** Readers disconnected for being too slow (metrics/tests). */
  slowReaderCuts = 0;
  /**
   * Plain counters, read by metrics at scrape time (no cost on the hot path beyond an add):
   * characters written to readers, readers paused on a full socket, slow readers cut.
   */
  readonly counters = { charsOut: 0, stalls: 0, cuts: 0 };

  constructor(
    readonly store: Store,
    opts: HubOptions = {},
  ) {
    this.windowSize = opts.windowSize ?? 1024;
    this.highWaterBytes = opts.highWaterBytes ?? 64 * 1024;
    this.catchUpPage = opts.catchUpPage ?? 512;
    this.ownFlow = opts.flow === undefined;
    this.flow = opts.flow ?? new FlowScheduler({ adaptive: false });
    this.slowReaderLagBytes = opts.slowReaderLagBytes ?? 4 * 1024 * 1024;
    this.slowReaderMs = opts.slowReaderMs ?? 30_000;
    this.maxReadersPerStream = opts.maxReadersPerStream ?? 100_000;
    this.compactMaxChars = opts.compactMaxChars ?? COMPACT_MAX_CHARS;
  }

  /**
   * Attaches a reader to stream `id` after `afterSeq` ("now" = only new records).
   * Resolves once the reader is registered (delivery then proceeds on its own);
   * rejects with stream_not_found / offset_out_of_range / too_many_readers before
   * anything is written.
   */
  async attach(
    id: string,
    after: number | "now",
    codec: Codec,
    sink: Sink,
    opts: AttachOptions = {},
  ): Promise<Reader> {
    const tail = await this.tail(id);
    try {
      const seq = after === "now" ? tail.lastSeq : after;
      if (seq > tail.lastSeq) {
        throw new SluiceError(
          "offset_out_of_range",
          `offset ${formatOffset(seq)} is past the end of stream ${id}`,
        );
      }
      if (tail.readers.size >= this.maxReadersPerStream) {
        throw new SluiceError(
          "too_many_readers",
          `stream ${id} has its maximum of ${this.maxReadersPerStream} readers on this node`,
        );
      }
      const reader = new Reader(this, tail, codec, sink, seq);
      reader.skipEvents = opts.skipEvents ?? 0;
      // History is what the log holds now; what comes after is the live tail, never folded.
      if (opts.compact === true) reader.foldUntil = tail.lastSeq;
      tail.readers.add(reader);
      reader.kick();
      return reader;
    } finally {
      if (tail.readers.size === 0) this.release(tail);
    }
  }

  private async tail(id: string): Promise<Tail> {
    const existing = this.tails.get(id);
    if (existing) return existing.ready;
    const tail = new Tail(this, id);
    this.tails.set(id, tail);
    tail.ready = tail.init().catch((err) => {
      this.tails.delete(id);
      tail.unsubscribe();
      throw err;
    });
    return tail.ready;
  }

  /** @internal */
  release(tail: Tail): void {
    if (tail.readers.size > 0 || tail.waiters.size > 0) return;
    if (this.tails.get(tail.id) === tail) this.tails.delete(tail.id);
    tail.unsubscribe();
  }

  /**
   * Waits until stream `id` has a record after `afterSeq` or has ended, or until `signal`
   * (a long-poll deadline) fires. Resolves true when there is something to read.
   */
  async waitFor(id: string, afterSeq: number, signal: AbortSignal): Promise<boolean> {
    const tail = await this.tail(id);
    if (tail.lastSeq > afterSeq || tail.ended) {
      this.release(tail);
      return true;
    }
    return new Promise<boolean>((resolve) => {
      const waiter = {
        afterSeq,
        done: (v: boolean) => {
          tail.waiters.delete(waiter);
          signal.removeEventListener("abort", onAbort);
          this.release(tail);
          resolve(v);
        },
      };
      const onAbort = () => waiter.done(false);
      tail.waiters.add(waiter);
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** @internal a reader started waiting for drain. */
  blockedReader(r: Reader): void {
    this.blocked.add(r);
    if (!this.stallTimer && this.slowReaderMs > 0) {
      const every = Math.max(10, Math.min(1000, Math.floor(this.slowReaderMs / 4)));
      this.stallTimer = setInterval(() => this.checkStalls(), every);
      this.stallTimer.unref();
    }
  }

  /** @internal */
  unblockedReader(r: Reader): void {
    this.blocked.delete(r);
    if (this.blocked.size === 0 && this.stallTimer) {
      clearInterval(this.stallTimer);
      this.stallTimer = undefined;
    }
  }

  private checkStalls(): void {
    const now = performance.now();
    for (const r of this.blocked) {
      if (now - r.blockedAt > this.slowReaderMs) r.cut("stalled");
    }
  }

  /** Reader count of every stream with readers on this node. */
  forEachStream(cb: (id: string, readers: number) => void): void {
    for (const t of this.tails.values()) cb(t.id, t.readers.size);
  }

  /** Readers attached on this node (all streams, or one). */
  readerCount(id?: string): number {
    if (id !== undefined) return this.tails.get(id)?.readers.size ?? 0;
    let n = 0;
    for (const t of this.tails.values()) n += t.readers.size;
    return n;
  }

  stop(): void {
    if (this.stallTimer) clearInterval(this.stallTimer);
    this.stallTimer = undefined;
    if (this.ownFlow) this.flow.stop();
  }
}

interface Waiter {
  afterSeq: number;
  done(v: boolean): void;
}

class Tail {
  ready!: Promise<Tail>;
  lastSeq = 0;
  status: StreamStatus = "running";
  deleted = false;
  info!: StreamInfoLite;
  readonly readers = new Set<Reader>();
  /** Long-poll requests waiting for the next record. */
  readonly waiters = new Set<Waiter>();
  /** Sum of the data lengths of every record seen live (a running byte measure). */
  cumBytes = 0;
  /** Contiguous recent records: window[i].rec.seq === windowStart + i. */
  private window: Entry[] = [];
  private windowStart = 1;
  /** The last batch taken from the window, reused by readers asking for the same range. */
  private memo: Taken | undefined;
  private framesMemo: TakenFrames | undefined;
  private unsub: (() => void) | undefined;

  constructor(
    private readonly hub: Hub,
    readonly id: string,
  ) {}

  async init(): Promise<Tail> {
    const store = this.hub.store;
    const first = await store.info(this.id);
    if (!first) throw new SluiceError("stream_not_found", `no stream ${this.id}`);
    this.info = lite(first);
    this.unsub = store.subscribe(this.id, (n) => this.onNotice(n));
    // Re-read after subscribing so an append that slipped in between is not missed.
    const info = await store.info(this.id);
    if (!info) {
      this.deleted = true;
      return this;
    }
    if (info.length > this.lastSeq) this.lastSeq = info.length;
    if (info.status !== "running") this.status = info.status;
    if (this.window.length === 0) this.windowStart = this.lastSeq + 1;
    return this;
  }

  unsubscribe(): void {
    this.unsub?.();
    this.unsub = undefined;
  }

  private onNotice(n: StoreNotice): void {
    if (n.deleted) {
      this.deleted = true;
    } else {
      const recs = n.records;
      if (recs.length > 0) {
        const first = (recs[0] as StoredRecord).seq;
        if (first !== this.windowStart + this.window.length) {
          // Not contiguous with what we hold (first notice, or a gap): restart the window here.
          this.window = [];
          this.windowStart = first;
          this.memo = undefined;
          this.framesMemo = undefined;
        }
        let cum = this.cumBytes;
        for (const rec of recs) {
          cum += rec.data.length;
          this.window.push({ rec, enc: [], cum });
        }
        this.cumBytes = cum;
        const over = this.window.length - this.hub.windowSize;
        if (over > 0) {
          this.window.splice(0, over);
          this.windowStart += over;
        }
        const last = (recs[recs.length - 1] as StoredRecord).seq;
        if (last > this.lastSeq) this.lastSeq = last;
      }
      this.status = n.status;
    }
    for (const r of this.readers) r.wake();
    if (this.waiters.size > 0) {
      for (const w of [...this.waiters]) {
        if (this.lastSeq > w.afterSeq || this.ended) w.done(true);
      }
    }
  }

  /** The record with this seq if the window still holds it. */
  recordAt(seq: number): StoredRecord | undefined {
    return this.window[seq - this.windowStart]?.rec;
  }

  /** True when the window holds the record after `seq`, so takeFromWindow can serve it. */
  canServe(seq: number, codec?: Codec): boolean {
    const from = seq + 1 - this.windowStart;
    if (from < 0 || from >= this.window.length) return false;
    if (codec?.needsPrev && from === 0 && this.windowStart > 1) {
      // A codec that needs the record before this one, which is no longer in memory: the
      // store supplies it, unless this record's bytes are already cached.
      return (this.window[0] as Entry).enc[codec.index] !== undefined;
    }
    return true;
  }

  /** The bytes of window entry i for a codec, encoded on first use and shared. */
  private encoded(i: number, codec: Codec): string {
    const e = this.window[i] as Entry;
    let bytes = e.enc[codec.index];
    if (bytes === undefined) {
      bytes = codec.encode(e.rec, this.info, i > 0 ? (this.window[i - 1] as Entry).rec : undefined);
      e.enc[codec.index] = bytes;
    }
    return bytes;
  }

  /**
   * Encoded bytes of the window records after `seq`, joined, up to about `maxBytes`;
   * undefined when seq is before the window.
   */
  takeFromWindow(seq: number, codec: Codec, maxBytes: number): Taken | undefined {
    if (seq + 1 < this.windowStart) return undefined;
    const end = this.windowStart + this.window.length;
    const m = this.memo;
    // Readers level with each other (fan-out) ask for the same range: hand them the same batch.
    if (m !== undefined && m.from === seq && m.end === end && m.codec === codec && m.maxBytes === maxBytes)
      return m;
    let chunk = "";
    let i = seq + 1 - this.windowStart;
    for (; i < this.window.length; i++) {
      chunk += this.encoded(i, codec);
      if (chunk.length >= maxBytes) {
        i++;
        break;
      }
    }
    const taken: Taken = { chunk, last: this.windowStart + i - 1, from: seq, end, codec, maxBytes };
    this.memo = taken;
    return taken;
  }

  /**
   * Like takeFromWindow, one frame per record (message transports). Readers level with each
   * other get the same object, so a sink can keep the batch's wire bytes on it.
   */
  framesFromWindow(seq: number, codec: Codec, maxBytes: number): TakenFrames | undefined {
    if (seq + 1 < this.windowStart) return undefined;
    const end = this.windowStart + this.window.length;
    const m = this.framesMemo;
    if (m !== undefined && m.from === seq && m.end === end && m.codec === codec && m.maxBytes === maxBytes)
      return m;
    const frames: string[] = [];
    let size = 0;
    let i = seq + 1 - this.windowStart;
    for (; i < this.window.length; i++) {
      const bytes = this.encoded(i, codec);
      if (bytes.length > 0) frames.push(bytes);
      size += bytes.length;
      if (size >= maxBytes) {
        i++;
        break;
      }
    }
    const taken: TakenFrames = {
      frames,
      chars: size,
      last: this.windowStart + i - 1,
      from: seq,
      end,
      codec,
      maxBytes,
    };
    this.framesMemo = taken;
    return taken;
  }

  get ended(): boolean {
    return this.deleted || this.status !== "running";
  }
}

/** Frames taken from a tail's window (see framesFromWindow), shared by readers at the same place. */
interface TakenFrames extends SharedChunk {
  frames: string[];
  /** Their total length (characters). */
  chars: number;
  last: number;
  from: number;
  end: number;
  codec: Codec;
  maxBytes: number;
}

/** A batch taken from a tail's window (see takeFromWindow), shared by readers at the same place. */
interface Taken extends SharedChunk {
  chunk: string;
  /** Seq of the last record in the chunk. */
  last: number;
  from: number;
  end: number;
  codec: Codec;
  maxBytes: number;
}

type ReaderState = "idle" | "scheduled" | "catching" | "blocked" | "done";

/**
 * A cursor on one stream writing to one Sink. For a plain connection the reader is itself
 * what the FlowScheduler flushes; readers sharing a connection are flushed via its group.
 */
export class Reader implements Flushable {
  private state: ReaderState = "idle";
  /** Set when the stream vanished under this reader and it was told so (stream_lost). */
  private lostStream = false;
  /** SSE events at the start of the first record written that the client already has: dropped once. */
  skipEvents = 0;
  /** Compact catch-up: records up to this seq (the log's end at attach) are folded; 0 = none. */
  foldUntil = 0;
  lastFlushAt = Number.NEGATIVE_INFINITY;
  flowState = 0;
  /** The connection group this reader was last scheduled in (so a detach takes it out). */
  private inGroup: ReaderGroup | undefined;
  /** Tail.cumBytes when this reader was last level with the tail (a pending-bytes measure). */
  private sentCum: number;
  /** @internal when the reader started waiting for drain (performance.now()). */
  blockedAt = 0;
  private blockedCum = 0;

  constructor(
    private readonly hub: Hub,
    private readonly tail: Tail,
    private readonly codec: Codec,
    private readonly sink: Sink,
    /** Seq of the last record delivered. */
    public seq: number,
  ) {
    this.sentCum = tail.cumBytes;
  }

  get offset(): string {
    return formatOffset(this.seq);
  }

  get flushMs(): number | undefined {
    return this.sink.flushMs;
  }

  get streamId(): string {
    return this.tail.id;
  }

  /** The stream's status as this node last heard it (`failed` once the reader learnt it was lost). */
  get status(): StreamStatus {
    return this.lostStream ? "failed" : this.tail.status;
  }

  /** First delivery after attach: catch-up starts on the next tick, not at the next slot. */
  kick(): void {
    if (this.state !== "idle") return;
    if (this.seq < this.tail.lastSeq || this.tail.ended) this.schedule(true);
    else this.sink.idle?.(this.seq); // already at the end: say so (Durable Streams answers "up to date")
  }

  /** Something may be available: schedule a flush unless one is pending or the reader waits for drain. */
  wake(): void {
    const state = this.state;
    if (state === "idle") {
      if (this.seq < this.tail.lastSeq || this.tail.ended) {
        this.schedule(this.tail.ended || this.tail.cumBytes - this.sentCum >= this.hub.flow.maxBatchBytes);
      }
    } else if (state === "blocked") {
      const lag = this.hub.slowReaderLagBytes;
      if (lag > 0 && this.tail.cumBytes - this.blockedCum > lag) this.cut("lagging");
    }
  }

  private schedule(urgent: boolean): void {
    this.state = "scheduled";
    const group = this.sink.group;
    if (group) {
      this.inGroup = group;
      group.add(this);
      this.hub.flow.mark(group, urgent);
    } else {
      this.hub.flow.mark(this, urgent);
    }
  }

  isDone(): boolean {
    return this.state === "done";
  }

  /** Detaches (the client went away). */
  detach(): void {
    if (this.state === "done") return;
    if (this.state === "blocked") this.hub.unblockedReader(this);
    this.state = "done";
    this.hub.flow.remove(this);
    if (this.inGroup) {
      this.inGroup.delete(this);
      this.inGroup = undefined;
    }
    this.tail.readers.delete(this);
    this.hub.release(this.tail);
  }

  private finish(): void {
    if (this.state === "done") return;
    this.detach();
    if (!this.sink.closed) this.sink.end();
  }

  /** Disconnects a reader that fell too far behind; the sink tells it where to resume. */
  cut(why: "stalled" | "lagging"): void {
    if (this.state === "done") return;
    this.hub.slowReaderCuts++;
    this.hub.counters.cuts++;
    this.detach();
    const message =
      why === "stalled"
        ? `the connection did not drain for ${this.hub.slowReaderMs} ms; resume from offset ${this.offset}`
        : `the reader fell more than ${this.hub.slowReaderLagBytes} bytes behind; resume from offset ${this.offset}`;
    if (!this.sink.closed) this.sink.cut(this.offset, message);
  }

  /** Writes everything pending (one write, or one per max_batch_bytes) — called by the scheduler. */
  flush(): void {
    if (this.state !== "scheduled") return;
    const tail = this.tail;
    const sink = this.sink;
    const max = this.hub.flow.maxBatchBytes;
    for (;;) {
      if (sink.closed) {
        this.detach();
        return;
      }
      // Gone from the store: what is still in memory is delivered, then the reader ends.
      if (tail.deleted && (this.seq >= tail.lastSeq || !tail.canServe(this.seq, this.codec))) {
        this.lost();
        return;
      }
      if (this.seq >= tail.lastSeq) {
        this.sentCum = tail.cumBytes;
        if (tail.ended) this.finish();
        else {
          this.state = "idle";
          sink.idle?.(this.seq);
        }
        return;
      }
      if (sink.buffered > this.hub.highWaterBytes) {
        this.block();
        return;
      }
      // Compact history is read from the store and folded there (catchUp), never from the window.
      if (this.seq < this.foldUntil || !tail.canServe(this.seq, this.codec)) {
        this.state = "catching";
        this.catchUp().catch((err: unknown) => this.catchUpFailed(err));
        return;
      }
      if (sink.writeFrames) {
        const w = tail.framesFromWindow(this.seq, this.codec, max) as TakenFrames;
        if (w.last <= this.seq) {
          this.catchUpNow();
          return;
        }
        this.seq = w.last;
        if (w.frames.length > 0) {
          sink.writeFrames(w.frames, w);
          this.hub.counters.charsOut += w.chars;
        }
      } else {
        const w = tail.takeFromWindow(this.seq, this.codec, max) as Taken;
        if (w.last <= this.seq) {
          this.catchUpNow();
          return;
        }
        this.seq = w.last;
        if (w.chunk.length > 0) {
          // A trimmed batch is this reader's own: it does not share the batch's wire bytes.
          const chunk = this.skipEvents > 0 ? this.trimmed(w.chunk) : w.chunk;
          sink.write(chunk, this.mark(), chunk === w.chunk ? w : undefined);
          this.hub.counters.charsOut += chunk.length;
        }
      }
    }
  }

  /** `chunk` without its first skipEvents SSE events (blocks ended by a blank line); once. */
  private trimmed(chunk: string): string {
    let at = 0;
    for (let k = 0; k < this.skipEvents && at < chunk.length; k++) {
      const end = chunk.indexOf("\n\n", at);
      at = end < 0 ? chunk.length : end + 2;
    }
    this.skipEvents = 0;
    return chunk.slice(at);
  }

  /** The window does not hold what the tail says exists: read it from the store. */
  private catchUpNow(): void {
    this.state = "catching";
    this.catchUp().catch((err: unknown) => this.catchUpFailed(err));
  }

  /** A store read failed: a stream that no longer exists is lost; anything else ends the reader (it resumes). */
  private catchUpFailed(err: unknown): void {
    if (isSluiceError(err) && err.code === "stream_not_found") this.lost();
    else this.finish();
  }

  /**
   * The stream vanished (deleted, or lost with its store) while this reader read it. A reader
   * that already delivered the stream's terminal event just ends; any other gets one terminal
   * `error` event, code `stream_lost`, in its own format (Durable Streams codecs carry the
   * application's records, not events: their readers just end), so it learns why.
   */
  private lost(): void {
    if (this.state === "done") return;
    const tail = this.tail;
    const delivered = tail.status !== "running" && this.seq >= tail.lastSeq;
    const sink = this.sink;
    if (!delivered && !sink.closed && !this.codec.key.startsWith("ds:")) {
      this.lostStream = true;
      const data = JSON.stringify({
        type: "error",
        code: "stream_lost",
        message: `the stream no longer exists (deleted, or lost with its store); nothing after offset ${this.offset} can be delivered`,
        retryable: false,
      });
      const seq = this.seq + 1;
      const rec: StoredRecord = { seq, offset: formatOffset(seq), type: "error", data };
      const bytes = this.codec.encode(rec, tail.info, tail.recordAt(this.seq));
      if (bytes.length > 0) {
        if (sink.writeFrames) sink.writeFrames([bytes]);
        else sink.write(bytes, { last: this.seq, upToDate: true, ended: true });
        this.hub.counters.charsOut += bytes.length;
      }
    }
    this.finish();
  }

  private mark(): WriteMark {
    const upToDate = this.seq >= this.tail.lastSeq;
    return { last: this.seq, upToDate, ended: upToDate && this.tail.status !== "running" };
  }

  private block(): void {
    this.state = "blocked";
    this.hub.counters.stalls++;
    this.blockedAt = performance.now();
    this.blockedCum = this.tail.cumBytes;
    this.hub.blockedReader(this);
    this.sink.onDrain(() => {
      if (this.state !== "blocked") return;
      this.hub.unblockedReader(this);
      this.state = "idle";
      // Everything that arrived meanwhile goes out as one larger batch.
      if (this.seq < this.tail.lastSeq || this.tail.ended || this.sink.closed) this.schedule(true);
    });
  }

  /**
   * Behind the window: read from the store a page at a time, then rejoin the live path. The one
   * place history is read, so compact catch-up folds here, once, for every door: records up to
   * `foldUntil` go through a Folder, which may hold a run across pages (`readSeq` is then ahead
   * of `seq`, the last record written); a run held when the reader must wait for drain is read
   * again on the next catch-up.
   */
  private async catchUp(): Promise<void> {
    const tail = this.tail;
    const sink = this.sink;
    const codec = this.codec;
    const folder = this.seq < this.foldUntil ? new Folder(this.hub.compactMaxChars) : undefined;
    let readSeq = this.seq;
    // The record before the next one written, for codecs that need it (read once, then kept).
    let prev: StoredRecord | undefined;
    let havePrev = codec.needsPrev !== true || this.seq === 0;
    while (this.state === "catching") {
      if (sink.closed) {
        this.detach();
        return;
      }
      const folding = readSeq < this.foldUntil;
      if (!folding && (tail.canServe(this.seq, codec) || this.seq >= tail.lastSeq)) {
        this.state = "scheduled";
        this.flush();
        return;
      }
      if (sink.buffered > this.hub.highWaterBytes) {
        this.block();
        return;
      }
      const withPrev = !havePrev && readSeq > 0;
      const page = await this.hub.store.read(
        tail.id,
        withPrev ? readSeq - 1 : readSeq,
        this.hub.catchUpPage + (withPrev ? 1 : 0),
      );
      if (this.state !== "catching") return;
      if (withPrev) {
        havePrev = true;
        if (page.records[0]?.seq === readSeq) prev = page.records.shift();
      }
      let out: StoredRecord[] = page.records;
      if (out.length === 0) {
        // The store has nothing newer than we thought: trust it (and fold no further).
        this.foldUntil = 0;
        if (folder) {
          const held: StoredRecord[] = [];
          folder.end(held);
          if (held.length > 0) prev = this.deliver(held, prev);
        }
        this.seq = Math.max(this.seq, Number(page.next_offset));
        readSeq = this.seq;
        if (this.seq < tail.lastSeq) tail.lastSeq = this.seq;
        continue;
      }
      readSeq = (out[out.length - 1] as StoredRecord).seq;
      if (folder && folding) {
        const folded: StoredRecord[] = [];
        for (const rec of out) {
          if (rec.seq <= this.foldUntil) folder.push(rec, folded);
          else {
            folder.end(folded);
            folded.push(rec);
          }
        }
        if (readSeq >= this.foldUntil) folder.end(folded);
        out = folded;
        if (out.length === 0) continue; // one run, still growing: read on
      }
      prev = this.deliver(out, prev);
    }
  }

  /** Writes records read from the store (in order, after `seq`); returns the last one. */
  private deliver(records: StoredRecord[], prev: StoredRecord | undefined): StoredRecord | undefined {
    const tail = this.tail;
    const sink = this.sink;
    this.seq = (records[records.length - 1] as StoredRecord).seq;
    if (sink.closed) return records[records.length - 1];
    if (sink.writeFrames) {
      const frames: string[] = [];
      for (const rec of records) {
        const f = this.codec.encode(rec, tail.info, prev);
        prev = rec;
        if (f.length > 0) {
          frames.push(f);
          this.hub.counters.charsOut += f.length;
        }
      }
      if (frames.length > 0) sink.writeFrames(frames);
    } else {
      let chunk = "";
      for (const rec of records) {
        chunk += this.codec.encode(rec, tail.info, prev);
        prev = rec;
      }
      if (chunk.length > 0 && this.skipEvents > 0) chunk = this.trimmed(chunk);
      if (chunk.length > 0) {
        sink.write(chunk, this.mark());
        this.hub.counters.charsOut += chunk.length;
      }
    }
    return prev;
  }
}
