import { type IntervalHistogram, monitorEventLoopDelay, performance } from "node:perf_hooks";

/**
 * Something the flow scheduler can flush: one connection (an HTTP response, a WebSocket, a
 * gRPC call). `flush()` writes whatever is pending in one write.
 */
export interface Flushable {
  flush(): void;
  /** The connection's own cadence in ms (a reader asked for it); undefined = the node's. */
  readonly flushMs?: number | undefined;
  /** @internal bookkeeping owned by the scheduler. */
  lastFlushAt: number;
  /** @internal 0 = not scheduled, 1 = next immediate, 2 = timed. */
  flowState: number;
}

export interface FlowOptions {
  /** At most one flush per connection every this many ms; 0 = next tick. */
  flushIntervalMs?: number;
  /** A connection with this many pending bytes is flushed now, whatever its cadence. */
  maxBatchBytes?: number;
  /** Widen the flush window when the event loop is late. */
  adaptive?: boolean;
  /** The widest window adaptive coalescing may use (ms). */
  latencyBudgetMs?: number;
  /** Event-loop delay (ms, p99 over a sample period) above which the window widens. */
  targetLoopDelayMs?: number;
  /** How often the loop delay is sampled (ms). */
  sampleMs?: number;
}

const LOOP_RESOLUTION_MS = 10;
/** After a slow round of T ms its connections wait PACING × T ms before their next flush. */
const PACING = 0.25;
/** Event-loop utilisation (0–1) from which a late loop counts as loaded (see sample). */
const BUSY_UTILIZATION = 0.6;

/**
 * One scheduler for every connection on the node: a set of dirty connections flushed by a
 * single setImmediate (cadence 0 or overdue) or a single timer (the earliest due cadence).
 * No timer per connection. Under load (event-loop delay above target) the node-wide window
 * widens, up to the latency budget, so more events go out per write; it narrows again when
 * the loop is idle.
 */
export class FlowScheduler {
  readonly baseIntervalMs: number;
  readonly maxBatchBytes: number;
  readonly latencyBudgetMs: number;
  private readonly targetLoopDelayMs: number;
  /** The node-wide window in force (ms): the base, widened under load. */
  windowMs: number;
  private now_: Set<Flushable> = new Set();
  private readonly timed: Set<Flushable> = new Set();
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private histogram: IntervalHistogram | undefined;
  private sampler: NodeJS.Timeout | undefined;
  private readonly sampleMs: number;
  private sampledAt = 0;
  private immediateAt = 0;
  /** Longest flush-round delay or duration seen since the last sample (ms). */
  private lagMax = 0;
  /** Last sampled p99 event-loop delay (ms). */
  loopDelayMs = 0;
  /** Last sampled event-loop utilisation (0–1). */
  utilization = 0;
  private eluMark = performance.eventLoopUtilization();
  /** The last round was slow: connections are paced from its end (see endRound). */
  private pacing = false;
  /** Flushes performed (metrics/tests). */
  flushes = 0;

  constructor(opts: FlowOptions = {}) {
    this.baseIntervalMs = opts.flushIntervalMs ?? 0;
    this.maxBatchBytes = opts.maxBatchBytes ?? 64 * 1024;
    this.latencyBudgetMs = Math.max(opts.latencyBudgetMs ?? 25, this.baseIntervalMs);
    this.targetLoopDelayMs = opts.targetLoopDelayMs ?? 10;
    this.windowMs = this.baseIntervalMs;
    this.sampleMs = opts.sampleMs ?? 500;
    if (opts.adaptive ?? true) {
      this.histogram = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
      this.histogram.enable();
      this.sampler = setInterval(() => this.sample(), this.sampleMs);
      this.sampler.unref();
    }
  }

  /** The cadence of one connection: its own if it asked, never narrower than the node's window. */
  intervalOf(f: Flushable): number {
    const own = f.flushMs;
    return own === undefined ? this.windowMs : Math.max(own, this.windowMs);
  }

  /** Something is pending on `f`: flush it at its next slot. `urgent` (a full batch) flushes on the next tick. */
  mark(f: Flushable, urgent = false): void {
    if (f.flowState === 1) return;
    const interval = this.intervalOf(f);
    const free = interval === 0 && !this.pacing;
    const now = free ? 0 : performance.now();
    if (urgent || free || now - f.lastFlushAt >= interval) {
      if (f.flowState === 2) this.timed.delete(f);
      f.flowState = 1;
      this.now_.add(f);
      if (!this.immediate) {
        this.immediate = setImmediate(() => this.runNow(this.immediateAt));
        this.immediateAt = performance.now();
      }
      return;
    }
    if (f.flowState === 2) return;
    f.flowState = 2;
    this.timed.add(f);
    const due = f.lastFlushAt + interval;
    if (due < this.timerAt) this.arm(due, now);
  }

  /** Forgets a connection that closed. */
  remove(f: Flushable): void {
    if (f.flowState === 1) this.now_.delete(f);
    else if (f.flowState === 2) this.timed.delete(f);
    f.flowState = 0;
  }

  private arm(due: number, now: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = due;
    this.timer = setTimeout(() => this.runTimed(), Math.max(1, Math.ceil(due - now)));
  }

  /** Flushes the ready set; `dueAt` is when this round should have run (for the load measure). */
  private runNow(dueAt: number): void {
    this.immediate = undefined;
    const stamp = performance.now();
    // How late this round started, and (below) how long it ran, are direct measures of load:
    // a saturated loop can starve the histogram's timer, so they count as loop delay too.
    const late = stamp - dueAt;
    if (late > this.lagMax) this.lagMax = late;
    if (this.histogram && stamp - this.sampledAt >= this.sampleMs) this.sample();
    const batch = this.now_;
    this.now_ = new Set();
    for (const f of batch) {
      if (f.flowState !== 1) continue;
      f.flowState = 0;
      f.lastFlushAt = stamp;
      this.flushes++;
      try {
        f.flush();
      } catch {
        // A broken connection must not stop the others; its own close handler cleans up.
      }
    }
    // Writes that a transport defers to the next tick (node:http's cork/uncork, HTTP/2) are
    // part of this round's cost: measure it once they have run.
    process.nextTick(() => this.endRound(batch, stamp));
  }

  private endRound(batch: Set<Flushable>, stamp: number): void {
    const end = performance.now();
    const took = end - stamp;
    if (took > this.lagMax) this.lagMax = took;
    // A slow round (the node is loaded, e.g. one generation fanned out to thousands of
    // readers): each connection in it is next flushed no sooner than a quarter of the round's
    // own length after it ended (plus its window). Unpaced, a round is followed at once by
    // another carrying only what arrived during it (a model running late catches up one
    // token per loop turn) — one event per write per reader, every round as long as the last
    // — and delivery falls behind without bound. Paced, producers catch up in the gap and
    // what arrived goes out together: the heavier the load, the larger the batches, while
    // rounds still get ~80 % of the loop.
    this.pacing = took >= 1;
    if (this.pacing) {
      const next = end + took * PACING;
      for (const f of batch) if (f.lastFlushAt === stamp) f.lastFlushAt = next;
    }
  }

  private runTimed(): void {
    const dueAt = this.timerAt;
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const now = performance.now();
    let next = Number.POSITIVE_INFINITY;
    for (const f of this.timed) {
      const due = f.lastFlushAt + this.intervalOf(f);
      if (due <= now + 0.5) {
        this.timed.delete(f);
        f.flowState = 1;
        this.now_.add(f);
      } else if (due < next) {
        next = due;
      }
    }
    if (this.now_.size > 0) this.runNow(Math.min(dueAt, now));
    if (next !== Number.POSITIVE_INFINITY) this.arm(next, now);
  }

  private sample(): void {
    const h = this.histogram;
    if (!h) return;
    this.sampledAt = performance.now();
    // The histogram records whole timer intervals: the delay is what exceeds the resolution.
    const p99 = h.percentile(99) / 1e6 - LOOP_RESOLUTION_MS;
    h.reset();
    this.loopDelayMs = Math.max(Number.isFinite(p99) ? p99 : 0, this.lagMax, 0);
    this.lagMax = 0;
    // How busy the loop was over the period. Long rounds at low utilisation (one generation
    // fanned out to a thousand readers: a 10 ms round every 33 ms) are latency, not overload —
    // a wider window would only delay them; widen only when the loop is also mostly busy.
    const elu = performance.eventLoopUtilization(this.eluMark);
    this.eluMark = performance.eventLoopUtilization();
    this.utilization = elu.utilization;
    if (this.loopDelayMs > this.targetLoopDelayMs && this.utilization >= BUSY_UTILIZATION) {
      // Late: widen (double, at least 2 ms) up to the budget.
      this.windowMs = Math.min(this.latencyBudgetMs, Math.max(2, this.windowMs * 2));
    } else if (
      (this.loopDelayMs < this.targetLoopDelayMs / 2 || this.utilization < BUSY_UTILIZATION / 2) &&
      this.windowMs > this.baseIntervalMs
    ) {
      const narrower = this.windowMs / 2;
      this.windowMs = narrower < 2 ? this.baseIntervalMs : Math.max(this.baseIntervalMs, narrower);
    }
  }

  /** Forces a window (tests, operators); adaptive sampling may move it again. */
  setWindow(ms: number): void {
    this.windowMs = Math.max(this.baseIntervalMs, ms);
  }

  stop(): void {
    if (this.immediate) clearImmediate(this.immediate);
    if (this.timer) clearTimeout(this.timer);
    if (this.sampler) clearInterval(this.sampler);
    this.histogram?.disable();
    this.immediate = undefined;
    this.timer = undefined;
    this.now_.clear();
    this.timed.clear();
  }
}
