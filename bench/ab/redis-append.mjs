#!/usr/bin/env node
// The Redis store alone, builds side by side: N streams each appended R times a second (one record
// per append, one follower per stream, as a generation read on its own node), the node's CPU per
// append over a steady window. Its own redis-server runs on core 1, the store's process on core 0.
//   node bench/ab/redis-append.mjs <rootA> [<rootB> ...] [--n=200] [--rate=30] [--secs=6] [--rounds=2] [--store=memory]
import { execFileSync, spawn } from "node:child_process";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { sleep, startRedisServer } from "./common.mjs";

const argv = process.argv.slice(2);
const opt = (k, d) => argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d;

if (process.env.SLUICE_AB_CHILD) {
  // One measurement, in a process pinned to core 0.
  const [root, kind, url] = argv;
  const N = Number(opt("n", 200));
  const R = Number(opt("rate", 30));
  const SECS = Number(opt("secs", 6));
  const m = await import(pathToFileURL(resolve(root, `packages/server/dist/stores/${kind}.js`)).href);
  const store =
    kind === "redis" ? new m.RedisStore({ url, prefix: `b${Date.now()}:` }) : new m.MemoryStore({});
  if (kind === "redis") await store.connected();
  let got = 0;
  const ids = [];
  for (let i = 0; i < N; i++) {
    const id = `s${i}`;
    await store.create({ id, kind: "generation", content_type: "application/json" });
    store.subscribe(id, (n) => {
      got += n.records.length;
    });
    ids.push(id);
  }
  await sleep(300);
  let stop = false;
  const tok = JSON.stringify({ type: "text-delta", delta: " token" });
  for (const id of ids) {
    const tick = () => {
      if (stop) return;
      store.append(id, [{ type: "text-delta", data: tok }]).catch((e) => console.error(e.message));
      setTimeout(tick, 1000 / R);
    };
    setTimeout(tick, (Math.random() * 1000) / R);
  }
  await sleep(1500);
  const g0 = got;
  // SLUICE_AB_PROF=dir: a V8 CPU profile of the measured window only (dir/<store>-<pid>.cpuprofile).
  const prof = process.env.SLUICE_AB_PROF ? new (await import("node:inspector")).Session() : undefined;
  if (prof) {
    prof.connect();
    await new Promise((r) => prof.post("Profiler.enable", () => prof.post("Profiler.start", r)));
  }
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(SECS * 1000);
  const c1 = process.cpuUsage(c0);
  const n = got - g0;
  stop = true;
  if (prof) {
    const { profile } = await new Promise((r) => prof.post("Profiler.stop", (_e, v) => r(v)));
    const { writeFileSync } = await import("node:fs");
    writeFileSync(`${process.env.SLUICE_AB_PROF}/${kind}-${process.pid}.cpuprofile`, JSON.stringify(profile));
  }
  console.log(
    `${kind} ${root}: ${(n / ((performance.now() - t0) / 1000)).toFixed(0)} appends/s delivered (offered ${N * R}), CPU ${((c1.user + c1.system) / n).toFixed(1)} µs per append`,
  );
  await store.close?.();
  process.exit(0);
}

const roots = argv.filter((a) => !a.startsWith("--"));
const kind = opt("store", "redis");
const port = 19211;
const redis = await startRedisServer(port, 1);
try {
  for (let r = 0; r < Number(opt("rounds", 2)); r++)
    for (const root of roots) {
      execFileSync("redis-cli", ["-p", String(port), "config", "resetstat"]);
      const child = spawn(
        "taskset",
        [
          "-c",
          "0",
          process.execPath,
          import.meta.filename,
          root,
          kind,
          `redis://127.0.0.1:${port}`,
          ...argv.filter((a) => a.startsWith("--")),
        ],
        { stdio: "inherit", env: { ...process.env, SLUICE_AB_CHILD: "1" } },
      );
      await new Promise((res) => child.once("exit", res));
      // redis-server's own time in the append scripts, per append (commandstats; the window and
      // the set-up alike, so a comparison, not the bench's figure).
      const st = execFileSync("redis-cli", ["-p", String(port), "info", "commandstats"], {
        encoding: "utf8",
      });
      const usec = Number(/cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(st)?.[2] ?? 0);
      const xadds = Number(/cmdstat_xadd:calls=(\d+)/.exec(st)?.[1] ?? 0);
      if (kind === "redis" && xadds > 0)
        console.log(
          `  redis-server: ${(usec / xadds).toFixed(2)} µs per append in scripts (${xadds} appends)`,
        );
    }
} finally {
  redis.kill("SIGKILL");
}
