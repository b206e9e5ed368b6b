import { randomBytes } from "node:crypto";
import { SluiceError } from "@sluice/protocol";
import type { Redis } from "ioredis";
import type { Coordinator, CoordinatorHooks } from "../core/coordinator.js";
import type { RedisStore } from "./redis.js";

export interface RedisCoordinatorOptions {
  /** A lease not renewed for this long is expired: its generation's node is considered gone. */
  leaseTtlMs?: number;
  /** How often a node renews the leases of what it runs (and checks for orphans). */
  renewMs?: number;
  nodeId?: string;
}

/**
 * Ownership over Redis. Lease: `<prefix>lease:<id>` = node id with a PX TTL, set before the
 * stream is created and renewed every `renewMs` while the generation runs. Every node checks
 * the running set every `renewMs`: a generation without a lease is closed as interrupted
 * (atomically: if several nodes try, one close wins, the others get stream_closed). A node
 * only judges leases after it has been connected for a whole lease TTL, so an owner that was
 * cut off from Redis has had time to renew. Cancels travel on `<prefix>cancel` (pub/sub).
 */
export class RedisCoordinator implements Coordinator {
  readonly name = "redis";
  readonly nodeId: string;
  private readonly leaseTtlMs: number;
  private readonly renewMs: number;
  private readonly owned = new Set<string>();
  private readonly sub: Redis;
  private readonly redis: Redis;
  private readonly prefix: string;
  private timer: NodeJS.Timeout | undefined;
  private readySince: number | undefined;
  private hooks: CoordinatorHooks | undefined;
  private checking = false;
  private closed = false;

  constructor(
    private readonly store: RedisStore,
    opts: RedisCoordinatorOptions = {},
  ) {
    this.leaseTtlMs = opts.leaseTtlMs ?? 8000;
    this.renewMs = opts.renewMs ?? 2000;
    this.nodeId = opts.nodeId ?? `node-${randomBytes(6).toString("hex")}`;
    this.redis = store.client;
    this.prefix = store.prefix;
    this.sub = this.redis.duplicate({ connectionName: "sluice-coord" });
    this.sub.on("error", () => {});
    const onReady = () => {
      this.readySince = Date.now();
      void this.renew();
    };
    const onDown = () => {
      this.readySince = undefined;
    };
    this.redis.on("ready", onReady);
    this.redis.on("close", onDown);
    if (this.redis.status === "ready") this.readySince = Date.now();
  }

  private lease(id: string): string {
    return `${this.prefix}lease:${id}`;
  }
  private get cancelChannel(): string {
    return `${this.prefix}cancel`;
  }

  async start(hooks: CoordinatorHooks): Promise<void> {
    this.hooks = hooks;
    this.sub.on("message", (_channel: string, message: string) => {
      let m: { id?: string; by?: string; reason?: string };
      try {
        m = JSON.parse(message);
      } catch {
        return;
      }
      if (m.id && this.owned.has(m.id)) hooks.cancelLocal(m.id, m.by ?? "client", m.reason ?? "cancelled");
    });
    await this.sub.subscribe(this.cancelChannel).catch(() => {});
    this.timer = setInterval(() => {
      void this.renew();
      void this.check();
    }, this.renewMs);
    this.timer.unref();
  }

  /** Commands on behalf of a request fail fast while Redis is down instead of queueing. */
  private up(): void {
    if (this.redis.status !== "ready") throw new SluiceError("store_unavailable", "redis is unreachable");
  }

  async acquire(id: string): Promise<void> {
    this.up();
    this.owned.add(id);
    try {
      await this.redis.set(this.lease(id), this.nodeId, "PX", this.leaseTtlMs);
    } catch (err) {
      this.owned.delete(id);
      throw err;
    }
  }

  async release(id: string): Promise<void> {
    this.owned.delete(id);
    if (this.redis.status === "ready") await this.redis.del(this.lease(id)).catch(() => {});
  }

  private async renew(): Promise<void> {
    if (this.owned.size === 0 || this.redis.status !== "ready") return;
    const p = this.redis.pipeline();
    for (const id of this.owned) p.set(this.lease(id), this.nodeId, "PX", this.leaseTtlMs);
    await p.exec().catch(() => {});
  }

  /** Closes running generations whose lease expired (their node died). */
  private async check(): Promise<void> {
    const hooks = this.hooks;
    if (!hooks || this.checking || this.closed) return;
    if (this.readySince === undefined || Date.now() - this.readySince < this.leaseTtlMs) return;
    this.checking = true;
    try {
      const ids = (await this.store.runningIds()).filter((id) => !this.owned.has(id));
      if (this.closed) return;
      if (ids.length === 0) return;
      const p = this.redis.pipeline();
      for (const id of ids) {
        p.exists(this.lease(id));
        p.hmget(`${this.prefix}m:${id}`, "kind", "status");
      }
      const res = (await p.exec()) ?? [];
      // The answers may come from after a reconnect (commands are resent): judge only if
      // this node has been connected for a whole lease TTL since then.
      const since = this.readySince;
      if (since === undefined || Date.now() - since < this.leaseTtlMs) return;
      for (let i = 0; i < ids.length; i++) {
        const leased = res[2 * i]?.[1] as number;
        const [kind, status] = (res[2 * i + 1]?.[1] ?? []) as (string | null)[];
        if (leased === 1 || kind !== "generation" || status !== "running") continue;
        await hooks.interrupt(
          ids[i] as string,
          "the node running the generation stopped (its lease expired)",
        );
      }
    } catch {
      // Redis unreachable: try again next round.
    } finally {
      this.checking = false;
    }
  }

  async requestCancel(id: string, by: string, reason: string): Promise<boolean> {
    this.up();
    await this.redis.publish(this.cancelChannel, JSON.stringify({ id, by, reason }));
    return this.hasOwner(id);
  }

  async hasOwner(id: string): Promise<boolean> {
    this.up();
    return (await this.redis.exists(this.lease(id))) === 1;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    try {
      if (this.sub.status === "ready") await this.sub.quit();
      else this.sub.disconnect();
    } catch {
      this.sub.disconnect();
    }
  }
}
