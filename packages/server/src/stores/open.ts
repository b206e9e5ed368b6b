import type { KeyQuotas } from "../auth/quotas.js";
import type { Clock } from "../core/clock.js";
import { type Coordinator, LocalCoordinator } from "../core/coordinator.js";
import { MemoryStore } from "./memory.js";
import { RedisStore } from "./redis.js";
import { RedisCoordinator } from "./redis-coordinator.js";
import { RedisQuotas } from "./redis-quotas.js";
import { SqliteStore } from "./sqlite.js";
import type { Store, StoreLimits } from "./store.js";

/** `memory`, `sqlite:PATH` or `redis://host:port[/db]` (also `rediss://`). */
export type StoreSpec = string;

export function isStoreSpec(spec: string): boolean {
  return (
    spec === "memory" ||
    (spec.startsWith("sqlite:") && spec.length > "sqlite:".length) ||
    /^rediss?:\/\/[^/]/.test(spec)
  );
}

export interface OpenStoreOptions {
  clock: Clock;
  limits: StoreLimits;
  maxStreams: number;
  /** The memory store's bound on what all its streams hold (bytes); unbounded when absent. */
  memoryStoreBytes?: number;
  redisPrefix: string;
  /** How long Redis appends wait for a lost connection to come back (ms). */
  outageMs: number;
  leaseTtlMs: number;
  leaseRenewMs: number;
}

/**
 * Opens the configured store and the coordinator that goes with it; for Redis also the key
 * quotas counted across nodes (other stores: none here, the server counts on its own node).
 */
export async function openStore(
  spec: StoreSpec,
  opts: OpenStoreOptions,
): Promise<{ store: Store; coordinator: Coordinator; quotas?: KeyQuotas }> {
  if (spec === "memory") {
    const store = new MemoryStore({
      clock: opts.clock,
      maxStreams: opts.maxStreams,
      limits: opts.limits,
      ...(opts.memoryStoreBytes !== undefined ? { maxBytes: opts.memoryStoreBytes } : {}),
    });
    return { store, coordinator: new LocalCoordinator(store) };
  }
  if (spec.startsWith("sqlite:")) {
    const store = new SqliteStore({
      path: spec.slice("sqlite:".length),
      clock: opts.clock,
      limits: opts.limits,
      maxStreams: opts.maxStreams,
    });
    return { store, coordinator: new LocalCoordinator(store) };
  }
  if (/^rediss?:\/\//.test(spec)) {
    const store = new RedisStore({
      url: spec,
      prefix: opts.redisPrefix,
      clock: opts.clock,
      limits: opts.limits,
      outageMs: opts.outageMs,
      maxStreams: opts.maxStreams,
    });
    // Start even if Redis is not there yet (readyz says so); appends wait, requests fail fast.
    await store.connected(5000);
    const coordinator = new RedisCoordinator(store, {
      leaseTtlMs: opts.leaseTtlMs,
      renewMs: opts.leaseRenewMs,
    });
    const quotas = new RedisQuotas(store.client, store.prefix, {
      nodeId: coordinator.nodeId,
      leaseTtlMs: opts.leaseTtlMs,
      renewMs: opts.leaseRenewMs,
    });
    return { store, coordinator, quotas };
  }
  throw new Error(`unknown store "${spec}": use memory, sqlite:PATH or redis://host:port`);
}

/** Whether the store can serve requests now (Redis reachable). */
export function storeReady(store: Store): boolean {
  return store.ready ? store.ready() : true;
}
