#!/usr/bin/env node
// The per-record costs behind the `--workers` design (docs/architecture.md, "All the cores of one
// machine"): store appends (memory vs SQLite, as a worker's WorkerStore), a follower taking records
// from notices vs reading them back from the file, and node:cluster IPC relayed by the primary.
//   node bench/workers-costs.mjs            (needs npm run build; CPU from process.cpuUsage())
//   node bench/workers-costs.mjs --only append [--root DIR] [--reps N]
//     only the store appends, of the build in DIR (another worktree: A/B runs alternating builds)
import cluster from "node:cluster";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const ROOT = resolve(
  arg("root") ?? process.env.COSTS_ROOT ?? join(dirname(fileURLToPath(import.meta.url)), ".."),
);
const ONLY = arg("only");
const REPS = Number(arg("reps") ?? 1);
const dist = (p) => join(ROOT, "packages/server/dist", p);
const S = 500;
const ROUNDS = 100;
const IPC_N = 200_000;
const shm = () => {
  try {
    return mkdtempSync(join("/dev/shm", "sluice-workers-costs-"));
  } catch {
    return mkdtempSync(join(tmpdir(), "sluice-workers-costs-"));
  }
};
const data = JSON.stringify({ type: "text-delta", delta: " token" });
const cpu = (t0) => {
  const c = process.cpuUsage(t0);
  return c.user + c.system;
};

async function stores() {
  const { MemoryStore } = await import(dist("stores/memory.js"));
  const { SqliteStore } = await import(dist("stores/sqlite.js"));
  const { WorkerStore } = await import(dist("cluster/worker-store.js"));
  const clock = { now: () => Date.now() };
  const dir = mkdtempSync(join(tmpdir(), "sluice-workers-costs-"));
  const appendAll = (store) =>
    Promise.all(Array.from({ length: S }, (_, s) => store.append(`s${s}`, [{ type: "text-delta", data }])));
  async function appends(name, store) {
    for (let s = 0; s < S; s++) await store.create({ id: `s${s}`, kind: "generation", content_type: "x" });
    for (let s = 0; s < S; s++) store.subscribe(`s${s}`, () => {});
    const t0 = process.cpuUsage();
    for (let r = 0; r < ROUNDS; r++) await appendAll(store);
    console.log(`${name}: ${(cpu(t0) / (S * ROUNDS)).toFixed(2)} µs CPU per appended record`);
    await store.close();
  }
  for (let rep = 0; rep < REPS; rep++) {
    await appends("memory store append", new MemoryStore({}));
    await appends(
      "sqlite store append",
      new SqliteStore({ path: join(dir, `a${rep}.db`), sweepIntervalMs: 0 }),
    );
    // What a worker of --workers N --store memory runs: a scratch file on /dev/shm, notices built.
    const scratch = shm();
    await appends(
      "worker store append (scratch file on /dev/shm, notices built)",
      new WorkerStore({
        path: join(scratch, "w.db"),
        limits: {},
        clock,
        durable: false,
        sweepIntervalMs: 0,
        publish: () => {},
      }),
    );
    rmSync(scratch, { recursive: true, force: true });
  }
  if (ONLY === "append") {
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  // A second worker following 500 streams another one writes: records from the notices, or read back.
  for (const carry of [true, false]) {
    const path = join(dir, `f-${carry}.db`);
    const batches = [];
    const w = (publish) => new WorkerStore({ path, limits: {}, clock, sweepIntervalMs: 0, publish });
    const writer = w((c) => batches.push(JSON.stringify(c)));
    const reader = w(() => {});
    for (let s = 0; s < S; s++) await writer.create({ id: `s${s}`, kind: "generation", content_type: "x" });
    let heard = 0;
    for (let s = 0; s < S; s++) reader.subscribe(`s${s}`, (n) => (heard += n.records.length));
    for (let r = 0; r < ROUNDS; r++) await appendAll(writer);
    const t0 = process.cpuUsage();
    for (const b of batches) {
      const changes = JSON.parse(b);
      if (!carry) for (const c of changes) c[3] = [];
      reader.onRemote(changes);
    }
    const how = carry ? "taken from the notice" : "read back from the file (id-only notice)";
    console.log(
      `follower on another worker, record ${how}: ${(cpu(t0) / heard).toFixed(2)} µs CPU per record`,
    );
    await writer.close();
    await reader.close();
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Worker a → primary → worker b, `batch` notices per message; CPU of the three processes per notice. */
function ipc(batch, withData) {
  return new Promise((resolveRun) => {
    const a = cluster.fork({ ROLE: "a", BATCH: String(batch), DATA: withData ? "1" : "" });
    const b = cluster.fork({ ROLE: "b" });
    const t0 = process.cpuUsage();
    a.on("message", (m) => b.send(m));
    b.on("message", (m) => {
      const primary = cpu(t0) / IPC_N;
      const total = primary + m.a + m.b;
      console.log(
        `IPC notice relayed a → primary → b, ${batch} per message${withData ? ", with the record" : ""}: ${total.toFixed(2)} µs CPU (a ${m.a.toFixed(2)}, primary ${primary.toFixed(2)}, b ${m.b.toFixed(2)})`,
      );
      a.kill();
      b.kill();
      resolveRun();
    });
  });
}

if (cluster.isPrimary) {
  await stores();
  if (ONLY === "append") process.exit(0);
  for (const [batch, withData] of [
    [1, false],
    [20, false],
    [20, true],
    [100, true],
  ])
    await ipc(batch, withData);
} else if (process.env.ROLE === "a") {
  const batch = Number(process.env.BATCH);
  setTimeout(async () => {
    const t0 = process.cpuUsage();
    for (let i = 0; i < IPC_N; i += batch) {
      const msg = [];
      for (let j = 0; j < batch; j++)
        msg.push(["st_abcdefghijklmnop", i + j, "running", process.env.DATA ? [["text-delta", data]] : []]);
      process.send(msg);
      if ((i / batch) % 100 === 0) await new Promise((r) => setImmediate(r));
    }
    process.send({ done: true, a: cpu(t0) / IPC_N });
  }, 300);
} else {
  let t0;
  process.on("message", (m) => {
    t0 ??= process.cpuUsage();
    if (!Array.isArray(m)) process.send({ a: m.a, b: cpu(t0) / IPC_N });
  });
}
