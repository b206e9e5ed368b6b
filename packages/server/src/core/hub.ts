import { formatOffset, SluiceError, type StreamStatus } from "@sluice/protocol";
import { type Codec, lite, type StreamInfoLite } from "../formats/codec.js";
import type { Store, StoredRecord, StoreNotice } from "../stores/store.js";

/**
 * The transport side of a reader: where encoded bytes go. Transports (SSE, NDJSON, …)
 * implement it over a socket.
 */
export interface Sink {
  /** Encoded records; `mark` says where the reader now stands (transports that frame batches use it). */
  write(chunk: string, mark: WriteMark): void;
  /** Optional: called each time the reader has delivered everything and waits for more. */
  idle?(seq: number): void;
  /** Bytes accepted but not yet flushed to the kernel. */
  readonly buffered: number;
  /** Calls cb once when the buffer has drained. */
  onDrain(cb: () => void): void;
  /** Ends the response (the stream ended, or it was deleted). */
  end(): void;
  readonly closed: boolean;
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

interface Entry {
  rec: StoredRecord;
  /** Encoded bytes per codec index, filled on first use and shared by every reader. */
  enc: (string | undefined)[];
}

export interface HubOptions {
  /** Records kept in memory per live stream for readers that are slightly behind. */
  windowSize?: number;
  /** A reader whose socket holds more than this many unflushed bytes waits for drain. */
  highWaterBytes?: number;
  /** Records per store read when catching up. */
  catchUpPage?: number;
}

/**
 * Live fan-out. All readers of a stream on this node share one Tail: one store
 * subscription, one window of recent records, one encoding per record per codec.
 * A reader is a cursor (its last delivered seq): live readers are written synchronously
 * when a notice arrives; readers behind the window catch up from the store; a reader
 * whose socket is full waits for drain and then catches up, so memory per reader is
 * bounded by the high-water mark no matter how slow it is.
 */
export class Hub {
  private readonly tails = new Map<string, Tail>();
  /**
   * Plain counters, read by metrics at scrape time (no cost on the hot path beyond an add):
   * characters written to readers, readers paused on a full socket, slow readers cut.
   */
  readonly counters = { charsOut: 0, stalls: 0, cuts: 0 };
  readonly windowSize: number;
  readonly highWaterBytes: number;
  readonly catchUpPage: number;

  constructor(
    readonly store: Store,
    opts: HubOptions = {},
  ) {
    this.windowSize = opts.windowSize ?? 1024;
    this.highWaterBytes = opts.highWaterBytes ?? 256 * 1024;
    this.catchUpPage = opts.catchUpPage ?? 512;
  }

  /**
   * Attaches a reader to stream `id` after `afterSeq` ("now" = only new records).
   * Resolves once the reader is registered (delivery then proceeds on its own);
   * rejects with stream_not_found / offset_out_of_range before anything is written.
   */
  async attach(id: string, after: number | "now", codec: Codec, sink: Sink): Promise<Reader> {
    const tail = await this.tail(id);
    try {
      const seq = after === "now" ? tail.lastSeq : after;
      if (seq > tail.lastSeq) {
        throw new SluiceError(
          "offset_out_of_range",
          `offset ${formatOffset(seq)} is past the end of stream ${id}`,
        );
      }
      const reader = new Reader(this, tail, codec, sink, seq);
      tail.readers.add(reader);
      reader.wake();
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
    if (tail.readers.size > 0) return;
    if (this.tails.get(tail.id) === tail) this.tails.delete(tail.id);
    tail.unsubscribe();
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
}

class Tail {
  ready!: Promise<Tail>;
  lastSeq = 0;
  status: StreamStatus = "running";
  deleted = false;
  info!: StreamInfoLite;
  readonly readers = new Set<Reader>();
  /** Contiguous recent records: window[i].rec.seq === windowStart + i. */
  private window: Entry[] = [];
  private windowStart = 1;
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
        }
        for (const rec of recs) this.window.push({ rec, enc: [] });
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
  }

  /** Encoded bytes of the window records after `seq`, joined; undefined when seq is before the window. */
  takeFromWindow(seq: number, codec: Codec): { chunk: string; last: number } | undefined {
    if (seq + 1 < this.windowStart) return undefined;
    let chunk = "";
    const from = seq + 1 - this.windowStart;
    if (codec.needsPrev && from === 0 && this.windowStart > 1) {
      // The record before the window is not in memory: let the store supply it, unless cached.
      const first = this.window[0];
      if (first && first.enc[codec.index] === undefined) return undefined;
    }
    for (let i = from; i < this.window.length; i++) {
      const e = this.window[i] as Entry;
      let bytes = e.enc[codec.index];
      if (bytes === undefined) {
        bytes = codec.encode(e.rec, this.info, i > 0 ? (this.window[i - 1] as Entry).rec : undefined);
        e.enc[codec.index] = bytes;
      }
      chunk += bytes;
    }
    return { chunk, last: this.windowStart + this.window.length - 1 };
  }

  get ended(): boolean {
    return this.deleted || this.status !== "running";
  }
}

type ReaderState = "idle" | "pumping" | "blocked" | "done";

export class Reader {
  private state: ReaderState = "idle";

  constructor(
    private readonly hub: Hub,
    private readonly tail: Tail,
    private readonly codec: Codec,
    private readonly sink: Sink,
    /** Seq of the last record delivered. */
    public seq: number,
  ) {}

  get offset(): string {
    return formatOffset(this.seq);
  }

  /** Something may be available: deliver it unless already delivering or waiting for drain. */
  wake(): void {
    if (this.state !== "idle") return;
    this.state = "pumping";
    this.pump().catch(() => this.finish());
  }

  isDone(): boolean {
    return this.state === "done";
  }

  /** Detaches (the client went away). */
  detach(): void {
    if (this.state === "done") return;
    this.state = "done";
    this.tail.readers.delete(this);
    this.hub.release(this.tail);
  }

  private finish(): void {
    if (this.state === "done") return;
    this.detach();
    if (!this.sink.closed) this.sink.end();
  }

  private mark(): WriteMark {
    const upToDate = this.seq >= this.tail.lastSeq;
    return { last: this.seq, upToDate, ended: upToDate && this.tail.status !== "running" };
  }

  private async pump(): Promise<void> {
    const tail = this.tail;
    for (;;) {
      if (this.state === "done") return;
      if (this.sink.closed) {
        this.detach();
        return;
      }
      if (tail.deleted) {
        this.finish();
        return;
      }
      if (this.seq >= tail.lastSeq) {
        if (tail.ended) {
          this.finish();
        } else {
          this.state = "idle";
          this.sink.idle?.(this.seq);
        }
        return;
      }
      if (this.sink.buffered > this.hub.highWaterBytes) {
        this.state = "blocked";
        this.hub.counters.stalls++;
        this.sink.onDrain(() => {
          if (this.state !== "blocked") return;
          this.state = "idle";
          this.wake();
        });
        return;
      }
      const fromWindow = tail.takeFromWindow(this.seq, this.codec);
      if (fromWindow) {
        this.seq = fromWindow.last;
        if (fromWindow.chunk.length > 0) {
          this.sink.write(fromWindow.chunk, this.mark());
          this.hub.counters.charsOut += fromWindow.chunk.length;
        }
        continue;
      }
      // Behind the window: catch up from the store, one page at a time.
      // A codec that needs the previous record reads one more, from just before the cursor.
      const withPrev = this.codec.needsPrev === true && this.seq > 0;
      const page = await this.hub.store.read(
        tail.id,
        withPrev ? this.seq - 1 : this.seq,
        this.hub.catchUpPage + (withPrev ? 1 : 0),
      );
      if (this.isDone()) return;
      let prev: StoredRecord | undefined;
      if (withPrev && page.records[0]?.seq === this.seq) prev = page.records.shift();
      if (page.records.length === 0) {
        // The store has nothing newer than we thought: trust it.
        this.seq = Math.max(this.seq, Number(page.next_offset));
        if (this.seq < tail.lastSeq) tail.lastSeq = this.seq;
        continue;
      }
      let chunk = "";
      for (const rec of page.records) {
        chunk += this.codec.encode(rec, tail.info, prev);
        prev = rec;
      }
      this.seq = (page.records[page.records.length - 1] as StoredRecord).seq;
      if (chunk.length > 0 && !this.sink.closed) {
        this.sink.write(chunk, this.mark());
        this.hub.counters.charsOut += chunk.length;
      }
    }
  }
}
