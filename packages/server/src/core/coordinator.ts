import type { Store } from "../stores/store.js";

/** What a coordinator asks of the Runner on this node. */
export interface CoordinatorHooks {
  /** A cancel for a generation running on this node arrived through another node. */
  cancelLocal(id: string, by: string, reason: string): void;
  /** A generation's owner is gone: close its stream with `error` / `interrupted`, keeping its output. */
  interrupt(id: string, message: string): Promise<void>;
}

/**
 * Ownership of generations across nodes. The node running a generation holds its lease
 * while it runs; cancels reach the owner wherever they arrive; a node that notices a
 * generation whose owner is gone closes it as interrupted. One node (memory, sqlite):
 * `LocalCoordinator`; several nodes on Redis: `RedisCoordinator`.
 */
export interface Coordinator {
  readonly name: string;
  /** Starts background work (lease renewal, orphan checks, cancel routing). */
  start(hooks: CoordinatorHooks): Promise<void>;
  /** Takes the lease on a generation about to start on this node. */
  acquire(id: string): Promise<void>;
  /** Gives the lease up once the generation's terminal event is stored. */
  release(id: string): Promise<void>;
  /** Asks the owner (on another node) to cancel. Resolves true when a live owner holds the lease. */
  requestCancel(id: string, by: string, reason: string): Promise<boolean>;
  /** Whether some node currently holds the lease. */
  hasOwner(id: string): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * A single node owns everything it runs. At startup, generations a crash left `running`
 * in a durable store cannot have an owner any more: they are closed as interrupted.
 */
export class LocalCoordinator implements Coordinator {
  readonly name = "local";
  constructor(private readonly store: Store) {}

  async start(hooks: CoordinatorHooks): Promise<void> {
    const seen = new Set<string>();
    for (;;) {
      const running = await this.store.list({ status: "running", limit: 500 });
      const orphans = running.filter((s) => s.kind === "generation" && !seen.has(s.id));
      if (orphans.length === 0) return;
      for (const s of orphans) {
        seen.add(s.id);
        await hooks.interrupt(s.id, "the server stopped during the generation (crash or kill)");
      }
    }
  }
  async acquire(): Promise<void> {}
  async release(): Promise<void> {}
  async requestCancel(): Promise<boolean> {
    return false;
  }
  async hasOwner(): Promise<boolean> {
    return false;
  }
  async close(): Promise<void> {}
}
