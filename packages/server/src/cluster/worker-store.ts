import { formatOffset, type StreamStatus } from "@sluice/protocol";
import type { Clock } from "../core/clock.js";
import { type CommitChange, SqliteStore } from "../stores/sqlite.js";
import type {
  AppendOptions,
  AppendResult,
  CreateStream,
  ListOptions,
  ReadResult,
  RecordInput,
  Store,
  StoredRecord,
  StoreLimits,
  StoreNotice,
  StreamInfo,
  StreamPatch,
} from "../stores/store.js";

/**
 * What one worker tells the others after a commit, per changed stream: `[id, length, status,
 * records]`, `length` = -1 when the stream was deleted; `records` are the records the commit
 * appended (`[type or "", data, encoding?]`, the last one's seq = length), so a worker that
 * follows the stream needs no read from the file (measured: ~18 µs per record read back one
 * stream at a time, ~3 µs per record carried over IPC).
 */
export type WireRecord = [string, string] | [string, string, string];
export type WireChange = [string, number, StreamStatus, WireRecord[]];

/** The one follower of a stream in this worker: delivers each record once, in order. */
class Follower {
  readonly listeners = new Set<(n: StoreNotice) => void>();
  gone = false;
  constructor(
    /** The seq of the last record delivered (the stream's length when the follower began). */
    public delivered: number,
    public status: StreamStatus,
  ) {}
  emit(n: StoreNotice): void {
    for (const l of [...this.listeners]) l(n);
  }
}

export interface WorkerStoreOptions {
  path: string;
  limits: Partial<StoreLimits>;
  clock: Clock;
  /** Sends this worker's committed changes to the other workers (through the primary). */
  publish: (changes: WireChange[]) => void;
  /**
   * Interest routing: tells the primary this worker begins (`on`; resolves once the primary
   * knows) or stops following a stream. With it, `publish` carries only the changes of streams
   * another worker follows (`setInterest`); without it, every change (tests of two stores).
   */
  follow?: (id: string, on: boolean) => Promise<void> | void;
  /** false for a scratch file (see SqliteStoreOptions.durable). */
  durable?: boolean;
  /** Expired streams are swept this often (ms; 0 = only when sweep() is called). */
  sweepIntervalMs?: number;
}

/**
 * The store of one worker of `sluice serve --workers N`: a SQLite file in WAL mode shared by
 * every worker (each has its own connection; writes are serialised by SQLite's write lock,
 * reads never wait). The notices of the appends this worker commits reach its own readers at
 * once, with their records, and go with their records to the workers that follow that
 * stream (interest routing: a worker tells the primary when it starts and stops following
 * one); a follower takes the records from the notice when they continue exactly where it
 * is, else reads what it has not delivered yet from the file. So, as
 * with the Redis store's followers, every reader gets every record once and in order,
 * whichever worker appended it, and a lost or late notice is repaired by the next one.
 */
export class WorkerStore implements Store {
  readonly name = "sqlite";
  readonly inner: SqliteStore;
  private readonly followers = new Map<string, Follower>();
  private readonly publish: (changes: WireChange[]) => void;
  private readonly follow: ((id: string, on: boolean) => Promise<void> | void) | undefined;
  /** Streams some other worker follows (only their changes are published); unused without `follow`. */
  private readonly wanted = new Set<string>();

  constructor(opts: WorkerStoreOptions) {
    this.publish = opts.publish;
    this.follow = opts.follow;
    this.inner = new SqliteStore({
      path: opts.path,
      limits: opts.limits,
      clock: opts.clock,
      shared: true,
      durable: opts.durable ?? true,
      ...(opts.sweepIntervalMs !== undefined ? { sweepIntervalMs: opts.sweepIntervalMs } : {}),
      onCommit: (changes) => this.committed(changes),
    });
  }

  private committed(changes: CommitChange[]): void {
    const wire: WireChange[] = [];
    const all = this.follow === undefined;
    for (let i = 0; i < changes.length; i++) {
      const c = changes[i] as CommitChange;
      const f = this.followers.get(c.id);
      if (f) this.advance(c.id, f, c.notice.deleted ? -1 : c.length, c.notice.status, c.notice.records);
      if (!all && !this.wanted.has(c.id)) continue;
      const recs = c.notice.records;
      const out: WireRecord[] = new Array(recs.length);
      for (let j = 0; j < recs.length; j++) {
        const r = recs[j] as StoredRecord;
        out[j] = r.encoding ? [r.type ?? "", r.data, r.encoding] : [r.type ?? "", r.data];
      }
      wire.push([c.id, c.notice.deleted ? -1 : c.length, c.notice.status, out]);
    }
    if (wire.length > 0) this.publish(wire);
  }

  /**
   * Another worker began or stopped following a stream (from the primary). On `on`, this
   * worker publishes the stream's head as it sees it now: a commit of this worker made before
   * it heard of the interest, and so not published, is then read from the file by the
   * follower instead of missing (its records, or its close, would otherwise wait for a next
   * commit that may never come).
   */
  setInterest(id: string, on: boolean): void {
    if (!on) {
      this.wanted.delete(id);
      return;
    }
    this.wanted.add(id);
    const head = this.inner.head(id);
    if (head) this.publish([[id, head.length, head.status, []]]);
  }

  /** The streams other workers follow, when this worker starts. */
  setInterests(ids: string[]): void {
    for (const id of ids) this.wanted.add(id);
  }

  /** Changes committed by another worker. */
  onRemote(changes: WireChange[]): void {
    for (const [id, length, status, wire] of changes) {
      const f = this.followers.get(id);
      if (!f) continue;
      const first = length - wire.length + 1;
      const records: StoredRecord[] = new Array(wire.length);
      for (let j = 0; j < wire.length; j++) {
        const [type, data, encoding] = wire[j] as WireRecord;
        const seq = first + j;
        const r: StoredRecord = { seq, offset: formatOffset(seq), data };
        if (type !== "") r.type = type;
        if (encoding === "base64") r.encoding = encoding;
        records[j] = r;
      }
      this.advance(id, f, length, status, records);
    }
  }

  /**
   * Delivers the records up to `length` not yet delivered: from `records` when they continue
   * exactly where the follower is, else read from the file (another worker's append, or one
   * whose notice is still on its way).
   */
  private advance(
    id: string,
    f: Follower,
    length: number,
    status: StreamStatus,
    records: StoredRecord[] | undefined,
  ): void {
    if (f.gone) return;
    if (length < 0) {
      f.gone = true;
      if (this.followers.get(id) === f) {
        this.followers.delete(id);
        this.follow?.(id, false);
      }
      f.emit({ records: [], status: f.status, deleted: true });
      return;
    }
    let out: StoredRecord[] = [];
    if (length > f.delivered) {
      const first = records?.[0]?.seq;
      if (
        records &&
        first !== undefined &&
        first <= f.delivered + 1 &&
        first + records.length - 1 === length
      ) {
        out = first === f.delivered + 1 ? records : records.slice(f.delivered + 1 - first);
      } else {
        out = this.inner.readRange(id, f.delivered, length);
      }
      const last = out[out.length - 1];
      if (last) f.delivered = last.seq;
    }
    // An ended stream stays ended: a late notice from before the close does not reopen it.
    const next = f.status !== "running" ? f.status : status;
    if (out.length > 0 || next !== f.status) {
      f.status = next;
      f.emit({ records: out, status: next });
    }
  }

  subscribe(id: string, listener: (notice: StoreNotice) => void): () => void {
    let f = this.followers.get(id);
    if (!f || f.gone) {
      // Starts at the stream's length now: every commit after this one is heard.
      const head = this.inner.head(id);
      const follower = new Follower(head?.length ?? 0, head?.status ?? "running");
      f = follower;
      this.followers.set(id, follower);
      const told = this.follow?.(id, true);
      // Once the primary relays this stream's commits here, read what was committed between
      // the head above and then (its notices went nowhere): from the file, never twice.
      if (told)
        told.then(
          () => this.catchUp(id, follower),
          () => {},
        );
    }
    f.listeners.add(listener);
    const follower = f;
    return () => {
      follower.listeners.delete(listener);
      if (follower.listeners.size === 0 && this.followers.get(id) === follower) {
        this.followers.delete(id);
        follower.gone = true;
        this.follow?.(id, false);
      }
    };
  }

  private catchUp(id: string, f: Follower): void {
    if (f.gone || this.followers.get(id) !== f) return;
    const head = this.inner.head(id);
    if (head) this.advance(id, f, head.length, head.status, undefined);
  }

  create(init: CreateStream): Promise<StreamInfo> {
    return this.inner.create(init);
  }
  append(id: string, records: RecordInput[], opts?: AppendOptions): Promise<AppendResult> {
    return this.inner.append(id, records, opts);
  }
  read(id: string, afterSeq: number, limit: number): Promise<ReadResult> {
    return this.inner.read(id, afterSeq, limit);
  }
  info(id: string): Promise<StreamInfo | undefined> {
    return this.inner.info(id);
  }
  /** The chat map is in the shared file: every worker finds a chat whichever worker started it. */
  setChat(key: string, streamId: string, ttlS?: number): Promise<void> {
    return this.inner.setChat(key, streamId, ttlS);
  }
  getChat(key: string): Promise<string | undefined> {
    return this.inner.getChat(key);
  }
  update(id: string, patch: StreamPatch): Promise<StreamInfo | undefined> {
    return this.inner.update(id, patch);
  }
  delete(id: string): Promise<boolean> {
    return this.inner.delete(id);
  }
  list(opts: ListOptions): Promise<StreamInfo[]> {
    return this.inner.list(opts);
  }
  sweep(): Promise<number> {
    return this.inner.sweep();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
