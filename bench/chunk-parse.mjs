#!/usr/bin/env node
// Micro-benchmark of one step of the upstream path, without the network: an OpenAI chunk's
// `data` payload → Sluice events, through ChunkReader with the text-delta scanner (fast) and
// without it (JSON.parse + ChunkState.apply), alternated in one process. Chunks: mock-upstream's
// shape (as bench/provider-path.mjs reads them) and OpenAI's (the recorded fixture's shape).
//   taskset -c 0 node bench/chunk-parse.mjs [--rounds=6] [--chunks=200000]
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const argv = process.argv.slice(2);
const arg = (k, d) => Number(argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d);
const ROUNDS = arg("rounds", 6);
const CHUNKS = arg("chunks", 200_000);
const { ChunkReader } = await import(
  pathToFileURL(resolve(ROOT, "packages/server/dist/providers/openai-compatible.js")).href
);

const words = [
  "The",
  " log",
  " is",
  " durable",
  ",",
  " offset",
  "-addressed",
  " and",
  ' "quoted"',
  " é",
  "\n",
];
const shapes = {
  mock: (i) =>
    JSON.stringify({
      id: "chatcmpl-5b1c2d3e4f",
      object: "chat.completion.chunk",
      created: 1764590000,
      model: "demo",
      choices: [
        { index: 0, delta: { content: words[i % words.length] }, logprobs: null, finish_reason: null },
      ],
      usage: null,
      sluice_due: 1764590000000 + i * 33,
    }),
  openai: (i) =>
    JSON.stringify({
      id: "chatcmpl-BPhTf4V3m0Zr7LqQk2yPZ5HfTr1Xo",
      object: "chat.completion.chunk",
      created: 1745329311,
      model: "gpt-4o-mini-2024-07-18",
      service_tier: "default",
      system_fingerprint: "fp_0392822090",
      choices: [
        { index: 0, delta: { content: words[i % words.length] }, logprobs: null, finish_reason: null },
      ],
      usage: null,
    }),
};

const results = {};
for (const [shape, make] of Object.entries(shapes)) {
  const datas = Array.from({ length: 4096 }, (_, i) => make(i));
  for (let r = 0; r < ROUNDS; r++) {
    for (const fast of [false, true]) {
      const reader = new ChunkReader((t) => t, fast);
      const out = [];
      let n = 0;
      const t0 = process.cpuUsage();
      for (let i = 0; i < CHUNKS; i++) {
        out.length = 0;
        reader.read(datas[i & 4095], out);
        n += out.length;
      }
      const c = process.cpuUsage(t0);
      if (n !== CHUNKS) throw new Error(`expected one event per chunk, got ${n}`);
      const key = `${shape} ${fast ? "scanner" : "JSON.parse"}`;
      results[key] = [...(results[key] ?? []), +(((c.user + c.system) * 1000) / CHUNKS).toFixed(0)];
    }
  }
}
for (const [key, ns] of Object.entries(results)) {
  const sorted = [...ns].sort((a, b) => a - b);
  console.log(
    `${key.padEnd(20)} ns CPU per chunk: median ${sorted[sorted.length >> 1]}  runs ${ns.join(", ")}`,
  );
}
