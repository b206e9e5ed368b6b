#!/usr/bin/env node
// TTFT added through the upstream, taken apart (issue 15). Rounds alternate: N readers of
// mock-upstream directly, then N readers of Sluice's openai-compatible route to the same mock
// (the bench's overhead scenario: ramp, ttft_ms 200, 30 tok/s). For every reader it splits the
// client's TTFT with the first token's `due` (stamped by mock-upstream as its arrival + ttft_ms):
//   request path = due − 200 − sent   (client send → the mock's arrival; through Sluice: + Sluice's start)
//   first token  = received − due     (the mock's write → the client; through Sluice: + parse, append, flush)
// and reads each Sluice generation's TTFT phases (/v1/stats, ms from `received`) while it is live,
// and for each Sluice round the event loop's largest delay and the GC time by kind (/metrics).
// Prints p50/p99 of each part per round, and the phases of the slowest Sluice readers.
// SLUICE_AB_NODE_ARGS="--trace-gc" SLUICE_AB_STDOUT=/tmp/gc.log: V8's own GC trace (common.mjs).
//   taskset -c 1 node bench/ab/ttft.mjs [root] [--n=100] [--ramp=1000] [--rounds=4] [--gap=300] [--only=direct|sluice]
import { resolve } from "node:path";
import { dueOf, openHttp } from "../lib/http-stream.mjs";
import { startMockUpstream } from "../lib/mock-upstream.mjs";
import { ready, sleep, startSluice, upstreamConfig } from "./common.mjs";

const argv = process.argv.slice(2);
const opt = (k, d) => argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d;
const root = resolve(argv.find((a) => !a.startsWith("--")) ?? ".");
const N = Number(opt("n", 100));
const RAMP = Number(opt("ramp", 1000));
const ROUNDS = Number(opt("rounds", 4));
/** ms between rounds: under ~4 s the upstream connections of the last round are still pooled. */
const GAP = Number(opt("gap", 300));
const ONLY = opt("only"); // "direct" | "sluice": one kind of round only
const TTFT = 200;
const PORT = 19121;
const now = () => performance.timeOrigin + performance.now();

const { port: upPort, proc: up } = await startMockUpstream(root);
const config = upstreamConfig("ttft", PORT, upPort);
const srv = startSluice(root, PORT, ["--config", config]);
const url = `http://127.0.0.1:${PORT}`;
await ready(url);

const q = (a, p) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : Number.NaN;
};
const f = (x) => (Number.isFinite(x) ? x.toFixed(1) : "—");

/** One round: N readers over the ramp; resolves with one record per reader. */
async function round(direct, length) {
  const out = [];
  const body = (seed) =>
    JSON.stringify({
      model: direct ? "demo" : "up",
      messages: [{ role: "user", content: "Explain how a durable stream log works" }],
      ...(direct ? { stream: true } : { on_disconnect: "cancel" }),
      demo: { seed, ttft_ms: TTFT, tokens_per_s: 30, length, jitter: 0, stamp: true },
    });
  await Promise.all(
    Array.from(
      { length: N },
      (_, i) =>
        new Promise((res) => {
          setTimeout(() => {
            const rec = { sent: now(), id: undefined, first: undefined, due: undefined };
            out.push(rec);
            let buf = "";
            openHttp(
              {
                port: direct ? upPort : PORT,
                method: "POST",
                path: direct ? "/v1/chat/completions" : "/v1/streams",
                headers: { "content-type": "application/json", accept: "text/event-stream" },
                body: body(i + 1),
              },
              {
                onHead(_s, h) {
                  rec.id = h["sluice-stream-id"];
                },
                onBody(text, t) {
                  if (rec.first !== undefined) return;
                  buf += text;
                  const due = dueOf(buf);
                  if (due < 0) return;
                  rec.first = t;
                  rec.due = due;
                },
                onEnd: res,
                onError: res,
              },
            );
          }, Math.random() * RAMP);
        }),
    ),
  );
  return out;
}

/** GC time by kind (cumulative ms) and the event loop's max delay since the last scrape (prom-client resets it). */
async function scrape() {
  const text = await (await fetch(`${url}/metrics`)).text();
  const gc = {};
  for (const m of text.matchAll(/^nodejs_gc_duration_seconds_sum\{kind="([^"]+)"\} (\S+)/gm))
    gc[m[1]] = Number(m[2]) * 1000;
  for (const m of text.matchAll(/^nodejs_gc_duration_seconds_count\{kind="([^"]+)"\} (\S+)/gm))
    gc[`${m[1]}#`] = Number(m[2]);
  for (const m of text.matchAll(/^nodejs_gc_duration_seconds_bucket\{le="([^"]+)",kind="([^"]+)"\} (\S+)/gm))
    gc[`${m[2]}≤${m[1]}s`] = Number(m[3]);
  const lagMax = Number(text.match(/^nodejs_eventloop_lag_max_seconds (\S+)/m)?.[1] ?? Number.NaN) * 1000;
  return { gc, lagMax };
}

const phasesOf = new Map();
async function collectPhases() {
  const stats = await (await fetch(`${url}/v1/stats`)).json();
  for (const s of [...(stats.live ?? []), ...(stats.recent ?? [])])
    if (s.ttft_phases_ms) phasesOf.set(s.id, s.ttft_phases_ms);
}

const length = Math.ceil((30 * (RAMP + 1500)) / 1000);
await round(false, 5); // warm-up: JIT, the pools
for (let r = 1; r <= ROUNDS; r++) {
  for (const direct of ONLY === "direct" ? [true] : ONLY === "sluice" ? [false] : [true, false]) {
    const m0 = direct ? undefined : await scrape();
    const p = round(direct, length);
    if (!direct) {
      // Phases while the generations are live (stats lists live ones; recent keeps only 20).
      await sleep(RAMP + TTFT + 400);
      await collectPhases();
    }
    const recs = (await p).filter((x) => x.first !== undefined);
    const ttft = recs.map((x) => x.first - x.sent - TTFT);
    const req = recs.map((x) => x.due - TTFT - x.sent);
    const tok = recs.map((x) => x.first - x.due);
    console.log(
      `round ${r} ${direct ? "direct" : "sluice"} (${recs.length}/${N}): ttft−200 p50 ${f(q(ttft, 0.5))} p99 ${f(q(ttft, 0.99))} max ${f(q(ttft, 1))} | request path p50 ${f(q(req, 0.5))} p99 ${f(q(req, 0.99))} | first token p50 ${f(q(tok, 0.5))} p99 ${f(q(tok, 0.99))}`,
    );
    if (m0) {
      const m1 = await scrape();
      const gc = Object.entries(m1.gc)
        .map(([k, v]) => [k, v - (m0.gc[k] ?? 0)])
        .filter(([, v]) => v > 0.05)
        .map(([k, v]) => `${k} ${f(v)}`)
        .join(", ");
      console.log(`   Sluice in the round: event-loop delay max ${f(m1.lagMax)} ms; GC ms: ${gc || "none"}`);
    }
    if (!direct) {
      const slow = [...recs].sort((a, b) => b.first - b.sent - (a.first - a.sent)).slice(0, 3);
      for (const s of slow) {
        const ph = phasesOf.get(s.id);
        console.log(
          `   slow ${s.id}: ttft−200 ${f(s.first - s.sent - TTFT)} request ${f(s.due - TTFT - s.sent)} first-token ${f(s.first - s.due)} phases ${ph ? JSON.stringify(ph) : "—"}`,
        );
      }
      const all = recs.map((x) => phasesOf.get(x.id)).filter(Boolean);
      if (all.length) {
        const keys = Object.keys(all[0]);
        console.log(
          `   phases (ms from received) p50/p99: ${keys
            .map(
              (k) =>
                `${k} ${f(
                  q(
                    all.map((p) => p[k]).filter((v) => v !== undefined),
                    0.5,
                  ),
                )}/${f(
                  q(
                    all.map((p) => p[k]).filter((v) => v !== undefined),
                    0.99,
                  ),
                )}`,
            )
            .join(", ")}`,
        );
      }
    }
    await sleep(GAP);
  }
}
srv.kill();
up.kill();
