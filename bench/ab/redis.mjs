#!/usr/bin/env node
// A/B of two Sluice builds on the Redis store: N demo generations at 30 tok/s, one SSE reader
// each; over a 5 s window in steady state, the CPU of the Sluice process and of its own
// redis-server (both pinned to core 0) per delivered event. Builds alternate.
//   node bench/ab/redis.mjs <rootA> <rootB> [--n=200] [--rounds=3] [--store=memory] [--redis-core=1]
// (--redis-core=1: redis-server on the other core, so a profile of Sluice is not charged with it)
// (SLUICE_AB_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR": the servers run under those node flags)
import { execFileSync } from "node:child_process";
import http from "node:http";
import { cpuMs, ready, sleep, startRedisServer, startSluice } from "./common.mjs";

const argv = process.argv.slice(2);
const opt = (k, d) => argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d;
const roots = argv.filter((a) => !a.startsWith("--"));
const N = Number(opt("n", 200));
const ROUNDS = Number(opt("rounds", 3));
const PORT = 19201;

async function once(root) {
  const rport = PORT + 1;
  const redis = await startRedisServer(rport, opt("redis-core", "0"));
  // --store=memory: the same load on the memory store (its redis-server idles), for the ratio.
  const store = opt("store", "redis") === "memory" ? [] : ["--store", `redis://127.0.0.1:${rport}`];
  const srv = startSluice(root, PORT, store);
  const url = `http://127.0.0.1:${PORT}`;
  await ready(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
  let events = 0;
  const ids = [];
  for (let i = 0; i < N; i++) {
    const res = await fetch(`${url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        messages: [{ role: "user", content: "go" }],
        demo: { seed: i, ttft_ms: 3000, tokens_per_s: 30, length: 900, jitter: 0 },
      }),
    });
    ids.push((await res.json()).id);
  }
  for (const id of ids)
    http.get(
      `${url}/v1/streams/${id}?offset=-1`,
      { agent, headers: { accept: "text/event-stream" } },
      (r) => {
        r.setEncoding("utf8");
        let buf = "";
        r.on("data", (c) => {
          buf += c;
          for (let k = buf.indexOf("\n\n"); k >= 0; k = buf.indexOf("\n\n")) {
            if (buf.startsWith("id:")) events++;
            buf = buf.slice(k + 2);
          }
        });
      },
    );
  await sleep(4500);
  const e0 = events;
  const a0 = cpuMs(srv.pid);
  const b0 = cpuMs(redis.pid);
  const t0 = Date.now();
  await sleep(5000);
  const e1 = events;
  const a1 = cpuMs(srv.pid);
  const b1 = cpuMs(redis.pid);
  const secs = (Date.now() - t0) / 1000;
  // What redis-server ran: calls and µs per call of each command (scripts included).
  const stats = execFileSync("redis-cli", ["-p", String(rport), "info", "commandstats"], { encoding: "utf8" })
    .split("\n")
    .filter((l) => l.startsWith("cmdstat_"))
    .map((l) => {
      const m = /^cmdstat_(\w+):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)/.exec(l);
      return m ? `${m[1]} ${m[2]} calls, ${m[4]} µs/call` : l;
    });
  // With SLUICE_AB_NODE_ARGS="--cpu-prof ..." the server must exit on its own to write the profile.
  if (process.env.SLUICE_AB_NODE_ARGS) {
    await new Promise((r) => {
      srv.once("exit", r);
      srv.kill("SIGTERM");
    });
  } else srv.kill("SIGKILL");
  redis.kill("SIGKILL");
  const n = e1 - e0;
  return { root, rate: n / secs, nodeUs: ((a1 - a0) * 1000) / n, redisUs: ((b1 - b0) * 1000) / n, stats };
}

for (let r = 0; r < ROUNDS; r++)
  for (const root of roots) {
    const x = await once(root);
    console.log(
      `redis n=${N} ${x.root}: ${x.rate.toFixed(0)} events/s (offered ${N * 30}); CPU per event: Sluice ${x.nodeUs.toFixed(1)} µs + redis-server ${x.redisUs.toFixed(1)} µs = ${(x.nodeUs + x.redisUs).toFixed(1)} µs`,
    );
    if (argv.includes("--stats")) console.log(`  redis-server, whole run: ${x.stats.join("; ")}`);
  }
process.exit(0);
