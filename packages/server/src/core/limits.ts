import { SluiceError } from "@sluice/protocol";

/**
 * Counts long-lived connections (SSE/NDJSON readers, WebSockets, long-polls, gRPC follows)
 * against `limits.max_connections`. acquire() throws too_many_connections when full and
 * returns an idempotent release function otherwise.
 */
export class ConnectionGate {
  private open = 0;

  constructor(readonly max: number) {}

  acquire(): () => void {
    if (this.open >= this.max) {
      throw new SluiceError(
        "too_many_connections",
        `the server holds its maximum of ${this.max} streaming connections; try again later`,
      );
    }
    this.open++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.open--;
    };
  }

  get size(): number {
    return this.open;
  }
}

/**
 * One timer for many deadlines (every long-poll of the node: /v1 and Durable Streams): deadlines fall into buckets of
 * `granularityMs`, and a single interval expires the due buckets while any are pending.
 */
export class Deadlines {
  private readonly buckets = new Map<number, Set<() => void>>();
  private timer: NodeJS.Timeout | undefined;
  private count = 0;

  constructor(
    private readonly granularityMs = 25,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Calls `fn` after about `ms` (never early); returns a cancel function. */
  add(ms: number, fn: () => void): () => void {
    const g = this.granularityMs;
    const at = Math.ceil((this.now() + ms) / g) * g;
    let set = this.buckets.get(at);
    if (!set) {
      set = new Set();
      this.buckets.set(at, set);
    }
    set.add(fn);
    this.count++;
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), g);
      this.timer.unref();
    }
    const bucket = set;
    return () => {
      if (bucket.delete(fn)) this.dropped(at, bucket);
    };
  }

  private dropped(at: number, set: Set<() => void>): void {
    this.count--;
    if (set.size === 0) this.buckets.delete(at);
    if (this.count === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private tick(): void {
    const now = this.now();
    for (const [at, set] of this.buckets) {
      if (at > now) continue;
      this.buckets.delete(at);
      const due = [...set];
      set.clear();
      for (const fn of due) {
        this.count--;
        try {
          fn();
        } catch {
          // one waiter's failure is its own
        }
      }
    }
    if (this.count <= 0 && this.timer) {
      this.count = 0;
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  get size(): number {
    return this.count;
  }

  /** True while the one timer runs (only while deadlines are pending). */
  get armed(): boolean {
    return this.timer !== undefined;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.buckets.clear();
    this.count = 0;
  }
}
