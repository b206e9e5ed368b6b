import { SluiceError } from "@sluice/protocol";
import type { Redis } from "ioredis";
import type { KeyLimits } from "../auth/keys.js";
import { type KeyQuotas, limited } from "../auth/quotas.js";

export interface RedisQuotasOptions {
  /** This node's id (the coordinator's): names its share of every count. */
  nodeId: string;
  /** A node's counts stop counting this long (ms) after its last heartbeat (`cluster.lease_ttl_ms`). */
  leaseTtlMs: number;
  /** How often (ms) the node renews its lease and re-asserts its counts (`cluster.lease_renew_ms`). */
  renewMs: number;
  /** Longest wait (ms) for Redis on a check before answering `store_unavailable`. */
  timeoutMs?: number;
}

/** Redis time in ms, inside a script (one clock for every node: no skew between nodes). */
const NOW_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/**
 * Takes one more of a counted quota (a generation or a connection) for a key, atomically
 * across nodes. Each node's share of the count is a field of one hash (node id → count, the
 * node's own figure, written as an absolute value); a share counts only while its node's
 * lease in the nodes ZSET (scored by expiry) is live, so a dead node's share stops counting
 * when its lease expires, and is removed. For a generation, the per-minute window (a hash:
 * window number, generations, tokens) is checked and counted in the same step.
 * KEYS: nodes, counts, window. ARGV: [1] node, [2] lease ms, [3] the node's count with this one,
 * [4] cap or '', [5] generations/min or '', [6] output tokens/min or '', [7] '1' = a generation.
 * Returns {'OK'} or {'LIMIT', which, current, retry ms}.
 */
const TAKE_LUA = `${NOW_LUA}
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
local mine = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
if cap then
  local others = 0
  local flat = redis.call('HGETALL', KEYS[2])
  for i = 1, #flat, 2 do
    if flat[i] ~= ARGV[1] then
      local exp = tonumber(redis.call('ZSCORE', KEYS[1], flat[i]))
      if exp and exp > now then others = others + tonumber(flat[i + 1])
      else redis.call('HDEL', KEYS[2], flat[i]) end
    end
  end
  if others + mine > cap then return {'LIMIT', 'cap', others + mine - 1, 0} end
end
if ARGV[7] == '1' then
  local win = math.floor(now / 60000)
  local retry = (win + 1) * 60000 - now
  local w = redis.call('HMGET', KEYS[3], 'w', 'g', 't')
  local g, tk = 0, 0
  if tonumber(w[1]) == win then
    g = tonumber(w[2]) or 0
    tk = tonumber(w[3]) or 0
  else
    redis.call('HSET', KEYS[3], 'w', win, 'g', 0, 't', 0)
  end
  local gcap = tonumber(ARGV[5])
  local tcap = tonumber(ARGV[6])
  if gcap and g >= gcap then return {'LIMIT', 'gpm', g, retry} end
  if tcap and tk >= tcap then return {'LIMIT', 'tpm', tk, retry} end
  redis.call('HINCRBY', KEYS[3], 'g', 1)
  redis.call('PEXPIRE', KEYS[3], 120000)
end
redis.call('HSET', KEYS[2], ARGV[1], mine)
redis.call('PEXPIRE', KEYS[2], lease * 2)
return {'OK'}
`;

/**
 * Gives one back: the node's count (absolute; 0 removes its field) and, for a generation, its
 * output tokens into the current window. KEYS: counts, window. ARGV: node, count, tokens, lease ms.
 */
const GIVE_LUA = `${NOW_LUA}
local c = tonumber(ARGV[2])
if c > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], c)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 2)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local n = tonumber(ARGV[3])
if n > 0 then
  local win = math.floor(now / 60000)
  if tonumber(redis.call('HGET', KEYS[2], 'w')) ~= win then
    redis.call('HSET', KEYS[2], 'w', win, 'g', 0, 't', 0)
  end
  redis.call('HINCRBY', KEYS[2], 't', n)
  redis.call('PEXPIRE', KEYS[2], 120000)
end
return 1
`;

/**
 * The heartbeat: renews the node's lease and re-asserts its share of every count it holds (so a
 * node cut off from Redis long enough for its share to be dropped puts it back), and forgets
 * nodes gone for long. KEYS: nodes, then count hashes. ARGV: node, lease ms, then one count per hash.
 */
const BEAT_LUA = `${NOW_LUA}
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10 * lease)
for i = 2, #KEYS do
  local c = tonumber(ARGV[i + 1])
  if c > 0 then
    redis.call('HSET', KEYS[i], ARGV[1], c)
    redis.call('PEXPIRE', KEYS[i], lease * 2)
  else
    redis.call('HDEL', KEYS[i], ARGV[1])
  end
end
return 1
`;

/** Leaves: the node's shares and its lease go at once (a clean shutdown). KEYS: nodes, hashes. ARGV: node. */
const LEAVE_LUA = `
redis.call('ZREM', KEYS[1], ARGV[1])
for i = 2, #KEYS do redis.call('HDEL', KEYS[i], ARGV[1]) end
return 1
`;

interface Scripts {
  sluiceQuotaTake(...args: string[]): Promise<(string | number)[]>;
  sluiceQuotaGive(...args: string[]): Promise<number>;
  sluiceQuotaBeat(numKeys: number, ...args: string[]): Promise<number>;
  sluiceQuotaLeave(numKeys: number, ...args: string[]): Promise<number>;
}

/**
 * Key quotas counted across every node on one Redis (see docs/operations.md, "Quotas across
 * nodes"). `concurrent_generations` and `connections` are counts with a share per node, each
 * share alive only while its node's lease is (a killed node's share stops counting within
 * `cluster.lease_ttl_ms`); the per-minute limits are a fixed window on Redis time. Each check is
 * ONE script (one round trip), made only for a key that has the limit; a release is one more,
 * not awaited by the request. The node's own counts are kept here too: they are the truth its
 * heartbeat re-asserts.
 */
export class RedisQuotas implements KeyQuotas {
  readonly scope = "cluster";
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly nodeId: string;
  private readonly leaseTtlMs: number;
  private readonly timeoutMs: number;
  /** Count hash key → this node's count in it. */
  private readonly mine = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  /** Scripts sent (checks, releases, heartbeats): for tests and metrics. */
  roundTrips = 0;

  constructor(redis: Redis, prefix: string, opts: RedisQuotasOptions) {
    this.redis = redis;
    this.prefix = prefix;
    this.nodeId = opts.nodeId;
    this.leaseTtlMs = opts.leaseTtlMs;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    redis.defineCommand("sluiceQuotaTake", { numberOfKeys: 3, lua: TAKE_LUA });
    redis.defineCommand("sluiceQuotaGive", { numberOfKeys: 2, lua: GIVE_LUA });
    redis.defineCommand("sluiceQuotaBeat", { lua: BEAT_LUA });
    redis.defineCommand("sluiceQuotaLeave", { lua: LEAVE_LUA });
    this.timer = setInterval(() => void this.beat(), opts.renewMs);
    this.timer.unref();
  }

  private get scripts(): Scripts {
    return this.redis as unknown as Scripts;
  }
  private get kNodes(): string {
    return `${this.prefix}q:nodes`;
  }
  private kCount(kind: "run" | "conn", keyId: string): string {
    return `${this.prefix}q:${kind}:${keyId}`;
  }
  private kWindow(keyId: string): string {
    return `${this.prefix}q:win:${keyId}`;
  }

  private up(): void {
    if (this.closed || this.redis.status !== "ready")
      throw new SluiceError("store_unavailable", "redis is unreachable: quotas cannot be checked");
  }

  private async take(
    kind: "run" | "conn",
    hash: string,
    window: string,
    cap: number | undefined,
    perMinute: { generations?: number | undefined; tokens?: number | undefined } | undefined,
  ): Promise<void> {
    this.up();
    // Counted here before the answer: a heartbeat or release sent meanwhile then over-counts
    // (never under-counts) until the next heartbeat.
    const count = (this.mine.get(hash) ?? 0) + 1;
    this.mine.set(hash, count);
    let res: (string | number)[];
    try {
      this.roundTrips++;
      res = await within(
        this.scripts.sluiceQuotaTake(
          this.kNodes,
          hash,
          window,
          this.nodeId,
          String(this.leaseTtlMs),
          String(count),
          cap === undefined ? "" : String(cap),
          perMinute?.generations === undefined ? "" : String(perMinute.generations),
          perMinute?.tokens === undefined ? "" : String(perMinute.tokens),
          perMinute ? "1" : "",
        ),
        this.timeoutMs,
      );
    } catch (err) {
      this.drop(hash);
      if (err instanceof SluiceError) throw err;
      const e = new SluiceError("store_unavailable", "redis did not answer the quota check");
      e.cause = err;
      throw e;
    }
    if (res[0] === "OK") return;
    this.drop(hash);
    const current = Number(res[2]);
    const retryS = Number(res[3]) / 1000;
    switch (res[1]) {
      case "gpm":
        throw limited(
          "generations_per_minute",
          `this key started ${current} generations this minute on all nodes (limit ${perMinute?.generations})`,
          retryS,
        );
      case "tpm":
        throw limited(
          "output_tokens_per_minute",
          `this key used ${current} output tokens this minute on all nodes (limit ${perMinute?.tokens})`,
          retryS,
        );
      default:
        throw kind === "run"
          ? limited(
              "concurrent_generations",
              `this key already runs ${current} generations on all nodes (limit ${cap})`,
              1,
            )
          : limited(
              "connections",
              `this key holds ${current} open streaming connections on all nodes (limit ${cap})`,
              1,
            );
    }
  }

  private drop(hash: string): number {
    const n = Math.max(0, (this.mine.get(hash) ?? 1) - 1);
    this.mine.set(hash, n);
    return n;
  }

  /** One release: not awaited; a lost one is corrected by the next heartbeat. */
  private give(hash: string, window: string, tokens: number): void {
    const n = this.drop(hash);
    if (this.closed || this.redis.status !== "ready") return;
    this.roundTrips++;
    this.scripts
      .sluiceQuotaGive(
        hash,
        window,
        this.nodeId,
        String(n),
        String(Math.max(0, tokens)),
        String(this.leaseTtlMs),
      )
      .catch(() => {});
  }

  async beginGeneration(keyId: string, limits: KeyLimits): Promise<(outputTokens: number) => void> {
    const cap = limits.concurrent_generations;
    const gpm = limits.generations_per_minute;
    const tpm = limits.output_tokens_per_minute;
    // A key without generation limits costs nothing here.
    if (cap === undefined && gpm === undefined && tpm === undefined) return () => {};
    const hash = this.kCount("run", keyId);
    const window = this.kWindow(keyId);
    await this.take("run", hash, window, cap, { generations: gpm, tokens: tpm });
    let released = false;
    return (outputTokens: number) => {
      if (released) return;
      released = true;
      this.give(hash, window, tpm === undefined ? 0 : outputTokens);
    };
  }

  openConnection(keyId: string, limits: KeyLimits): (() => void) | Promise<() => void> {
    const cap = limits.connections;
    // The fast path: a key without a connections limit needs no round trip.
    if (cap === undefined) return () => {};
    const hash = this.kCount("conn", keyId);
    const window = this.kWindow(keyId);
    return this.take("conn", hash, window, cap, undefined).then(() => {
      let released = false;
      return () => {
        if (released) return;
        released = true;
        this.give(hash, window, 0);
      };
    });
  }

  /** Renews the lease and re-asserts this node's counts (dropping the zeros from the map). */
  async beat(): Promise<void> {
    if (this.closed || this.redis.status !== "ready") return;
    const hashes = [...this.mine.keys()];
    const counts = hashes.map((h) => String(this.mine.get(h) ?? 0));
    try {
      this.roundTrips++;
      await this.scripts.sluiceQuotaBeat(
        1 + hashes.length,
        this.kNodes,
        ...hashes,
        this.nodeId,
        String(this.leaseTtlMs),
        ...counts,
      );
      for (const h of hashes) if (this.mine.get(h) === 0) this.mine.delete(h);
    } catch {
      // Redis unreachable: the next beat re-asserts everything.
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    this.closed = true;
    if (this.redis.status !== "ready") return;
    const hashes = [...this.mine.keys()];
    await this.scripts
      .sluiceQuotaLeave(1 + hashes.length, this.kNodes, ...hashes, this.nodeId)
      .catch(() => {});
  }
}

function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new SluiceError("store_unavailable", "redis did not answer the quota check in time")),
      ms,
    );
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
