import {
  type ErrorEvent,
  isSluiceError,
  SluiceError,
  type SluiceEvent,
  type StreamStatus,
  statusOf,
  type TerminalEvent,
  type UsageEvent,
} from "@sluice/protocol";
import type { ProviderContext, ProviderEvent } from "../providers/provider.js";
import { redactUpstreamText } from "../providers/upstream-http.js";
import {
  type EndStatus,
  EVENTS_CONTENT_TYPE,
  type RecordInput,
  type Store,
  type StreamInfo,
} from "../stores/store.js";
import { type GenerationHold, type MemoryBudget, RECORD_COST_BYTES } from "./budget.js";
import { type Clock, realClock } from "./clock.js";
import { type Coordinator, LocalCoordinator } from "./coordinator.js";
import { newStreamId } from "./ids.js";
import type { GenerationObserver, GenerationTrack } from "./observer.js";
import {
  PHASE_CREATE,
  PHASE_FIRST_APPEND,
  PHASE_FIRST_PARSED,
  PHASE_LEASE,
  PHASE_RECEIVED,
  PHASE_ROUTE,
  PHASE_START_APPEND,
  PhaseMarks,
} from "./phases.js";
import { isInternalFailure, publicError } from "./public-error.js";
import type { GenerationRequest } from "./request.js";
import { DEFAULT_RETRY, type Route, type RouteTable } from "./routes.js";

/** Why a generation's abort signal fired. */
export type StopReason =
  | { kind: "cancel"; by: string; reason: string }
  | { kind: "deadline"; timeout_ms: number }
  | { kind: "max_tokens" }
  | { kind: "shutdown" };

export interface RunnerOptions {
  store: Store;
  routes: RouteTable;
  clock?: Clock;
  /** Called on unexpected internal failures (logging). */
  onError?: (err: unknown, streamId: string) => void;
  /** Told about each generation (metrics, logs); see core/observer.ts. */
  observer?: GenerationObserver;
  /** Ownership across nodes (leases, cancel routing); a LocalCoordinator when absent. */
  coordinator?: Coordinator;
  /**
   * Most events one generation may hold in memory while the store is slow or unreachable;
   * past it the generation ends with `store_unavailable`.
   */
  maxBufferedEvents?: number;
  /** The node's memory budget for running generations (core/budget.ts); unbounded when absent. */
  budget?: MemoryBudget;
  /** The store keeps appended records in this process (the memory store): they stay counted. */
  recordsInMemory?: boolean;
}

export interface StartOptions {
  tenant?: string;
  /** Called once when the generation has ended, with the output tokens it produced (quotas). */
  onEnd?: (outputTokens: number) => void;
  /**
   * More stream metadata, written with the stream's creation (a door's own record of the
   * request, e.g. the Responses API's conversation under `responses`).
   */
  metadata?: Record<string, unknown>;
}

interface Generation {
  id: string;
  controller: AbortController;
  done: Promise<void>;
  /** The observer's tracker for this generation (metrics), if any. */
  track?: GenerationTrack | undefined;
  /** Its share of the memory budget, if there is one. */
  hold?: GenerationHold | undefined;
  /** TTFT phase marks (core/phases.ts). */
  marks: PhaseMarks;
}

export interface Usage {
  input_tokens: number;
  output_tokens: number;
  reasoning_tokens?: number;
  total_tokens?: number;
}

/**
 * The runner owns every generation: it calls the provider, appends what it yields, and
 * writes exactly one terminal event whatever happens. Cancel and deadlines abort the
 * provider's signal, which aborts the upstream HTTP request. A reader going away does
 * nothing here: readers are cursors on the log, not owners of the generation.
 */
export class Runner {
  private readonly running = new Map<string, Generation>();
  private readonly store: Store;
  private readonly routes: RouteTable;
  private readonly clock: Clock;
  private readonly onError: (err: unknown, streamId: string) => void;
  private readonly observer: GenerationObserver | undefined;
  readonly coordinator: Coordinator;
  private readonly maxBufferedEvents: number;
  private readonly budget: MemoryBudget | undefined;
  private readonly recordsInMemory: boolean;
  private accepting = true;

  constructor(opts: RunnerOptions) {
    this.store = opts.store;
    this.routes = opts.routes;
    this.clock = opts.clock ?? realClock;
    this.onError = opts.onError ?? (() => {});
    this.observer = opts.observer;
    this.coordinator = opts.coordinator ?? new LocalCoordinator(opts.store);
    this.maxBufferedEvents = opts.maxBufferedEvents ?? 100_000;
    this.budget = opts.budget;
    this.recordsInMemory = opts.recordsInMemory ?? false;
  }

  /**
   * Starts ownership work: cancels routed from other nodes, orphaned generations closed as
   * interrupted (at startup for one node, by expired lease across nodes).
   */
  async startCoordination(): Promise<void> {
    await this.coordinator.start({
      cancelLocal: (id, by, reason) => {
        const gen = this.running.get(id);
        if (gen && !gen.controller.signal.aborted)
          gen.controller.abort({ kind: "cancel", by, reason } satisfies StopReason);
      },
      interrupt: (id, message) => this.interrupt(id, message),
    });
  }

  /** Closes a generation nobody runs any more with `error` / `interrupted` (its output is kept). */
  async interrupt(id: string, message: string): Promise<void> {
    if (this.running.has(id)) return;
    const ev: ErrorEvent = { type: "error", code: "interrupted", message, retryable: true };
    try {
      await this.store.append(id, [encode(ev)], {
        close: "failed",
        metadata: { error: { code: ev.code, message } },
      });
    } catch (err) {
      // Another node closed it first, or it is gone: nothing to do.
      if (!isSluiceError(err) || (err.code !== "stream_closed" && err.code !== "stream_not_found"))
        this.onError(err, id);
    }
  }

  /** Starts a generation; resolves once the stream exists with its `start` event. */
  async start(request: GenerationRequest, opts: StartOptions = {}): Promise<StreamInfo> {
    if (!this.accepting) throw new SluiceError("capacity_exceeded", "the server is shutting down");
    const marks = new PhaseMarks();
    marks.mark(PHASE_RECEIVED);
    const route = this.routes.resolve(request.model);
    // Every route that may serve it (fallbacks too) must be able to honour the whole request.
    for (const r of this.routes.chain(route))
      r.provider.check?.({ ...request, upstream_model: r.upstream_model });
    marks.mark(PHASE_ROUTE);
    const id = newStreamId();
    const createdAt = new Date(this.clock.now()).toISOString();
    const init = {
      id,
      kind: "generation" as const,
      content_type: EVENTS_CONTENT_TYPE,
      model: request.model,
      metadata: {
        route: route.name,
        provider: route.provider.name,
        ...(request.max_tokens !== undefined ? { max_tokens: request.max_tokens } : {}),
        ...(request.metadata ? { request: request.metadata } : {}),
        ...opts.metadata,
      },
      ...(opts.tenant !== undefined ? { tenant: opts.tenant } : {}),
    };
    // Refused before anything exists when the node's memory budget cannot take it (503 / 413).
    const planned = route.provider.plannedBytes?.({ ...request, upstream_model: route.upstream_model });
    const hold = this.budget?.admit(planned ?? 0);
    // The lease comes first, so no node ever sees this generation running without an owner.
    try {
      await this.coordinator.acquire(id);
    } catch (err) {
      hold?.release();
      throw err;
    }
    marks.mark(PHASE_LEASE);
    try {
      await this.store.create(init);
      marks.mark(PHASE_CREATE);
    } catch (err) {
      hold?.release();
      await this.coordinator.release(id).catch(() => {});
      throw err;
    }
    const start: SluiceEvent = {
      type: "start",
      model: request.model,
      created_at: createdAt,
      metadata: { stream_id: id, route: route.name, provider: route.provider.name },
    };
    const controller = new AbortController();
    const track = this.observer?.begin({ id, route: route.name, model: request.model });
    const gen: Generation = { id, controller, done: Promise.resolve(), track, hold, marks };
    this.running.set(id, gen);
    try {
      await this.store.append(id, [encode(start)]);
      marks.mark(PHASE_START_APPEND);
    } catch (err) {
      this.running.delete(id);
      hold?.release();
      // Best effort: end the stream that was created (if the store is down, the lease expiry
      // or the next start does it).
      if (isInternalFailure(err)) this.onError(err, id);
      void this.interrupt(id, `the generation could not start: ${publicError(err).message}`);
      await this.coordinator.release(id).catch(() => {});
      throw err;
    }
    let outputTokens = 0;
    const report = (n: number) => {
      outputTokens = n;
    };
    gen.done = this.run(gen, this.routes.chain(route), request, report).finally(() => {
      this.running.delete(id);
      hold?.release();
      opts.onEnd?.(outputTokens);
      return this.coordinator.release(id).catch(() => {});
    });
    const info = await this.store.info(id);
    if (!info) throw new SluiceError("internal_error", `stream ${id} vanished after creation`);
    return info;
  }

  /**
   * One generation, start to terminal event: the route chain with its retries
   * (streamRoutes), each attempt's events shaped and appended (streamOnce, EventShaper), the
   * terminal event that says why it ended (terminalOf), and the closing append (end).
   */
  private async run(
    gen: Generation,
    chain: Route[],
    request: GenerationRequest,
    reportTokens: (n: number) => void,
  ): Promise<void> {
    const { id, controller, hold } = gen;
    const appender = new Appender(this.store, id, this.maxBufferedEvents, (err) => this.onError(err, id));
    // On a store that keeps records elsewhere (SQLite, Redis), a record stops counting once stored.
    if (hold && !this.recordsInMemory) appender.onStored = (bytes) => hold.uncharge(bytes);
    const track = gen.track;
    if (track?.phases) {
      appender.onFirstStored = () => {
        gen.marks.mark(PHASE_FIRST_APPEND);
        track.phases?.(gen.marks.at);
      };
    }
    let deadline: NodeJS.Timeout | undefined;
    if (request.timeout_ms !== undefined) {
      const ms = request.timeout_ms;
      deadline = setTimeout(
        () => controller.abort({ kind: "deadline", timeout_ms: ms } satisfies StopReason),
        ms,
      );
    }
    const ctx: RunContext = {
      gen,
      chain,
      request,
      signal: controller.signal,
      appender,
      shaper: new EventShaper(request.max_tokens),
      attempts: [],
      appended: 0,
    };
    let terminal: TerminalEvent;
    try {
      await this.streamRoutes(ctx);
      terminal = this.terminalOf(ctx);
    } catch (err) {
      terminal = this.terminalOf(ctx, err);
    } finally {
      if (deadline) clearTimeout(deadline);
    }
    if (!controller.signal.aborted) controller.abort({ kind: "shutdown" } satisfies StopReason); // release provider resources
    reportTokens(ctx.shaper.outputTokens);
    await this.end(ctx, terminal);
  }

  /**
   * Each route of the chain (the route, then its fallbacks) gets up to max_attempts tries, as
   * long as nothing was appended: after the first token a failure is terminal.
   */
  private async streamRoutes(ctx: RunContext): Promise<void> {
    const { chain, signal, attempts } = ctx;
    for (let ri = 0; ri < chain.length; ri++) {
      const route = chain[ri] as Route;
      const policy = route.retry ?? DEFAULT_RETRY;
      for (let n = 1; n <= policy.max_attempts; n++) {
        const attempt: Attempt = {
          route: route.name,
          provider: route.provider.name,
          started_at: new Date(this.clock.now()).toISOString(),
        };
        attempts.push(attempt);
        try {
          await this.streamOnce(ctx, route);
          return;
        } catch (err) {
          if (signal.aborted || ctx.appended > 0 || !isRetryable(err)) throw err;
          const e = err as SluiceError;
          attempt.error = { code: e.code, message: redactFor(chain, e.message) };
          const status = e.details?.upstream_status;
          if (typeof status === "number") attempt.error.upstream_status = status;
          const retryAfter = e.details?.retry_after_ms;
          const wait = typeof retryAfter === "number" ? retryAfter : policy.base_delay_ms * 2 ** (n - 1);
          const lastRoute = ri === chain.length - 1;
          if (lastRoute && n === policy.max_attempts) throw err;
          const retrySame = n < policy.max_attempts && wait <= policy.max_wait_ms;
          if (!retrySame && lastRoute) throw err;
          if (retrySame) attempt.retry_in_ms = wait;
          ctx.gen.track?.retry?.(route.name);
          // Show the failed try in stream info while the next one is pending (best effort).
          await this.store.append(ctx.gen.id, [], { metadata: { attempts: [...attempts] } }).catch(() => {});
          if (!retrySame) break; // on to the next route
          await this.clock.sleep(wait, signal);
        }
      }
    }
  }

  /**
   * One attempt on one route: the provider's events, shaped, charged to the budget, appended.
   * A push provider hands over each upstream read's events at once: they become one append
   * (one batch of records, one wake of the readers), each event still its own record.
   */
  private async streamOnce(ctx: RunContext, route: Route): Promise<void> {
    const { gen, signal, appender } = ctx;
    const provider = route.provider;
    const providerRequest = { ...ctx.request, upstream_model: route.upstream_model };
    const pctx: ProviderContext = { signal, clock: this.clock, mark: gen.marks.mark };
    if (provider.push) {
      await provider.push(providerRequest, pctx, (events) => {
        if (signal.aborted) return; // the provider throws the reason when the sink returns
        try {
          for (let i = 0; i < events.length; i++) {
            if (!this.take(ctx, events[i] as ProviderEvent)) break;
          }
        } finally {
          appender.flush();
        }
        if (appender.failed) throw appender.failed;
      });
      return;
    }
    for await (const ev of provider.stream(providerRequest, pctx)) {
      if (signal.aborted) break;
      const more = this.take(ctx, ev);
      appender.flush();
      if (appender.failed) throw appender.failed;
      if (!more) break;
    }
  }

  /**
   * One provider event: shaped, charged, queued on the appender (the caller flushes). False
   * when the generation must stop taking events (max_tokens reached: its signal is aborted).
   */
  private take(ctx: RunContext, ev: ProviderEvent): boolean {
    const { gen, appender, shaper } = ctx;
    const out = shaper.shape(ev);
    if (out === undefined) return true;
    if (out === MAX_TOKENS) {
      // The provider should stop by itself at max_tokens (and may still send its usage and
      // finish); a token past it means it doesn't, so we stop it.
      gen.controller.abort({ kind: "max_tokens" } satisfies StopReason);
      return false;
    }
    if (shaper.counted) {
      gen.track?.token();
      if (shaper.outputTokens === 1) gen.marks.mark(PHASE_FIRST_PARSED);
    }
    const rec = encode(out);
    // Past its own memory bound or the node's, the generation ends here (stream_too_large /
    // capacity_exceeded) rather than the process running out of heap.
    const over = gen.hold?.charge(recordCost(rec));
    if (over) throw over;
    appender.add(rec);
    ctx.appended++;
    return !appender.failed;
  }

  /** Why the generation ended: a stop (cancel, deadline, …), the provider's finish, or an error. */
  private terminalOf(ctx: RunContext, err?: unknown): TerminalEvent {
    if (ctx.signal.aborted) return this.stopEvent(ctx.signal.reason);
    if (err === undefined) return ctx.shaper.finish ?? { type: "finish", reason: "stop" };
    // An internal failure's own text (a store's exception, a bug's) is logged, never streamed.
    // (A failed append was logged by the appender.)
    if (isInternalFailure(err) && err !== ctx.appender.failed) this.onError(err, ctx.gen.id);
    const e = publicError(err);
    const message = redactFor(ctx.chain, e.message);
    return { type: "error", code: e.code, message, retryable: e.retryable };
  }

  /** The closing append: usage (held back to stand right before it), the terminal event, metadata. */
  private async end(ctx: RunContext, terminal: TerminalEvent): Promise<void> {
    const { shaper, attempts } = ctx;
    const usage = shaper.usage;
    const meta: Record<string, unknown> = { output_tokens: shaper.outputTokens };
    if (usage) meta.usage = pickUsage(usage);
    if (attempts.length > 1) {
      const lastAttempt = attempts[attempts.length - 1] as Attempt;
      meta.route = lastAttempt.route;
      meta.provider = lastAttempt.provider;
    }
    meta.attempts = attempts;
    if (terminal.type === "finish") meta.finish_reason = terminal.reason;
    if (terminal.type === "error") meta.error = { code: terminal.code, message: terminal.message };
    const tail = usage ? [encode(usage), encode(terminal)] : [encode(terminal)];
    await ctx.appender.close(tail, statusOf(terminal), meta).catch((err) => this.onError(err, ctx.gen.id));
    ctx.gen.track?.end(terminal);
  }

  private stopEvent(reason: unknown): TerminalEvent {
    const r = reason as StopReason | undefined;
    switch (r?.kind) {
      case "cancel":
        return { type: "abort", reason: r.reason, by: r.by };
      case "deadline":
        return {
          type: "error",
          code: "deadline_exceeded",
          message: `generation stopped at its deadline of ${r.timeout_ms} ms`,
          retryable: true,
        } satisfies ErrorEvent;
      case "max_tokens":
        return { type: "finish", reason: "length" };
      case "shutdown":
        return {
          type: "error",
          code: "interrupted",
          message: "the server shut down during the generation",
          retryable: true,
        };
      default:
        return { type: "abort", reason: "aborted", by: "server" };
    }
  }

  /**
   * Cancels a generation: aborts its upstream call and waits until the terminal event is
   * written. Idempotent: on a stream that already ended it answers with the final info.
   */
  async cancel(id: string, by = "client", reason = "cancelled"): Promise<StreamInfo> {
    const gen = this.running.get(id);
    if (gen) {
      if (!gen.controller.signal.aborted)
        gen.controller.abort({ kind: "cancel", by, reason } satisfies StopReason);
      await gen.done;
    }
    let info = await this.store.info(id);
    if (!info) throw new SluiceError("stream_not_found", `no stream ${id}`);
    if (!gen && info.status === "running" && info.kind === "generation")
      info = await this.cancelRemote(info, by, reason);
    return info;
  }

  /**
   * A generation running on another node: its owner gets the cancel (and aborts the
   * upstream); this answers once the terminal event is in the store. If no node holds the
   * lease (the owner died), the stream is closed here.
   */
  private async cancelRemote(info: StreamInfo, by: string, reason: string): Promise<StreamInfo> {
    const id = info.id;
    const owned = await this.coordinator.requestCancel(id, by, reason);
    const until = this.clock.now() + 15_000;
    let current: StreamInfo | undefined = info;
    let ownerGone = !owned;
    for (;;) {
      if (ownerGone) {
        const ev: SluiceEvent = { type: "abort", reason, by };
        await this.store.append(id, [encode(ev)], { close: "cancelled", metadata: {} }).catch((err) => {
          if (!isSluiceError(err) || err.code !== "stream_closed") throw err;
        });
      }
      current = await this.store.info(id);
      if (!current) throw new SluiceError("stream_not_found", `no stream ${id}`);
      if (current.status !== "running") return current;
      if (this.clock.now() > until) return current;
      await new Promise((r) => setTimeout(r, 20));
      ownerGone = !(await this.coordinator.hasOwner(id));
    }
  }

  isRunning(id: string): boolean {
    return this.running.has(id);
  }

  get runningCount(): number {
    return this.running.size;
  }

  /** Waits for a generation to end (tests, shutdown). */
  async settled(id: string): Promise<void> {
    await this.running.get(id)?.done;
  }

  /** Stops every generation, closing each with `error: interrupted`, after up to `graceMs` to finish. */
  async shutdown(graceMs = 0): Promise<void> {
    this.accepting = false;
    const all = [...this.running.values()];
    if (graceMs > 0 && all.length > 0) {
      await Promise.race([
        Promise.all(all.map((g) => g.done)),
        new Promise((r) => setTimeout(r, graceMs).unref()),
      ]);
    }
    for (const g of this.running.values()) g.controller.abort({ kind: "shutdown" } satisfies StopReason);
    await Promise.all([...this.running.values()].map((g) => g.done));
  }
}

function encode(ev: SluiceEvent): RecordInput {
  return { type: ev.type, data: JSON.stringify(ev) };
}

/** What holding one record costs in memory (budget accounting). */
function recordCost(rec: RecordInput): number {
  return RECORD_COST_BYTES + rec.data.length;
}

/** One try of one route, as stream info shows it (`attempts`). */
export interface Attempt {
  route: string;
  provider: string;
  started_at: string;
  error?: { code: string; message: string; upstream_status?: number };
  /** Set when the runner waited this long and tried the same route again. */
  retry_in_ms?: number;
}

/**
 * Error text that may quote an upstream (it may echo the credentials it was sent) goes through
 * every provider of the chain's redaction, then the generic one, before it is stored.
 */
/** What the steps of one generation's run share. */
interface RunContext {
  gen: Generation;
  chain: Route[];
  request: GenerationRequest;
  signal: AbortSignal;
  appender: Appender;
  shaper: EventShaper;
  attempts: Attempt[];
  /** Records appended so far (after the first, a failure is terminal: no retry). */
  appended: number;
}

/** EventShaper.shape's answer for a token past max_tokens. */
const MAX_TOKENS = Symbol("max_tokens");

/**
 * Provider events → the records of the log: `finish` and `usage` are held back (the runner
 * writes them last), tool calls are numbered in order of appearance, output tokens are counted
 * against max_tokens.
 */
class EventShaper {
  finish: TerminalEvent | undefined;
  usage: UsageEvent | undefined;
  outputTokens = 0;
  /** Whether the last shaped event counted as an output token. */
  counted = false;
  private readonly toolIndex = new Map<string, number>();
  /** Content blocks (formats/anthropic.ts): the last one opened, the run it is, each call's. */
  private blocks = -1;
  private run: string | undefined;
  private readonly toolBlock = new Map<string, number>();

  constructor(private readonly maxTokens: number | undefined) {}

  /**
   * The content block of a delta or call: a run of text (or reasoning) deltas is one block, each
   * tool call one; any other event ends a run. A pure function of the events appended before, so
   * the codec reading `block` gives every reader the same bytes.
   */
  private blockOf(ev: ProviderEvent): number | undefined {
    if (ev.type === "text-delta" || ev.type === "reasoning-delta") {
      if (this.run !== ev.type) {
        this.blocks++;
        this.run = ev.type;
      }
      return this.blocks;
    }
    if (ev.type === "tool-call-delta" || ev.type === "tool-call") {
      this.run = undefined;
      let b = this.toolBlock.get(ev.id);
      if (b === undefined) {
        b = ++this.blocks;
        this.toolBlock.set(ev.id, b);
      }
      return b;
    }
    this.run = undefined;
    return undefined;
  }

  shape(ev: ProviderEvent): SluiceEvent | undefined | typeof MAX_TOKENS {
    this.counted = false;
    if (ev.type === "finish") {
      this.finish = ev;
      return undefined;
    }
    if (ev.type === "usage") {
      this.usage = ev;
      return undefined;
    }
    let out: SluiceEvent = ev;
    if (ev.type === "tool-call-delta" || ev.type === "tool-call") {
      let index = this.toolIndex.get(ev.id);
      if (index === undefined) {
        index = this.toolIndex.size;
        this.toolIndex.set(ev.id, index);
      }
      if (ev.index !== index) out = { ...out, index } as SluiceEvent;
    }
    const block = this.blockOf(ev);
    if (block !== undefined && (block !== 0 || "block" in out)) out = { ...out, block } as SluiceEvent;
    if (ev.type === "text-delta" || ev.type === "reasoning-delta" || ev.type === "tool-call-delta") {
      if (this.maxTokens !== undefined && this.outputTokens >= this.maxTokens) return MAX_TOKENS;
      this.outputTokens++;
      this.counted = true;
    }
    return out;
  }
}

function redactFor(chain: Route[], text: string): string {
  let out = text;
  for (const r of chain) if (r.provider.redact) out = r.provider.redact(out);
  return redactUpstreamText(out);
}

/** A failure before the first token that another try (or another route) may not have. */
function isRetryable(err: unknown): boolean {
  if (!isSluiceError(err)) return false;
  // A connect error or a stall before anything arrived (connect, first byte, idle) is retried alike.
  if (err.code === "upstream_unreachable" || err.code === "upstream_timeout") return true;
  if (err.code !== "upstream_error") return false;
  const status = err.details?.upstream_status;
  return typeof status === "number" && (status === 408 || status === 429 || status >= 500);
}

function pickUsage(ev: ProviderEvent & { type: "usage" }): Usage {
  const u: Usage = { input_tokens: ev.input_tokens, output_tokens: ev.output_tokens };
  if (ev.reasoning_tokens !== undefined) u.reasoning_tokens = ev.reasoning_tokens;
  u.total_tokens = ev.total_tokens ?? ev.input_tokens + ev.output_tokens;
  return u;
}

/**
 * Appends a generation's events in order, in batches: while one append is in flight,
 * new events queue and go together in the next one. With the memory store that is one
 * event per append; with a slower store, batches grow with its latency.
 */
class Appender {
  private pending: RecordInput[] = [];
  private inFlight: Promise<void> | undefined;
  failed: SluiceError | undefined;
  /** Told the cost of each batch the store has taken (memory budget). */
  onStored: ((bytes: number) => void) | undefined;
  /** Told once, when the first batch has been stored (TTFT phases). */
  onFirstStored: (() => void) | undefined;

  constructor(
    private readonly store: Store,
    private readonly id: string,
    private readonly maxPending: number,
    /** Told about internal failures (logging), whose text the terminal event does not carry. */
    private readonly onInternal: (err: unknown) => void,
  ) {}

  push(rec: RecordInput): void {
    this.add(rec);
    this.flush();
  }

  /** Queues a record; it is stored with the next flush (with the others queued since). */
  add(rec: RecordInput): void {
    // After a failed append nothing more is stored (and a drain would finish synchronously,
    // leaving `inFlight` set to a settled promise that close() would await forever).
    if (this.failed) return;
    if (this.pending.length >= this.maxPending && !this.failed) {
      this.failed = new SluiceError(
        "store_unavailable",
        `the store could not keep up: more than ${this.maxPending} events waited to be stored`,
      );
      return;
    }
    this.pending.push(rec);
  }

  /** Starts storing what is queued (one append), unless an append is in flight: it follows that one. */
  flush(): void {
    if (this.pending.length > 0 && !this.inFlight && !this.failed) this.inFlight = this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0 && !this.failed) {
        const batch = this.pending;
        this.pending = [];
        try {
          await this.store.append(this.id, batch);
          if (this.onFirstStored) {
            const first = this.onFirstStored;
            this.onFirstStored = undefined;
            first();
          }
          if (this.onStored) {
            let bytes = 0;
            for (const r of batch) bytes += recordCost(r);
            this.onStored(bytes);
          }
        } catch (err) {
          if (isInternalFailure(err)) this.onInternal(err);
          this.failed = publicError(err);
        }
      }
    } finally {
      this.inFlight = undefined;
    }
  }

  /** Appends what is pending plus `tail` (ending with the terminal event) and closes the stream. */
  async close(tail: RecordInput[], status: EndStatus, metadata: Record<string, unknown>): Promise<void> {
    const terminal = tail[tail.length - 1] as RecordInput;
    while (this.inFlight) await this.inFlight;
    let records = this.pending;
    this.pending = [];
    if (this.failed) records = []; // what could not be stored is lost; the terminal event says why
    let end = this.failed ? [terminal] : tail;
    if (this.failed && terminal.type !== "error") {
      end = [
        encode({
          type: "error",
          code: this.failed.code,
          message: this.failed.message,
          retryable: this.failed.retryable,
        }),
      ];
      status = "failed";
    }
    try {
      await this.store.append(this.id, [...records, ...end], { close: status, metadata });
    } catch (err) {
      if (!isSluiceError(err) || (err.code !== "stream_too_large" && err.code !== "capacity_exceeded"))
        throw err;
      // The last records do not fit (the stream's bound, or a full memory store): a closing
      // append of the terminal event alone always does.
      const error = { code: err.code, message: err.message };
      await this.store.append(this.id, [encode({ type: "error", ...error, retryable: err.retryable })], {
        close: "failed",
        metadata: { ...metadata, error },
      });
    }
  }
}

export type { StreamStatus };
