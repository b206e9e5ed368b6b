#!/usr/bin/env node
// A/B of interest routing (issue 13 part 1): `sluice serve --workers 2`, N generations at 30
// tok/s, each read on the connection that started it (so on its owner: no other worker follows
// it). Builds alternate; CPU of the primary and of each worker from /proc, per delivered event.
//   node bench/ab/workers-interest.mjs OLD_ROOT NEW_ROOT [streams=200] [reps=3]
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Agent } from "undici";
import { cpuMs, ready, sleep } from "./common.mjs";

const [oldRoot, newRoot, nArg, repsArg] = process.argv.slice(2);
const N = Number(nArg ?? 200);
const REPS = Number(repsArg ?? 3);
const LENGTH = 240; // tokens: 8 s at 30 tok/s

function childrenOf(ppid) {
  const out = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === ppid) out.push(Number(name));
    } catch {}
  }
  return out;
}

async function one(root, port) {
  const proc = spawn(
    "node",
    [resolve(root, "packages/server/dist/cli/main.js"), "serve", "--workers", "2", "--port", String(port)],
    {
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  const url = `http://127.0.0.1:${port}`;
  await ready(url);
  await sleep(500);
  const workers = childrenOf(proc.pid);
  const before = [proc.pid, ...workers].map(cpuMs);
  let events = 0;
  await Promise.all(
    Array.from({ length: N }, async () => {
      const dispatcher = new Agent({ connections: 1 });
      const res = await fetch(`${url}/v1/streams`, {
        method: "POST",
        dispatcher,
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "demo",
          messages: [{ role: "user", content: "hi" }],
          demo: { seed: 7, ttft_ms: 5, tokens_per_s: 30, jitter: 0, length: LENGTH },
        }),
      });
      const { id } = await res.json();
      const sse = await fetch(`${url}/v1/streams/${id}?offset=-1`, {
        dispatcher,
        headers: { accept: "text/event-stream" },
      });
      const text = await sse.text();
      events += text.split("\n\n").filter((b) => b.includes("\ndata:") || b.startsWith("data:")).length;
      await dispatcher.close();
    }),
  );
  const after = [proc.pid, ...workers].map(cpuMs);
  proc.kill("SIGTERM");
  await new Promise((r) => proc.once("exit", r));
  const d = after.map((a, i) => a - before[i]);
  const us = (ms) => ((ms * 1000) / events).toFixed(2);
  return `primary ${us(d[0])} µs/event, workers ${d.slice(1).map(us).join(" + ")}, total ${us(d.reduce((a, b) => a + b, 0))} (events ${events})`;
}

let port = 19_400 + Math.floor(Math.random() * 500);
for (let rep = 0; rep < REPS; rep++) {
  for (const [name, root] of [
    ["old", oldRoot],
    ["new", newRoot],
  ]) {
    console.log(`${name}: ${await one(root, port++)}`);
  }
}
