#!/usr/bin/env node
// A/B of two Sluice builds on the upstream path: N generations at TPS tokens/s through an
// openai-compatible route to `sluice mock-upstream` (mock and this load generator pinned to
// core 1, Sluice to core 0), each read live over SSE (POST /v1/streams, Accept: text/event-stream).
// Reports per build: server CPU per delivered event over a SECS window, events delivered,
// delivery delay (receive − the token's due time) p50/p99/max, and the client's TTFT p50/p99
// (ramp: the N streams on a just-started server; probes: a short generation every 250 ms inside
// the window, on a warm server under the load), and for the window the server's
// sluice_ttft_phase_seconds (when the build has it), GC, event-loop delay, and the load
// generator's own loop delay. Builds alternate.
// --callgrind: Sluice runs under valgrind's callgrind, instructions counted only in the window
// (callgrind_control -i on/off): Ir per delivered event, immune to the machine's load (use a
// small N: the server runs ~50x slower).
//   taskset -c 1 node bench/ab/upstream.mjs <rootA> <rootB> [--n=300] [--tps=30] [--secs=20] [--rounds=2] [--callgrind]
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { openHttp } from "../lib/http-stream.mjs";
import { startMockUpstream } from "../lib/mock-upstream.mjs";
import { cpuMs, ready, sleep, startSluice, upstreamConfig } from "./common.mjs";

const argv = process.argv.slice(2);
const opt = (k, d) => argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d;
const roots = argv.filter((a) => !a.startsWith("--")).map((r) => resolve(r));
const N = Number(opt("n", 300));
const TPS = Number(opt("tps", 30));
const SECS = Number(opt("secs", 20));
const ROUNDS = Number(opt("rounds", 2));
const PORT = 19111;
const CALLGRIND = argv.includes("--callgrind");
const now = () => performance.timeOrigin + performance.now();

const { port: upPort, proc: up } = await startMockUpstream(roots[0]);
const config = upstreamConfig("upstream", PORT, upPort);

function q(a, p) {
  return a.length ? a[Math.min(a.length - 1, Math.floor(p * a.length))] : Number.NaN;
}

/** The counters this script reads from /metrics: TTFT phases and GC (cumulative), loop lag. */
async function scrape(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const hist = (name, label) => {
    const out = {};
    for (const m of text.matchAll(new RegExp(`^${name}_(sum|count)\\{${label}="([^"]+)"\\} (\\S+)`, "gm"))) {
      out[m[2]] ??= { buckets: {} };
      out[m[2]][m[1]] = Number(m[3]);
    }
    for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{([^}]*)\\} (\\S+)`, "gm"))) {
      const le = m[1].match(/le="([^"]+)"/)?.[1];
      const lv = m[1].match(new RegExp(`${label}="([^"]+)"`))?.[1];
      if (le !== undefined && lv !== undefined && out[lv]) out[lv].buckets[le] = Number(m[2]);
    }
    return out;
  };
  const num = (re) => Number(text.match(re)?.[1] ?? Number.NaN);
  return {
    phases: hist("sluice_ttft_phase_seconds", "phase"),
    gc: hist("nodejs_gc_duration_seconds", "kind"),
    // prom-client resets its loop-delay histogram at each scrape: this is since the last one.
    loop: {
      p99: +(num(/^nodejs_eventloop_lag_p99_seconds (\S+)/m) * 1000).toFixed(1),
      max: +(num(/^nodejs_eventloop_lag_max_seconds (\S+)/m) * 1000).toFixed(1),
    },
  };
}

/** What happened between two scrapes: per phase mean and p99 bucket bound (ms), GC, loop lag. */
function windowOf(a, b) {
  const diff = (x, y) => {
    const res = {};
    for (const [k, v] of Object.entries(y)) {
      const u = x?.[k] ?? { sum: 0, count: 0, buckets: {} };
      const count = v.count - (u.count ?? 0);
      const sum = v.sum - (u.sum ?? 0);
      const buckets = Object.entries(v.buckets)
        .map(([le, c]) => [le === "+Inf" ? Number.POSITIVE_INFINITY : Number(le), c - (u.buckets[le] ?? 0)])
        .sort((p, q) => p[0] - q[0]);
      res[k] = { sum, count, buckets };
    }
    return res;
  };
  const out = { loop_lag_ms: b.loop, phases_ms: {}, gc: {} };
  for (const [k, v] of Object.entries(diff(a.phases, b.phases))) {
    if (!v.count) continue;
    const p99 = v.buckets.find(([, c]) => c >= 0.99 * v.count)?.[0];
    out.phases_ms[k] = { n: v.count, mean: +((v.sum / v.count) * 1000).toFixed(3), p99_le: p99 * 1000 };
  }
  for (const [k, v] of Object.entries(diff(a.gc, b.gc))) {
    const under = v.buckets.find(([le]) => le === 0.1)?.[1] ?? v.count;
    out.gc[k] = { n: v.count, total_ms: Math.round(v.sum * 1000), over_100ms: v.count - under };
  }
  return out;
}

async function once(root) {
  const cgOut = join(tmpdir(), `sluice-ab-cg-${process.pid}.out`);
  const srv = CALLGRIND
    ? spawn(
        "taskset",
        [
          "-c",
          "0",
          "valgrind",
          "--tool=callgrind",
          "--collect-atstart=no",
          "--smc-check=all-non-file",
          `--callgrind-out-file=${cgOut}`,
          process.execPath,
          resolve(root, "packages/server/dist/cli/main.js"),
          "serve",
          "--port",
          String(PORT),
          "--config",
          config,
        ],
        { stdio: ["ignore", "ignore", "ignore"] },
      )
    : startSluice(root, PORT, ["--config", config]);
  const url = `http://127.0.0.1:${PORT}`;
  await ready(url);
  if (CALLGRIND) await fetch(`${url}/metrics`); // warm a little
  const ramp = 2000;
  const t0 = now();
  const wStart = t0 + ramp + 1000;
  const wEnd = wStart + SECS * 1000;
  let events = 0;
  let failed = 0;
  const delays = [];
  const ttfts = [];
  const conns = [];
  let c0;
  let c1;
  const loop = monitorEventLoopDelay({ resolution: 10 });
  const cg = (on) => {
    if (CALLGRIND)
      execFileSync("callgrind_control", ["-i", on ? "on" : "off", String(srv.pid)], { stdio: "ignore" });
  };
  setTimeout(() => {
    loop.enable();
    c0 = cpuMs(srv.pid);
    cg(true);
  }, wStart - now());
  const ended = new Promise((res) => setTimeout(res, wEnd - now()));
  ended.then(() => {
    loop.disable();
    c1 = cpuMs(srv.pid);
    cg(false);
  });
  /** One generation read live; `probe`: a short one started inside the window (warm TTFT). */
  const open = (seed, length, probe) => {
    const sent = now();
    let first = true;
    let buf = "";
    const body = JSON.stringify({
      model: "up",
      messages: [{ role: "user", content: "Explain how a durable stream log works" }],
      demo: { seed, ttft_ms: 0, tokens_per_s: TPS, length, jitter: 0, stamp: true },
      on_disconnect: "cancel",
    });
    const conn = openHttp(
      {
        port: PORT,
        method: "POST",
        path: "/v1/streams",
        headers: { "content-type": "application/json", accept: "text/event-stream" },
        body,
      },
      {
        onBody(text, t) {
          buf += text;
          let start = 0;
          for (;;) {
            const end = buf.indexOf("\n\n", start);
            if (end < 0) break;
            const ev = buf.slice(start, end);
            start = end + 2;
            if (!ev.includes("text-delta")) continue;
            if (first) {
              first = false;
              (probe ? probeTtfts : ttfts).push(t - sent);
            }
            if (!probe && t >= wStart && t < wEnd) {
              events++;
              const d = ev.indexOf('"due":');
              if (d >= 0) delays.push(t - Number.parseInt(ev.slice(d + 6), 10));
            }
          }
          if (start) buf = buf.slice(start);
        },
        onError() {
          if (!probe) failed++;
        },
      },
    );
    conns.push(conn);
  };
  for (let i = 0; i < N; i++)
    setTimeout(() => open(i + 1, Math.ceil(TPS * (SECS + 6)), false), (i / N) * ramp);
  // Probes: a 3-token generation every 250 ms inside the window, on a warm server at load N.
  const probeTtfts = [];
  const probes = setInterval(() => {
    if (now() >= wStart && now() < wEnd - 500) open(100000 + probeTtfts.length, 3, true);
  }, 250);
  let base;
  setTimeout(() => {
    scrape(url).then((x) => (base = x));
  }, wStart - now());
  await ended;
  clearInterval(probes);
  await sleep(50);
  const ph = base ? windowOf(base, await scrape(url)) : undefined;
  for (const c of conns) c.close();
  let ir;
  if (CALLGRIND) {
    // valgrind runs node as its own pid: SIGTERM lets it write the profile.
    srv.kill("SIGTERM");
    await new Promise((r) => srv.once("exit", r));
    const m = readFileSync(cgOut, "utf8").match(/^(?:summary|totals): (\d+)/m);
    ir = m ? Number(m[1]) : undefined;
    rmSync(cgOut, { force: true });
  } else {
    srv.kill();
    await new Promise((r) => srv.once("exit", r));
  }
  delays.sort((a, b) => a - b);
  ttfts.sort((a, b) => a - b);
  probeTtfts.sort((a, b) => a - b);
  return {
    root,
    events,
    delivered: +(events / (N * TPS * SECS)).toFixed(3),
    cpu_ms: c1 - c0,
    us_per_event: +(((c1 - c0) * 1000) / events).toFixed(2),
    delay_ms: {
      p50: +q(delays, 0.5).toFixed(1),
      p99: +q(delays, 0.99).toFixed(1),
      max: +(delays.at(-1) ?? 0).toFixed(1),
    },
    ttft_ms_ramp: { p50: +q(ttfts, 0.5).toFixed(2), p99: +q(ttfts, 0.99).toFixed(2) },
    ttft_ms_probes: {
      n: probeTtfts.length,
      p50: +q(probeTtfts, 0.5).toFixed(2),
      p99: +q(probeTtfts, 0.99).toFixed(2),
    },
    failed,
    client_loop_delay_ms: { p99: +(loop.percentile(99) / 1e6).toFixed(1), max: +(loop.max / 1e6).toFixed(1) },
    ...(ir !== undefined ? { ir_per_event: Math.round(ir / events) } : {}),
    ...(ph ? { server_window: ph } : {}),
  };
}

try {
  for (let r = 0; r < ROUNDS; r++) {
    for (const root of r % 2 === 0 ? roots : [...roots].reverse()) {
      console.log(JSON.stringify({ round: r + 1, n: N, tps: TPS, secs: SECS, ...(await once(root)) }));
      await sleep(1000);
    }
  }
} finally {
  up.kill();
}
