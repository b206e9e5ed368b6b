#!/usr/bin/env node
// Instructions, not time: the fan-out of fanout.mjs with the server under
// `valgrind --tool=callgrind` (user-space instructions of every thread; immune to other load on
// the machine, blind to the kernel's share). N readers (the bench's lean readers, core 1) connect
// to one demo generation over a ramp; counters are zeroed when the job starts, dumped before the
// first token (→ instructions per connection opened: accept, upgrade or route, subscribe, attach)
// and again once every reader has its end (→ instructions per event delivered).
// `--shape=own`: the capacity scenario's shape instead — every reader starts its own generation
// (WebSocket `start`; SSE `POST /v1/streams`, on_disconnect cancel), first tokens after the ramp.
//   node bench/ab/fanout-instr.mjs <rootA> [rootB …] [--n=500] [--proto=ws,sse] [--rounds=1]
//        [--tps=10] [--length=150] [--ramp=15000] [--shape=fanout|own]
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { sleep } from "./common.mjs";

const BENCH = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const argv = process.argv.slice(2);
const opt = (k, d) => argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d;
const roots = argv.filter((a) => !a.startsWith("--"));
const N = Number(opt("n", 500));
const PROTOS = opt("proto", "ws,sse").split(",");
const ROUNDS = Number(opt("rounds", 1));
const TPS = Number(opt("tps", 10));
const LENGTH = Number(opt("length", 150));
const RAMP = Number(opt("ramp", 15000));
const PORT = Number(opt("port", 19121));
const SHAPE = opt("shape", "fanout");
const MESSAGES = [{ role: "user", content: "go" }];
const dir = mkdtempSync(join(tmpdir(), "sluice-fanout-instr-"));

const pinned = (core, args, stdio) =>
  spawn("sh", ["-c", `ulimit -n $(ulimit -Hn) 2>/dev/null; exec taskset -c ${core} "$@"`, "sh", ...args], {
    stdio,
  });
const lg = pinned(
  1,
  [process.execPath, join(BENCH, "lib/loadgen.mjs")],
  ["ignore", "inherit", "inherit", "ipc"],
);
await new Promise((r) => lg.once("message", r));
let jobSeq = 0;

/**
 * Dumps (and zeroes) the counters of valgrind process `pid`; returns the dump's Ir on the main
 * thread (the event loop: what the transports cost) and on all threads (+ V8's compiler and GC
 * helpers, libuv's pool).
 */
function dump(pid, out) {
  const before = new Set(readdirSync(dir));
  execFileSync("callgrind_control", ["-d", String(pid)], { stdio: "ignore" });
  const files = readdirSync(dir).filter((f) => f.startsWith(`${out}.`) && !before.has(f));
  if (files.length === 0) throw new Error("no callgrind dump written");
  let main = 0;
  let all = 0;
  for (const f of files) {
    const m = /^totals:\s+(\d+)/m.exec(readFileSync(join(dir, f), "utf8"));
    const ir = Number(m?.[1] ?? 0);
    all += ir;
    if (f.endsWith("-01")) main += ir;
  }
  return { main, all };
}

async function once(root, proto, run) {
  const cfg = join(dir, "sluice.json");
  writeFileSync(cfg, JSON.stringify({ host: "127.0.0.1", port: PORT, log_level: "warn" }));
  const out = `cg-${run}`;
  const srv = pinned(
    0,
    [
      "valgrind",
      "-q",
      "--tool=callgrind",
      "--separate-threads=yes",
      `--callgrind-out-file=${join(dir, `${out}.%p`)}`,
      process.execPath,
      resolve(root, "packages/server/dist/cli/main.js"),
      "serve",
      "--config",
      cfg,
    ],
    ["ignore", "ignore", "ignore"],
  );
  const url = `http://127.0.0.1:${PORT}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {}
    if (i > 600) throw new Error("server did not start");
    await sleep(500);
  }
  const pid = srv.pid; // sh execs taskset execs valgrind
  const ttft = RAMP + 3000;
  const demo = { seed: 1, ttft_ms: ttft, tokens_per_s: TPS, length: LENGTH, jitter: 0, stamp: true };
  let id;
  if (SHAPE === "fanout") {
    const res = await fetch(`${url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "demo", messages: MESSAGES, demo }),
    });
    id = (await res.json()).id;
  }
  execFileSync("callgrind_control", ["-z", String(pid)], { stdio: "ignore" });
  const specs = [];
  for (let i = 0; i < N; i++) {
    const at = (i / N) * RAMP;
    if (SHAPE === "own") {
      // Its first token after the ramp whatever its start (phases spread over one token gap).
      const own = { ...demo, seed: i + 1, ttft_ms: Math.round(ttft - at + (i % 10) * (100 / TPS)) };
      specs.push(
        proto === "ws"
          ? { port: PORT, path: "/v1/ws", start: { model: "demo", messages: MESSAGES, demo: own }, at }
          : {
              port: PORT,
              method: "POST",
              path: "/v1/streams",
              headers: { "content-type": "application/json", accept: "text/event-stream" },
              body: JSON.stringify({ model: "demo", messages: MESSAGES, demo: own, on_disconnect: "cancel" }),
              at,
            },
      );
    } else {
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
  }
  const jid = ++jobSeq;
  let openIr;
  const done = new Promise((resolveJob) => {
    const onMsg = (m) => {
      if (m.id !== jid) return;
      if (m.type === "started") {
        setTimeout(() => {
          openIr = dump(pid, out);
        }, ttft - 1500);
      } else if (m.type === "result") {
        lg.off("message", onMsg);
        resolveJob(m);
      }
    };
    lg.on("message", onMsg);
  });
  lg.send({
    type: "live",
    transport: proto,
    specs,
    windowStart: 0,
    windowEnd: 1,
    endAt: ttft + 600_000,
    id: jid,
  });
  const r = await done;
  const deliverIr = dump(pid, out);
  srv.kill("SIGKILL");
  await new Promise((x) => srv.once("exit", x));
  return { root, proto, openIr, deliverIr, events: r.eventsTotal, ended: r.ended, failed: r.failed, n: N };
}

const all = [];
let run = 0;
for (let k = 0; k < ROUNDS; k++)
  for (const root of roots)
    for (const proto of PROTOS) {
      const x = await once(root, proto, ++run);
      all.push(x);
      console.log(
        `${proto} ${SHAPE} n=${N} ${root}: ${x.ended} ended, ${x.failed} failed, ${x.events} events; opening ${(x.openIr.main / N / 1e3).toFixed(0)} k instr/connection on the main thread (${(x.openIr.all / N / 1e3).toFixed(0)} k all threads); delivering ${(x.deliverIr.main / x.events / 1e3).toFixed(2)} k instr/event on the main thread (${(x.deliverIr.all / x.events / 1e3).toFixed(2)} k all threads)`,
      );
    }
lg.send({ type: "exit" });
process.exit(0);
