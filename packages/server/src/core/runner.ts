import {
  type ErrorEvent,
  isSluiceError,
  SluiceError,
  type SluiceEvent,
  type StreamStatus,
  statusOf,
  type TerminalEvent,
} from "@sluice/protocol";
import type { Provider, ProviderEvent } from "../providers/provider.js";
import {
  type EndStatus,
  EVENTS_CONTENT_TYPE,
  type RecordInput,
  type Store,
  type StreamInfo,
} from "../stores/store.js";
import { type Clock, realClock } from "./clock.js";
import { type Coordinator, LocalCoordinator } from "./coordinator.js";
import { newStreamId } from "./ids.js";
import type { GenerationRequest } from "./request.js";
import type { RouteTable } from "./routes.js";

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
  /** Ownership across nodes (leases, cancel routing); a LocalCoordinator when absent. */
  coordinator?: Coordinator;
  /**
   * Most events one generation may hold in memory while the store is slow or unreachable;
   * past it the generation ends with `store_unavailable`.
   */
  maxBufferedEvents?: number;
}

export interface StartOptions {
  tenant?: string;
}

interface Generation {
  id: string;
  controller: AbortController;
  done: Promise<void>;
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
  readonly coordinator: Coordinator;
  private readonly maxBufferedEvents: number;
  private accepting = true;

  constructor(opts: RunnerOptions) {
    this.store = opts.store;
    this.routes = opts.routes;
    this.clock = opts.clock ?? realClock;
    this.onError = opts.onError ?? (() => {});
    this.coordinator = opts.coordinator ?? new LocalCoordinator(opts.store);
    this.maxBufferedEvents = opts.maxBufferedEvents ?? 100_000;
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
    const route = this.routes.resolve(request.model);
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
      },
      ...(opts.tenant !== undefined ? { tenant: opts.tenant } : {}),
    };
    // The lease comes first, so no node ever sees this generation running without an owner.
    await this.coordinator.acquire(id);
    try {
      await this.store.create(init);
    } catch (err) {
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
    const gen: Generation = { id, controller, done: Promise.resolve() };
    this.running.set(id, gen);
    try {
      await this.store.append(id, [encode(start)]);
    } catch (err) {
      this.running.delete(id);
      // Best effort: end the stream that was created (if the store is down, the lease expiry
      // or the next start does it).
      void this.interrupt(id, `the generation could not start: ${(err as Error).message}`);
      await this.coordinator.release(id).catch(() => {});
      throw err;
    }
    gen.done = this.run(gen, route.provider, { ...request, upstream_model: route.upstream_model }).finally(
      () => {
        this.running.delete(id);
        return this.coordinator.release(id).catch(() => {});
      },
    );
    const info = await this.store.info(id);
    if (!info) throw new SluiceError("internal_error", `stream ${id} vanished after creation`);
    return info;
  }

  private async run(
    gen: Generation,
    provider: Provider,
    request: GenerationRequest & { upstream_model: string },
  ): Promise<void> {
    const { id, controller } = gen;
    const signal = controller.signal;
    const appender = new Appender(this.store, id, this.maxBufferedEvents);
    let deadline: NodeJS.Timeout | undefined;
    if (request.timeout_ms !== undefined) {
      const ms = request.timeout_ms;
      deadline = setTimeout(
        () => controller.abort({ kind: "deadline", timeout_ms: ms } satisfies StopReason),
        ms,
      );
    }
    let finishReason: TerminalEvent | undefined;
    let usage: Usage | undefined;
    let outputTokens = 0;
    const maxTokens = request.max_tokens;
    let terminal: TerminalEvent;
    try {
      for await (const ev of provider.stream(request, { signal, clock: this.clock })) {
        if (signal.aborted) break;
        if (ev.type === "finish") {
          finishReason = ev;
          continue;
        }
        if (ev.type === "usage") usage = pickUsage(ev);
        appender.push(encode(ev));
        if (ev.type === "text-delta" || ev.type === "reasoning-delta" || ev.type === "tool-call-delta") {
          outputTokens++;
          if (maxTokens !== undefined && outputTokens >= maxTokens) {
            // The provider should stop by itself at max_tokens; if it doesn't, we stop it.
            controller.abort({ kind: "max_tokens" } satisfies StopReason);
            break;
          }
        }
        if (appender.failed) throw appender.failed;
      }
      terminal = signal.aborted
        ? this.stopEvent(signal.reason)
        : (finishReason ?? { type: "finish", reason: "stop" });
    } catch (err) {
      if (signal.aborted) {
        terminal = this.stopEvent(signal.reason);
      } else if (isSluiceError(err)) {
        terminal = { type: "error", code: err.code, message: err.message, retryable: err.retryable };
      } else {
        this.onError(err, id);
        terminal = {
          type: "error",
          code: "internal_error",
          message: err instanceof Error ? err.message : String(err),
          retryable: true,
        };
      }
    } finally {
      if (deadline) clearTimeout(deadline);
    }
    if (!controller.signal.aborted) controller.abort({ kind: "shutdown" } satisfies StopReason); // release provider resources
    const meta: Record<string, unknown> = { output_tokens: outputTokens };
    if (usage) meta.usage = usage;
    if (terminal.type === "finish") meta.finish_reason = terminal.reason;
    if (terminal.type === "error") meta.error = { code: terminal.code, message: terminal.message };
    await appender.close(encode(terminal), statusOf(terminal), meta).catch((err) => this.onError(err, id));
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

  constructor(
    private readonly store: Store,
    private readonly id: string,
    private readonly maxPending: number,
  ) {}

  push(rec: RecordInput): void {
    if (this.pending.length >= this.maxPending && !this.failed) {
      this.failed = new SluiceError(
        "store_unavailable",
        `the store could not keep up: more than ${this.maxPending} events waited to be stored`,
      );
      return;
    }
    this.pending.push(rec);
    if (!this.inFlight) this.inFlight = this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0 && !this.failed) {
        const batch = this.pending;
        this.pending = [];
        try {
          await this.store.append(this.id, batch);
        } catch (err) {
          this.failed = isSluiceError(err) ? err : new SluiceError("internal_error", String(err));
        }
      }
    } finally {
      this.inFlight = undefined;
    }
  }

  async close(terminal: RecordInput, status: EndStatus, metadata: Record<string, unknown>): Promise<void> {
    while (this.inFlight) await this.inFlight;
    let records = this.pending;
    this.pending = [];
    if (this.failed) records = []; // what could not be stored is lost; the terminal event says why
    let end = terminal;
    if (this.failed && terminal.type !== "error") {
      end = encode({
        type: "error",
        code: this.failed.code,
        message: this.failed.message,
        retryable: this.failed.retryable,
      });
      status = "failed";
    }
    await this.store.append(this.id, [...records, end], { close: status, metadata });
  }
}

export type { StreamStatus };
