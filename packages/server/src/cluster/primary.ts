import cluster, { type Worker } from "node:cluster";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { AggregatorRegistry, type PrometheusContentType } from "prom-client";
import { releaseLock, SqliteStore, takeLock } from "../stores/sqlite.js";
import {
  isSluiceMessage,
  type ToPrimary,
  type ToWorker,
  WORKER_SCRATCH_ENV,
  WORKER_STORE_ENV,
} from "./messages.js";
import type { WireChange } from "./worker-store.js";

export interface PrimaryOptions {
  /** How many worker processes (≥ 1). */
  workers: number;
  /** The configured store: `memory` (a temporary SQLite file the workers share), `sqlite:PATH`, or Redis. */
  store: string;
  /** The workers' shutdown grace (ms): the primary waits that long plus a margin before killing them. */
  graceMs: number;
  /** Where the primary's few lines go (the listening line, restarts). */
  out?: (line: string) => void;
  err?: (line: string) => void;
}

function scratchRoot(): string {
  try {
    accessSync("/dev/shm", constants.W_OK);
    return "/dev/shm";
  } catch {
    return os.tmpdir();
  }
}

/** `--workers auto` → the cores this process may use; a number stays as given. */
export function workerCount(spec: string): number {
  if (spec === "auto") return os.availableParallelism();
  const n = Number(spec);
  if (!Number.isInteger(n) || n < 1 || n > 1024)
    throw new Error(`--workers: "${spec}" is not "auto" or 1..1024`);
  return n;
}

/**
 * The primary of `sluice serve --workers N`: forks N workers that share one port (each worker
 * accepts its own connections from the shared listening socket; see SCHEDULING), relays each
 * worker's commit notices to the
 * others, keeps the generation → owning worker map (cancel routing, orphan closing), restarts a
 * worker that dies, and on SIGTERM/SIGINT stops them all and exits 0. It serves no request.
 */
export async function runPrimary(opts: PrimaryOptions): Promise<void> {
  // Workers accept for themselves unless NODE_CLUSTER_SCHED_POLICY (node's own setting) says
  // otherwise: see SCHEDULING.
  if (!process.env.NODE_CLUSTER_SCHED_POLICY) cluster.schedulingPolicy = SCHEDULING;
  const out = opts.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  const err = opts.err ?? ((l: string) => process.stderr.write(`${l}\n`));
  let tempDir: string | undefined;
  let lock: string | undefined;
  const env: Record<string, string> = {};
  if (opts.store === "memory" || opts.store.startsWith("sqlite:")) {
    let path: string;
    if (opts.store === "memory") {
      // A scratch file in RAM where there is a tmpfs (/dev/shm), else in the temp directory;
      // not durable either way (the memory store is not), removed at exit.
      tempDir = mkdtempSync(join(scratchRoot(), "sluice-workers-"));
      path = join(tempDir, "streams.db");
      env[WORKER_SCRATCH_ENV] = "1";
    } else {
      path = opts.store.slice("sqlite:".length);
    }
    // The primary holds the file's lock for all its workers, and creates the schema before
    // they open it at the same moment.
    const store = new SqliteStore({ path, shared: true, sweepIntervalMs: 0 });
    await store.close();
    lock = takeLock(`${path}.lock`);
    env[WORKER_STORE_ENV] = `sqlite:${path}`;
  }
  const cleanup = () => {
    if (lock) releaseLock(lock);
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
    lock = undefined;
    tempDir = undefined;
  };

  const owners = new Map<string, number>();
  const live = new Map<number, Worker>();
  let listening = 0;
  let started = false;
  let stopping = false;
  let aggregator: AggregatorRegistry<PrometheusContentType> | undefined;

  const send = (w: Worker, m: ToWorker) => {
    if (w.isConnected()) w.send(m);
  };

  // Interest routing: stream id → the workers that follow it (have readers of it). A commit's
  // changes are relayed only to those; each worker publishes only the streams some other
  // worker follows, so a stream read only where it is written costs no IPC at all.
  const follows = new Map<string, Set<number>>();
  /** Tells each live worker other than `by` whose "someone else follows `id`" turned `on`. */
  const interest = (id: string, by: number, on: boolean, set: Set<number> | undefined) => {
    for (const x of live.values()) {
      if (x.id === by) continue;
      // Followers other than x, not counting `by`: x's view changes only if there were none.
      let others = 0;
      for (const f of set ?? []) if (f !== x.id && f !== by) others++;
      if (others === 0) send(x, { sluice: "interest", id, on });
    }
  };
  const follow = (worker: number, id: string) => {
    let set = follows.get(id);
    if (set?.has(worker)) return;
    if (!set) {
      set = new Set();
      follows.set(id, set);
    }
    interest(id, worker, true, set);
    set.add(worker);
  };
  const unfollow = (worker: number, id: string) => {
    const set = follows.get(id);
    if (!set?.delete(worker)) return;
    if (set.size === 0) follows.delete(id);
    interest(id, worker, false, set);
  };
  /** The streams some worker other than `worker` follows. */
  const interestsOf = (worker: number): string[] => {
    const out: string[] = [];
    for (const [id, set] of follows) if (set.size > (set.has(worker) ? 1 : 0)) out.push(id);
    return out;
  };

  const onMessage = (w: Worker, raw: unknown) => {
    if (!isSluiceMessage(raw)) return;
    const m = raw as ToPrimary;
    switch (m.sluice) {
      case "notices": {
        // Each change goes only to the workers that follow its stream.
        const to = new Map<number, WireChange[]>();
        for (const c of m.changes) {
          const set = follows.get(c[0]);
          if (!set) continue;
          for (const x of set) {
            if (x === w.id) continue;
            const list = to.get(x);
            if (list) list.push(c);
            else to.set(x, [c]);
          }
        }
        for (const [x, changes] of to) {
          const other = live.get(x);
          if (other) send(other, { sluice: "notices", changes });
        }
        return;
      }
      case "unfollow":
        unfollow(w.id, m.id);
        return;
      case "listening": {
        if (started) return;
        listening++;
        if (listening === opts.workers) {
          started = true;
          out(`sluice listening on ${m.url} (${opts.workers} worker${opts.workers === 1 ? "" : "s"})`);
          if (m.grpc) out(`sluice gRPC listening on ${m.grpc}`);
        }
        return;
      }
      case "request": {
        if (m.op === "metrics") {
          aggregator ??= new AggregatorRegistry<PrometheusContentType>();
          aggregator.clusterMetrics().then(
            (text) => send(w, { sluice: "reply", seq: m.seq, value: text }),
            () =>
              send(w, {
                sluice: "reply",
                seq: m.seq,
                value: null,
                error: "the workers' metrics could not be gathered",
              }),
          );
          return;
        }
        let value: unknown;
        switch (m.op) {
          case "acquire":
            owners.set(m.id, w.id);
            value = true;
            break;
          case "release":
            if (owners.get(m.id) === w.id) owners.delete(m.id);
            value = true;
            break;
          case "hasOwner":
            value = owners.has(m.id);
            break;
          case "owned":
            value = m.ids.filter((id) => owners.has(id));
            break;
          case "follow":
            follow(w.id, m.id);
            value = true;
            break;
          case "interests":
            value = interestsOf(w.id);
            break;
          case "cancel": {
            const owner = live.get(owners.get(m.id) ?? -1);
            if (owner) send(owner, { sluice: "cancel", id: m.id, by: m.by, reason: m.reason });
            value = owner !== undefined;
            break;
          }
          default:
            value = null;
        }
        send(w, { sluice: "reply", seq: m.seq, value });
        return;
      }
    }
  };

  const fork = () => {
    const w = cluster.fork(env);
    live.set(w.id, w);
    const born = Date.now();
    w.on("message", (m: unknown) => onMessage(w, m));
    // A worker that was just killed can still look connected for a moment: a notice relayed to
    // it then fails (EPIPE / ERR_IPC_CHANNEL_CLOSED) as an 'error' event on the worker, which
    // unhandled would end the primary — and with it every worker. Its 'exit' follows and is
    // handled below.
    w.on("error", () => {});
    w.on("exit", (code, signal) => {
      live.delete(w.id);
      for (const [id, set] of [...follows]) if (set.has(w.id)) unfollow(w.id, id);
      const orphans: string[] = [];
      for (const [id, owner] of owners) {
        if (owner === w.id) {
          owners.delete(id);
          orphans.push(id);
        }
      }
      if (stopping) {
        if (live.size === 0) done();
        return;
      }
      if (!started) {
        // A worker that cannot start (port taken, bad config) would fail again: stop here.
        err(`sluice: a worker exited during startup (${signal ?? `code ${code}`}); stopping`);
        stop("SIGTERM", code === 0 || code === null ? 1 : code);
        return;
      }
      err(`sluice: worker ${w.process.pid} exited (${signal ?? `code ${code}`}); starting another`);
      const survivor = live.values().next().value as Worker | undefined;
      if (survivor && orphans.length > 0) send(survivor, { sluice: "interrupt", ids: orphans });
      // The replacement also closes unowned generations when it starts (covers no survivor).
      const wait = Date.now() - born < 1000 ? 1000 : 0;
      setTimeout(() => {
        if (!stopping) fork();
      }, wait).unref();
    });
  };

  let exitCode = 0;
  let resolveDone: () => void = () => {};
  const finished = new Promise<void>((r) => {
    resolveDone = r;
  });
  const done = () => {
    cleanup();
    resolveDone();
  };
  const stop = (signal: NodeJS.Signals, code = 0) => {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    if (live.size === 0) return done();
    for (const w of live.values()) w.process.kill(signal);
    // Workers end within their grace; one that does not is killed, so the primary always exits.
    setTimeout(() => {
      for (const w of live.values()) w.process.kill("SIGKILL");
    }, opts.graceMs + 15_000).unref();
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("exit", cleanup);

  for (let i = 0; i < opts.workers; i++) fork();
  await finished;
  process.exit(exitCode);
}

/**
 * How connections reach workers: each worker accepts from the listening socket they share
 * (`SCHED_NONE`), not node:cluster's default on Linux, round-robin, where the primary accepts every
 * connection and passes it to a worker over IPC. That hand-off costs the primary and the worker
 * CPU per connection and delays each one: in the bench, 10,000 readers connecting within 4 s to
 * one generation on `--workers 1` were still being handed over seconds after the measurement
 * window (29–34 % of their events delivered, p99 1.6–1.9 s; accepting in the worker: 99 %,
 * p99 289 ms; `--workers 2`: 93 % → 99 %, p99 1,277 → 451 ms). The kernel wakes an idle worker
 * first, so a busy one takes fewer new connections. `NODE_CLUSTER_SCHED_POLICY=rr` restores the
 * round-robin.
 */
const SCHEDULING = cluster.SCHED_NONE;
