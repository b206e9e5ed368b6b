#!/usr/bin/env node
// `npm run bench [-- --quick] [--only=a,b] [--scenarios=overhead,capacity,...,workers,scale] [--profile] [--keep]`
// (e.g. `npm run bench -- --only=sluice-demo --scenarios=compact`: compact catch-up alone)
// Starts Sluice, mock-upstream and the peers on loopback (servers pinned to core 0, the load
// generator and mock-upstream to core 1), runs bounded loads from a separate process, prints a
// table and writes JSON + an HTML chart under bench/results/. See docs/performance.md.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  coreBusy,
  cpuMs,
  freePort,
  procs,
  setNice,
  spawnPinned,
  stopAll,
  treeCpuMs,
  treeRssKb,
  waitPort,
} from "./lib/procs.mjs";
import { available as wsReaderAvailable } from "./lib/readers/ws.mjs";
import { renderHtml } from "./lib/report.mjs";
import { demoOpts, liveSpec, sharedStream, TARGETS } from "./lib/targets.mjs";

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(BENCH, "..");
const argv = process.argv.slice(2);
const QUICK = argv.includes("--quick");
const PROFILE = argv.includes("--profile");
/** --keep: also save this run's JSON in bench/results/kept/ (committed: every run the docs quote). */
const KEEP = argv.includes("--keep");
const arg = (k) => argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1];
const ONLY = arg("only")?.split(",");
/** --nice=-5: run every bench process at this nice level (as root), to win CPU from other work on a shared machine. */
const NICE = Number(arg("nice") ?? 0);
// The two-node Redis scenario (`cluster`, issue 5) is Sluice-only: in the full run by default,
// in --quick only when asked (`--scenarios=cluster`), to keep --quick well under 2 minutes.
const SCENARIOS = arg("scenarios")?.split(",") ?? [
  "overhead",
  "capacity",
  "capacity100",
  "fanout",
  "memory",
  "resume",
  "cancel",
  "compact",
  ...(QUICK ? [] : ["cluster", "workers", "scale"]),
];
const SERVER_CORE = 0;
const CLIENT_CORE = 1;
const T_START = Date.now();

/**
 * Sizes: --quick stays under 2 minutes and ≤ 2,000 connections; the full run was under 15 minutes
 * before session 5 added the `workers` and `scale` scenarios, the N = 500 overhead runs and more
 * cluster probes (those last three budgeted at ≤ 5 minutes together).
 */
const Q = QUICK
  ? {
      repeats: 1,
      // N = 500 (issue 13.4's p99, WS vs SSE CPU at one N) only when asked: --overhead-n=100,500.
      overheadNs: [100],
      overheadTargetsAt: { 500: ["upstream", "relay", "sluice-up", "sluice-demo", "sluice-ws"] },
      overheadTargets: ["upstream", "relay", "sluice-up", "sluice-demo", "resumable", "durable", "portkey"],
      bigOverheadTargets: ["upstream", "relay", "sluice-up", "sluice-demo"],
      ramp: 250,
      window: 500,
      margin: 150,
      gap: 100,
      quiesceSampleMs: 150,
      warmStreams: 50,
      warmEndMs: 700,
      warmLength: 40,
      capProbes: 2,
      capProbesPeer: { resumable: 1, "resumable-r": 1, durable: 1, portkey: 1 },
      capRepeats: 1,
      capRepeatsPeer: {},
      cap100Probes: 2,
      cap100ProbesPeer: {},
      maxStreams: 1500,
      cap100Targets: ["relay", "sluice-demo", "sluice-ws"],
      fanNs: [1000],
      fanRamp: 500,
      fanLead: 400,
      fanTargets: ["relay", "sluice-up", "sluice-demo", "resumable", "durable", "portkey"],
      idleN: 1000,
      idleRamp: 600,
      memSettleMs: 400,
      memPreMs: 300,
      restartSettleMs: 500,
      catchupRepeats: 2,
      resumeStreams: 3,
      resumeReaders: 50,
      cancelTrials: 3,
      cancelWaitMs: 500,
      cancelGiveUp: 2,
      quiesceMaxMs: 2000,
      settleMaxMs: 4000,
      holdMaxMs: 2500,
      noStatusWaitMs: 1500,
      resumeTps: 200,
      resumeLength: 250,
      resumeTtftMs: 300,
      clusterProbes: { "sluice-redis": 1, "sluice-redis-x": 1, "sluice-redis-2": 1 },
      clusterFanN: 500,
      compactRepeats: 3,
      scaleN: 1000,
      idleCpuMs: 1000,
    }
  : {
      repeats: 3,
      repeatsAt: { 1: 1, 100: 2, 500: 3, 1000: 1 },
      overheadNs: [1, 100, 500, 1000],
      // N = 500: the p99 of issue 13.4 (sluice-up vs relay) and WS vs SSE CPU at one N (issue 15).
      overheadTargetsAt: { 500: ["upstream", "relay", "sluice-up", "sluice-demo", "sluice-ws"] },
      overheadTargets: ["upstream", "relay", "sluice-up", "sluice-demo", "resumable", "durable", "portkey"],
      bigOverheadTargets: [
        "upstream",
        "relay",
        "sluice-up",
        "sluice-demo",
        "resumable",
        "durable",
        "portkey",
      ],
      ramp: 1500,
      window: 2000,
      margin: 300,
      gap: 600,
      quiesceSampleMs: 250,
      warmStreams: 200,
      warmEndMs: 1200,
      warmLength: 60,
      capProbes: 5,
      capProbesPeer: { resumable: 4, "resumable-r": 4, durable: 4, portkey: 4 },
      capRepeats: 1,
      capRetryFailed: true,
      capRepeatsPeer: {},
      cap100Probes: 3,
      cap100ProbesPeer: { resumable: 2, durable: 2, portkey: 2 },
      maxStreams: 4000,
      cap100Targets: ["relay", "sluice-up", "sluice-demo", "sluice-ws", "resumable", "durable", "portkey"],
      fanNs: [1000, 10000],
      fanRamp: 4000,
      fanLead: 1000,
      fanTargets: ["relay", "sluice-up", "sluice-demo", "sluice-ws", "resumable", "durable", "portkey"],
      idleN: 10000,
      idleRamp: 5000,
      memSettleMs: 1000,
      memPreMs: 500,
      restartSettleMs: 1000,
      catchupRepeats: 5,
      resumeStreams: 10,
      resumeReaders: 100,
      cancelTrials: 10,
      cancelWaitMs: 2000,
      cancelGiveUp: 3,
      quiesceMaxMs: 8000,
      settleMaxMs: 15_000,
      holdMaxMs: 15_000,
      noStatusWaitMs: 3000,
      resumeTps: 100,
      resumeLength: 400,
      resumeTtftMs: 500,
      clusterProbes: { "sluice-redis": 4, "sluice-redis-x": 2, "sluice-redis-2": 3 },
      clusterFanN: 1000,
      compactRepeats: 5,
      scaleN: 10000,
      idleCpuMs: 3000,
    };
const CAP_START = {
  relay: 1000,
  "sluice-up": 1000,
  "sluice-demo": 1000,
  "sluice-ws": 1000,
  "sluice-redis": 250,
  "sluice-redis-x": 250,
  "sluice-redis-2": 500,
  "sluice-w1": 500,
  "sluice-w2": 500,
  "sluice-w2-x": 500,
  resumable: 150,
  "resumable-r": 150,
  durable: 250,
  portkey: 250,
};
const TTFT_MS = 200;
const P99_BUDGET_MS = 50;
const want = (t) => !ONLY || ONLY.includes(t) || t === "upstream";

const results = {
  meta: {},
  overhead: [],
  capacity: [],
  capacity100: [],
  fanout: [],
  memory: [],
  resume: [],
  cancel: [],
  compact: [],
  cluster: { capacity: [], fanout: [] },
  workers: [],
  scale: [],
  profile: null,
  notes: [],
};
const log = (...a) => console.log(...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => {
  const a = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  return a.length ? a[Math.floor((a.length - 1) / 2)] : Number.NaN;
};

// ── setup ─────────────────────────────────────────────────────────────────────
function ensureInstalled() {
  // A run of Sluice targets only (`--only=sluice-demo`) needs none of the peers.
  if (ONLY && !ONLY.some((t) => TARGETS[t]?.kind === "peer")) return;
  if (
    existsSync(join(BENCH, "node_modules/resumable-stream")) &&
    existsSync(join(BENCH, "node_modules/@portkey-ai/gateway"))
  )
    return;
  log("bench: installing peers under bench/ (npm install --prefix bench) …");
  execFileSync("npm", ["install", "--prefix", BENCH, "--no-audit", "--no-fund"], { stdio: "inherit" });
}
function ensureBuilt() {
  // `sluice mock-upstream` loads the separate @sluice/mock-upstream package: both must be built.
  const built = ["packages/server/dist/cli/main.js", "packages/mock-upstream/dist/index.js"];
  if (built.every((f) => existsSync(join(ROOT, f)))) return;
  log("bench: building Sluice (npm run build) …");
  execFileSync("npm", ["run", "build"], { cwd: ROOT, stdio: "inherit" });
}
function version(pkgDir) {
  try {
    return JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")).version;
  } catch {
    return "?";
  }
}

const RESULTS = join(BENCH, "results");
const LOGS = join(RESULTS, "logs");
mkdirSync(LOGS, { recursive: true });
ensureInstalled();
ensureBuilt();
if (spawnSync("taskset", ["-c", "0", "true"]).status !== 0) throw new Error("taskset is needed (util-linux)");
if (NICE) setNice(NICE);

const ports = {};
for (const k of [
  "upstream",
  "sluice",
  "relay",
  "redis",
  "resumable",
  "durable",
  "durableControl",
  "portkey",
  "redis2",
  "sluiceA",
  "sluiceB",
  "sluiceW1",
  "sluiceW2",
])
  ports[k] = await freePort();
const node = process.execPath;
const SLUICE_CLI = join(ROOT, "packages/server/dist/cli/main.js");
const sluiceConfig = join(RESULTS, "sluice-bench.json");
writeFileSync(
  sluiceConfig,
  JSON.stringify({
    host: "127.0.0.1",
    port: ports.sluice,
    log_level: "warn",
    routes: {
      up: { provider: "openai-compatible", base_url: `http://127.0.0.1:${ports.upstream}/v1`, model: "demo" },
    },
  }),
);

/** Which processes are "the server" of a target (their CPU and RSS are summed). */
const SERVER_PROCS = {
  upstream: [],
  relay: ["relay"],
  "sluice-up": ["sluice"],
  "sluice-demo": ["sluice"],
  "sluice-ws": ["sluice"],
  "sluice-redis": ["sluiceA", "redis2"],
  "sluice-redis-x": ["sluiceA", "sluiceB", "redis2"],
  "sluice-redis-2": ["sluiceA", "sluiceB", "redis2"],
  // A --workers server: the primary and its worker processes (treeCpuMs counts them all).
  "sluice-w1": ["sluiceW1"],
  "sluice-w2": ["sluiceW2"],
  "sluice-w2-x": ["sluiceW2"],
  resumable: ["resumable", "redis"],
  "resumable-r": ["resumable", "redis"],
  durable: ["durable"],
  portkey: ["portkey"],
};
const dead = {}; // target -> reason

const SPAWN = {};
/** --profile: Sluice processes run under `node --cpu-prof` (bench/results/profile/). */
const prof = (_name) => (PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${join(RESULTS, "profile")}`] : []);
function startServers() {
  spawnPinned(
    "mock-upstream",
    CLIENT_CORE,
    node,
    [SLUICE_CLI, "mock-upstream", "--port", String(ports.upstream)],
    { cwd: ROOT, logDir: LOGS },
  );
  SPAWN.sluice = () =>
    spawnPinned(
      "sluice",
      SERVER_CORE,
      node,
      [...prof("sluice"), SLUICE_CLI, "serve", "--config", sluiceConfig],
      {
        cwd: ROOT,
        logDir: LOGS,
      },
    );
  SPAWN.sluice();
  SPAWN.relay = () =>
    spawnPinned(
      "relay",
      SERVER_CORE,
      node,
      [join(BENCH, "peers/relay.mjs"), String(ports.relay), String(ports.upstream)],
      { cwd: BENCH, logDir: LOGS },
    );
  if (want("relay")) SPAWN.relay();
  if (want("resumable") || want("resumable-r")) {
    spawnPinned(
      "redis",
      SERVER_CORE,
      "redis-server",
      [
        "--port",
        String(ports.redis),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxclients",
        "20000",
      ],
      { cwd: BENCH, logDir: LOGS },
    );
    SPAWN.resumable = () =>
      spawnPinned(
        "resumable",
        SERVER_CORE,
        node,
        [
          join(BENCH, "peers/resumable.mjs"),
          String(ports.resumable),
          String(ports.upstream),
          `redis://127.0.0.1:${ports.redis}`,
        ],
        { cwd: BENCH, logDir: LOGS },
      );
    SPAWN.resumable();
  }
  SPAWN.durable = () =>
    spawnPinned(
      "durable",
      SERVER_CORE,
      node,
      [
        join(BENCH, "peers/durable.mjs"),
        String(ports.durable),
        String(ports.durableControl),
        String(ports.upstream),
      ],
      { cwd: BENCH, logDir: LOGS },
    );
  if (want("durable")) SPAWN.durable();
  SPAWN.portkey = () =>
    spawnPinned(
      "portkey",
      SERVER_CORE,
      node,
      [
        "--import",
        join(BENCH, "peers/portkey-bind.mjs"),
        join(BENCH, "node_modules/@portkey-ai/gateway/build/start-server.js"),
        `--port=${ports.portkey}`,
        "--headless",
      ],
      { cwd: BENCH, logDir: LOGS, env: { NODE_ENV: "production" } },
    );
  if (want("portkey")) SPAWN.portkey();
}

const PORT_OF = {
  sluice: "sluice",
  sluiceA: "sluiceA",
  sluiceB: "sluiceB",
  redis2: "redis2",
  relay: "relay",
  resumable: "resumable",
  durable: "durable",
  portkey: "portkey",
};
/** A fresh server process for a target (the memory scenario measures from a clean heap). */
async function restart(target) {
  for (const name of SERVER_PROCS[target]) {
    if (!SPAWN[name]) continue;
    const p = procs.get(name);
    if (p && !p.exited) {
      process.kill(p.pid, "SIGTERM");
      const until = Date.now() + 5000;
      while (!p.exited && Date.now() < until) await sleep(50);
      if (!p.exited) process.kill(p.pid, "SIGKILL");
      while (!p.exited) await sleep(20);
    }
    SPAWN[name]();
    await waitPort(ports[PORT_OF[name]], 30_000);
  }
  warmed.delete(target);
  await sleep(Q.restartSettleMs);
}

async function waitServers() {
  if (!wsReaderAvailable) {
    dead["sluice-ws"] =
      "WS reader not on this branch (Sluice's /v1/ws comes with the delivery work; see bench/lib/readers/ws.mjs)";
  }
  const waits = [
    ["mock-upstream", ports.upstream],
    ["sluice", ports.sluice],
    ["relay", ports.relay],
    ["redis", ports.redis],
    ["resumable", ports.resumable],
    ["durable", ports.durable],
    ["portkey", ports.portkey],
  ];
  for (const [name, port] of waits) {
    if (!procs.has(name)) continue;
    try {
      await waitPort(port, 30_000);
    } catch (e) {
      for (const [t, ps] of Object.entries(SERVER_PROCS))
        if (ps.includes(name)) dead[t] = `did not start: ${e.message}`;
    }
  }
}

function targetAlive(t) {
  if (dead[t]) return false;
  for (const n of SERVER_PROCS[t]) {
    const p = procs.get(n);
    if (!p || p.exited) {
      dead[t] = `server process ${n} ${p ? `exited (${p.code})` : "not started"}`;
      return false;
    }
  }
  const m = procs.get("mock-upstream");
  if (m?.exited) throw new Error("mock-upstream died: stopping");
  return true;
}
const serverCpu = (t) => SERVER_PROCS[t].reduce((s, n) => s + treeCpuMs(procs.get(n)?.pid), 0);
const serverRss = (t) => SERVER_PROCS[t].reduce((s, n) => s + treeRssKb(procs.get(n)?.pid), 0);
/** The CPU of a target's own redis-server (part of serverCpu), or undefined when it has none. */
const redisCpu = (t) => {
  const n = SERVER_PROCS[t]?.find((x) => x === "redis" || x === "redis2");
  return n === undefined ? undefined : treeCpuMs(procs.get(n)?.pid);
};

// ── the load generator (its own process, its own core) ───────────────────────
const lg = spawnPinned("loadgen", CLIENT_CORE, node, [join(BENCH, "lib/loadgen.mjs")], {
  cwd: BENCH,
  logDir: LOGS,
  ipc: true,
});
let jobSeq = 0;
const waiting = new Map();
lg.child.on("message", (m) => waiting.get(m.id)?.(m));
await new Promise((r) => lg.child.once("message", r));

/** Runs a load-generator job; samples the target's server CPU at the window's edges. */
function job(msg, target, { onHeld } = {}) {
  const id = ++jobSeq;
  return new Promise((resolveJob, reject) => {
    let cpuOpen;
    let upOpen;
    let redisOpen;
    const out = {};
    const watch = setInterval(() => {
      if (lg.exited) reject(new Error("load generator died"));
      if (target && !targetAlive(target)) lg.child.send({ type: "abort" });
    }, 200);
    const timers = [];
    waiting.set(id, (m) => {
      if (m.type === "started" && msg.windowEnd > msg.windowStart + 1) {
        // The window's CPU is sampled on this process's own clock (the load generator's timers can
        // run late when it is saturated; it reports how late as timerLagMs).
        timers.push(
          setTimeout(() => {
            cpuOpen = serverCpu(target);
            redisOpen = redisCpu(target);
            upOpen = cpuMs(procs.get("mock-upstream").pid);
          }, msg.windowStart),
          setTimeout(() => {
            out.serverCpuMs = serverCpu(target) - cpuOpen;
            // The share of it that is redis-server's (the targets with one of their own).
            if (redisOpen !== undefined) out.redisCpuMs = redisCpu(target) - redisOpen;
            out.upstreamCpuMs = cpuMs(procs.get("mock-upstream").pid) - upOpen;
          }, msg.windowEnd),
        );
      } else if (m.type === "held") {
        onHeld?.(m);
      } else if (m.type === "result") {
        for (const t of timers) clearTimeout(t);
        clearInterval(watch);
        waiting.delete(id);
        resolveJob({ ...m, ...out });
      }
    });
    lg.child.send({ ...msg, id });
  });
}

/**
 * Source address of reader i. Default: none (the kernel picks address and port at connect(),
 * reusing loopback TIME_WAIT ports). `--src-rotate` spreads readers over 127.0.0.1–4 — but that
 * binds before connecting, and with tens of thousands of sockets in TIME_WAIT (after the
 * 10,000-reader scenarios) each bind searches the port space synchronously: the load
 * generator stalled for ~0.9 s at a time (seen: a 10k fan-out with 0 tokens received, an idle
 * probe answering 3,739 of 10,000 connections).
 */
const SRC_ROTATE = argv.includes("--src-rotate");
const srcAddr = (i) => (SRC_ROTATE ? `127.0.0.${1 + (i % 4)}` : undefined);
const transportOf = (t) => TARGETS[t].transport ?? "sse";
let runSeq = 0;

const warmed = new Set();
/** A short unmeasured load the first time a target is used, so JIT warm-up is not measured. */
async function warm(target) {
  if (warmed.has(target)) return;
  warmed.add(target);
  const specs = [];
  const run = ++runSeq;
  for (let i = 0; i < Q.warmStreams; i++) {
    const demo = demoOpts({ seed: i + 1, ttft_ms: 20, tokens_per_s: 100, length: Q.warmLength });
    specs.push({
      ...liveSpec(target, ports, `w${run}-${i}`, demo, i),
      at: Math.random() * 300,
      localAddress: srcAddr(i),
    });
  }
  await job(
    { type: "live", transport: transportOf(target), specs, windowStart: 0, windowEnd: 1, endAt: Q.warmEndMs },
    target,
  );
  await sleep(Q.gap);
}

/** N readers, each with its own generation at `tps`, started over a ramp with random phases. */
async function liveRun(target, n, tps) {
  await warm(target);
  const ramp = n <= 1 ? 0 : Q.ramp;
  const windowStart = ramp + TTFT_MS + Q.margin;
  const windowEnd = windowStart + Q.window;
  const length = Math.ceil((tps * (windowEnd + 800)) / 1000);
  const run = ++runSeq;
  const specs = [];
  for (let i = 0; i < n; i++) {
    const demo = demoOpts({ seed: i + 1, ttft_ms: TTFT_MS, tokens_per_s: tps, length });
    specs.push({
      ...liveSpec(target, ports, `r${run}-${i}`, demo, i),
      at: Math.random() * ramp,
      localAddress: srcAddr(i),
    });
  }
  const r = await job(
    { type: "live", transport: transportOf(target), specs, windowStart, windowEnd, endAt: windowEnd + 300 },
    target,
  );
  const expected = (n * tps * Q.window) / 1000;
  r.delivered = r.tokensInWindow / expected;
  r.cpuPerEventUs = r.tokensInWindow ? (r.serverCpuMs * 1000) / r.tokensInWindow : Number.NaN;
  if (r.redisCpuMs !== undefined && r.tokensInWindow)
    r.redisUsPerEvent = (r.redisCpuMs * 1000) / r.tokensInWindow;
  r.pass = r.delay.p99 <= P99_BUDGET_MS && r.failed <= n * 0.005 && r.delivered >= 0.9;
  r.quiesceMs = await quiesce(target);
  return r;
}

/**
 * Waits until the target's server processes are (nearly) idle again — a peer may still be working
 * off a backlog after its readers left — so the next run starts clean. Bounded: at most 15 s.
 */
async function quiesce(target) {
  const t0 = Date.now();
  await sleep(Q.gap);
  for (;;) {
    const c0 = serverCpu(target);
    await sleep(Q.quiesceSampleMs);
    const busy = (serverCpu(target) - c0) / Q.quiesceSampleMs;
    if (!(busy > 0.1) || Date.now() - t0 > Q.quiesceMaxMs) return Date.now() - t0;
  }
}

/**
 * Every server process idle (< 10 % of a core over a sample), not just the next target's: a
 * peer still working off a backlog (durable-streams after 1,000 overhead streams, say) shares
 * core 0 with whatever is measured next. Bounded; a process still busy at the bound is
 * restarted (its state is not needed by later runs) and the restart is noted.
 */
async function settleAll(label) {
  const t0 = Date.now();
  const names = [...new Set(Object.values(SERVER_PROCS).flat())].filter((n) => {
    const p = procs.get(n);
    return p && !p.exited;
  });
  for (;;) {
    const c0 = names.map((n) => cpuMs(procs.get(n)?.pid));
    await sleep(Q.quiesceSampleMs);
    const busy = names.filter((n, i) => (cpuMs(procs.get(n)?.pid) - (c0[i] ?? 0)) / Q.quiesceSampleMs > 0.1);
    if (busy.length === 0) return Date.now() - t0;
    if (Date.now() - t0 > Q.settleMaxMs) {
      for (const n of busy) {
        const t = Object.keys(SERVER_PROCS).find((k) => SERVER_PROCS[k].includes(n) && SPAWN[n]);
        if (!t) continue;
        log(`  (${label}: ${n} still busy after ${Q.settleMaxMs / 1000} s — restarted)`);
        results.notes.push(`${label}: restarted ${n}, still busy after ${Q.settleMaxMs / 1000} s`);
        await restart(t);
      }
      return Date.now() - t0;
    }
  }
}

const fmt = (x, d = 1) =>
  x === undefined || x === null || Number.isNaN(x) ? "—" : typeof x === "number" ? x.toFixed(d) : String(x);
function table(title, head, rows) {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  log(`\n${title}`);
  log(head.map((h, i) => h.padEnd(w[i])).join("  "));
  log(w.map((x) => "-".repeat(x)).join("  "));
  for (const r of rows) log(r.map((c, i) => String(c).padEnd(w[i])).join("  "));
}
async function noteLoad(scenario) {
  await settleAll(scenario);
  const busy = await coreBusy(300);
  const l = os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");
  log(`\n[${scenario}] load average ${l}; cores busy before start: ${busy.map((b) => `${b}%`).join(" ")}`);
  return { loadavg: os.loadavg(), busy };
}
const targetsOf = (list) => list.filter(want);

// ── the targets of issues 3, 13 and 15, read off this run's results ──────────────────────────
const signed = (x) => (x === undefined || Number.isNaN(x) ? "—" : `${x >= 0 ? "+" : "−"}${fmt(Math.abs(x))}`);
/** The size the scale targets of issues 13.5 and 15 name; a smaller run (--quick) is not that target. */
const SCALE_TARGET_N = 10_000;
function targetsSummary() {
  const rows = [];
  const cap = (key, t) => results[key].find((r) => r.target === t && !(r.na && !r.probes));
  const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b ? a / b : undefined);
  const verdict = (ok) => (ok === undefined ? "not measured" : ok ? "met" : "missed");
  /** A target stated at 10,000 readers, measured here at n: below that size, say so. */
  const atScale = (n, ok) =>
    ok === undefined
      ? "not measured"
      : n >= SCALE_TARGET_N
        ? verdict(ok)
        : `not measured at ${SCALE_TARGET_N.toLocaleString("en")} (at ${n.toLocaleString("en")}: ${verdict(ok)})`;
  const pct = (x) => `${fmt(x * 100, 1)}%`;
  /** Capacity a vs b, goal a/b ≥ min: [measured, status]. No ratio when b held no N (0: no probe passed). */
  const capCmp = (a, b, min, show = (x) => `${fmt(x, 2)}×`) => {
    if (!a || !b) return ["—", "not measured"];
    const c = (r) => `${r.capacity}${r.bounded?.startsWith("≥") ? " (≥)" : ""}`;
    if (!(b.capacity > 0)) return [`${c(a)} vs ${c(b)}`, "not measured (no probe of the reference passed)"];
    const x = a.capacity / b.capacity;
    return [`${c(a)} vs ${c(b)} = ${show(x)}`, verdict(x >= min)];
  };
  const relay = cap("capacity", "relay");
  for (const t of ["sluice-up", "sluice-demo", "sluice-ws"]) {
    const r = cap("capacity", t);
    const x = ratio(r?.cpuPerEventUs, relay?.cpuPerEventUs);
    rows.push([
      t === "sluice-up" ? "3, 13.4" : "3",
      `CPU/event ≤ 1.1× relay, 30 tok/s, each at its capacity (${t})`,
      x === undefined ? "—" : `${fmt(r.cpuPerEventUs)} vs ${fmt(relay.cpuPerEventUs)} µs = ${fmt(x, 2)}×`,
      verdict(x === undefined ? undefined : x <= 1.1),
    ]);
  }
  for (const t of ["sluice-up", "sluice-demo"]) {
    rows.push([
      "3",
      `SSE capacity ≥ 90% relay (${t})`,
      ...capCmp(cap("capacity", t), relay, 0.9, (x) => `${fmt(x * 100, 0)}%`),
    ]);
  }
  const best = Math.max(...["sluice-demo", "sluice-up"].map((t) => cap("capacity", t)?.capacity ?? 0));
  for (const rt of ["resumable", "resumable-r"]) {
    const r = cap("capacity", rt);
    const x = r?.capacity ? best / r.capacity : undefined;
    rows.push([
      "3",
      `capacity ≥ 6× ${TARGETS[rt].label}`,
      x === undefined
        ? "—"
        : `${best} vs ${r.capacity}${r.bounded?.startsWith("≥") ? " (≥)" : ""} = ${fmt(x, 1)}×`,
      verdict(x === undefined ? undefined : x >= 6),
    ]);
  }
  for (const t of ["sluice-up", "sluice-demo"]) {
    const o = results.overhead.find((r) => r.target === t && r.n === 100 && !r.na);
    rows.push([
      t === "sluice-up" ? "3, 15" : "3",
      `TTFT added ≤ 1 ms p50, ≤ 5 ms p99 at N = 100 (${t})`,
      o ? `${signed(o.ttft_p50_added)} / ${signed(o.ttft_p99_added)} ms` : "—",
      verdict(o ? o.ttft_p50_added <= 1 && o.ttft_p99_added <= 5 : undefined),
    ]);
  }
  const m = results.memory.find((r) => r.target === "sluice-demo" && !r.na);
  rows.push([
    "3",
    "idle SSE connection ≤ 16 KB RSS",
    m ? `${fmt(m.kbPerConn, 2)} KB at ${m.n}` : "—",
    verdict(m ? m.kbPerConn <= 16 : undefined),
  ]);
  const relay100 = cap("capacity100", "relay");
  for (const t of ["sluice-demo", "sluice-ws", "sluice-up"]) {
    rows.push(["3", `100 tok/s: ≥ 2× relay capacity (${t})`, ...capCmp(cap("capacity100", t), relay100, 2)]);
  }

  // Issue 13.1: --workers 2 vs 1.
  const w1 = results.workers.find((r) => r.target === "sluice-w1" && !(r.na && !r.probes));
  for (const t of ["sluice-w2", "sluice-w2-x"]) {
    const r = results.workers.find((x) => x.target === t && !(x.na && !x.probes));
    rows.push([
      "13.1",
      `--workers 2: capacity (and events/s) ≥ 1.8× --workers 1 (${t})`,
      ...capCmp(r, w1, 1.8),
    ]);
  }

  // Issue 13.4: through the upstream, p99 at 500 streams within 2× the relay's (same run, same N).
  const o500 = (t) => results.overhead.find((r) => r.target === t && r.n === 500 && !r.na);
  {
    const up = o500("sluice-up");
    const rl = o500("relay");
    const x = ratio(up?.delay_p99, rl?.delay_p99);
    rows.push([
      "13.4",
      "p99 delivery delay at 500 streams, 30 tok/s ≤ 2× relay's (sluice-up)",
      x === undefined
        ? "—"
        : `${fmt(up.delay_p99)} vs ${fmt(rl.delay_p99)} ms = ${fmt(x, 2)}× (median of ${up.repeats})`,
      verdict(x === undefined ? undefined : x <= 2),
    ]);
    const c = ratio(up?.cpuPerEventUs, rl?.cpuPerEventUs);
    rows.push([
      "13.4",
      "CPU/event ≤ 1.1× relay at the same N = 500 (sluice-up)",
      c === undefined ? "—" : `${fmt(up.cpuPerEventUs)} vs ${fmt(rl.cpuPerEventUs)} µs = ${fmt(c, 2)}×`,
      verdict(c === undefined ? undefined : c <= 1.1),
    ]);
  }

  // Issue 13.5: 10,000 readers on 1 vs N workers; Redis 2 nodes vs 1.
  const sc = (t, kind) => results.scale.find((r) => r.target === t && r.kind === kind && !r.na);
  for (const t of ["sluice-w1", "sluice-w2"]) {
    const f = sc(t, "fanout");
    rows.push([
      "13.5",
      `fan-out to ${SCALE_TARGET_N.toLocaleString("en")} readers: 100% delivered, none failed (${t})`,
      f
        ? `${pct(f.delivered)} at ${f.n}, ${f.failed} failed; p99 ${fmt(f.p99)} ms, ${fmt(f.cpuPerEventUs)} µs/event`
        : "—",
      atScale(f?.n, f ? f.delivered >= 0.995 && f.failed === 0 : undefined),
    ]);
  }
  {
    const [f1, f2] = [sc("sluice-w1", "fanout"), sc("sluice-w2", "fanout")];
    const p = ratio(f2?.p99, f1?.p99);
    const c = ratio(f2?.cpuPerEventUs, f1?.cpuPerEventUs);
    rows.push([
      "13.5",
      "fan-out: --workers 2 ÷ --workers 1 (p99, CPU/event)",
      p === undefined && c === undefined
        ? "—"
        : `p99 ${fmt(f2.p99)} vs ${fmt(f1.p99)} ms = ${fmt(p, 2)}×; ${fmt(f2.cpuPerEventUs)} vs ${fmt(f1.cpuPerEventUs)} µs/event = ${fmt(c, 2)}× (at ${f1.n})`,
      p === undefined && c === undefined ? "not measured" : "reported (no goal)",
    ]);
  }
  for (const t of ["sluice-w1", "sluice-w2"]) {
    const i = sc(t, "idle");
    rows.push([
      "13.5",
      `${SCALE_TARGET_N.toLocaleString("en")} idle readers, each its own generation: all open (${t})`,
      i
        ? `${i.open}/${i.n} open; ${fmt(i.kbPerConn, 2)} KB/connection, idle CPU ${fmt(i.idleCpuPct)}% of a core`
        : "—",
      atScale(i?.n, i ? i.open === i.n : undefined),
    ]);
  }
  {
    const [i1, i2] = [sc("sluice-w1", "idle"), sc("sluice-w2", "idle")];
    const k = ratio(i2?.kbPerConn, i1?.kbPerConn);
    rows.push([
      "13.5",
      "idle readers: --workers 2 ÷ --workers 1 (RSS per connection, idle CPU)",
      k === undefined
        ? "—"
        : `${fmt(i2.kbPerConn, 2)} vs ${fmt(i1.kbPerConn, 2)} KB = ${fmt(k, 2)}×; idle CPU ${fmt(i2.idleCpuPct)}% vs ${fmt(i1.idleCpuPct)}% (at ${i1.n})`,
      k === undefined ? "not measured" : "reported (no goal)",
    ]);
  }
  const redis1 = results.cluster.capacity.find((r) => r.target === "sluice-redis" && !(r.na && !r.probes));
  {
    const r2 = results.cluster.capacity.find((r) => r.target === "sluice-redis-2" && !(r.na && !r.probes));
    rows.push([
      "13.5",
      "Redis: 2 nodes (cores 0, 1) capacity ≥ 1.8× 1 node (core 0), 30 tok/s",
      ...capCmp(r2, redis1, 1.8),
    ]);
  }

  // Issue 15: WebSocket as cheap as SSE; Redis near the memory store.
  const sse = cap("capacity", "sluice-demo");
  const ws = cap("capacity", "sluice-ws");
  {
    rows.push(["15", "WS capacity ≥ SSE's, 30 tok/s (sluice-ws vs sluice-demo)", ...capCmp(ws, sse, 1)]);
    const w5 = o500("sluice-ws");
    const s5 = o500("sluice-demo");
    const c5 = ratio(w5?.cpuPerEventUs, s5?.cpuPerEventUs);
    rows.push([
      "15",
      "WS CPU/event ≤ SSE's at the same N = 500",
      c5 === undefined ? "—" : `${fmt(w5.cpuPerEventUs)} vs ${fmt(s5.cpuPerEventUs)} µs = ${fmt(c5, 2)}×`,
      verdict(c5 === undefined ? undefined : c5 <= 1),
    ]);
    const cc = ratio(ws?.cpuPerEventUs, sse?.cpuPerEventUs);
    rows.push([
      "15",
      "WS CPU/event ≤ SSE's, each at its capacity",
      cc === undefined
        ? "—"
        : `${fmt(ws.cpuPerEventUs)} µs at ${ws.at?.n} vs ${fmt(sse.cpuPerEventUs)} µs at ${sse.at?.n} = ${fmt(cc, 2)}×`,
      verdict(cc === undefined ? undefined : cc <= 1),
    ]);
  }
  {
    // The largest fan-out size run for both transports.
    const ns = results.fanout
      .filter((r) => r.target === "sluice-ws" && !r.na)
      .map((r) => r.n)
      .filter((n) => results.fanout.some((r) => r.target === "sluice-demo" && r.n === n && !r.na));
    const n = ns.length ? Math.max(...ns) : undefined;
    const fw = results.fanout.find((r) => r.target === "sluice-ws" && r.n === n && !r.na);
    const fs = results.fanout.find((r) => r.target === "sluice-demo" && r.n === n && !r.na);
    rows.push([
      "15",
      `WS fan-out to ${SCALE_TARGET_N.toLocaleString("en")} readers: 100% delivered, none failed`,
      fw ? `${pct(fw.delivered)} at ${fw.n}, ${fw.failed} failed` : "—",
      atScale(fw?.n, fw ? fw.delivered >= 0.995 && fw.failed === 0 : undefined),
    ]);
    const x = ratio(fw?.p99, fs?.p99);
    rows.push([
      "15",
      `WS fan-out to ${SCALE_TARGET_N.toLocaleString("en")} readers: p99 ≤ SSE's`,
      x === undefined ? "—" : `${fmt(fw.p99)} vs ${fmt(fs.p99)} ms = ${fmt(x, 2)}× at ${fw.n}`,
      atScale(fw?.n, x === undefined ? undefined : x <= 1),
    ]);
  }
  {
    const c = ratio(redis1?.cpuPerEventUs, sse?.cpuPerEventUs);
    rows.push([
      "15",
      "Redis, 1 node: CPU/event ≤ 1.5× memory store, each at its capacity",
      c === undefined
        ? "—"
        : `${fmt(redis1.cpuPerEventUs)} µs at ${redis1.at?.n} vs ${fmt(sse.cpuPerEventUs)} µs at ${sse.at?.n} = ${fmt(c, 2)}×`,
      verdict(c === undefined ? undefined : c <= 1.5),
    ]);
    rows.push(["15", "Redis, 1 node: capacity ≥ 0.7× memory store", ...capCmp(redis1, sse, 0.7)]);
  }
  results.targets = rows.map(([issue, target, value, status]) => ({ issue, target, value, status }));
  table("Targets (issues 3, 13, 15) (this run)", ["issue", "target", "measured", "status"], rows);
}

// ── scenario 1: overhead ──────────────────────────────────────────────────────
async function overhead() {
  const load = await noteLoad("overhead");
  const overheadNs = arg("overhead-n") ? arg("overhead-n").split(",").map(Number) : Q.overheadNs;
  for (const n of overheadNs) {
    const list = targetsOf(
      Q.overheadTargetsAt?.[n] ?? (n >= 1000 ? Q.bigOverheadTargets : Q.overheadTargets),
    );
    const runs = {};
    for (let rep = 0; rep < (Q.repeatsAt?.[n] ?? Q.repeats); rep++) {
      for (const t of list) {
        if (!targetAlive(t)) continue;
        const r = await liveRun(t, n, 30);
        runs[t] ??= [];
        runs[t].push(r);
        log(
          `  overhead n=${n} ${t}: ttft p50 ${fmt(r.ttft.p50)} p99 ${fmt(r.ttft.p99)} delay p50 ${fmt(r.delay.p50)} p99 ${fmt(r.delay.p99)} ms, failed ${r.failed}`,
        );
      }
    }
    const base = runs.upstream;
    for (const t of list) {
      const rs = runs[t];
      if (!rs) {
        results.overhead.push({ target: t, n, na: dead[t] ?? "not run" });
        continue;
      }
      const row = { target: t, n, load, repeats: rs.length, failed: Math.max(...rs.map((r) => r.failed)) };
      for (const [k, get] of [
        ["ttft_p50", (r) => r.ttft.p50],
        ["ttft_p99", (r) => r.ttft.p99],
        ["delay_p50", (r) => r.delay.p50],
        ["delay_p99", (r) => r.delay.p99],
      ]) {
        const vals = rs.map(get);
        row[k] = median(vals);
        row[`${k}_spread`] = [Math.min(...vals), Math.max(...vals)];
        if (base) row[`${k}_added`] = row[k] - median(base.map(get));
      }
      row.loadgen_cpu_pct = median(rs.map((r) => (r.loadgenCpuWindowMs / r.windowMs) * 100));
      // Server CPU per delivered event at this N (all targets at the same N: a side-by-side figure).
      row.cpuPerEventUs = median(rs.map((r) => r.cpuPerEventUs));
      row.cpuPerEventUs_spread = [
        Math.min(...rs.map((r) => r.cpuPerEventUs)),
        Math.max(...rs.map((r) => r.cpuPerEventUs)),
      ];
      row.delivered = median(rs.map((r) => r.delivered));
      results.overhead.push(row);
    }
  }
  table(
    "1. Overhead vs reading mock-upstream directly (30 tok/s; ms; 'added' = minus the direct reader's figure, same run)",
    [
      "target",
      "N",
      "TTFT p50",
      "added",
      "TTFT p99",
      "added",
      "delay p50",
      "added",
      "delay p99",
      "added",
      "failed",
      "server µs/event",
      "loadgen CPU",
    ],
    results.overhead.map((r) =>
      r.na
        ? [TARGETS[r.target].label, r.n, `n/a: ${r.na}`, "", "", "", "", "", "", "", "", "", ""]
        : [
            TARGETS[r.target].label,
            r.n,
            fmt(r.ttft_p50),
            fmt(r.ttft_p50_added),
            fmt(r.ttft_p99),
            fmt(r.ttft_p99_added),
            fmt(r.delay_p50),
            fmt(r.delay_p50_added),
            fmt(r.delay_p99),
            fmt(r.delay_p99_added),
            r.failed,
            r.target === "upstream" ? "—" : fmt(r.cpuPerEventUs),
            `${fmt(r.loadgen_cpu_pct, 0)}%`,
          ],
    ),
  );
}

// ── scenario 2: capacity at 30 (and 100) tok/s ────────────────────────────────
/** opts.start: the first probe's N (default CAP_START); opts.probes: most probes (default Q's). */
async function capacityOf(t, tps, opts = {}) {
  let lo = 0;
  let hi = Number.POSITIVE_INFINITY;
  // --cap-n=N: one probe at N for every target (a side-by-side CPU comparison), --cap-reps=K runs.
  const fixedN = arg("cap-n") ? Number(arg("cap-n")) : undefined;
  let n = fixedN ?? Math.min(opts.start ?? CAP_START[t] ?? 500, Q.maxStreams);
  if (tps >= 100 && fixedN === undefined && opts.start === undefined) n = Math.max(50, Math.round(n / 2));
  const probes = [];
  let best;
  const maxProbes =
    fixedN !== undefined
      ? 1
      : opts.probes !== undefined
        ? opts.probes
        : tps >= 100
          ? (Q.cap100ProbesPeer[t] ?? Q.cap100Probes)
          : (Q.capProbesPeer[t] ?? Q.capProbes);
  const repeats = arg("cap-reps") ? Number(arg("cap-reps")) : (Q.capRepeatsPeer[t] ?? Q.capRepeats);
  for (let k = 0; k < maxProbes && targetAlive(t); k++) {
    let reps = [];
    for (let rep = 0; rep < repeats; rep++) reps.push(await liveRun(t, n, tps));
    // Pass = the median run passes (with 2 repeats: one passes and the median p99 is in budget).
    const passes = (rs) =>
      rs.filter((r) => r.pass).length * 2 > rs.length ||
      (rs.length === 2 && rs.some((r) => r.pass) && median(rs.map((r) => r.delay.p99)) <= P99_BUDGET_MS);
    let pass = passes(reps);
    // A failed probe is run once more (full run, every target alike) and the second run decides:
    // this machine stalls now and then for tens of ms with the server far from busy (sessions 5
    // and 6), and one stall in a 2 s window decides a probe on its own. Both runs are kept.
    let firstTry;
    if (!pass && Q.capRetryFailed && fixedN === undefined && targetAlive(t)) {
      firstTry = {
        p99: median(reps.map((x) => x.delay.p99)),
        delivered: median(reps.map((x) => x.delivered)),
      };
      log(
        `  capacity ${tps} tok/s ${t} n=${n}: failed (p99 ${fmt(firstTry.p99)} ms, delivered ${fmt(firstTry.delivered * 100, 0)}%), run once more`,
      );
      reps = [];
      for (let rep = 0; rep < repeats; rep++) reps.push(await liveRun(t, n, tps));
      pass = passes(reps);
    }
    const p99 = median(reps.map((r) => r.delay.p99));
    const r = reps[0];
    const probe = {
      n,
      pass,
      ...(firstTry ? { firstTry } : {}),
      p50: median(reps.map((x) => x.delay.p50)),
      p99,
      p99_spread: [Math.min(...reps.map((x) => x.delay.p99)), Math.max(...reps.map((x) => x.delay.p99))],
      delivered: median(reps.map((x) => x.delivered)),
      failed: Math.max(...reps.map((x) => x.failed)),
      cpuPerEventUs: median(reps.map((x) => x.cpuPerEventUs)),
      // Of which redis-server's (targets with one of their own), µs per event.
      redisUsPerEvent:
        reps[0].redisUsPerEvent === undefined ? undefined : median(reps.map((x) => x.redisUsPerEvent)),
      serverCpuPct: median(reps.map((x) => (x.serverCpuMs / x.windowMs) * 100)),
      upstreamCpuPct: median(reps.map((x) => (x.upstreamCpuMs / x.windowMs) * 100)),
      loadgenCpuPct: median(reps.map((x) => (x.loadgenCpuWindowMs / x.windowMs) * 100)),
      loadgenLagMs: Math.max(...reps.map((x) => x.timerLagMs ?? 0)),
      errors: r.errors,
    };
    probes.push(probe);
    log(
      `  capacity ${tps} tok/s ${t} n=${n}: p99 ${fmt(p99)} ms, delivered ${fmt(probe.delivered * 100, 0)}%, failed ${probe.failed}, server CPU ${fmt(probe.serverCpuPct, 0)}%, ${fmt(probe.cpuPerEventUs)} µs/event${probe.redisUsPerEvent === undefined ? "" : ` (redis-server ${fmt(probe.redisUsPerEvent)})`}, loadgen ${fmt(probe.loadgenCpuPct, 0)}% (lag ${fmt(probe.loadgenLagMs, 0)} ms) → ${pass ? "pass" : "FAIL"}`,
    );
    if (pass) {
      lo = n;
      best = probe;
      if (n >= Q.maxStreams) break;
      n = hi === Number.POSITIVE_INFINITY ? Math.min(n * 2, Q.maxStreams) : Math.round((lo + hi) / 2);
    } else {
      hi = n;
      n = Math.round((lo + hi) / 2);
    }
    if (hi !== Number.POSITIVE_INFINITY && hi - lo <= Math.max(25, lo * 0.1)) break;
  }
  return {
    target: t,
    tps,
    capacity: lo,
    bounded:
      lo >= Q.maxStreams
        ? `≥ (the run's cap is ${Q.maxStreams})`
        : hi === Number.POSITIVE_INFINITY
          ? "≥"
          : `< ${hi}`,
    cpuPerEventUs: best?.cpuPerEventUs,
    at: best,
    probes,
    na: dead[t],
  };
}

async function capacity(tps, list, key) {
  const load = await noteLoad(`capacity ${tps} tok/s`);
  for (const t of targetsOf(list)) {
    if (!targetAlive(t)) {
      results[key].push({ target: t, tps, na: dead[t] });
      continue;
    }
    // Every target's search starts on fresh server processes: a server that keeps what it served
    // (Sluice's memory store keeps every stream for its TTL, durable-streams too) would otherwise
    // carry the heap of the targets probed before it (Sluice's one process serves sluice-up,
    // -demo and -ws in turn: 600 MB by then in session 7's run), and later targets would pay for
    // the earlier ones' garbage collection.
    await restart(t);
    await settleAll(`capacity ${t}`);
    results[key].push({ ...(await capacityOf(t, tps)), load });
  }
  const relay = results[key].find((r) => r.target === "relay");
  const rs = results[key].find((r) => r.target === "resumable");
  const rsr = results[key].find((r) => r.target === "resumable-r");
  table(
    `2. Capacity at ${tps} tok/s per stream: largest N with p99 delivery delay ≤ ${P99_BUDGET_MS} ms, per transport`,
    [
      "target",
      "capacity",
      "vs relay",
      "vs resumable (direct / via Redis)",
      "p99 at cap",
      "server CPU µs/event",
      "vs relay",
      "probes",
    ],
    results[key].map((r) =>
      r.na && !r.probes
        ? [TARGETS[r.target].label, `n/a: ${r.na}`, "", "", "", "", "", ""]
        : [
            TARGETS[r.target].label,
            `${r.capacity} (${r.bounded})`,
            relay?.capacity ? `${fmt(r.capacity / relay.capacity, 2)}×` : "—",
            `${rs?.capacity ? `${fmt(r.capacity / rs.capacity, 1)}×` : "—"} / ${rsr?.capacity ? `${fmt(r.capacity / rsr.capacity, 1)}×` : "—"}`,
            fmt(r.at?.p99),
            fmt(r.cpuPerEventUs),
            relay?.cpuPerEventUs && r.cpuPerEventUs
              ? `${fmt(r.cpuPerEventUs / relay.cpuPerEventUs, 2)}×`
              : "—",
            r.probes.map((p) => `${p.n}:${p.pass ? "ok" : "x"}(${fmt(p.p99, 0)})`).join(" "),
          ],
    ),
  );
}

// ── scenario 3: fan-out ───────────────────────────────────────────────────────
async function startShared(t, id, demo) {
  const s = sharedStream(t, ports, id, demo);
  if (s.na) return s;
  const res = await fetch(s.start.url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: s.start.body,
  });
  if (res.status >= 300) throw new Error(`start ${t}: HTTP ${res.status} ${await res.text()}`);
  const sid = s.start.idFrom === "json" ? (await res.json()).id : s.start.idFrom;
  if (s.start.idFrom !== "json") await res.arrayBuffer();
  return { ...s, sid };
}

/** One generation at 30 tok/s read by n readers of target t (started over a ramp): a result row. */
async function fanoutRun(t, n, load) {
  const ramp = Q.fanRamp;
  const ttft = ramp + Q.fanLead;
  const windowStart = ttft + 300;
  const windowEnd = windowStart + Q.window;
  const demo = demoOpts({
    seed: 1,
    ttft_ms: ttft,
    tokens_per_s: 30,
    length: Math.ceil((30 * (Q.window + 1500)) / 1000),
  });
  const shared = sharedStream(t, ports, "x", demo);
  if (shared.na) return { target: t, n, na: shared.na };
  if (!targetAlive(t)) return { target: t, n, na: dead[t] };
  let row;
  try {
    const s = await startShared(t, `fan${++runSeq}`, demo);
    const specs = [];
    for (let i = 0; i < n; i++)
      specs.push({ ...s.reader(s.sid), at: Math.random() * ramp, localAddress: srcAddr(i) });
    const r = await job(
      { type: "live", transport: transportOf(t), specs, windowStart, windowEnd, endAt: windowEnd + 500 },
      t,
    );
    const tokens = (30 * Q.window) / 1000;
    row = {
      target: t,
      n,
      load,
      p50: r.delay.p50,
      p99: r.delay.p99,
      max: r.delay.max,
      delivered: r.tokensInWindow / (n * tokens),
      failed: r.failed,
      errors: r.errors,
      cpuPerEventUs: r.tokensInWindow ? (r.serverCpuMs * 1000) / r.tokensInWindow : Number.NaN,
      serverCpuPct: (r.serverCpuMs / r.windowMs) * 100,
      loadgenCpuPct: (r.loadgenCpuWindowMs / r.windowMs) * 100,
      loadgenLagMs: r.timerLagMs,
    };
    log(
      `  fan-out ${t} n=${n}: p99 ${fmt(r.delay.p99)} ms, delivered ${fmt(row.delivered * 100, 0)}%, failed ${r.failed}`,
    );
  } catch (e) {
    row = { target: t, n, na: `error: ${e.message}` };
  }
  await quiesce(t);
  return row;
}

async function fanout() {
  const load = await noteLoad("fan-out");
  const fanNs = arg("fan-n") ? arg("fan-n").split(",").map(Number) : Q.fanNs;
  for (const n of fanNs)
    for (const t of targetsOf(Q.fanTargets)) results.fanout.push(await fanoutRun(t, n, load));
  table(
    "3. Fan-out: one generation at 30 tok/s, N readers; delivery delay (ms)",
    [
      "target",
      "readers",
      "p50",
      "p99",
      "max",
      "delivered",
      "failed",
      "server CPU",
      "µs/event",
      "loadgen CPU (lag)",
    ],
    results.fanout.map((r) =>
      r.na
        ? [TARGETS[r.target].label, r.n, `n/a: ${r.na}`, "", "", "", "", "", "", ""]
        : [
            TARGETS[r.target].label,
            r.n,
            fmt(r.p50),
            fmt(r.p99),
            fmt(r.max),
            `${fmt(r.delivered * 100, 0)}%`,
            r.failed,
            `${fmt(r.serverCpuPct, 0)}%`,
            fmt(r.cpuPerEventUs),
            `${fmt(r.loadgenCpuPct, 0)}% (${fmt(r.loadgenLagMs, 0)} ms)`,
          ],
    ),
  );
}

// ── scenario 4: memory per idle SSE connection ────────────────────────────────
async function memory() {
  const load = await noteLoad("memory");
  const memTargets = targetsOf(["relay", "sluice-demo", "resumable", "durable", "portkey"]);
  // Fresh server processes (a clean heap), restarted together up front to save time.
  await Promise.all(memTargets.filter((t) => targetAlive(t)).map((t) => restart(t)));
  for (const t of memTargets) {
    // A relay/gateway holds two sockets per idle reader (client + upstream), and so does
    // mock-upstream: stay under the 20,000 fd limit per process.
    const n = sharedStream(t, ports, "x", {}).na ? Math.min(Q.idleN, 8000) : Q.idleN;
    if (!targetAlive(t)) {
      results.memory.push({ target: t, n, na: dead[t] });
      continue;
    }
    const ramp = Q.idleRamp;
    const demo = demoOpts({ seed: 1, ttft_ms: 120_000, tokens_per_s: 30, length: 10 });
    let specs;
    let cleanup = async () => {};
    const shared = sharedStream(t, ports, "x", demo);
    if (shared.na) {
      // A relay or gateway holds an upstream request per reader: that is its idle cost.
      const run = ++runSeq;
      specs = Array.from({ length: n }, (_, i) => ({
        ...liveSpec(t, ports, `m${run}-${i}`, demo, i),
        at: Math.random() * ramp,
        localAddress: srcAddr(i),
      }));
    } else {
      const s = await startShared(t, `mem${++runSeq}`, demo);
      specs = Array.from({ length: n }, (_, i) => ({
        ...s.reader(s.sid),
        at: Math.random() * ramp,
        localAddress: srcAddr(i),
      }));
      if (t.startsWith("sluice"))
        cleanup = () =>
          fetch(`http://127.0.0.1:${ports.sluice}/v1/streams/${s.sid}/cancel`, { method: "POST" }).then((r) =>
            r.arrayBuffer(),
          );
    }
    await sleep(Q.memPreMs);
    const before = serverRss(t);
    let after;
    let headed = 0;
    const timeout = setTimeout(() => lg.child.send({ type: "release" }), ramp + Q.holdMaxMs);
    const r = await job(
      { type: "live", transport: transportOf(t), hold: true, specs, windowStart: 0, windowEnd: 1, endAt: 0 },
      t,
      {
        onHeld: async (m) => {
          headed = m.headed;
          await sleep(Q.memSettleMs);
          after = serverRss(t);
          lg.child.send({ type: "release" });
        },
      },
    );
    clearTimeout(timeout);
    after ??= serverRss(t);
    headed = headed || r.headed;
    await cleanup().catch(() => {});
    const row = {
      target: t,
      n,
      load,
      open: headed,
      failed: r.failed,
      rssBeforeKb: before,
      rssAfterKb: after,
      kbPerConn: headed ? (after - before) / headed : Number.NaN,
      errors: r.errors,
    };
    results.memory.push(row);
    log(
      `  memory ${t}: ${headed}/${n} open, RSS ${before} → ${after} kB = ${fmt(row.kbPerConn, 2)} KB/connection`,
    );
    await quiesce(t);
  }
  table(
    "4. Memory: RSS per idle open SSE connection (server RSS after − before, / connections)",
    ["target", "readers", "open", "failed", "RSS before MB", "RSS after MB", "KB / connection"],
    results.memory.map((r) =>
      r.na
        ? [TARGETS[r.target].label, r.n, `n/a: ${r.na}`, "", "", "", ""]
        : [
            TARGETS[r.target].label,
            r.n,
            r.open,
            r.failed,
            fmt(r.rssBeforeKb / 1024),
            fmt(r.rssAfterKb / 1024),
            fmt(r.kbPerConn, 2),
          ],
    ),
  );
}

// ── scenario 5: resume ────────────────────────────────────────────────────────
async function waitFinished(t, s, timeoutMs = 60_000) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (t.startsWith("sluice")) {
      const info = await (await fetch(`http://127.0.0.1:${ports.sluice}/v1/streams/${s.sid}/info`)).json();
      if (info.status !== "running") return info.length;
    } else if (t === "durable") {
      const res = await fetch(`http://127.0.0.1:${ports.durable}/s/${s.sid}`, { method: "HEAD" });
      if (res.headers.get("stream-closed") === "true") return -1;
    } else {
      await sleep(Q.noStatusWaitMs);
      return -1;
    }
    await sleep(100);
  }
  throw new Error("stream did not finish");
}

async function resume() {
  const load = await noteLoad("resume");
  // (a) catch up from -1 on a finished 10k-event stream (all prepared concurrently first)
  const cuDemo = demoOpts({ seed: 3, ttft_ms: 0, tokens_per_s: 1_000_000, length: 10_000 });
  const prepared = {};
  await Promise.all(
    targetsOf(["sluice-demo", "resumable", "durable"])
      .filter((t) => targetAlive(t))
      .map(async (t) => {
        try {
          const s = await startShared(t, `cu${++runSeq}`, cuDemo);
          await waitFinished(t, s);
          prepared[t] = s;
        } catch (e) {
          prepared[t] = e;
        }
      }),
  );
  for (const t of targetsOf(["relay", "sluice-demo", "resumable", "durable", "portkey"])) {
    const demo = cuDemo;
    const shared = sharedStream(t, ports, "x", demo);
    if (shared.na || !targetAlive(t)) {
      results.resume.push({
        kind: "catch-up",
        target: t,
        na: shared.na ? "no log to resume from: a relay/gateway keeps nothing" : dead[t],
      });
      continue;
    }
    try {
      const s = prepared[t];
      if (s instanceof Error) throw s;
      const times = [];
      let events = 0;
      let err;
      for (let k = 0; k < Q.catchupRepeats; k++) {
        const r = await job(
          {
            type: "live",
            transport: "sse",
            specs: [{ ...s.reader(s.sid), at: 0 }],
            windowStart: 0,
            windowEnd: 60_000,
            endAt: 60_000,
          },
          t,
        );
        if (r.failed) {
          err = Object.keys(r.errors)[0];
          if (!times.length) break; // it cannot: do not wait for it again
        } else if (r.eventsTotal < 10_000)
          err = `got ${r.eventsTotal} of 10,000 events (the response ended after ${fmt(r.endTime.p50, 0)} ms)`;
        else {
          times.push(r.endTime.p50);
          events = r.eventsTotal;
        }
      }
      results.resume.push(
        times.length
          ? {
              kind: "catch-up",
              target: t,
              load,
              ms: median(times),
              spread: [Math.min(...times), Math.max(...times)],
              events,
              ok: times.length,
              of: Q.catchupRepeats,
              err,
            }
          : {
              kind: "catch-up",
              target: t,
              na: `cannot: ${err}${t === "resumable" ? " (a finished stream is not served: its chunks live only while the producer runs)" : ""}`,
            },
      );
      log(`  catch-up ${t}: ${times.length ? `${fmt(median(times))} ms for ${events} events` : err}`);
    } catch (e) {
      results.resume.push({ kind: "catch-up", target: t, na: `error: ${e.message}` });
    }
  }
  // (b) readers that drop and resume at random points: exactly the same events, in order
  for (const t of targetsOf(["relay", "sluice-demo", "resumable", "durable", "portkey"])) {
    const length = Q.resumeLength;
    const demo = demoOpts({ seed: 5, ttft_ms: Q.resumeTtftMs, tokens_per_s: Q.resumeTps, length });
    const shared = sharedStream(t, ports, "x", demo);
    if (shared.na || shared.resume === "none" || !targetAlive(t)) {
      results.resume.push({
        kind: "drop+resume",
        target: t,
        na: shared.na
          ? "nothing to resume: a relay/gateway keeps no log"
          : shared.resume === "none"
            ? "resumeAt counts the producer's chunks, which a client cannot see on the wire: no exact resume point"
            : dead[t],
      });
      continue;
    }
    try {
      const readers = [];
      for (let k = 0; k < Q.resumeStreams; k++) {
        const s = await startShared(t, `rs${++runSeq}`, demo);
        readers.push({ stream: k, reference: true, spec: s.reader(s.sid), at: 0 });
        for (let j = 0; j < Q.resumeReaders; j++) {
          const drops = Array.from(
            { length: 1 + Math.floor(Math.random() * 3) },
            () => 1 + Math.floor(Math.random() * length),
          ).sort((a, b) => a - b);
          readers.push({
            stream: k,
            spec: { ...s.reader(s.sid), localAddress: srcAddr(j) },
            at: Math.random() * 300,
            dropAt: drops,
            pauseMs: Math.random() * 200,
          });
        }
      }
      const r = await job({ type: "resume", style: shared.resume, readers, timeoutMs: 30_000 }, t);
      results.resume.push({ kind: "drop+resume", target: t, load, ...r });
      log(
        `  drop+resume ${t}: ${r.exact}/${r.readers} exact, lost ${r.lost}, dup ${r.dup}, ${r.reconnects} reconnects`,
      );
    } catch (e) {
      results.resume.push({ kind: "drop+resume", target: t, na: `error: ${e.message}` });
    }
    await quiesce(t);
  }
  table(
    "5. Resume: (a) catch up from -1 on a finished 10,000-token stream over SSE; (b) readers that drop 1–3 times at random points and resume",
    ["target", "test", "result"],
    results.resume.map((r) => [
      TARGETS[r.target].label,
      r.kind,
      r.na
        ? `n/a: ${r.na}`
        : r.kind === "catch-up"
          ? `${fmt(r.ms)} ms for 10,000+ events (spread ${fmt(r.spread[0])}–${fmt(r.spread[1])}; ${r.ok}/${r.of} reads complete${r.err ? `; others: ${r.err}` : ""})`
          : `${r.exact}/${r.readers} readers exact; lost ${r.lost}, dup ${r.dup}, incomplete ${r.incomplete}; ${r.reconnects} reconnects; ${r.refEvents} events/stream`,
    ]),
  );
}

// ── scenario 6: cancel latency ────────────────────────────────────────────────
async function mockRequests() {
  return (await (await fetch(`http://127.0.0.1:${ports.upstream}/mock/requests`)).json()).requests;
}
async function newUpstreamRequest(since) {
  for (let k = 0; k < 100; k++) {
    const r = (await mockRequests()).filter((x) => x.started_at >= since && x.status === "streaming");
    if (r.length) return r[0].id;
    await sleep(20);
  }
  throw new Error("the upstream never saw the request");
}
async function upstreamAbortedAt(id, timeoutMs = Q.cancelWaitMs) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const rec = (await mockRequests()).find((x) => x.id === id);
    if (rec && rec.status !== "streaming") return rec.status === "aborted" ? rec.ended_at : Number.NaN;
    await sleep(2);
  }
  return undefined;
}

async function cancel() {
  const load = await noteLoad("cancel");
  const demo = demoOpts({ seed: 9, ttft_ms: 50, tokens_per_s: 30, length: 600 });
  for (const t of targetsOf(["relay", "sluice-up", "sluice-demo", "resumable", "durable", "portkey"])) {
    if (t === "sluice-demo") {
      results.cancel.push({ target: t, na: "no upstream request to abort (the demo model runs in-process)" });
      continue;
    }
    if (t === "durable") {
      results.cancel.push({ target: t, na: "the protocol has no cancel: the producer owns the generation" });
      continue;
    }
    if (!targetAlive(t)) {
      results.cancel.push({ target: t, na: dead[t] });
      continue;
    }
    const lat = [];
    let never = 0;
    let trials = 0;
    const how = t === "sluice-up" ? "POST /v1/streams/{id}/cancel" : "client closes its connection";
    try {
      for (let k = 0; k < Q.cancelTrials; k++) {
        const since = Date.now() - 5;
        let close = () => {};
        let sid;
        if (t === "sluice-up") {
          const res = await fetch(`http://127.0.0.1:${ports.sluice}/v1/streams`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ model: "up", messages: [{ role: "user", content: "x" }], demo }),
          });
          sid = (await res.json()).id;
        } else {
          const spec = liveSpec(t, ports, `c${++runSeq}`, demo);
          const ac = new AbortController();
          const res = await fetch(`http://127.0.0.1:${spec.port}${spec.path}`, {
            method: spec.method,
            headers: spec.headers,
            body: spec.body,
            signal: ac.signal,
          });
          const rd = res.body.getReader();
          (async () => {
            for (;;) if ((await rd.read()).done) break;
          })().catch(() => {});
          close = () => ac.abort();
        }
        const upId = await newUpstreamRequest(since);
        await sleep(250);
        const t0 = Date.now();
        if (sid) {
          await fetch(`http://127.0.0.1:${ports.sluice}/v1/streams/${sid}/cancel`, { method: "POST" }).then(
            (r) => r.arrayBuffer(),
          );
        } else close();
        const at = await upstreamAbortedAt(upId);
        if (at === undefined || Number.isNaN(at)) never++;
        else lat.push(at - t0);
        trials++;
        if (never >= Q.cancelGiveUp && lat.length === 0) break; // it does not abort the upstream: no need to wait more
      }
      results.cancel.push({
        target: t,
        load,
        how,
        trials,
        p50: median(lat),
        max: lat.length ? Math.max(...lat) : Number.NaN,
        never,
      });
      log(`  cancel ${t}: p50 ${fmt(median(lat))} ms, never aborted ${never}/${trials}`);
    } catch (e) {
      results.cancel.push({ target: t, na: `error: ${e.message}` });
    }
  }
  table(
    "6. Cancel latency: cancel request → mock-upstream sees its request aborted (ms, its own clock)",
    ["target", "how", "p50", "max", `not aborted within ${Q.cancelWaitMs / 1000} s`],
    results.cancel.map((r) =>
      r.na
        ? [TARGETS[r.target].label, `n/a: ${r.na}`, "", "", ""]
        : [TARGETS[r.target].label, r.how, fmt(r.p50), fmt(r.max), `${r.never}/${r.trials}`],
    ),
  );
}

// ── scenario 7: two Sluice nodes on one Redis (issue 5; 2 nodes vs 1: issue 13 part 5) ───────
/**
 * Started only for this scenario: its own redis-server and node A on the server core (core 0),
 * node B on the other core (core 1, which the load generator and mock-upstream share: the
 * machine has two). The 1-node target uses node A alone, so it has core 0 as every single-node
 * target does; the 2-node target adds node B on core 1.
 */
async function startCluster() {
  if (procs.get("sluiceA")) return;
  spawnPinned(
    "redis2",
    SERVER_CORE,
    "redis-server",
    [
      "--port",
      String(ports.redis2),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--maxclients",
      "20000",
    ],
    { cwd: BENCH, logDir: LOGS },
  );
  await waitPort(ports.redis2, 20_000);
  for (const name of ["sluiceA", "sluiceB"]) {
    const cfg = join(RESULTS, `sluice-bench-${name}.json`);
    writeFileSync(
      cfg,
      JSON.stringify({
        host: "127.0.0.1",
        port: ports[name],
        log_level: "warn",
        store: `redis://127.0.0.1:${ports.redis2}`,
      }),
    );
    const core = name === "sluiceB" ? CLIENT_CORE : SERVER_CORE;
    SPAWN[name] = () =>
      spawnPinned(name, core, node, [...prof(name), SLUICE_CLI, "serve", "--config", cfg], {
        cwd: ROOT,
        logDir: LOGS,
      });
    SPAWN[name]();
  }
  await waitPort(ports.sluiceA, 30_000);
  await waitPort(ports.sluiceB, 30_000);
}

async function cluster() {
  const load = await noteLoad("cluster (2 nodes, 1 Redis)");
  await startCluster();
  const list = targetsOf(["sluice-redis", "sluice-redis-x", "sluice-redis-2"]);
  for (const t of list) {
    if (!targetAlive(t)) {
      results.cluster.capacity.push({ target: t, tps: 30, na: dead[t] });
      continue;
    }
    const opts = { probes: Q.clusterProbes[t] ?? 1 };
    if (t === "sluice-redis-2") {
      // 2 nodes vs 1 (goal ≥ 1.8×): the first probe is at 1.8× the 1-node capacity of this run,
      // so it alone says whether the goal holds; the others bracket the capacity.
      const one = results.cluster.capacity.find((r) => r.target === "sluice-redis" && r.capacity > 0);
      if (one) opts.start = Math.ceil(one.capacity * 1.8);
    }
    await settleAll(`capacity ${t}`);
    results.cluster.capacity.push({ ...(await capacityOf(t, 30, opts)), load });
  }
  // Cross-node delivery of one generation to many readers: started on A, read on B (and on A).
  for (const t of list.filter((x) => x !== "sluice-redis-2")) {
    if (!targetAlive(t)) continue;
    const n = Q.clusterFanN;
    const ramp = Q.fanRamp;
    const windowStart = ramp + Q.fanLead + 300;
    const windowEnd = windowStart + Q.window;
    const demo = demoOpts({
      seed: 1,
      ttft_ms: ramp + Q.fanLead,
      tokens_per_s: 30,
      length: Math.ceil((30 * (Q.window + 1500)) / 1000),
    });
    const s = await startShared(t, `cl${++runSeq}`, demo);
    const specs = [];
    for (let i = 0; i < n; i++)
      specs.push({ ...s.reader(s.sid), at: Math.random() * ramp, localAddress: srcAddr(i) });
    const r = await job(
      { type: "live", transport: "sse", specs, windowStart, windowEnd, endAt: windowEnd + 500 },
      t,
    );
    const row = {
      target: t,
      n,
      load,
      p50: r.delay.p50,
      p99: r.delay.p99,
      max: r.delay.max,
      delivered: r.tokensInWindow / ((n * 30 * Q.window) / 1000),
      failed: r.failed,
      cpuPerEventUs: r.tokensInWindow ? (r.serverCpuMs * 1000) / r.tokensInWindow : Number.NaN,
      serverCpuPct: (r.serverCpuMs / r.windowMs) * 100,
      loadgenCpuPct: (r.loadgenCpuWindowMs / r.windowMs) * 100,
    };
    results.cluster.fanout.push(row);
    log(
      `  cluster fan-out ${t} n=${n}: p50 ${fmt(row.p50)} p99 ${fmt(row.p99)} ms, delivered ${fmt(row.delivered * 100, 0)}%`,
    );
    await quiesce(t);
  }
  const single = results.capacity.find((r) => r.target === "sluice-demo");
  const singleFan = results.fanout.find((r) => r.target === "sluice-demo" && r.n === Q.clusterFanN);
  const oneNode = results.cluster.capacity.find((r) => r.target === "sluice-redis" && r.capacity > 0);
  table(
    "7. Sluice nodes on one redis-server, 30 tok/s, SSE, demo — node A + redis-server on core 0, node B on core 1 (shared with the load generator and mock-upstream); next to the single node (memory store) of this run",
    [
      "target",
      "capacity",
      "vs 1 node",
      "p99 at cap",
      "µs/event (all server procs)",
      "of which redis-server",
      "probes",
      `fan-out ${Q.clusterFanN}: p50 / p99 / delivered`,
    ],
    [
      ...(single
        ? [
            [
              `${TARGETS["sluice-demo"].label} (memory store)`,
              single.na && !single.probes ? "n/a" : `${single.capacity} (${single.bounded})`,
              "",
              fmt(single.at?.p99),
              fmt(single.cpuPerEventUs),
              "",
              single.probes?.map((p) => `${p.n}:${p.pass ? "ok" : "x"}(${fmt(p.p99, 0)})`).join(" ") ?? "",
              singleFan
                ? `${fmt(singleFan.p50)} / ${fmt(singleFan.p99)} / ${fmt(singleFan.delivered * 100, 0)}%`
                : "—",
            ],
          ]
        : []),
      ...list.map((t) => {
        const c = results.cluster.capacity.find((r) => r.target === t);
        const f = results.cluster.fanout.find((r) => r.target === t);
        return [
          TARGETS[t].label,
          !c || (c.na && !c.probes) ? `n/a: ${c?.na}` : `${c.capacity} (${c.bounded})`,
          t !== "sluice-redis" && oneNode && c?.capacity !== undefined
            ? `${fmt(c.capacity / oneNode.capacity, 2)}×`
            : "",
          fmt(c?.at?.p99),
          fmt(c?.cpuPerEventUs),
          fmt(c?.at?.redisUsPerEvent),
          c?.probes?.map((p) => `${p.n}:${p.pass ? "ok" : "x"}(${fmt(p.p99, 0)})`).join(" ") ?? "",
          f ? `${fmt(f.p50)} / ${fmt(f.p99)} / ${fmt(f.delivered * 100, 0)}%` : "—",
        ];
      }),
    ],
  );
}

// ── scenario: compact catch-up (issue 13 part 3) ─────────────────────────────
/** Bytes of one SSE read of `path` on the Sluice port (node:http: what goes over the wire). */
function wireBytes(path, encoding) {
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: "127.0.0.1",
        port: ports.sluice,
        path,
        headers: { accept: "text/event-stream", "accept-encoding": encoding },
      },
      (res) => {
        let bytes = 0;
        res.on("data", (c) => {
          bytes += c.length;
        });
        res.on("end", () => resolve(bytes));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
  });
}

/**
 * A reader joins a finished 10,000-token demo stream (a reload, a second tab): the same stream
 * read with compact catch-up and without, side by side — bytes on the wire (identity and gzip),
 * the server's CPU, and the time the real client SDK (@sluice/client, SSE, as a browser would use
 * it) takes to hold the full text. Reads alternate between the two modes.
 */
async function compact() {
  const load = await noteLoad("compact");
  const t = "sluice-demo";
  if (!targetAlive(t)) {
    results.compact.push({ target: t, na: dead[t] });
    return;
  }
  const { SluiceClient } = await import(join(ROOT, "packages/client/dist/index.js"));
  const length = 10_000;
  // No `stamp`: a delta that carries a field the fold does not know (`due`) is never folded.
  const demo = demoOpts({ seed: 11, ttft_ms: 0, tokens_per_s: 1_000_000, length, stamp: false });
  const s = await startShared(t, `cp${++runSeq}`, demo);
  const records = await waitFinished(t, s);
  const base = `http://127.0.0.1:${ports.sluice}`;
  const pid = procs.get("sluice")?.pid;
  const modes = { plain: false, compact: true };
  const acc = { plain: { ms: [], cpu: [] }, compact: { ms: [], cpu: [] } };
  const texts = {};
  const events = {};
  const bytes = {};
  const READS = 5; // SDK reads per measurement (CPU is counted in 10 ms ticks)
  for (let k = 0; k < Q.compactRepeats; k++) {
    for (const mode of k % 2 === 0 ? ["plain", "compact"] : ["compact", "plain"]) {
      const client = new SluiceClient({ baseUrl: base, compact: modes[mode] });
      const cpu0 = cpuMs(pid);
      for (let r = 0; r < READS; r++) {
        const t0 = performance.now();
        let text = "";
        let n = 0;
        for await (const e of client.follow(s.sid)) {
          n++;
          if (e.event.type === "text-delta") text += e.event.delta;
        }
        acc[mode].ms.push(performance.now() - t0);
        texts[mode] = text;
        events[mode] = n;
      }
      acc[mode].cpu.push((cpuMs(pid) - cpu0) / READS);
    }
  }
  for (const mode of Object.keys(modes)) {
    const q = modes[mode] ? "&compact=true" : "";
    bytes[mode] = {
      identity: await wireBytes(`/v1/streams/${s.sid}?offset=-1${q}`, "identity"),
      gzip: await wireBytes(`/v1/streams/${s.sid}?offset=-1${q}`, "gzip"),
    };
  }
  const same = texts.plain === texts.compact && texts.plain.length > 0;
  for (const mode of Object.keys(modes)) {
    results.compact.push({
      target: t,
      mode,
      load,
      records,
      events: events[mode],
      textChars: texts[mode]?.length,
      sameText: same,
      bytes: bytes[mode],
      clientMs: median(acc[mode].ms),
      clientMsSpread: [Math.min(...acc[mode].ms), Math.max(...acc[mode].ms)],
      serverCpuMs: median(acc[mode].cpu),
      serverCpuSpread: [Math.min(...acc[mode].cpu), Math.max(...acc[mode].cpu)],
    });
  }
  table(
    `Compact catch-up: a reader joins a finished ${length.toLocaleString("en")}-token demo stream (${records} records), SSE, @sluice/client`,
    [
      "read",
      "events",
      "bytes (identity)",
      "bytes (gzip)",
      "server CPU ms/read",
      "client ms to full text",
      "same text",
    ],
    results.compact
      .filter((r) => !r.na)
      .map((r) => [
        r.mode,
        String(r.events),
        String(r.bytes.identity),
        String(r.bytes.gzip),
        `${fmt(r.serverCpuMs)} (${fmt(r.serverCpuSpread[0])}–${fmt(r.serverCpuSpread[1])})`,
        `${fmt(r.clientMs)} (${fmt(r.clientMsSpread[0])}–${fmt(r.clientMsSpread[1])})`,
        r.sameText ? "yes" : "NO",
      ]),
  );
}

// ── scenario 8: the cores of one machine (`sluice serve --workers N`, issue 13) ──────────────
/**
 * `--workers 1` pinned to the server core, then `--workers 2` allowed both cores (the machine has
 * two: the second is also the load generator's and mock-upstream's, so this is what two workers
 * get on this machine, not two free cores). Each server runs alone during its probes.
 */
async function startWorkers(name, cores, n) {
  // A fresh server: its targets get their JIT warm-up again before their first measured run.
  for (const [t, ps] of Object.entries(SERVER_PROCS)) if (ps.includes(name)) warmed.delete(t);
  const cfg = join(RESULTS, `sluice-bench-${name}.json`);
  writeFileSync(cfg, JSON.stringify({ host: "127.0.0.1", port: ports[name], log_level: "warn" }));
  spawnPinned(
    name,
    cores,
    node,
    [...prof(name), SLUICE_CLI, "serve", "--workers", String(n), "--config", cfg],
    {
      cwd: ROOT,
      logDir: LOGS,
    },
  );
  await waitPort(ports[name], 30_000);
}

async function stopWorkers(name) {
  const p = procs.get(name);
  if (!p || p.exited) return;
  await new Promise((resolve) => {
    p.child.once("exit", resolve);
    p.child.kill("SIGTERM");
  });
}

async function workers() {
  const load = await noteLoad("workers (--workers 1 vs 2)");
  const plan = [
    ["sluiceW1", String(SERVER_CORE), 1, ["sluice-w1"]],
    ["sluiceW2", `${SERVER_CORE},${CLIENT_CORE}`, 2, ["sluice-w2", "sluice-w2-x"]],
  ];
  for (const [name, cores, n, list] of plan) {
    const ts = targetsOf(list);
    if (ts.length === 0) continue;
    try {
      await startWorkers(name, cores, n);
    } catch (e) {
      for (const t of ts) dead[t] = `did not start: ${e.message}`;
    }
    for (const t of ts) {
      if (!targetAlive(t)) {
        results.workers.push({ target: t, tps: 30, na: dead[t] });
        continue;
      }
      await settleAll(`capacity ${t}`);
      results.workers.push({ ...(await capacityOf(t, 30)), load, workers: n });
    }
    await stopWorkers(name);
  }
  const single = results.capacity.find((r) => r.target === "sluice-demo" && !(r.na && !r.probes));
  const w1 = results.workers.find((r) => r.target === "sluice-w1" && !(r.na && !r.probes));
  const rows = [];
  const row = (label, c, extra = "") => [
    label,
    !c || (c.na && !c.probes) ? `n/a${c?.na ? `: ${c.na}` : ""}` : `${c.capacity} (${c.bounded})`,
    c?.capacity ? fmt(c.capacity * 30, 0) : "—",
    fmt(c?.at?.p99),
    fmt(c?.cpuPerEventUs),
    w1?.capacity && c?.capacity ? `${fmt(c.capacity / w1.capacity, 2)}×` : "—",
    c?.probes?.map((p) => `${p.n}:${p.pass ? "ok" : "x"}(${fmt(p.p99, 0)})`).join(" ") ?? extra,
  ];
  if (single) rows.push(row(`${TARGETS["sluice-demo"].label} (no --workers, memory store)`, single));
  for (const t of ["sluice-w1", "sluice-w2", "sluice-w2-x"]) {
    const c = results.workers.find((r) => r.target === t);
    if (c) rows.push(row(TARGETS[t].label, c));
  }
  table(
    "8. --workers 1 vs 2 (30 tok/s, SSE, demo model; 1 worker on core 0, 2 workers on cores 0-1, which the load generator shares)",
    [
      "target",
      "capacity",
      "events/s at cap",
      "p99 at cap",
      "µs/event (all server procs)",
      "vs --workers 1",
      "probes",
    ],
    rows,
  );
}

// ── scenario 9: 10,000 readers on 1 vs N workers (issue 13 part 5) ───────────────────────────
/**
 * (b) Idle: n readers, each on its own generation that is not producing yet (the demo's first
 * token is 120 s away), held open: RSS per connection summed over the primary and its workers
 * (after − before, ÷ connections open), and the server's CPU over Q.idleCpuMs while they sit idle.
 */
async function scaleIdle(t, n, load) {
  const ramp = Q.idleRamp;
  const demo = demoOpts({ seed: 1, ttft_ms: 120_000, tokens_per_s: 30, length: 10 });
  const run = ++runSeq;
  const specs = Array.from({ length: n }, (_, i) => ({
    ...liveSpec(t, ports, `i${run}-${i}`, demo, i),
    at: Math.random() * ramp,
    localAddress: srcAddr(i),
  }));
  await sleep(Q.memPreMs);
  const before = serverRss(t);
  let after;
  let idleCpuMs;
  let idleMs;
  let headed = 0;
  let allAnswered = false;
  // Measured once: when every reader is answered (or failed), or at the bound with those that are
  // (the rest still connecting: the table shows how many were open).
  let measuring;
  const measure = () => {
    measuring ??= (async () => {
      await sleep(Q.memSettleMs);
      after = serverRss(t);
      const c0 = serverCpu(t);
      const t0 = Date.now();
      await sleep(Q.idleCpuMs);
      idleCpuMs = serverCpu(t) - c0;
      idleMs = Date.now() - t0;
      lg.child.send({ type: "release" });
    })();
    return measuring;
  };
  const timeout = setTimeout(measure, ramp + Q.holdMaxMs);
  const r = await job(
    { type: "live", transport: "sse", hold: true, specs, windowStart: 0, windowEnd: 1, endAt: 0 },
    t,
    {
      onHeld: (m) => {
        clearTimeout(timeout);
        headed = m.headed;
        allAnswered = true;
        measure();
      },
    },
  );
  clearTimeout(timeout);
  await measuring;
  after ??= serverRss(t);
  // At the bound: the readers answered by the end of the measurement.
  headed = headed || r.headed;
  const row = {
    target: t,
    kind: "idle",
    n,
    load,
    open: headed,
    failed: r.failed,
    errors: r.errors,
    rssBeforeKb: before,
    rssAfterKb: after,
    kbPerConn: headed ? (after - before) / headed : Number.NaN,
    idleCpuPct: idleMs ? (idleCpuMs / idleMs) * 100 : Number.NaN,
    // false: measured at the bound (ramp + holdMaxMs) while some readers were still unanswered.
    allAnswered,
  };
  log(
    `  scale idle ${t}: ${headed}/${n} open, RSS ${before} → ${after} kB = ${fmt(row.kbPerConn, 2)} KB/connection, idle CPU ${fmt(row.idleCpuPct)}% of a core`,
  );
  await quiesce(t);
  return row;
}

/**
 * `sluice serve --workers 1` (core 0) and `--workers 2` (cores 0-1; core 1 is also the load
 * generator's and mock-upstream's), each started fresh as scenario `workers` starts them:
 * first (b) Q.scaleN idle readers each on its own generation (clean heap), then, started fresh
 * again, (a) one generation fanned out to Q.scaleN readers (as scenario `fanout`; readers land
 * on any worker).
 */
async function scale() {
  const load = await noteLoad("scale (--workers 1 vs 2: fan-out and idle readers)");
  const n = Number(arg("scale-n") ?? Q.scaleN);
  const plan = [
    ["sluiceW1", String(SERVER_CORE), 1, "sluice-w1"],
    ["sluiceW2", `${SERVER_CORE},${CLIENT_CORE}`, 2, "sluice-w2"],
  ];
  for (const [name, cores, k, t] of plan) {
    if (!want(t)) continue;
    try {
      await startWorkers(name, cores, k);
    } catch (e) {
      dead[t] = `did not start: ${e.message}`;
    }
    const meta = { workers: k, cores };
    if (!targetAlive(t)) {
      results.scale.push({ target: t, kind: "idle", n, ...meta, na: dead[t] });
      results.scale.push({ target: t, kind: "fanout", n, ...meta, na: dead[t] });
      continue;
    }
    await settleAll(`scale ${t}`);
    results.scale.push({ ...(await scaleIdle(t, n, load)), ...meta });
    // The fan-out on fresh processes too: the idle readers' generations (each waiting for its
    // first token) stay in the server after their readers leave, and would be measured with it.
    await stopWorkers(name);
    try {
      await startWorkers(name, cores, k);
    } catch (e) {
      dead[t] = `did not start: ${e.message}`;
    }
    if (!targetAlive(t)) {
      results.scale.push({ target: t, kind: "fanout", n, ...meta, na: dead[t] });
      continue;
    }
    await settleAll(`scale ${t}`);
    await warm(t);
    results.scale.push({ ...(await fanoutRun(t, n, load)), kind: "fanout", ...meta });
    await stopWorkers(name);
  }
  const get = (t, kind) => results.scale.find((r) => r.target === t && r.kind === kind);
  const rows = [];
  for (const t of ["sluice-w1", "sluice-w2"]) {
    const f = get(t, "fanout");
    const i = get(t, "idle");
    if (!f && !i) continue;
    rows.push([
      TARGETS[t].label,
      f?.na ? `n/a: ${f.na}` : f ? `${fmt(f.delivered * 100, 1)}% (failed ${f.failed})` : "—",
      f && !f.na ? `${fmt(f.p50)} / ${fmt(f.p99)}` : "—",
      f && !f.na ? fmt(f.cpuPerEventUs) : "—",
      f && !f.na ? `${fmt(f.serverCpuPct, 0)}%` : "—",
      i?.na
        ? `n/a: ${i.na}`
        : i
          ? `${i.open}/${i.n} (failed ${i.failed})${i.allAnswered ? "" : ", measured at the bound"}`
          : "—",
      i && !i.na ? fmt(i.kbPerConn, 2) : "—",
      i && !i.na ? `${fmt(i.idleCpuPct)}%` : "—",
    ]);
  }
  const [f1, f2, i1, i2] = [
    get("sluice-w1", "fanout"),
    get("sluice-w2", "fanout"),
    get("sluice-w1", "idle"),
    get("sluice-w2", "idle"),
  ];
  const x = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b ? `${fmt(a / b, 2)}×` : "—");
  if (f1 || i1)
    rows.push([
      "--workers 2 ÷ --workers 1",
      "",
      `p99 ${x(f2?.p99, f1?.p99)}`,
      x(f2?.cpuPerEventUs, f1?.cpuPerEventUs),
      "",
      "",
      x(i2?.kbPerConn, i1?.kbPerConn),
      x(i2?.idleCpuPct, i1?.idleCpuPct),
    ]);
  table(
    `9. Scale on one machine, SSE, demo: ${n.toLocaleString("en")} readers of one generation (30 tok/s), and ${n.toLocaleString("en")} idle readers each on its own not-yet-producing generation — --workers 1 on core 0, --workers 2 on cores 0-1 (core 1 shared with the load generator); CPU and RSS summed over the primary and its workers`,
    [
      "target",
      "fan-out: delivered",
      "p50 / p99 ms",
      "µs/event",
      "server CPU",
      "idle: open",
      "KB / connection",
      "idle CPU (of a core)",
    ],
    rows,
  );
}

// ── main ──────────────────────────────────────────────────────────────────────
let exitCode = 0;
const onSignal = async () => {
  await stopAll();
  process.exit(130);
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
try {
  results.meta = {
    started: new Date(T_START).toISOString(),
    mode: QUICK ? "quick" : "full",
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGb: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    loadavg: os.loadavg(),
    pinning: { servers: `core ${SERVER_CORE}`, loadgen_and_mock_upstream: `core ${CLIENT_CORE}`, nice: NICE },
    versions: {
      "resumable-stream": version(join(BENCH, "node_modules/resumable-stream")),
      redis: version(join(BENCH, "node_modules/redis")),
      "redis-server": (spawnSync("redis-server", ["--version"])
        .stdout?.toString()
        .match(/v=(\S+)/) ?? [])[1],
      "@durable-streams/server": version(join(BENCH, "node_modules/@durable-streams/server")),
      "@portkey-ai/gateway": version(join(BENCH, "node_modules/@portkey-ai/gateway")),
      "@hono/node-server": version(join(BENCH, "node_modules/@hono/node-server")),
      sluice: version(ROOT),
    },
    sizes: Q,
    targets: TARGETS,
  };
  log(
    `sluice bench (${results.meta.mode}) — node ${process.version}, ${results.meta.cpus} cores, load ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}`,
  );
  startServers();
  await waitServers();
  for (const [t, why] of Object.entries(dead)) log(`  ${t}: ${why}`);
  const run = {
    overhead,
    capacity: () =>
      capacity(
        30,
        ["relay", "sluice-up", "sluice-demo", "sluice-ws", "resumable", "resumable-r", "durable", "portkey"],
        "capacity",
      ),
    capacity100: () => capacity(100, Q.cap100Targets, "capacity100"),
    fanout,
    memory,
    resume,
    cancel,
    compact,
    cluster,
    workers,
    scale,
  };
  for (const s of SCENARIOS) {
    if (!run[s]) throw new Error(`unknown scenario ${s}`);
    const t0 = Date.now();
    await run[s]();
    results.meta[`seconds_${s}`] = Math.round((Date.now() - t0) / 1000);
    log(`  (${s}: ${results.meta[`seconds_${s}`]} s)`);
  }
  targetsSummary();
} catch (e) {
  exitCode = 1;
  console.error(`bench: stopped: ${e.stack ?? e}`);
  results.notes.push(`stopped: ${e.message}`);
} finally {
  results.meta.dead = dead;
  results.meta.seconds = Math.round((Date.now() - T_START) / 1000);
  lg.child.send?.({ type: "exit" });
  await stopAll();
  const stamp = new Date(T_START).toISOString().replace(/[:.]/g, "-");
  const base = join(RESULTS, `bench-${results.meta.mode}-${stamp}`);
  writeFileSync(`${base}.json`, JSON.stringify(results, null, 2));
  writeFileSync(`${base}.html`, renderHtml(results));
  writeFileSync(join(RESULTS, "latest.json"), JSON.stringify(results, null, 2));
  writeFileSync(join(RESULTS, "latest.html"), renderHtml(results));
  log(`\nwrote ${base}.json and .html (also bench/results/latest.*) in ${results.meta.seconds} s`);
  if (KEEP) {
    const kept = join(RESULTS, "kept");
    mkdirSync(kept, { recursive: true });
    const file = join(kept, `bench-${results.meta.mode}-${stamp}.json`);
    writeFileSync(file, JSON.stringify(results, null, 2));
    log(`kept ${file} (commit it with the docs that quote this run)`);
  }
  process.exit(exitCode);
}
