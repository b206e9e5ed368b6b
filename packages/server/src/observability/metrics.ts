import type { TerminalEvent } from "@sluice/protocol";
import type { Logger } from "pino";
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { Hub } from "../core/hub.js";
import type { GenerationObserver, GenerationTrack } from "../core/observer.js";
import { TTFT_PHASES } from "../core/phases.js";
import type { Runner } from "../core/runner.js";
import type { Store } from "../stores/store.js";
import { BatchedHistogram, type HistogramSeries } from "./batched-histogram.js";

/** Latency buckets in seconds: 1 ms … 30 s. */
const TTFT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const ITL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** TTFT phases: 50 µs … 2.5 s. */
const PHASE_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
];
const STORE_BUCKETS = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1];
/** Tokens are added to the counter in batches of this many (and at the end). */
const TOKEN_BATCH = 32;
/** Distinct route labels before the rest are reported as "other" (routes may be user-named). */
const MAX_ROUTE_LABELS = 64;
const CANCEL_BY = new Set(["client", "client-disconnect", "admin", "server"]);

export interface LiveStream {
  id: string;
  route: string;
  model: string;
  started_at: number;
  tokens: number;
  ttft_ms: number | undefined;
  /** TTFT phases: ms from `received` to each phase reached (core/phases.ts), once known. */
  ttft_phases_ms?: Record<string, number> | undefined;
}

export interface EndedStream extends LiveStream {
  status: string;
  ended_at: number;
}

export interface RecentError {
  at: number;
  stream: string;
  route: string;
  code: string;
  message: string;
}

interface RouteChildren {
  ttft: HistogramSeries;
  itl: HistogramSeries;
  tokens: ReturnType<Counter<"route">["labels"]>;
}

/**
 * Every Prometheus metric of one server (its own registry, so several servers can live
 * in one process) and the live picture the dashboard shows. Implements the runner's
 * GenerationObserver: per token it does two histogram observations and a number add.
 */
export class Metrics implements GenerationObserver {
  readonly registry = new Registry();
  readonly live = new Map<string, Track>();
  readonly recent: EndedStream[] = [];
  readonly errors: RecentError[] = [];
  private readonly routeLabels = new Map<string, RouteChildren>();
  private readonly startedAt = Date.now();
  /** Tokens already added to the counter by ended or flushed tracks (for rates). */
  tokensTotal = 0;
  streamsStarted = 0;
  private samples: { t: number; tokens: number; chars: number; started: number }[] = [];
  private sampler: NodeJS.Timeout | undefined;

  readonly ttft: BatchedHistogram;
  readonly itl: BatchedHistogram;
  readonly tokens: Counter<"route">;
  readonly streamsStartedC: Counter<"route">;
  readonly streamsEnded: Counter<"status">;
  readonly connections: Gauge<"transport">;
  readonly resumes: Counter<"transport">;
  readonly cancels: Counter<"by">;
  readonly upstreamErrors: Counter<"route" | "code">;
  readonly upstreamRetries: Counter<"route">;
  readonly slowReaderDisconnects: Counter;
  readonly storeOps: BatchedHistogram;
  readonly ttftPhases: BatchedHistogram;
  /** The series of each TTFT phase, by index in TTFT_PHASES (index 0, `received`, has none). */
  readonly phaseSeries: HistogramSeries[];

  private hub: Hub | undefined;
  private runner: Runner | undefined;
  /**
   * What `GET /metrics` answers, when not this registry's own text: under `--workers`, the
   * primary's aggregation of every worker's registry (cluster/worker.ts).
   */
  scrape: (() => Promise<string>) | undefined;

  constructor(private readonly opts: { logger?: Logger } = {}) {
    const registers = [this.registry];
    const self = this;
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
    this.ttft = new BatchedHistogram({
      name: "sluice_ttft_seconds",
      help: "Time from a generation's start to its first output token, by route",
      label: "route",
      buckets: TTFT_BUCKETS,
      registers,
    });
    this.itl = new BatchedHistogram({
      name: "sluice_inter_token_seconds",
      help: "Time between consecutive output tokens of a generation, by route",
      label: "route",
      buckets: ITL_BUCKETS,
      registers,
    });
    this.tokens = new Counter({
      name: "sluice_tokens_out_total",
      help: "Output tokens generated (text, reasoning and tool-argument deltas), by route",
      labelNames: ["route"],
      registers,
    });
    this.streamsStartedC = new Counter({
      name: "sluice_streams_started_total",
      help: "Generations started, by route",
      labelNames: ["route"],
      registers,
    });
    this.streamsEnded = new Counter({
      name: "sluice_streams_ended_total",
      help: "Generations ended, by final status (completed, failed, cancelled)",
      labelNames: ["status"],
      registers,
    });
    this.connections = new Gauge({
      name: "sluice_open_connections",
      help: "Open streaming connections, by transport (sse, ndjson, ws)",
      labelNames: ["transport"],
      registers,
    });
    this.resumes = new Counter({
      name: "sluice_resumes_total",
      help: "Reads that resumed from an offset (Last-Event-ID or ?offset= past the start), by transport",
      labelNames: ["transport"],
      registers,
    });
    this.cancels = new Counter({
      name: "sluice_cancels_total",
      help: "Generations cancelled, by who asked (client, client-disconnect, admin, server, other)",
      labelNames: ["by"],
      registers,
    });
    this.upstreamErrors = new Counter({
      name: "sluice_upstream_errors_total",
      help: "Generations that ended with an error, by route and error code (from the catalogue)",
      labelNames: ["route", "code"],
      registers,
    });
    this.upstreamRetries = new Counter({
      name: "sluice_upstream_retries_total",
      help: "Upstream calls retried or sent to a fallback route, by route",
      labelNames: ["route"],
      registers,
    });
    let cutsSeen = 0;
    this.slowReaderDisconnects = new Counter({
      name: "sluice_slow_reader_disconnects_total",
      help: "Readers disconnected because they fell too far behind (the hub's cuts; they resume from their offset)",
      registers,
      collect() {
        const now = self.hub?.counters.cuts ?? 0;
        if (now > cutsSeen) this.inc(now - cutsSeen);
        cutsSeen = now;
      },
    });
    this.ttftPhases = new BatchedHistogram({
      name: "sluice_ttft_phase_seconds",
      help: "Time to a generation's first token by phase (each phase's time since the one before; `total` from received to the first append), once per generation",
      label: "phase",
      buckets: PHASE_BUCKETS,
      registers,
    });
    this.phaseSeries = TTFT_PHASES.map((p) => this.ttftPhases.labels(p === "received" ? "total" : p));
    this.storeOps = new BatchedHistogram({
      name: "sluice_store_operation_seconds",
      help: "Latency of store operations, by operation",
      label: "op",
      buckets: STORE_BUCKETS,
      registers,
    });
    new Gauge({
      name: "sluice_live_streams",
      help: "Generations running on this node",
      registers,
      collect() {
        this.set(self.runner?.runningCount ?? 0);
      },
    });
    new Gauge({
      name: "sluice_readers",
      help: "Readers attached on this node (all streams)",
      registers,
      collect() {
        this.set(self.hub?.readerCount() ?? 0);
      },
    });
    new Gauge({
      name: "sluice_streams_by_readers",
      help: "Streams with readers on this node, by how many readers each has (bucket: 1, 2-4, 5-16, 17-64, 65+)",
      labelNames: ["readers"],
      registers,
      collect() {
        const counts: Record<string, number> = { "1": 0, "2-4": 0, "5-16": 0, "17-64": 0, "65+": 0 };
        self.hub?.forEachStream((_id, n) => {
          if (n === 0) return;
          const b = n === 1 ? "1" : n <= 4 ? "2-4" : n <= 16 ? "5-16" : n <= 64 ? "17-64" : "65+";
          counts[b] = (counts[b] ?? 0) + 1;
        });
        for (const [k, v] of Object.entries(counts)) this.set({ readers: k }, v);
      },
    });
    new Gauge({
      name: "sluice_max_readers_per_stream",
      help: "The most readers any one stream has on this node",
      registers,
      collect() {
        let max = 0;
        self.hub?.forEachStream((_id, n) => {
          if (n > max) max = n;
        });
        this.set(max);
      },
    });
    let charsSeen = 0;
    new Counter({
      name: "sluice_bytes_out_total",
      help: "Stream bytes written to readers (counted as characters: bytes for ASCII JSON)",
      registers,
      collect() {
        const now = self.hub?.counters.charsOut ?? 0;
        if (now > charsSeen) this.inc(now - charsSeen);
        charsSeen = now;
      },
    });
    let stallsSeen = 0;
    new Counter({
      name: "sluice_slow_reader_stalls_total",
      help: "Times a reader's socket was full and its delivery paused until it drained",
      registers,
      collect() {
        const now = self.hub?.counters.stalls ?? 0;
        if (now > stallsSeen) this.inc(now - stallsSeen);
        stallsSeen = now;
      },
    });
    this.sampler = setInterval(() => this.sample(), 1000);
    this.sampler.unref();
    this.sample();
  }

  /** Connects the live sources (the hub's reader counts and counters, the runner's running count). */
  attach(sources: { hub?: Hub; runner?: Runner }): void {
    this.hub = sources.hub;
    this.runner = sources.runner;
  }

  private route(name: string): { label: string; c: RouteChildren } {
    let c = this.routeLabels.get(name);
    let label = name;
    if (!c) {
      if (this.routeLabels.size >= MAX_ROUTE_LABELS) label = "other";
      c = this.routeLabels.get(label);
      if (!c) {
        c = { ttft: this.ttft.labels(label), itl: this.itl.labels(label), tokens: this.tokens.labels(label) };
        this.routeLabels.set(label, c);
      }
    }
    return { label, c };
  }

  /** An upstream try failed before its first token and is retried or falls back. */
  retried(route: string): void {
    this.upstreamRetries.labels(this.route(route).label).inc();
  }

  begin(info: { id: string; route: string; model: string }): GenerationTrack {
    const { label, c } = this.route(info.route);
    this.streamsStartedC.labels(label).inc();
    this.streamsStarted++;
    const t = new Track(this, info.id, label, info.model, c);
    this.live.set(info.id, t);
    this.opts.logger?.info({ stream: info.id, route: info.route, model: info.model }, "generation started");
    return t;
  }

  /** @internal */
  ended(t: Track, terminal: TerminalEvent): void {
    this.live.delete(t.id);
    const status =
      terminal.type === "finish" ? "completed" : terminal.type === "error" ? "failed" : "cancelled";
    this.streamsEnded.labels(status).inc();
    if (terminal.type === "abort")
      this.cancels.labels(CANCEL_BY.has(terminal.by) ? terminal.by : "other").inc();
    if (terminal.type === "error") {
      this.upstreamErrors.labels(t.route, terminal.code).inc();
      this.errors.unshift({
        at: Date.now(),
        stream: t.id,
        route: t.route,
        code: terminal.code,
        message: terminal.message,
      });
      if (this.errors.length > 20) this.errors.length = 20;
    }
    this.recent.unshift({ ...t.snapshot(), status, ended_at: Date.now() });
    if (this.recent.length > 20) this.recent.length = 20;
    this.opts.logger?.info(
      { stream: t.id, route: t.route, status, tokens: t.tokens, ttft_ms: t.ttftMs },
      "generation ended",
    );
  }

  /** Tokens produced so far, including those of live streams not yet flushed. */
  tokensNow(): number {
    let n = this.tokensTotal;
    for (const t of this.live.values()) n += t.tokens - t.flushed;
    return n;
  }

  private sample(): void {
    this.samples.push({
      t: Date.now(),
      tokens: this.tokensNow(),
      chars: this.hub?.counters.charsOut ?? 0,
      started: this.streamsStarted,
    });
    if (this.samples.length > 121) this.samples.shift();
  }

  /** Wraps a store so every async operation's latency lands in sluice_store_operation_seconds. */
  instrumentStore(store: Store): Store {
    const hist = this.storeOps;
    const children = new Map<string, HistogramSeries>();
    const timed = new Set(["create", "append", "read", "info", "delete", "list", "sweep"]);
    return new Proxy(store, {
      get(target, prop) {
        const v = Reflect.get(target, prop); // getters run on the store itself (private fields)
        if (typeof v !== "function") return v;
        if (typeof prop !== "string" || !timed.has(prop)) return v.bind(target);
        let child = children.get(prop);
        if (!child) {
          child = hist.labels(prop);
          children.set(prop, child);
        }
        const c = child;
        return (...args: unknown[]) => {
          const t0 = performance.now();
          const p = (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          return p.finally(() => c.observe((performance.now() - t0) / 1000));
        };
      },
    });
  }

  /** The live picture for the dashboard. */
  async stats() {
    const now = Date.now();
    const hub = this.hub;
    const live = [...this.live.values()].map((t) => ({
      ...t.snapshot(),
      age_ms: now - t.started_at,
      readers: hub?.readerCount(t.id) ?? 0,
      status: "running",
    }));
    const series = [];
    for (let i = 1; i < this.samples.length; i++) {
      const a = this.samples[i - 1] as (typeof this.samples)[number];
      const b = this.samples[i] as (typeof this.samples)[number];
      const dt = (b.t - a.t) / 1000 || 1;
      series.push({
        t: b.t,
        tokens_per_s: (b.tokens - a.tokens) / dt,
        bytes_per_s: (b.chars - a.chars) / dt,
        streams_per_s: (b.started - a.started) / dt,
      });
    }
    const last5 = series.slice(-5);
    const avg = (k: "tokens_per_s" | "bytes_per_s" | "streams_per_s") =>
      last5.length ? last5.reduce((s, x) => s + x[k], 0) / last5.length : 0;
    const connections: Record<string, number> = {};
    for (const v of (await this.connections.get()).values) connections[String(v.labels.transport)] = v.value;
    const byStatus: Record<string, number> = {};
    for (const v of (await this.streamsEnded.get()).values) byStatus[String(v.labels.status)] = v.value;
    return {
      now,
      uptime_s: Math.round((now - this.startedAt) / 1000),
      live,
      recent: this.recent.map((r) => ({ ...r, duration_ms: r.ended_at - r.started_at })),
      errors: this.errors,
      rates: {
        tokens_per_s: avg("tokens_per_s"),
        bytes_per_s: avg("bytes_per_s"),
        streams_per_s: avg("streams_per_s"),
      },
      series: series.slice(-60),
      totals: {
        streams_started: this.streamsStarted,
        streams_ended: byStatus,
        tokens: this.tokensNow(),
        readers: hub?.readerCount() ?? 0,
        connections,
      },
      histograms: {
        ttft_seconds: await merged(this.ttft),
        inter_token_seconds: await merged(this.itl),
      },
    };
  }

  close(): void {
    if (this.sampler) clearInterval(this.sampler);
    this.sampler = undefined;
    this.registry.clear();
  }
}

/** A histogram's buckets summed over its labels: [{le, count}] (cumulative), count, sum. */
async function merged(h: BatchedHistogram) {
  const buckets = new Map<string, number>();
  let count = 0;
  let sum = 0;
  for (const v of (await h.get()).values) {
    if (v.metricName?.endsWith("_bucket")) {
      const le = String(v.labels.le);
      buckets.set(le, (buckets.get(le) ?? 0) + v.value);
    } else if (v.metricName?.endsWith("_count")) count += v.value;
    else if (v.metricName?.endsWith("_sum")) sum += v.value;
  }
  return { buckets: [...buckets].map(([le, c]) => ({ le, count: c })), count, sum };
}

/** One generation as the metrics see it. */
export class Track implements GenerationTrack {
  tokens = 0;
  flushed = 0;
  readonly started_at = Date.now();
  private readonly t0 = performance.now();
  private last = 0;
  ttftMs: number | undefined;
  phasesMs: Record<string, number> | undefined;

  constructor(
    private readonly m: Metrics,
    readonly id: string,
    readonly route: string,
    readonly model: string,
    private readonly c: RouteChildren,
  ) {}

  token(): void {
    const now = performance.now();
    if (this.tokens === 0) {
      this.ttftMs = now - this.t0;
      this.c.ttft.observe(this.ttftMs / 1000);
    } else {
      this.c.itl.observe((now - this.last) / 1000);
    }
    this.last = now;
    this.tokens++;
    if (this.tokens - this.flushed >= TOKEN_BATCH) this.flush();
  }

  private flush(): void {
    const n = this.tokens - this.flushed;
    if (n === 0) return;
    this.c.tokens.inc(n);
    this.m.tokensTotal += n;
    this.flushed = this.tokens;
  }

  retry(route: string): void {
    this.m.retried(route);
  }

  phases(at: Float64Array): void {
    const series = this.m.phaseSeries;
    const t0 = at[0] as number;
    if (t0 === 0) return;
    const ms: Record<string, number> = {};
    let prev = t0;
    let last = t0;
    for (let i = 1; i < at.length; i++) {
      const t = at[i] as number;
      if (t === 0) continue; // not on this path (e.g. no upstream for the demo model)
      (series[i] as HistogramSeries).observe(Math.max(0, t - prev) / 1000);
      ms[TTFT_PHASES[i] as string] = Math.round((t - t0) * 1000) / 1000;
      prev = t;
      last = t;
    }
    (series[0] as HistogramSeries).observe((last - t0) / 1000);
    this.phasesMs = ms;
  }

  end(terminal: TerminalEvent): void {
    this.flush();
    this.m.ended(this, terminal);
  }

  snapshot(): LiveStream {
    return {
      id: this.id,
      route: this.route,
      model: this.model,
      started_at: this.started_at,
      tokens: this.tokens,
      ttft_ms: this.ttftMs === undefined ? undefined : Math.round(this.ttftMs),
      ...(this.phasesMs ? { ttft_phases_ms: this.phasesMs } : {}),
    };
  }
}
