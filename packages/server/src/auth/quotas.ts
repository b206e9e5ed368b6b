import { SluiceError } from "@sluice/protocol";
import type { Clock } from "../core/clock.js";
import { realClock } from "../core/clock.js";
import type { KeyLimits } from "./keys.js";

interface Usage {
  running: number;
  connections: number;
  windowStart: number;
  generations: number;
  tokens: number;
}

export const WINDOW_MS = 60_000;

/**
 * Per-key quotas, as the doors use them. `Quotas` counts on this node (memory and SQLite stores:
 * one node); `RedisQuotas` (stores/redis-quotas.ts) counts across every node on one Redis.
 */
export interface KeyQuotas {
  /** "node": each node counts alone; "cluster": counted across every node of the store. */
  readonly scope: "node" | "cluster";
  /**
   * Reserves a generation for a key (throws `rate_limited` when over a limit); resolves to the
   * function that releases it (call it once, with the generation's output tokens).
   */
  beginGeneration(keyId: string, limits: KeyLimits): Promise<(outputTokens: number) => void>;
  /**
   * Reserves a streaming connection for a key; returns its release function, directly when it
   * can decide without a round trip (no `connections` limit, or counted on this node).
   */
  openConnection(keyId: string, limits: KeyLimits): (() => void) | Promise<() => void>;
  close?(): Promise<void>;
}

export function limited(limit: string, message: string, retryAfterS: number): SluiceError {
  return new SluiceError("rate_limited", message, {
    limit,
    retry_after_s: Math.max(1, Math.ceil(retryAfterS)),
  });
}

/**
 * Per-key quotas on this node: concurrent generations, generations and output tokens per
 * minute (a fixed one-minute window per key), open streaming connections. Limits are
 * checked when something starts; nothing already running is ever cut by a quota.
 * Memory is one small record per key that has been used (keys come from config: bounded).
 */
export class Quotas implements KeyQuotas {
  readonly scope = "node";
  private readonly usage = new Map<string, Usage>();

  constructor(private readonly clock: Clock = realClock) {}

  private get(keyId: string): Usage {
    let u = this.usage.get(keyId);
    const now = this.clock.now();
    if (!u) {
      u = { running: 0, connections: 0, windowStart: now, generations: 0, tokens: 0 };
      this.usage.set(keyId, u);
    }
    if (now - u.windowStart >= WINDOW_MS) {
      u.windowStart = now;
      u.generations = 0;
      u.tokens = 0;
    }
    return u;
  }

  async beginGeneration(keyId: string, limits: KeyLimits): Promise<(outputTokens: number) => void> {
    return this.reserveGeneration(keyId, limits);
  }

  /** Reserves a generation for a key; returns the function that releases it (call with its output tokens). */
  reserveGeneration(keyId: string, limits: KeyLimits): (outputTokens: number) => void {
    const u = this.get(keyId);
    const retryIn = (u.windowStart + WINDOW_MS - this.clock.now()) / 1000;
    if (limits.concurrent_generations !== undefined && u.running >= limits.concurrent_generations) {
      throw limited(
        "concurrent_generations",
        `this key already runs ${u.running} generations (limit ${limits.concurrent_generations})`,
        1,
      );
    }
    if (limits.generations_per_minute !== undefined && u.generations >= limits.generations_per_minute) {
      throw limited(
        "generations_per_minute",
        `this key started ${u.generations} generations this minute (limit ${limits.generations_per_minute})`,
        retryIn,
      );
    }
    if (limits.output_tokens_per_minute !== undefined && u.tokens >= limits.output_tokens_per_minute) {
      throw limited(
        "output_tokens_per_minute",
        `this key used ${u.tokens} output tokens this minute (limit ${limits.output_tokens_per_minute})`,
        retryIn,
      );
    }
    u.running++;
    u.generations++;
    let released = false;
    return (outputTokens: number) => {
      if (released) return;
      released = true;
      const v = this.get(keyId);
      v.running = Math.max(0, v.running - 1);
      v.tokens += outputTokens;
    };
  }

  /** Reserves a streaming connection for a key; returns its release function. */
  openConnection(keyId: string, limits: KeyLimits): () => void {
    const u = this.get(keyId);
    if (limits.connections !== undefined && u.connections >= limits.connections) {
      throw limited(
        "connections",
        `this key holds ${u.connections} open streaming connections (limit ${limits.connections})`,
        1,
      );
    }
    u.connections++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const v = this.get(keyId);
      v.connections = Math.max(0, v.connections - 1);
    };
  }
}
