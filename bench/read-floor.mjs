#!/usr/bin/env node
// The floor of "read an upstream SSE stream" on this machine: N concurrent streams from
// `sluice mock-upstream` (its own process on core 1), read by this process with nothing but an
// HTTP client, and the CPU per chunk (each chunk is one token) of this process. It tells how much
// of Sluice's cost per event through an upstream is the HTTP read itself, whichever client does it.
//   taskset -c 0 node bench/read-floor.mjs <mode> [--n=300] [--tps=30] [--secs=4]
// modes: undici-iter (undici.request, `for await` over the body), undici-data (undici.request,
// 'data' events), undici-parse (undici-data + SSE parse + JSON.parse + re-encode, i.e. the
// provider's per-chunk work without its generator), http-data (node:http, 'data' events: the
// relay's read).
import http from "node:http";
import { dirname, resolve } from "node:path";
import { StringDecoder } from "node:string_decoder";
import { fileURLToPath, pathToFileURL } from "node:url";
import { startMockUpstream } from "./lib/mock-upstream.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const argv = process.argv.slice(2);
const arg = (k, d) => Number(argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d);
const MODE = argv.find((a) => !a.startsWith("--")) ?? "undici-data";
const N = arg("n", 300);
const TPS = arg("tps", 30);
const SECS = arg("secs", 4);
const req = (m) => import(pathToFileURL(resolve(ROOT, "node_modules", m)).href);
const { request: undiciRequest } = await req("undici/index.js");
const { createParser } = await req("eventsource-parser/dist/index.js");

const { port, proc: up } = await startMockUpstream(ROOT);

const now = () => performance.now();
const ramp = 1000;
const wStart = now() + ramp + 500;
const wEnd = wStart + SECS * 1000;
let chunks = 0;
let cpu0;
const sink = [];
const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
const url = `http://127.0.0.1:${port}/v1/chat/completions`;
const body = (i) =>
  JSON.stringify({
    model: "demo",
    stream: true,
    messages: [{ role: "user", content: "Explain how a durable stream log works" }],
    demo: { seed: i + 1, ttft_ms: 0, tokens_per_s: TPS, length: TPS * (SECS + 3), jitter: 0, stamp: true },
  });
const count = () => {
  const t = now();
  if (t >= wStart && t < wEnd) chunks++;
};
const post = (b) =>
  undiciRequest(url, { method: "POST", headers: { "content-type": "application/json" }, body: b });
const drain = (stream, onData) =>
  new Promise((r) => {
    stream.on("data", onData);
    stream.on("end", r);
    stream.on("error", r);
  });

async function one(i) {
  await new Promise((r) => setTimeout(r, Math.random() * ramp));
  const b = body(i);
  if (MODE === "undici-iter") {
    const res = await post(b);
    for await (const _ of res.body) count();
  } else if (MODE === "undici-data") {
    const res = await post(b);
    await drain(res.body, count);
  } else if (MODE === "undici-parse") {
    const res = await post(b);
    const dec = new StringDecoder("utf8");
    const parser = createParser({
      onEvent: (m) => {
        if (m.data === "[DONE]") return;
        const o = JSON.parse(m.data);
        const ev = { type: "text-delta", delta: o.choices[0]?.delta?.content, due: o.sluice_due };
        sink.push(JSON.stringify(ev));
        if (sink.length > 100) sink.length = 0;
      },
    });
    await drain(res.body, (c) => {
      count();
      parser.feed(dec.write(c));
    });
  } else if (MODE === "http-data") {
    await new Promise((r) => {
      const rq = http.request(
        {
          host: "127.0.0.1",
          port,
          path: "/v1/chat/completions",
          method: "POST",
          agent,
          headers: { "content-type": "application/json" },
        },
        (res) => drain(res, count).then(r),
      );
      rq.on("error", r);
      rq.end(b);
    });
  } else throw new Error(`unknown mode ${MODE}`);
}

setTimeout(() => (cpu0 = process.cpuUsage()), wStart - now());
for (let i = 0; i < N; i++) one(i).catch(() => {});
await new Promise((r) => setTimeout(r, wEnd - now()));
const c = process.cpuUsage(cpu0);
const cpuMs = (c.user + c.system) / 1000;
console.log(
  JSON.stringify({
    mode: MODE,
    n: N,
    tps: TPS,
    chunks,
    usPerChunk: +((cpuMs * 1000) / chunks).toFixed(2),
    cpuPct: +((cpuMs / (SECS * 1000)) * 100).toFixed(1),
  }),
);
up.kill();
process.exit(0);
