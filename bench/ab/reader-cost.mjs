#!/usr/bin/env node
// What the load generator's readers cost per event, without a Sluice server: a plain `net` server
// (core 0) answers K readers (core 1) — the WebSocket upgrade or an SSE response — then writes M
// rounds of one Sluice-shaped event to every socket (paced, so each data event carries one event,
// as in the fan-out scenario). The reader process reports its own CPU per event over the rounds
// (connecting excluded). Reader modules alternate, so each sees the same conditions.
// Rounds go in lockstep: the next is written once the readers have every event of the last.
//   node bench/ab/reader-cost.mjs [--k=2000] [--m=200] [--rounds=3] [--readers=ws,sse] [--roots=A,B]
//        [--callgrind]
// `--roots` names checkouts whose bench/lib/readers/<reader>.mjs to compare (default: this one).
// `--callgrind`: the reader process runs under `valgrind --tool=callgrind` and reports
// instructions per event (its main thread; immune to other load, blind to the kernel's share).
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = fileURLToPath(import.meta.url);
const BENCH = resolve(dirname(HERE), "..");
const argv = process.argv.slice(2);
const opt = (k, d) => argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d;
const role = opt("role", "main");
const STREAM = "abcdefghijklmnopqrstuv";

function event(i) {
  const offset = String(i).padStart(16, "0");
  const data = `{"type":"delta","delta":"token ${i} ","due":${Math.floor(Date.now())}}`;
  return { offset, data };
}

function wsFrame(text) {
  const n = Buffer.byteLength(text);
  const h = n < 126 ? 2 : 4;
  const b = Buffer.allocUnsafe(h + n);
  b[0] = 0x81;
  if (n < 126) b[1] = n;
  else {
    b[1] = 126;
    b.writeUInt16BE(n, 2);
  }
  b.write(text, h);
  return b;
}

function sseChunk(text) {
  const n = Buffer.byteLength(text);
  return Buffer.from(`${n.toString(16)}\r\n${text}\r\n`);
}

if (role === "server") {
  // Answers each connection once its request head arrived; then writes rounds on command.
  const socks = [];
  const srv = net.createServer((s) => {
    s.setNoDelay(true);
    let head = "";
    s.on("error", () => {});
    s.on("data", function onData(d) {
      if (head === null) return; // client frames (the subscribe message): ignored
      head += d.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      const ws = /upgrade: websocket/i.test(head);
      head = null;
      s.write(
        ws
          ? "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n"
          : "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
      );
      socks.push({ s, ws });
    });
  });
  srv.listen(0, "127.0.0.1", () => process.send({ port: srv.address().port }));
  process.on("message", async (m) => {
    if (m.type === "round") {
      const { offset, data } = event(m.i);
      const ws = wsFrame(`{"stream":"${STREAM}","offset":"${offset}","event":${data}}`);
      const sse = sseChunk(`id: ${offset}\nevent: delta\ndata: ${data}\n\n`);
      for (const x of socks) x.s.write(x.ws ? ws : sse);
    } else if (m.type === "reset") {
      for (const x of socks) x.s.destroy();
      socks.length = 0;
      process.send({ reset: true });
    } else if (m.type === "exit") process.exit(0);
  });
} else if (role === "client") {
  process.on("message", async (m) => {
    const mod = await import(m.module);
    // The main thread's dump (file …-01) of this process, written by callgrind_control -d.
    m.dumpIr = () => {
      const f = readdirSync(m.cgDir).find((x) => x.startsWith(`cg.${process.pid}.`) && x.endsWith("-01"));
      return Number(/^totals:\s+(\d+)/m.exec(readFileSync(`${m.cgDir}/${f}`, "utf8"))?.[1]);
    };
    let events = 0;
    let headed = 0;
    let c0;
    const conns = [];
    const want = m.k * m.m;
    for (let i = 0; i < m.k; i++) {
      const spec =
        mod.name === "ws"
          ? { port: m.port, path: "/v1/ws", subscribe: { stream: STREAM, offset: "-1" } }
          : {
              port: m.port,
              method: "GET",
              path: `/v1/streams/${STREAM}`,
              headers: { accept: "text/event-stream" },
            };
      conns.push(
        mod.open(spec, {
          onHead() {
            if (++headed === m.k) {
              setTimeout(() => {
                if (m.callgrind)
                  execFileSync("callgrind_control", ["-z", String(process.pid)], { stdio: "ignore" });
                c0 = process.cpuUsage();
                process.send({ ready: true });
              }, 200);
            }
          },
          onEvent() {
            if (++events === want) {
              const c = process.cpuUsage(c0);
              let ir;
              if (m.callgrind) {
                execFileSync("callgrind_control", ["-d", String(process.pid)], { stdio: "ignore" });
                ir = m.dumpIr();
              }
              for (const x of conns) x.close();
              process.send({ usPerEvent: (c.user + c.system) / events, events, ir });
            } else if (events % m.k === 0) process.send({ round: events / m.k });
          },
          onError() {},
          onEnd() {},
        }),
      );
      if (i % 200 === 199) await new Promise((r) => setTimeout(r, 20));
    }
  });
} else {
  const K = Number(opt("k", 2000));
  const M = Number(opt("m", 200));
  const ROUNDS = Number(opt("rounds", 3));
  const CALLGRIND = argv.includes("--callgrind");
  const cgDir = mkdtempSync(join(tmpdir(), "reader-cost-"));
  const readers = opt("readers", "ws,sse").split(",");
  const roots = opt("roots", resolve(BENCH, "..")).split(",");
  const pinned = (core, args) =>
    spawn("sh", ["-c", `ulimit -n $(ulimit -Hn) 2>/dev/null; exec taskset -c ${core} "$@"`, "sh", ...args], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
  const server = pinned(0, [process.execPath, HERE, "--role=server"]);
  const { port } = await new Promise((r) => server.once("message", r));
  const results = {};
  for (let round = 0; round < ROUNDS; round++)
    for (const root of roots)
      for (const reader of readers) {
        const module = resolve(root, "bench/lib/readers", `${reader}.mjs`);
        const client = pinned(1, [
          ...(CALLGRIND
            ? [
                "valgrind",
                "-q",
                "--tool=callgrind",
                "--separate-threads=yes",
                `--callgrind-out-file=${cgDir}/cg.%p`,
              ]
            : []),
          process.execPath,
          HERE,
          "--role=client",
        ]);
        const next = () => new Promise((r) => client.once("message", r));
        client.send({ module, port, k: K, m: M, callgrind: CALLGRIND, cgDir });
        await next(); // ready
        let out;
        for (let i = 1; i <= M; i++) {
          server.send({ type: "round", i });
          out = await next();
        }
        client.kill();
        server.send({ type: "reset" });
        await new Promise((r) => server.once("message", r));
        const key = `${reader} ${root}`;
        const v = CALLGRIND ? out.ir / out.events : out.usPerEvent;
        results[key] ??= [];
        results[key].push(v);
        console.log(
          `${key}: ${CALLGRIND ? `${v.toFixed(0)} instructions/event (main thread)` : `${v.toFixed(3)} µs/event`} (${out.events} events, ${K} sockets)`,
        );
      }
  console.log("\nmedians:");
  for (const [k, v] of Object.entries(results)) {
    const s = [...v].sort((a, b) => a - b);
    const unit = CALLGRIND ? "instructions/event" : "µs/event";
    console.log(
      `  ${k}: ${s[Math.floor((s.length - 1) / 2)].toFixed(3)} ${unit}  [${s.map((x) => x.toFixed(3)).join(", ")}]`,
    );
  }
  server.send({ type: "exit" });
  process.exit(0);
}
