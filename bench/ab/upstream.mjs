#!/usr/bin/env node
// A/B of two Sluice builds on the upstream path: N generations at TPS tokens/s through an
// openai-compatible route to `sluice mock-upstream` (mock and this load generator pinned to
// core 1, Sluice to core 0), each read live over SSE (POST /v1/streams, Accept: text/event-stream).
// Reports per build: server CPU per delivered event over a SECS window, events delivered,
// delivery delay (receive − the token's due time) p50/p99/max, and the client's TTFT p50/p99
// plus the server's sluice_ttft_phase_seconds when the build has it. Builds alternate.
// --callgrind: Sluice runs under valgrind's callgrind, instructions counted only in the window
// (callgrind_control -i on/off): Ir per delivered event, immune to the machine's load (use a
// small N: the server runs ~50x slower).
//   taskset -c 1 node bench/ab/upstream.mjs <rootA> <rootB> [--n=300] [--tps=30] [--secs=20] [--rounds=2] [--callgrind]
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { openHttp } from "../lib/http-stream.mjs";
import { startMockUpstream } from "../lib/mock-upstream.mjs";
import { cpuMs, ready, sleep, startSluice } from "./common.mjs";

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
const config = join(tmpdir(), `sluice-ab-upstream-${process.pid}.json`);
writeFileSync(
  config,
  JSON.stringify({
    host: "127.0.0.1",
    port: PORT,
    log_level: "warn",
    routes: {
      up: { provider: "openai-compatible", base_url: `http://127.0.0.1:${upPort}/v1`, model: "demo" },
    },
  }),
);

function q(a, p) {
  return a.length ? a[Math.min(a.length - 1, Math.floor(p * a.length))] : Number.NaN;
}

/** Each phase of sluice_ttft_phase_seconds: mean and p99 (the bucket bound it falls under), ms. */
async function phases(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = {};
  for (const m of text.matchAll(/^sluice_ttft_phase_seconds_(sum|count)\{phase="([^"]+)"\} (\S+)/gm)) {
    out[m[2]] ??= { buckets: [] };
    out[m[2]][m[1]] = Number(m[3]);
  }
  for (const m of text.matchAll(/^sluice_ttft_phase_seconds_bucket\{le="([^"]+)",phase="([^"]+)"\} (\S+)/gm))
    out[m[2]]?.buckets.push([Number(m[1]), Number(m[3])]);
  for (const m of text.matchAll(/^sluice_ttft_phase_seconds_bucket\{phase="([^"]+)",le="([^"]+)"\} (\S+)/gm))
    out[m[1]]?.buckets.push([Number(m[2]), Number(m[3])]);
  const res = {};
  const num = (re) => Number(text.match(re)?.[1] ?? Number.NaN);
  res.server_loop_lag = {
    p99: +(num(/^nodejs_eventloop_lag_p99_seconds (\S+)/m) * 1000).toFixed(1),
    max: +(num(/^nodejs_eventloop_lag_max_seconds (\S+)/m) * 1000).toFixed(1),
  };
  const gc = {};
  for (const m of text.matchAll(/^nodejs_gc_duration_seconds_(sum|count)\{kind="([^"]+)"\} (\S+)/gm)) {
    gc[m[2]] ??= {};
    gc[m[2]][m[1]] = Number(m[3]);
  }
  for (const m of text.matchAll(
    /^nodejs_gc_duration_seconds_bucket\{le="([^"]+)",kind="([^"]+)"\} (\S+)/gm,
  )) {
    if (m[1] === "0.1" && gc[m[2]]) gc[m[2]].over_100ms = (gc[m[2]].count ?? 0) - Number(m[3]);
  }
  for (const [k, v] of Object.entries(gc))
    res[`server_gc_${k}`] = {
      n: v.count,
      total_ms: Math.round((v.sum ?? 0) * 1000),
      over_100ms: v.over_100ms,
    };
  for (const [k, v] of Object.entries(out)) {
    if (!v.count) continue;
    const p99 = v.buckets.sort((x, y) => x[0] - y[0]).find(([, c]) => c >= 0.99 * v.count)?.[0];
    res[k] = { mean: +((v.sum / v.count) * 1000).toFixed(3), p99_le: p99 === undefined ? null : p99 * 1000 };
  }
  return res;
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
  for (let i = 0; i < N; i++) {
    setTimeout(
      () => {
        const sent = now();
        let first = true;
        let buf = "";
        const body = JSON.stringify({
          model: "up",
          messages: [{ role: "user", content: "Explain how a durable stream log works" }],
          demo: {
            seed: i + 1,
            ttft_ms: 0,
            tokens_per_s: TPS,
            length: Math.ceil(TPS * (SECS + 6)),
            jitter: 0,
            stamp: true,
          },
          on_disconnect: "cancel",
        });
        conns.push(
          openHttp(
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
                    ttfts.push(t - sent);
                  }
                  if (t >= wStart && t < wEnd) {
                    events++;
                    const d = ev.indexOf('"due":');
                    if (d >= 0) delays.push(t - Number.parseInt(ev.slice(d + 6), 10));
                  }
                }
                if (start) buf = buf.slice(start);
              },
              onError() {
                failed++;
              },
            },
          ),
        );
      },
      (i / N) * ramp,
    );
  }
  await ended;
  await sleep(50);
  const ph = await phases(url).catch(() => undefined);
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
    ttft_ms: { p50: +q(ttfts, 0.5).toFixed(2), p99: +q(ttfts, 0.99).toFixed(2) },
    failed,
    client_loop_delay_ms: { p99: +(loop.percentile(99) / 1e6).toFixed(1), max: +(loop.max / 1e6).toFixed(1) },
    ...(ir !== undefined ? { ir_per_event: Math.round(ir / events) } : {}),
    ...(ph ? { server: ph } : {}),
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
