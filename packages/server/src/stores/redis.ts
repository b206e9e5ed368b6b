import { randomUUID } from "node:crypto";
import { formatOffset, SluiceError, type StreamStatus } from "@sluice/protocol";
import { Redis } from "ioredis";
import type { Clock } from "../core/clock.js";
import { realClock } from "../core/clock.js";
import { Deadlines } from "../core/limits.js";
import {
  type AppendOptions,
  type AppendResult,
  type CreateStream,
  capacityExceeded,
  DEFAULT_STORE_LIMITS,
  type ListOptions,
  type ReadResult,
  type RecordInput,
  type Store,
  type StoredRecord,
  type StoreLimits,
  type StoreNotice,
  type StreamInfo,
  type StreamPatch,
  storeFailure,
} from "./store.js";

export interface RedisStoreOptions {
  /** redis://host:port[/db] */
  url: string;
  /** Key prefix, so several deployments can share one Redis. */
  prefix?: string;
  limits?: Partial<StoreLimits>;
  clock?: Clock;
  /** How often expired streams are swept (ms); 0 disables the timer. */
  sweepIntervalMs?: number;
  /** How often each followed stream is re-checked for anything a lost notice missed (ms). */
  syncIntervalMs?: number;
  /** How long an append waits for Redis to come back before failing with store_unavailable (ms). */
  outageMs?: number;
  /** How long a read, info or list waits for Redis before failing with store_unavailable (ms). */
  readTimeoutMs?: number;
  /**
   * Most streams kept (`limits.max_streams`), all nodes together: at the bound the ended stream
   * that expires first is removed; with only running ones left, create fails with `capacity_exceeded`.
   */
  maxStreams?: number;
}

/**
 * Tells the nodes that follow a stream (the set `f:<id>` of node tags, kept by RedisStore.subscribe)
 * a notice, on each node's own channel `node:<tag>`; `skip` (the node that wrote) is left out: it
 * delivered its own records already. A stream only its writer follows costs no PUBLISH at all.
 */
const NOTIFY_LUA = `
local function notify(pfx, id, msg, skip)
  local fl = redis.call('SMEMBERS', pfx .. 'f:' .. id)
  for _, t in ipairs(fl) do
    if t ~= skip then redis.call('PUBLISH', pfx .. 'node:' .. t, id .. '\\n' .. msg) end
  end
end
`;

/**
 * Creates a stream atomically; an expired stream with the same id is replaced (its followers
 * hear it was deleted). At `max streams` (the index's size), ended streams are removed first,
 * the one that expires first first (`FULL` when only running ones are left).
 * KEYS: meta, log, index, ctr, running, expiry.
 * ARGV: id, now, kind, content_type, tenant, model, '' (unused), max streams ('' = none), key
 * prefix, then metadata field/value pairs.
 */
const CREATE_LUA = `${NOTIFY_LUA}
local m = KEYS[1]
local replaced = false
if redis.call('EXISTS', m) == 1 then
  local h = redis.call('HMGET', m, 'expires_ms', 'status')
  local exp = tonumber(h[1])
  if not exp or exp > tonumber(ARGV[2]) then return 'EXISTS' end
  redis.call('DEL', m, KEYS[2])
  notify(ARGV[9], ARGV[1], '0\\n' .. h[2] .. '\\ndeleted', '')
  replaced = true
end
local max = tonumber(ARGV[8])
if max and not replaced then
  local tries = 0
  while redis.call('ZCARD', KEYS[3]) >= max and tries < 16 do
    tries = tries + 1
    local freed = false
    for _, v in ipairs(redis.call('ZRANGE', KEYS[6], 0, 63)) do
      local vm = ARGV[9] .. 'm:' .. v
      local st = redis.call('HGET', vm, 'status')
      if st ~= 'running' then
        -- Its followers hear it is gone (before its follower set goes with it).
        if st then notify(ARGV[9], v, '0\\n' .. st .. '\\ndeleted', '') end
        redis.call('DEL', vm, ARGV[9] .. 'l:' .. v, ARGV[9] .. 'f:' .. v)
        redis.call('ZREM', KEYS[3], v)
        redis.call('ZREM', KEYS[6], v)
        redis.call('SREM', KEYS[5], v)
        freed = true
        break
      end
    end
    if not freed then return 'FULL' end
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('HSET', m, 'kind', ARGV[3], 'ct', ARGV[4], 'status', 'running', 'created_ms', ARGV[2], 'length', 0, 'bytes', 0, 'lb', '')
if ARGV[5] ~= '' then redis.call('HSET', m, 'tenant', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', m, 'model', ARGV[6]) end
for i = 10, #ARGV, 2 do redis.call('HSET', m, ARGV[i], ARGV[i + 1]) end
local c = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[3], c, ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
return 'OK'
`;

/**
 * Appends to any number of streams in one call: each append atomic (with its metadata and close),
 * sequence numbers allocated here, so appends from any number of nodes stay strictly increasing.
 * The appends a node makes in one turn of its event loop (every generation's tokens of that turn)
 * travel as one script call: one command and one reply instead of one each.
 * No KEYS (a key is the prefix plus the stream id: one Redis, not Redis Cluster).
 * ARGV: [1] now, [2] max records, [3] max bytes, [4] default ttl s, [5] key prefix, [6] this node's
 * tag, then per append: id; one argument holding, space-separated, close status or '', batch
 * token, added bytes, required length (compare-and-append) or '', the number of metadata pairs,
 * the number of records (fewer arguments: each costs the client as much as a record); the
 * metadata pairs; then type, data, encoding ('' for none) of each record. The records become JSON
 * ([[type, data(, encoding)], ...], as onPublished reads it) only for a notice to another node.
 * Returns three values per append: 'OK'|'DUP', length, status | 'NF', '', '' | 'CLOSED', status, ''
 * | 'LARGE', what, '' | 'CONFLICT', length, '', all in one string, space-separated (one bulk reply
 * to decode instead of three per append).
 */
const APPEND_LUA = `${NOTIFY_LUA}
local now = tonumber(ARGV[1])
local maxRecs = tonumber(ARGV[2])
local maxBytes = tonumber(ARGV[3])
local pfx = ARGV[5]
local tag = ARGV[6]
local function one(i, id, close, token, add, iflen, nmeta, n)
  local m = pfx .. 'm:' .. id
  local log = pfx .. 'l:' .. id
  local r0 = i + 2 + 2 * nmeta
  local h = redis.call('HMGET', m, 'status', 'length', 'bytes', 'expires_ms', 'lb')
  local status = h[1]
  if not status then return 'NF', '', '' end
  local len = tonumber(h[2])
  if h[4] and tonumber(h[4]) <= now then return 'NF', '', '' end
  if token ~= '' and h[5] == token then return 'DUP', len, status end
  if status ~= 'running' then return 'CLOSED', status, '' end
  if iflen ~= '' and tonumber(iflen) ~= len then return 'CONFLICT', len, '' end
  local closing = close ~= '' and n <= 1
  if not closing and len + n > maxRecs then return 'LARGE', 'records', '' end
  if not closing and tonumber(h[3]) + add > maxBytes then return 'LARGE', 'bytes', '' end
  local first = len + 1
  for k = r0, r0 + 3 * n - 1, 3 do
    len = len + 1
    local t = ARGV[k]
    local e = ARGV[k + 2]
    if e ~= '' then
      if t ~= '' then redis.call('XADD', log, len .. '-0', 't', t, 'd', ARGV[k + 1], 'e', e)
      else redis.call('XADD', log, len .. '-0', 'd', ARGV[k + 1], 'e', e) end
    elseif t ~= '' then redis.call('XADD', log, len .. '-0', 't', t, 'd', ARGV[k + 1])
    else redis.call('XADD', log, len .. '-0', 'd', ARGV[k + 1]) end
  end
  -- A running stream given an expiry (update): the log created by this append expires with it.
  if n > 0 and h[4] and close == '' then
    redis.call('PEXPIRE', log, math.max(1, math.floor(tonumber(h[4]) - now)))
  end
  redis.call('HSET', m, 'length', len, 'bytes', tonumber(h[3]) + add, 'lb', token)
  for k = i + 2, r0 - 1, 2 do redis.call('HSET', m, ARGV[k], ARGV[k + 1]) end
  if close ~= '' then
    status = close
    local ttl = tonumber(redis.call('HGET', m, 'm.ttl_s')) or tonumber(ARGV[4])
    local exp = now + ttl * 1000
    redis.call('HSET', m, 'status', status, 'ended_ms', now, 'expires_ms', exp)
    redis.call('SREM', pfx .. 'running', id)
    redis.call('ZADD', pfx .. 'expiry', exp, id)
    redis.call('PEXPIRE', m, math.floor(ttl * 1000))
    redis.call('PEXPIRE', log, math.floor(ttl * 1000))
    redis.call('PEXPIRE', pfx .. 'f:' .. id, math.floor(ttl * 1000))
  end
  -- The other nodes that follow the stream hear it (the writer delivered it already).
  local fl = redis.call('SMEMBERS', pfx .. 'f:' .. id)
  if #fl > 1 or (#fl == 1 and fl[1] ~= tag) then
    local recs = {}
    for k = r0, r0 + 3 * n - 1, 3 do
      if ARGV[k + 2] ~= '' then recs[#recs + 1] = cjson.encode({ARGV[k], ARGV[k + 1], ARGV[k + 2]})
      else recs[#recs + 1] = cjson.encode({ARGV[k], ARGV[k + 1]}) end
    end
    local msg = id .. '\\n' .. len .. '\\n' .. status .. '\\n[' .. table.concat(recs, ',') .. ']'
    for _, t in ipairs(fl) do
      if t ~= tag then redis.call('PUBLISH', pfx .. 'node:' .. t, msg) end
    end
  end
  return 'OK', len, status
end
local out = {}
local i = 7
while i <= #ARGV do
  local close, token, add, iflen, nmeta, n = string.match(ARGV[i + 1], '^(%a*) (%S*) (%d+) (%d*) (%d+) (%d+)$')
  nmeta = tonumber(nmeta)
  n = tonumber(n)
  local a, b, c = one(i, ARGV[i], close, token, tonumber(add), iflen, nmeta, n)
  out[#out + 1] = a
  out[#out + 1] = b
  out[#out + 1] = c
  i = i + 2 + 2 * nmeta + 3 * n
end
return table.concat(out, ' ')
`;

/**
 * Changes metadata and/or expiry (any status), keeping the keys' TTLs on the expiry.
 * KEYS: meta, log, expiry, followers. ARGV: [1] id, [2] now, [3] '' (keep) | 'none' (clear) | expiry ms,
 * then metadata field/value pairs. Returns the hash (flat) or {} when there is no live stream.
 */
const UPDATE_LUA = `
local m = KEYS[1]
local now = tonumber(ARGV[2])
local h = redis.call('HMGET', m, 'status', 'expires_ms')
if not h[1] then return {} end
if h[2] and tonumber(h[2]) <= now then return {} end
for i = 4, #ARGV, 2 do redis.call('HSET', m, ARGV[i], ARGV[i + 1]) end
if ARGV[3] == 'none' then
  redis.call('HDEL', m, 'expires_ms')
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('PERSIST', m)
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[4])
elseif ARGV[3] ~= '' then
  local exp = tonumber(ARGV[3])
  local ttl = math.max(1, math.floor(exp - now))
  redis.call('HSET', m, 'expires_ms', ARGV[3])
  redis.call('ZADD', KEYS[3], exp, ARGV[1])
  redis.call('PEXPIRE', m, ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return redis.call('HGETALL', m)
`;

/**
 * KEYS: meta, log, index, running, expiry, followers. ARGV: id, key prefix, and for the sweep a
 * time: then only a stream expired by then is deleted (not one re-created or re-dated meanwhile).
 */
const DELETE_LUA = `${NOTIFY_LUA}
local st = redis.call('HGET', KEYS[1], 'status')
if st and ARGV[3] and ARGV[3] ~= '' then
  local exp = tonumber(redis.call('HGET', KEYS[1], 'expires_ms'))
  if not exp or exp > tonumber(ARGV[3]) then
    if not exp then redis.call('ZREM', KEYS[5], ARGV[1]) else redis.call('ZADD', KEYS[5], exp, ARGV[1]) end
    return 0
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if st then notify(ARGV[2], ARGV[1], '0\\n' .. st .. '\\ndeleted', '') end
redis.call('DEL', KEYS[6])
if not st then return 0 end
return 1
`;

interface Msg {
  len: number;
  status: StreamStatus;
  records: StoredRecord[];
  deleted?: boolean;
}

/** The one live follower of a stream on this node: dedupes, fills gaps, notifies local listeners in order. */
class Follower {
  readonly listeners = new Set<(n: StoreNotice) => void>();
  delivered: number | undefined;
  status: StreamStatus = "running";
  private chain: Promise<void> = Promise.resolve();
  /** Tasks queued or running (while 0, a notice without a gap is delivered at once). */
  private busy = 0;
  gone = false;
  /** A notice arrived since the last periodic check (so that check can wait). */
  heard = false;

  constructor(
    private readonly store: RedisStore,
    readonly id: string,
  ) {}

  push(task: () => Promise<void> | void): void {
    this.busy++;
    this.chain = this.chain
      .then(task)
      .catch(() => {})
      .then(() => {
        this.busy--;
      });
  }

  /**
   * A notice, in order with everything pushed before it: delivered at once when nothing is
   * pending and it leaves no gap (the common case: a token), else queued behind the rest.
   */
  deliver(msg: Msg): void {
    if (this.busy === 0 && !this.gone && !msg.deleted && this.delivered !== undefined) {
      const first = msg.len - msg.records.length + 1;
      if (first <= this.delivered + 1) {
        this.apply(msg, first, []);
        return;
      }
    }
    this.push(() => this.onMsg(msg));
  }

  emit(n: StoreNotice): void {
    if (this.listeners.size === 1) for (const l of this.listeners) l(n);
    else for (const l of [...this.listeners]) l(n);
  }

  /** A notice from an append (local or published by any node). */
  async onMsg(msg: Msg): Promise<void> {
    if (this.gone) return;
    if (msg.deleted) {
      this.gone = true;
      this.emit({ records: [], status: msg.status, deleted: true });
      return;
    }
    const first = msg.len - msg.records.length + 1;
    if (this.delivered === undefined) this.delivered = first - 1;
    let gap: StoredRecord[] = [];
    if (msg.len > this.delivered && first > this.delivered + 1)
      gap = await this.store.range(this.id, this.delivered, first - 1);
    this.apply(msg, first, gap);
  }

  /** Delivers a notice's records past `delivered` (after `gap`, records read to fill a gap). */
  private apply(msg: Msg, first: number, gap: StoredRecord[]): void {
    const delivered = this.delivered as number;
    let out = gap;
    if (msg.len > delivered) {
      if (first > delivered) out = gap.length === 0 ? msg.records : gap.concat(msg.records);
      else for (const r of msg.records) if (r.seq > delivered) out.push(r);
      this.delivered = msg.len;
    }
    if (out.length > 0 || msg.status !== this.status) {
      this.status = msg.status;
      this.emit({ records: out, status: msg.status });
    }
  }

  /** Compares with the store and delivers whatever notices were missed (after (re)subscribing, periodically). */
  async sync(): Promise<void> {
    if (this.gone) return;
    const head = await this.store.head(this.id);
    if (!head) {
      this.gone = true;
      this.emit({ records: [], status: this.status, deleted: true });
      return;
    }
    let out: StoredRecord[] = [];
    if (this.delivered === undefined) {
      if (head.length > 0) out = await this.store.range(this.id, head.length - 1, head.length);
      this.delivered = head.length;
    } else if (head.length > this.delivered) {
      out = await this.store.range(this.id, this.delivered, head.length);
      this.delivered = head.length;
    }
    if (out.length > 0 || head.status !== this.status) {
      this.status = head.status;
      this.emit({ records: out, status: head.status });
    }
  }
}

/**
 * Streams in Redis: a Redis Stream per log (entry id = `<seq>-0`, so offsets stay Sluice's
 * 16-digit offsets), a hash per stream for its metadata, sorted sets for listing and expiry.
 * Appends are one Lua script (atomic with metadata and close, sequence allocated in Redis); the
 * appends of one event-loop turn go in one call, and while a call is unanswered the next ones
 * queue and go together when it is. An append publishes its records to each other
 * node that follows the stream (the set `f:<id>`), on that node's channel: every node has ONE
 * subscriber connection (one channel) and ONE follower per followed stream, which fans out
 * locally through the Hub. A node hears nothing back of its own appends.
 */
export class RedisStore implements Store {
  readonly name = "redis";
  readonly client: Redis;
  readonly prefix: string;
  private readonly sub: Redis;
  private readonly limits: StoreLimits;
  private readonly clock: Clock;
  private readonly followers = new Map<string, Follower>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly outageMs: number;
  private readonly readTimeoutMs: number;
  private readonly maxStreams: number | undefined;
  private closed = false;
  lastError: string | undefined;
  /** This node, in the streams' follower sets: notices for it come on its channel (node:<tag>). */
  private readonly tag = randomUUID().replaceAll("-", "").slice(0, 16);
  /** Append tokens are the tag and a counter (unique per process, no UUID per append). */
  private appends = 0;
  /** Appends waiting for this turn's script call (see flushAppends). */
  private pending: PendingAppend[] = [];
  private flushScheduled = false;
  /** Append calls sent and not yet answered (see queueAppend). */
  private inFlight = 0;
  /** Request timeouts (see timed). */
  private readonly deadlines = new Deadlines(50);

  constructor(opts: RedisStoreOptions) {
    this.prefix = opts.prefix ?? "sluice:";
    this.limits = { ...DEFAULT_STORE_LIMITS, ...opts.limits };
    this.clock = opts.clock ?? realClock;
    this.outageMs = opts.outageMs ?? 30_000;
    this.readTimeoutMs = opts.readTimeoutMs ?? 5000;
    this.maxStreams = opts.maxStreams;
    const common = {
      maxRetriesPerRequest: null,
      enableOfflineQueue: true,
      retryStrategy: (times: number) => Math.min(100 * times, 1000),
    };
    // Auto-pipelining: the appends of many generations issued in one turn of the event loop go
    // to Redis in one write (and come back in one read) instead of one round of syscalls each.
    // The appends' own batch (flushAppends) is written at once, not held for another turn.
    this.client = new Redis(opts.url, {
      ...common,
      connectionName: "sluice",
      enableAutoPipelining: true,
      autoPipeliningIgnoredCommands: ["sluiceAppend"],
    });
    this.sub = new Redis(opts.url, { ...common, connectionName: "sluice-sub" });
    for (const c of [this.client, this.sub]) c.on("error", (err: Error) => (this.lastError = err.message));
    this.client.defineCommand("sluiceCreate", { numberOfKeys: 6, lua: CREATE_LUA });
    this.client.defineCommand("sluiceUpdate", { numberOfKeys: 4, lua: UPDATE_LUA });
    this.client.defineCommand("sluiceAppend", { numberOfKeys: 0, lua: APPEND_LUA });
    this.client.defineCommand("sluiceDelete", { numberOfKeys: 6, lua: DELETE_LUA });
    this.sub.on("message", (_channel: string, message: string) => this.onPublished(message));
    // ioredis subscribes again after each reconnect.
    this.sub.subscribe(`${this.prefix}node:${this.tag}`).catch(() => {});
    // After a reconnect, notices published meanwhile were lost (and a restarted Redis lost the
    // follower sets): register again and re-check every followed stream.
    const again = () => {
      for (const f of this.followers.values())
        f.push(async () => {
          await this.client.sadd(this.kFollowers(f.id), this.tag);
          await f.sync();
        });
    };
    this.sub.on("ready", again);
    this.client.on("ready", again);
    const syncEvery = opts.syncIntervalMs ?? 1000;
    if (syncEvery > 0) {
      this.timers.push(
        setInterval(() => {
          if (!this.ready()) return;
          for (const f of this.followers.values()) {
            if (f.status !== "running") continue;
            // A stream whose notices keep arriving needs no check: a lost notice shows as a
            // gap in the next one (filled from the log); only a quiet stream may have lost its last.
            if (f.heard) f.heard = false;
            else f.push(() => f.sync());
          }
        }, syncEvery),
      );
    }
    const sweepEvery = opts.sweepIntervalMs ?? 60_000;
    if (sweepEvery > 0) this.timers.push(setInterval(() => void this.sweep().catch(() => {}), sweepEvery));
    for (const t of this.timers) t.unref();
  }

  /** Resolves once connected (or after timeoutMs; the store keeps reconnecting either way). */
  async connected(timeoutMs = 5000): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (!this.ready()) {
      if (Date.now() > until) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  private up(): boolean {
    return this.client.status === "ready";
  }

  /** Both connections are up. */
  ready(): boolean {
    return this.client.status === "ready" && this.sub.status === "ready";
  }

  private k(kind: "m" | "l", id: string): string {
    return `${this.prefix}${kind}:${id}`;
  }
  private get kIndex() {
    return `${this.prefix}index`;
  }
  private get kRunning() {
    return `${this.prefix}running`;
  }
  private get kExpiry() {
    return `${this.prefix}expiry`;
  }
  private kFollowers(id: string): string {
    return `${this.prefix}f:${id}`;
  }

  private unavailable(): SluiceError {
    return new SluiceError(
      "store_unavailable",
      `redis is unreachable${this.lastError ? ` (${this.lastError})` : ""}`,
    );
  }

  /** Requests from clients fail fast while Redis is down (they would only queue up). */
  private check(): void {
    if (this.closed) throw new SluiceError("store_unavailable", "the store is closed");
    if (this.client.status !== "ready") throw this.unavailable();
  }

  /**
   * A request's command sent just as the connection dropped is queued for resending after
   * the reconnect; the request itself does not wait for that longer than `readTimeoutMs`.
   */
  private timed<T>(p: Promise<T>, ms = this.readTimeoutMs): Promise<T> {
    // One shared timer for every pending request (an append per token must not cost a timer).
    return new Promise<T>((resolve, reject) => {
      const cancel = this.deadlines.add(ms, () => reject(this.unavailable()));
      p.then(
        (v) => {
          cancel();
          resolve(v);
        },
        (err: unknown) => {
          cancel();
          reject(err);
        },
      );
    });
  }

  async create(init: CreateStream): Promise<StreamInfo> {
    this.check();
    const meta: string[] = [];
    for (const [k, v] of Object.entries(init.metadata ?? {})) meta.push(`m.${k}`, JSON.stringify(v));
    if (init.ttl_s !== undefined) meta.push("m.ttl_s", String(init.ttl_s));
    const r = (await (this.client as unknown as Scripts).sluiceCreate(
      this.k("m", init.id),
      this.k("l", init.id),
      this.kIndex,
      `${this.prefix}ctr`,
      this.kRunning,
      this.kExpiry,
      init.id,
      String(this.clock.now()),
      init.kind,
      init.content_type,
      init.tenant ?? "",
      init.model ?? "",
      "",
      this.maxStreams === undefined ? "" : String(this.maxStreams),
      this.prefix,
      ...meta,
    )) as string;
    if (r === "EXISTS") throw new SluiceError("stream_exists", `stream ${init.id} already exists`);
    if (r === "FULL") throw capacityExceeded("redis", this.maxStreams ?? 0);
    const info = await this.info(init.id);
    if (!info) throw new SluiceError("internal_error", `stream ${init.id} vanished after creation`);
    return info;
  }

  async append(id: string, inputs: RecordInput[], opts: AppendOptions = {}): Promise<AppendResult> {
    if (this.closed) throw new SluiceError("store_unavailable", "the store is closed");
    const meta: string[] = [];
    if (opts.metadata !== undefined)
      for (const [k, v] of Object.entries(opts.metadata)) meta.push(`m.${k}`, JSON.stringify(v));
    // A token makes a retried append (reply lost in a disconnect) idempotent.
    const group: string[] = [id, ""];
    for (let i = 0; i < meta.length; i++) group.push(meta[i] as string);
    let bytes = 0;
    for (let i = 0; i < inputs.length; i++) {
      const r = inputs[i] as RecordInput;
      bytes += r.data.length;
      group.push(r.type ?? "", r.data, r.encoding ?? "");
    }
    group[1] = `${opts.close ?? ""} ${this.tag}.${++this.appends} ${bytes} ${opts.if_length ?? ""} ${meta.length / 2} ${inputs.length}`;
    const deadline = Date.now() + this.outageMs;
    let p: PendingAppend;
    for (;;) {
      if (!this.up()) {
        // Keep the generation's events until Redis is back (bounded by outageMs; the runner
        // bounds what queues behind this append).
        while (!this.up() && Date.now() < deadline && !this.closed)
          await new Promise((r) => setTimeout(r, 50));
        if (!this.up()) throw this.unavailable();
      }
      try {
        // Sent just as the connection drops, the script is resent after the reconnect (the
        // token makes that safe); the append waits for it at most until the outage deadline.
        p = await this.queueAppend(group, bytes, deadline);
        break;
      } catch (err) {
        // Redis answered with an error: retrying will not help.
        if ((err as Error).name === "ReplyError") throw storeFailure("redis", err);
        if (Date.now() >= deadline || this.closed) throw this.unavailable();
        this.lastError = (err as Error).message;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const r = p.reply;
    const at = p.at;
    const code = r[at];
    switch (code) {
      case "NF":
        throw new SluiceError("stream_not_found", `no stream ${id}`);
      case "CLOSED":
        throw new SluiceError("stream_closed", `stream ${id} has ended (${r[at + 1]})`);
      case "CONFLICT":
        throw new SluiceError(
          "append_conflict",
          `stream ${id} holds ${r[at + 1]} records, not ${String(opts.if_length)}`,
        );
      case "LARGE":
        throw new SluiceError(
          "stream_too_large",
          r[at + 1] === "records"
            ? `stream ${id} would exceed ${this.limits.maxRecordsPerStream} records`
            : `stream ${id} would exceed ${this.limits.maxBytesPerStream} bytes`,
        );
    }
    const len = Number(r[at + 1]);
    const status = r[at + 2] as StreamStatus;
    const f = this.followers.get(id);
    if (f && code === "OK") {
      const first = len - inputs.length + 1;
      const records = inputs.map((r, i) => record(first + i, r.type, r.data, r.encoding));
      f.heard = true;
      f.deliver({ len, status, records });
    }
    return { next_offset: formatOffset(len), length: len, status };
  }

  /**
   * Queues one append's arguments for the next script call: at the end of this turn when no call
   * is unanswered, else when the one in flight is answered (group commit: one call in flight at a
   * time, so the busier Redis is, the more appends each call carries, and the fewer calls, round
   * trips and context switches there are; an idle store still sends each append at once).
   */
  private queueAppend(group: string[], bytes: number, deadline: number): Promise<PendingAppend> {
    return new Promise((resolve, reject) => {
      this.pending.push({ group, bytes, deadline, reply: EMPTY, at: 0, resolve, reject });
      if (!this.flushScheduled && this.inFlight === 0) {
        this.flushScheduled = true;
        setImmediate(this.flushAppends);
      }
    });
  }

  /**
   * Sends the appends queued this turn, up to APPEND_BATCH (or about 1 MiB of arguments) a call,
   * and hands each its three values of the reply.
   */
  private readonly flushAppends = (): void => {
    this.flushScheduled = false;
    const all = this.pending;
    this.pending = [];
    const head = [
      String(this.clock.now()),
      String(this.limits.maxRecordsPerStream),
      String(this.limits.maxBytesPerStream),
      String(this.limits.defaultTtlS),
      this.prefix,
      this.tag,
    ];
    for (let from = 0; from < all.length; ) {
      const argv = head.slice();
      let chars = 0;
      let to = from;
      let deadline = Number.POSITIVE_INFINITY;
      while (to < all.length && to - from < APPEND_BATCH && (to === from || chars < APPEND_BATCH_CHARS)) {
        const p = all[to] as PendingAppend;
        const g = p.group;
        if (p.deadline < deadline) deadline = p.deadline;
        for (let k = 0; k < g.length; k++) argv.push(g[k] as string);
        chars += p.bytes;
        to++;
      }
      const batch = all.slice(from, to);
      from = to;
      this.inFlight++;
      // The call waits for its reply at most until the earliest of its appends' deadlines (one
      // timer entry per call); the others, not yet past theirs, send again.
      this.timed(
        (this.client as unknown as Scripts).sluiceAppend(...argv),
        Math.max(1, deadline - Date.now()),
      ).then(
        (res) => {
          this.settled();
          const r = (res as string).split(" ");
          for (let k = 0; k < batch.length; k++) {
            const p = batch[k] as PendingAppend;
            p.reply = r;
            p.at = 3 * k;
            p.resolve(p);
          }
        },
        (err: unknown) => {
          this.settled();
          for (const p of batch) p.reject(err);
        },
      );
    }
  };

  /** A call was answered: the appends queued behind it go now, in one call. */
  private settled(): void {
    this.inFlight--;
    if (this.inFlight === 0 && this.pending.length > 0 && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushAppends);
    }
  }

  /** Records with seq in (after, upTo], at most 1000 (for gap filling). */
  async range(id: string, after: number, upTo: number): Promise<StoredRecord[]> {
    const end = Math.min(upTo, after + 1000);
    const rows = (await this.client.xrange(this.k("l", id), `${after + 1}`, `${end}`)) as [
      string,
      string[],
    ][];
    return rows.map(toRecord);
  }

  /** Length and status of a stream (undefined when gone). */
  async head(id: string): Promise<{ length: number; status: StreamStatus } | undefined> {
    const [status, length, exp] = await this.client.hmget(this.k("m", id), "status", "length", "expires_ms");
    if (status === null || (exp !== null && Number(exp) <= this.clock.now())) return undefined;
    return { length: Number(length), status: status as StreamStatus };
  }

  async read(id: string, afterSeq: number, limit: number): Promise<ReadResult> {
    this.check();
    const res = await this.timed(
      this.client
        .multi()
        .hmget(this.k("m", id), "status", "length", "expires_ms")
        .xrange(this.k("l", id), `${afterSeq + 1}`, "+", "COUNT", Math.max(1, limit))
        .exec(),
    );
    if (!res) throw this.unavailable();
    const [e1, h] = res[0] as [Error | null, (string | null)[]];
    const [e2, rows] = res[1] as [Error | null, [string, string[]][]];
    if (e1 || e2) throw storeFailure("redis", e1 ?? e2);
    const [status, lengthS, exp] = h;
    if (status === null || status === undefined || (exp != null && Number(exp) <= this.clock.now()))
      throw new SluiceError("stream_not_found", `no stream ${id}`);
    const length = Number(lengthS);
    if (afterSeq > length) {
      throw new SluiceError(
        "offset_out_of_range",
        `offset ${formatOffset(afterSeq)} is past the end of stream ${id}`,
      );
    }
    const records = limit > 0 ? rows.map(toRecord).filter((r) => r.seq <= length) : [];
    const last = records.length > 0 ? (records[records.length - 1] as StoredRecord).seq : afterSeq;
    return {
      records,
      next_offset: formatOffset(last),
      up_to_date: last >= length,
      status: status as StreamStatus,
    };
  }

  async info(id: string): Promise<StreamInfo | undefined> {
    this.check();
    const h = await this.timed(this.client.hgetall(this.k("m", id)));
    return this.toInfo(id, h);
  }

  async update(id: string, patch: StreamPatch): Promise<StreamInfo | undefined> {
    this.check();
    let expiry = "";
    if (patch.expires_at === null) expiry = "none";
    else if (patch.expires_at !== undefined) {
      const at = Date.parse(patch.expires_at);
      if (Number.isNaN(at)) throw new SluiceError("invalid_request", `bad expiry ${patch.expires_at}`);
      expiry = String(at);
    }
    const meta: string[] = [];
    for (const [k, v] of Object.entries(patch.metadata ?? {})) meta.push(`m.${k}`, JSON.stringify(v));
    const flat = (await this.timed(
      (this.client as unknown as Scripts).sluiceUpdate(
        this.k("m", id),
        this.k("l", id),
        this.kExpiry,
        this.kFollowers(id),
        id,
        String(this.clock.now()),
        expiry,
        ...meta,
      ),
    )) as string[];
    const h: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) h[flat[i] as string] = flat[i + 1] as string;
    // The new info even when the expiry given is already past (as the memory store answers).
    return this.toInfo(id, h, true);
  }

  private toInfo(id: string, h: Record<string, string>, anyExpiry = false): StreamInfo | undefined {
    if (!h.status) return undefined;
    if (!anyExpiry && h.expires_ms !== undefined && Number(h.expires_ms) <= this.clock.now())
      return undefined;
    const metadata: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(h)) if (k.startsWith("m.")) metadata[k.slice(2)] = JSON.parse(v);
    const length = Number(h.length);
    const info: StreamInfo = {
      id,
      kind: h.kind as StreamInfo["kind"],
      content_type: h.ct as string,
      status: h.status as StreamStatus,
      metadata,
      created_at: new Date(Number(h.created_ms)).toISOString(),
      length,
      next_offset: formatOffset(length),
      bytes: Number(h.bytes),
    };
    if (h.tenant !== undefined) info.tenant = h.tenant;
    if (h.model !== undefined) info.model = h.model;
    if (h.ended_ms !== undefined) info.ended_at = new Date(Number(h.ended_ms)).toISOString();
    if (h.expires_ms !== undefined) info.expires_at = new Date(Number(h.expires_ms)).toISOString();
    return info;
  }

  async delete(id: string): Promise<boolean> {
    this.check();
    const r = (await (this.client as unknown as Scripts).sluiceDelete(
      this.k("m", id),
      this.k("l", id),
      this.kIndex,
      this.kRunning,
      this.kExpiry,
      this.kFollowers(id),
      id,
      this.prefix,
    )) as number;
    const f = this.followers.get(id);
    if (f && r === 1) f.push(() => f.onMsg({ len: 0, status: f.status, records: [], deleted: true }));
    return r === 1;
  }

  async list(opts: ListOptions): Promise<StreamInfo[]> {
    this.check();
    const out: StreamInfo[] = [];
    const page = 200;
    for (let start = 0; ; start += page) {
      const ids = await this.timed(this.client.zrevrange(this.kIndex, start, start + page - 1));
      if (ids.length === 0) return out;
      const p = this.client.pipeline();
      for (const id of ids) p.hgetall(this.k("m", id));
      const rows = (await this.timed(p.exec())) ?? [];
      for (let i = 0; i < ids.length; i++) {
        const info = this.toInfo(ids[i] as string, (rows[i]?.[1] ?? {}) as Record<string, string>);
        if (!info) continue;
        if (opts.tenant !== undefined && info.tenant !== opts.tenant) continue;
        if (opts.status !== undefined && info.status !== opts.status) continue;
        out.push(info);
        if (out.length >= opts.limit) return out;
      }
      if (ids.length < page) return out;
    }
  }

  private chatKey(key: string): string {
    return `${this.prefix}chat:${key}`;
  }

  /** One key per chat with a TTL of the stream's retention: it expires by itself (any node may set it). */
  async setChat(key: string, streamId: string, ttlS?: number): Promise<void> {
    this.check();
    const ms = Math.max(1, Math.round((ttlS ?? this.limits.defaultTtlS) * 1000));
    await this.timed(this.client.set(this.chatKey(key), streamId, "PX", ms));
  }

  async getChat(key: string): Promise<string | undefined> {
    this.check();
    const id = await this.timed(this.client.get(this.chatKey(key)));
    if (id === null) return undefined;
    // The stream may have been deleted (or replaced) since: only a live one counts.
    return (await this.timed(this.head(id))) ? id : undefined;
  }

  /** Ids of streams still running (for ownership checks). */
  async runningIds(): Promise<string[]> {
    return this.client.smembers(this.kRunning);
  }

  subscribe(id: string, listener: (notice: StoreNotice) => void): () => void {
    let f = this.followers.get(id);
    // A follower of a stream that was deleted (or replaced after it expired) hears nothing
    // more: a new subscriber gets a new one (the old one's unsubscribe leaves it alone).
    if (!f || f.gone) {
      const nf = new Follower(this, id);
      f = nf;
      this.followers.set(id, nf);
      // The follower starts where the stream is now: this read is written to the connection
      // right away, so it is ordered before any append this node makes after subscribing.
      const head = this.client.status === "ready" ? this.head(id) : Promise.resolve(undefined);
      nf.push(async () => {
        const h = await head.catch(() => undefined);
        if (nf.delivered === undefined && h) {
          nf.delivered = h.length;
          nf.status = h.status;
        }
      });
      // Catch up once this node is in the stream's follower set: nothing appended before that
      // is published to it.
      this.client.sadd(this.kFollowers(id), this.tag).then(
        () => nf.push(() => nf.sync()),
        () => {},
      );
    }
    f.listeners.add(listener);
    const follower = f;
    return () => {
      follower.listeners.delete(listener);
      if (follower.listeners.size === 0 && this.followers.get(id) === follower) {
        this.followers.delete(id);
        follower.gone = true;
        if (!this.closed) this.client.srem(this.kFollowers(id), this.tag).catch(() => {});
      }
    };
  }

  /** A notice on this node's channel: `<id>\n<length>\n<status>\n<records JSON | deleted>`. */
  private onPublished(message: string): void {
    const nl0 = message.indexOf("\n");
    const f = this.followers.get(message.slice(0, nl0));
    if (!f) return;
    const nl1 = message.indexOf("\n", nl0 + 1);
    const nl2 = message.indexOf("\n", nl1 + 1);
    const len = Number(message.slice(nl0 + 1, nl1));
    const status = message.slice(nl1 + 1, nl2) as StreamStatus;
    const rest = message.slice(nl2 + 1);
    if (rest === "deleted") {
      f.push(() => f.onMsg({ len: 0, status, records: [], deleted: true }));
      return;
    }
    f.heard = true;
    const pairs = JSON.parse(rest) as [string, string, string?][];
    const first = len - pairs.length + 1;
    const records = pairs.map(([t, d, e], i) => record(first + i, t === "" ? undefined : t, d, e));
    f.deliver({ len, status, records });
  }

  async sweep(): Promise<number> {
    this.check();
    let n = 0;
    for (;;) {
      const ids = await this.client.zrangebyscore(this.kExpiry, "-inf", this.clock.now(), "LIMIT", 0, 200);
      if (ids.length === 0) return n;
      for (const id of ids) {
        // Atomic: only if still expired now (not re-created or re-dated since the range read);
        // otherwise the expiry index is corrected.
        const r = (await (this.client as unknown as Scripts).sluiceDelete(
          this.k("m", id),
          this.k("l", id),
          this.kIndex,
          this.kRunning,
          this.kExpiry,
          this.kFollowers(id),
          id,
          this.prefix,
          String(this.clock.now()),
        )) as number;
        if (r === 1) {
          n++;
          const f = this.followers.get(id);
          if (f) f.push(() => f.onMsg({ len: 0, status: f.status, records: [], deleted: true }));
        }
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    await Promise.all(
      [this.client, this.sub].map(async (c) => {
        try {
          if (c.status === "ready") await c.quit();
          else c.disconnect();
        } catch {
          c.disconnect();
        }
      }),
    );
  }
}

const EMPTY: string[] = [];

/** Most appends in one script call (Redis runs a script alone: keep each call short). */
const APPEND_BATCH = 128;
/** A call stops taking appends once their records reach this many characters. */
const APPEND_BATCH_CHARS = 1 << 20;

interface PendingAppend {
  group: string[];
  /** Characters of its records' data (bounds a call's size). */
  bytes: number;
  /** Date.now() past which the append fails with store_unavailable (its outage deadline). */
  deadline: number;
  /** The call's reply (every append's three values) and where this append's begin. */
  reply: string[];
  at: number;
  resolve: (r: PendingAppend) => void;
  reject: (err: unknown) => void;
}

interface Scripts {
  sluiceCreate(...args: string[]): Promise<unknown>;
  sluiceAppend(...args: string[]): Promise<unknown>;
  sluiceDelete(...args: string[]): Promise<unknown>;
  sluiceUpdate(...args: string[]): Promise<unknown>;
}

function record(seq: number, type: string | undefined, data: string, encoding?: string): StoredRecord {
  const rec: StoredRecord = { seq, offset: formatOffset(seq), data };
  if (type !== undefined) rec.type = type;
  if (encoding !== undefined && encoding !== null) rec.encoding = encoding as StoredRecord["encoding"];
  return rec;
}

function toRecord([entryId, fields]: [string, string[]]): StoredRecord {
  const seq = Number(entryId.slice(0, entryId.indexOf("-")));
  let type: string | undefined;
  let encoding: string | undefined;
  let data = "";
  for (let i = 0; i < fields.length; i += 2) {
    if (fields[i] === "t") type = fields[i + 1];
    else if (fields[i] === "d") data = fields[i + 1] as string;
    else if (fields[i] === "e") encoding = fields[i + 1];
  }
  return record(seq, type, data, encoding);
}
