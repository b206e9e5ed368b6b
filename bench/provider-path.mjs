#!/usr/bin/env node
// Micro-benchmark of the upstream read path alone: N concurrent generations through
// OpenAICompatibleProvider against `sluice mock-upstream` (its own process, pinned to core 1),
// this process pinned to core 0. Reports CPU per event of this process (the provider's cost:
// HTTP client + SSE parsing + chunk mapping), events delivered and the delay p99 (receive − due).
//   taskset -c 0 node bench/provider-path.mjs [module.js] [--n=300] [--tps=30] [--secs=4]
// `module.js` defaults to packages/server/dist/providers/openai-compatible.js (pass another build
// of the file to compare two versions in the same conditions). A build with Provider.push is read
// through it (one call per upstream read), unless --pull.
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { startMockUpstream } from "./lib/mock-upstream.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const argv = process.argv.slice(2);
const arg = (k, d) => Number(argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d);
const modPath =
  argv.find((a) => !a.startsWith("--")) ?? "packages/server/dist/providers/openai-compatible.js";
const N = arg("n", 300);
const TPS = arg("tps", 30);
const SECS = arg("secs", 4);
/** --pull: read through `stream()` (the async iterator) even where the build has `push`. */
const PULL = argv.includes("--pull");
const { OpenAICompatibleProvider } = await import(pathToFileURL(resolve(ROOT, modPath)).href);

const { port, proc: up } = await startMockUpstream(ROOT);
const provider = new OpenAICompatibleProvider({ baseUrl: `http://127.0.0.1:${port}/v1` });
const clock = { now: () => Date.now(), sleep: (ms) => new Promise((r) => setTimeout(r, ms)) };
const now = () => performance.timeOrigin + performance.now();

const ramp = 1000;
const wStart = now() + ramp + 500;
const wEnd = wStart + SECS * 1000;
let events = 0;
const delays = [];
let cpu0;
let failed = 0;
const controllers = [];
async function one(i) {
  await new Promise((r) => setTimeout(r, Math.random() * ramp));
  const ac = new AbortController();
  controllers.push(ac);
  const req = {
    model: "m",
    upstream_model: "demo",
    messages: [{ role: "user", content: "Explain how a durable stream log works" }],
    demo: {
      seed: i + 1,
      ttft_ms: 0,
      tokens_per_s: TPS,
      length: Math.ceil(TPS * (SECS + 3)),
      jitter: 0,
      stamp: true,
    },
  };
  const take = (e) => {
    const t = now();
    if (t >= wStart && t < wEnd) {
      events++;
      if (typeof e.due === "number") delays.push(t - e.due);
    }
  };
  try {
    if (provider.push && !PULL) {
      // The push path (what the runner uses): one call per upstream read.
      await provider.push(req, { signal: ac.signal, clock }, (events) => {
        for (const e of events) take(e);
      });
    } else {
      for await (const e of provider.stream(req, { signal: ac.signal, clock })) take(e);
    }
  } catch (e) {
    if (!ac.signal.aborted) failed++;
  }
}
setTimeout(() => (cpu0 = process.cpuUsage()), wStart - now());
const all = Array.from({ length: N }, (_, i) => one(i));
await new Promise((r) => setTimeout(r, wEnd - now()));
const c = process.cpuUsage(cpu0);
for (const ac of controllers) ac.abort(new Error("done"));
await Promise.all(all);
delays.sort((a, b) => a - b);
const cpuMs = (c.user + c.system) / 1000;
console.log(
  JSON.stringify({
    module: modPath,
    path: provider.push && !PULL ? "push" : "pull",
    n: N,
    tps: TPS,
    events,
    expected: N * TPS * SECS,
    delivered: +(events / (N * TPS * SECS)).toFixed(3),
    cpuPct: +((cpuMs / (SECS * 1000)) * 100).toFixed(1),
    usPerEvent: +((cpuMs * 1000) / events).toFixed(2),
    p50: delays[Math.floor(delays.length * 0.5)],
    p99: delays[Math.floor(delays.length * 0.99)],
    failed,
  }),
);
up.kill();
process.exit(0);
