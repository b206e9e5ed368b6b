#!/usr/bin/env node
// A/B of two Sluice builds: one demo generation (1,000 tokens at 200 tok/s) read by N readers
// over WebSocket or SSE; reports the server's CPU for the delivery (total minus what opening the
// connections cost) per delivered event. Builds alternate, so both see the same conditions.
//   node bench/ab/fanout.mjs <rootA> <rootB> [--n=2000] [--proto=ws|sse] [--rounds=3]
import http from "node:http";
import { createRequire } from "node:module";
import { cpuMs, ready, sleep, startSluice } from "./common.mjs";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const argv = process.argv.slice(2);
const opt = (k, d) => argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d;
const roots = argv.filter((a) => !a.startsWith("--"));
const N = Number(opt("n", 2000));
const PROTO = opt("proto", "ws");
const ROUNDS = Number(opt("rounds", 3));
const PORT = 19101;

async function once(root) {
  const srv = startSluice(root, PORT);
  const url = `http://127.0.0.1:${PORT}`;
  await ready(url);
  const c0 = cpuMs(srv.pid);
  const res = await fetch(`${url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "demo",
      messages: [{ role: "user", content: "go" }],
      demo: { seed: 1, ttft_ms: 8000, tokens_per_s: 200, length: 1000, jitter: 0 },
    }),
  });
  const { id } = await res.json();
  let events = 0;
  let ends = 0;
  let opened = 0;
  await new Promise((resolve) => {
    for (let i = 0; i < N; i++) {
      if (PROTO === "ws") {
        const ws = new WebSocket(`ws://127.0.0.1:${PORT}/v1/ws`);
        ws.on("open", () => {
          ws.send(JSON.stringify({ type: "subscribe", stream: id, offset: "-1" }));
          if (++opened === N) resolve();
        });
        ws.on("message", (d) => {
          const s = String(d);
          if (s.includes('"event"')) events++;
          else if (s.includes('"end"')) {
            ends++;
            ws.close();
          }
        });
      } else {
        const agent = new http.Agent({ keepAlive: false });
        http.get(
          `${url}/v1/streams/${id}?offset=-1`,
          { agent, headers: { accept: "text/event-stream" } },
          (r) => {
            if (++opened === N) resolve();
            let buf = "";
            r.setEncoding("utf8");
            r.on("data", (c) => {
              buf += c;
              for (let k = buf.indexOf("\n\n"); k >= 0; k = buf.indexOf("\n\n")) {
                if (buf.startsWith("id:")) events++;
                buf = buf.slice(k + 2);
              }
            });
            r.on("end", () => ends++);
          },
        );
      }
    }
  });
  const cOpen = cpuMs(srv.pid);
  const t0 = Date.now();
  while (ends < N && Date.now() - t0 < 60_000) await sleep(50);
  const c1 = cpuMs(srv.pid);
  srv.kill("SIGKILL");
  const deliveryMs = c1 - cOpen;
  return { root, events, ends, openMs: cOpen - c0, deliveryMs, usPerEvent: (deliveryMs * 1000) / events };
}

for (let r = 0; r < ROUNDS; r++)
  for (const root of roots) {
    const x = await once(root);
    console.log(
      `${PROTO} n=${N} ${x.root}: delivered ${x.events} events to ${x.ends} readers; CPU opening ${x.openMs} ms, delivering ${x.deliveryMs} ms = ${x.usPerEvent.toFixed(2)} µs/event`,
    );
  }
process.exit(0);
