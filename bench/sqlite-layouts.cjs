#!/usr/bin/env node
// Raw SQLite (better-sqlite3, no Sluice code) under the workers' append pattern: S streams, one
// record each per transaction, on a scratch file in /dev/shm with synchronous=OFF. Compares the
// record table layouts and pragmas behind docs/architecture.md ("All the cores of one machine"),
// and the write-behind estimate (one row per stream holding `chunk` records).
//   node bench/sqlite-layouts.cjs base rowid rowid_ord chunk4 chunk8   (env: REPS=5 ROUNDS=96 S=500 streams)
// Prints µs of CPU (process.cpuUsage) per record, one line per repetition, modes alternating.
const Database = require(require("node:path").join(__dirname, "..", "node_modules", "better-sqlite3"));
const fs = require("node:fs");
const S = Number(process.env.S || 500),
  ROUNDS = Number(process.env.ROUNDS || 100);
const data = JSON.stringify({ type: "text-delta", delta: " token" });
function run(mode) {
  const dir = fs.mkdtempSync("/dev/shm/pg-");
  const db = new Database(`${dir}/x.db`);
  if (mode.page) db.pragma(`page_size = ${mode.page}`);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = OFF");
  if (mode.cache) db.pragma(`cache_size = ${mode.cache}`);
  if (mode.mmap) db.pragma(`mmap_size = ${mode.mmap}`);
  if (mode.ckpt) db.pragma(`wal_autocheckpoint = ${mode.ckpt}`);
  const rowid = mode.rowid;
  db.exec(
    rowid
      ? `CREATE TABLE streams (ord INTEGER PRIMARY KEY, id TEXT UNIQUE, length INT, bytes INT, metadata TEXT);
       CREATE TABLE events (ord INTEGER PRIMARY KEY, stream TEXT, seq INT, type TEXT, data TEXT, encoding TEXT);
       CREATE UNIQUE INDEX ev ON events(stream, seq);`
      : `CREATE TABLE streams (ord INTEGER PRIMARY KEY, id TEXT UNIQUE, length INT, bytes INT, metadata TEXT);
       CREATE TABLE events (stream TEXT, seq INT, type TEXT, data TEXT, encoding TEXT, PRIMARY KEY(stream, seq)) WITHOUT ROWID;`,
  );
  const ins = db.prepare("INSERT INTO events (stream, seq, type, data, encoding) VALUES (?,?,?,?,?)");
  const get = db.prepare("SELECT * FROM streams WHERE id = ?");
  const grow = db.prepare("UPDATE streams SET length = ?, bytes = ? WHERE id = ?");
  const mk = db.prepare("INSERT INTO streams (id, length, bytes, metadata) VALUES (?, 0, 0, '{}')");
  const ids = Array.from({ length: S }, (_, i) => `st_${Math.random().toString(36).slice(2, 14)}${i}`);
  for (const id of ids) mk.run(id);
  const getOrd = db.prepare("SELECT * FROM streams WHERE ord = ?");
  const growOrd = db.prepare("UPDATE streams SET length = ?, bytes = ? WHERE ord = ?");
  const ords = new Map(ids.map((id) => [id, get.get(id).ord]));
  if (mode.chunk) {
    // write-behind estimate: every `chunk` rounds, one row per stream holding `chunk` records
    const recs = Array(mode.chunk).fill(["text-delta", data]);
    const body = JSON.stringify(recs);
    let len = 0;
    const txc = db.transaction(() => {
      for (const id of ids) {
        ins.run(id, len + mode.chunk, "chunk", body, null);
        growOrd.run(len + mode.chunk, 0, ords.get(id));
      }
    });
    const t0 = process.cpuUsage();
    for (let r = 0; r < ROUNDS; r += mode.chunk) {
      txc.immediate();
      len += mode.chunk;
    }
    const c = process.cpuUsage(t0);
    db.close();
    fs.rmSync(dir, { recursive: true });
    return (c.user + c.system) / (S * ROUNDS);
  }
  if (mode.byord) {
    const txo = db.transaction(() => {
      for (const id of ids) {
        const r = getOrd.get(ords.get(id));
        ins.run(id, r.length + 1, "text-delta", data, null);
        growOrd.run(r.length + 1, r.bytes + data.length, r.ord);
      }
    });
    const t0 = process.cpuUsage();
    for (let r = 0; r < ROUNDS; r++) txo.immediate();
    const c = process.cpuUsage(t0);
    db.close();
    fs.rmSync(dir, { recursive: true });
    return (c.user + c.system) / (S * ROUNDS);
  }
  const local = new Map(ids.map((id) => [id, { length: 0, bytes: 0 }]));
  const tx = db.transaction(() => {
    for (const id of ids) {
      if (mode.nogrow && !mode.noget) get.get(id);
      const r = mode.noget || mode.nogrow ? local.get(id) : get.get(id);
      if (mode.noget || mode.nogrow) {
        r.length++;
        r.bytes += data.length;
        ins.run(id, r.length, "text-delta", data, null);
        if (!mode.nogrow) grow.run(r.length, r.bytes, id);
        continue;
      }
      ins.run(id, r.length + 1, "text-delta", data, null);
      if (!mode.nogrow) grow.run(r.length + 1, r.bytes + data.length, id);
    }
  });
  const t0 = process.cpuUsage();
  for (let r = 0; r < ROUNDS; r++) tx.immediate();
  const c = process.cpuUsage(t0);
  db.close();
  fs.rmSync(dir, { recursive: true });
  return (c.user + c.system) / (S * ROUNDS);
}
const modes = {
  base: {},
  cache: { cache: -65536 },
  mmap: { mmap: 268435456 },
  ckpt: { ckpt: 10000 },
  all: { cache: -65536, mmap: 268435456, ckpt: 10000 },
  page1k: { page: 1024 },
  rowid: { rowid: 1 },
  rowid_ord: { rowid: 1, byord: 1 },
  chunk8: { rowid: 1, chunk: 8 },
  chunk4: { rowid: 1, chunk: 4 },
  noget: { noget: 1 },
  nogrow: { nogrow: 1 },
  ins_only: { noget: 1, nogrow: 1 },
};
const pick = process.argv.slice(2);
for (let rep = 0; rep < Number(process.env.REPS || 3); rep++)
  console.log(pick.map((m) => `${m} ${run(modes[m]).toFixed(2)}`).join("  "));
