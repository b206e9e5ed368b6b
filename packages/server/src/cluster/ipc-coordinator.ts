import { SluiceError } from "@sluice/protocol";
import type { Coordinator, CoordinatorHooks } from "../core/coordinator.js";
import type { Store } from "../stores/store.js";
import { isSluiceMessage, type ToPrimary, type ToWorker } from "./messages.js";
import type { WireChange } from "./worker-store.js";

type Request = ToPrimary extends infer T ? (T extends { sluice: "request" } ? Omit<T, "seq"> : never) : never;

/** A worker's IPC channel to the primary: requests with replies, and the messages it pushes. */
export class PrimaryChannel {
  private seq = 0;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: unknown): void }>();
  onNotices: (changes: WireChange[]) => void = () => {};
  onCancel: (id: string, by: string, reason: string) => void = () => {};
  onInterrupt: (ids: string[]) => void = () => {};
  onInterest: (id: string, on: boolean) => void = () => {};
  private readonly listener = (m: unknown) => this.receive(m);

  constructor(private readonly proc: NodeJS.Process = process) {
    if (!proc.send) throw new Error("not a worker process (no IPC channel)");
    proc.on("message", this.listener);
  }

  private receive(m: unknown): void {
    if (!isSluiceMessage(m)) return;
    const msg = m as ToWorker;
    switch (msg.sluice) {
      case "notices":
        this.onNotices(msg.changes);
        return;
      case "reply": {
        const p = this.pending.get(msg.seq);
        if (!p) return;
        this.pending.delete(msg.seq);
        if (msg.error) p.reject(new SluiceError("internal_error", msg.error));
        else p.resolve(msg.value);
        return;
      }
      case "cancel":
        this.onCancel(msg.id, msg.by, msg.reason);
        return;
      case "interrupt":
        this.onInterrupt(msg.ids);
        return;
      case "interest":
        this.onInterest(msg.id, msg.on);
        return;
    }
  }

  send(msg: ToPrimary): void {
    if (this.proc.connected) this.proc.send?.(msg);
  }

  request<T>(req: Request): Promise<T> {
    if (!this.proc.connected)
      return Promise.reject(new SluiceError("internal_error", "the primary process is gone"));
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      this.proc.send?.({ ...req, seq } as ToPrimary);
    });
  }

  close(): void {
    this.proc.off("message", this.listener);
    for (const p of this.pending.values()) p.reject(new SluiceError("internal_error", "closing"));
    this.pending.clear();
  }
}

/**
 * Ownership among the workers of one machine, kept by the primary (the IPC counterpart of
 * `RedisCoordinator`): `acquire` registers this worker as a generation's owner before its
 * stream is created, `release` after its terminal event; a cancel arriving on another worker
 * is forwarded by the primary to the owner, which aborts the upstream. When a worker dies, the
 * primary drops its leases and asks a live worker to close its generations as interrupted;
 * every worker, when it starts, also closes running generations that no worker owns.
 */
export class IpcCoordinator implements Coordinator {
  readonly name = "workers";
  private readonly owned = new Set<string>();

  constructor(
    private readonly channel: PrimaryChannel,
    private readonly store: Store,
    /** Hears, at startup, the streams other workers follow (WorkerStore.setInterests). */
    private readonly onInterests?: (ids: string[]) => void,
  ) {}

  async start(hooks: CoordinatorHooks): Promise<void> {
    // First: the closes below are commits, and other workers may follow those streams.
    if (this.onInterests)
      this.onInterests(await this.channel.request<string[]>({ sluice: "request", op: "interests" }));
    this.channel.onCancel = (id, by, reason) => {
      if (this.owned.has(id)) hooks.cancelLocal(id, by, reason);
    };
    this.channel.onInterrupt = (ids) => {
      void (async () => {
        for (const id of ids) await hooks.interrupt(id, "the worker running the generation stopped");
      })();
    };
    // Running generations no worker owns were left by a crash (of the whole server or a worker).
    const seen = new Set<string>();
    for (;;) {
      const running = await this.store.list({ status: "running", limit: 500 });
      const ids = running.filter((s) => s.kind === "generation" && !seen.has(s.id)).map((s) => s.id);
      if (ids.length === 0) return;
      for (const id of ids) seen.add(id);
      const owned = new Set(await this.channel.request<string[]>({ sluice: "request", op: "owned", ids }));
      for (const id of ids) {
        if (!owned.has(id))
          await hooks.interrupt(id, "the server stopped during the generation (crash or kill)");
      }
    }
  }

  async acquire(id: string): Promise<void> {
    this.owned.add(id);
    try {
      await this.channel.request({ sluice: "request", op: "acquire", id });
    } catch (err) {
      this.owned.delete(id);
      throw err;
    }
  }

  async release(id: string): Promise<void> {
    this.owned.delete(id);
    await this.channel.request({ sluice: "request", op: "release", id }).catch(() => {});
  }

  async requestCancel(id: string, by: string, reason: string): Promise<boolean> {
    return this.channel.request<boolean>({ sluice: "request", op: "cancel", id, by, reason });
  }

  async hasOwner(id: string): Promise<boolean> {
    return this.channel.request<boolean>({ sluice: "request", op: "hasOwner", id });
  }

  async close(): Promise<void> {}
}
