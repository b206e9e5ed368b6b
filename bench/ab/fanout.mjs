#!/usr/bin/env node
// A/B of Sluice builds on fan-out: one demo generation read by N readers over WebSocket or SSE,
// through the bench's own load generator (bench/lib/loadgen.mjs and its lean raw-socket readers,
// pinned to core 1; the server to core 0), shaped like `npm run bench`'s fan-out scenario: readers
// connect over a ramp, the generation starts after it, a window measures delivery. Reports per run
// delivered (tokens received in the window / expected), delay p50/p99/max (receive time − the
// time the token was due), failed readers and their errors, the server's CPU opening the
// connections and per delivered event in the window, and the load generator's CPU. Runs
// alternate build × transport, so each sees the same conditions; medians at the end.
//   node bench/ab/fanout.mjs <rootA> [rootB …] [--n=2000] [--proto=ws|sse|ws,sse] [--rounds=3]
//        [--tps=30] [--ramp=4000] [--window=2000] [--lead=1000]
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { cpuMs, ready, sleep } from "./common.mjs";

const BENCH = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const argv = process.argv.slice(2);
const opt = (k, d) => argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d;
const roots = argv.filter((a) => !a.startsWith("--"));
const N = Number(opt("n", 2000));
const PROTOS = opt("proto", "ws").split(",");
const ROUNDS = Number(opt("rounds", 3));
const TPS = Number(opt("tps", 30));
const RAMP = Number(opt("ramp", 4000));
const WINDOW = Number(opt("window", 2000));
const LEAD = Number(opt("lead", 1000));
const PORT = Number(opt("port", 19101));
/** --prof=DIR: the server runs under `node --cpu-prof` (one .cpuprofile per run in DIR; summarize
 * with bench/profile-summary.mjs) and is stopped with SIGTERM so the profile is written. */
const PROF = opt("prof", undefined);
/** --lgprof=DIR: the load generator runs under `node --cpu-prof` too (one profile for the whole A/B). */
const LGPROF = opt("lgprof", undefined);
/** --lgroot=ROOT: the load generator (and its readers) of another checkout, to A/B the readers. */
const LGROOT = opt("lgroot", undefined);
const dir = mkdtempSync(join(tmpdir(), "sluice-fanout-"));

const pinned = (core, args, stdio) =>
  spawn("sh", ["-c", `ulimit -n $(ulimit -Hn) 2>/dev/null; exec taskset -c ${core} "$@"`, "sh", ...args], {
    stdio,
  });

const lg = pinned(
  1,
  [
    process.execPath,
    ...(LGPROF ? ["--cpu-prof", `--cpu-prof-dir=${resolve(LGPROF)}`] : []),
    LGROOT ? resolve(LGROOT, "bench/lib/loadgen.mjs") : join(BENCH, "lib/loadgen.mjs"),
  ],
  ["ignore", "inherit", "inherit", "ipc"],
);
await new Promise((r) => lg.once("message", r));
let jobSeq = 0;

function job(msg, pid) {
  const id = ++jobSeq;
  const out = {};
  return new Promise((resolve) => {
    const timers = [];
    const onMsg = (m) => {
      if (m.id !== id) return;
      if (m.type === "started") {
        timers.push(
          setTimeout(() => {
            out.cpuOpenEnd = cpuMs(pid);
          }, msg.windowStart),
          setTimeout(() => {
            out.cpuWindow = cpuMs(pid) - out.cpuOpenEnd;
          }, msg.windowEnd),
        );
      } else if (m.type === "result") {
        for (const t of timers) clearTimeout(t);
        lg.off("message", onMsg);
        resolve({ ...m, ...out });
      }
    };
    lg.on("message", onMsg);
    lg.send({ ...msg, id });
  });
}

async function once(root, proto, run) {
  const cfg = join(dir, "sluice.json");
  writeFileSync(cfg, JSON.stringify({ host: "127.0.0.1", port: PORT, log_level: "warn" }));
  const log = join(dir, `server-${run}.log`);
  const srv = pinned(
    0,
    [
      process.execPath,
      ...(PROF
        ? ["--cpu-prof", `--cpu-prof-dir=${resolve(PROF)}`, `--cpu-prof-name=${proto}-${run}.cpuprofile`]
        : []),
      resolve(root, "packages/server/dist/cli/main.js"),
      "serve",
      "--config",
      cfg,
    ],
    ["ignore", "ignore", "pipe"],
  );
  let stderr = "";
  srv.stderr.on("data", (d) => {
    if (stderr.length < 20_000) stderr += d;
  });
  const url = `http://127.0.0.1:${PORT}`;
  await ready(url);
  // node's own pid (sh execs taskset, which execs node: same pid)
  const pid = srv.pid;
  const ttft = RAMP + LEAD;
  const windowStart = ttft + 300;
  const windowEnd = windowStart + WINDOW;
  const demo = {
    seed: 1,
    ttft_ms: ttft,
    tokens_per_s: TPS,
    length: Math.ceil((TPS * (WINDOW + 1500)) / 1000),
    jitter: 0,
    stamp: true,
  };
  const res = await fetch(`${url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "go" }], demo }),
  });
  const { id } = await res.json();
  const c0 = cpuMs(pid);
  const specs = [];
  for (let i = 0; i < N; i++) {
    const at = Math.random() * RAMP;
    specs.push(
      proto === "ws"
        ? { port: PORT, path: "/v1/ws", subscribe: { stream: id, offset: "-1" }, at }
        : {
            port: PORT,
            method: "GET",
            path: `/v1/streams/${id}?offset=-1`,
            headers: { accept: "text/event-stream" },
            at,
          },
    );
  }
  const r = await job(
    { type: "live", transport: proto, specs, windowStart, windowEnd, endAt: windowEnd + 500 },
    pid,
  );
  srv.kill(PROF ? "SIGTERM" : "SIGKILL");
  await new Promise((r) => srv.once("exit", r));
  writeFileSync(log, stderr);
  const expected = (N * TPS * WINDOW) / 1000;
  return {
    root,
    proto,
    delivered: r.tokensInWindow / expected,
    p50: r.delay.p50,
    p99: r.delay.p99,
    max: r.delay.max,
    failed: r.failed,
    errors: r.errors,
    openMs: r.cpuOpenEnd - c0,
    usPerEvent: r.tokensInWindow ? (r.cpuWindow * 1000) / r.tokensInWindow : Number.NaN,
    serverPct: (r.cpuWindow / WINDOW) * 100,
    lgPct: (r.loadgenCpuWindowMs / WINDOW) * 100,
    lgUsPerEvent: r.tokensInWindow ? (r.loadgenCpuWindowMs * 1000) / r.tokensInWindow : Number.NaN,
    lag: r.timerLagMs,
    logLines: stderr.split("\n").filter(Boolean).length,
    log,
  };
}

const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "—");
const all = [];
let run = 0;
for (let r = 0; r < ROUNDS; r++)
  for (const root of roots)
    for (const proto of PROTOS) {
      const x = await once(root, proto, ++run);
      all.push(x);
      console.log(
        `${proto} n=${N} ${root}: delivered ${f(x.delivered * 100)}%, p50 ${f(x.p50)} p99 ${f(x.p99)} max ${f(x.max)} ms, failed ${x.failed}${x.failed ? ` ${JSON.stringify(x.errors)}` : ""}; server CPU opening ${x.openMs} ms, window ${f(x.serverPct, 0)}% = ${f(x.usPerEvent, 2)} µs/event; loadgen ${f(x.lgPct, 0)}% = ${f(x.lgUsPerEvent, 2)} µs/event (lag ${f(x.lag, 0)} ms); server log ${x.logLines} lines${x.logLines ? ` (${x.log})` : ""}`,
      );
      await sleep(500);
    }
const median = (a) => {
  const s = a.filter(Number.isFinite).sort((x, y) => x - y);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : Number.NaN;
};
console.log(`\nmedians over ${ROUNDS} rounds (n=${N}, ${TPS} tok/s):`);
for (const root of roots)
  for (const proto of PROTOS) {
    const xs = all.filter((x) => x.root === root && x.proto === proto);
    console.log(
      `  ${proto} ${root}: delivered ${f(median(xs.map((x) => x.delivered * 100)))}%, p50 ${f(median(xs.map((x) => x.p50)))} p99 ${f(median(xs.map((x) => x.p99)))} ms, failed ${median(xs.map((x) => x.failed))}, opening ${median(xs.map((x) => x.openMs))} ms CPU, ${f(median(xs.map((x) => x.usPerEvent)), 2)} µs/event, loadgen ${f(median(xs.map((x) => x.lgPct)), 0)}% = ${f(median(xs.map((x) => x.lgUsPerEvent)), 2)} µs/event`,
    );
  }
lg.send({ type: "exit" });
await new Promise((r) => lg.once("exit", r));
process.exit(0);
