import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { SqliteStore } from "../src/stores/sqlite.js";
import { demoBody, readAllJson, startSluice, startStream } from "./helpers.js";
import { ManualClock, runStoreContract } from "./store-contract.js";

const dir = mkdtempSync(join(tmpdir(), "sluice-sqlite-"));
let n = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

runStoreContract({
  name: "sqlite",
  newStore: ({ clock, maxRecordsPerStream, defaultTtlS, maxStreams }) =>
    new SqliteStore({
      path: join(dir, `contract-${++n}.db`),
      clock,
      sweepIntervalMs: 0,
      ...(maxStreams !== undefined ? { maxStreams } : {}),
      limits: {
        ...(maxRecordsPerStream !== undefined ? { maxRecordsPerStream } : {}),
        ...(defaultTtlS !== undefined ? { defaultTtlS } : {}),
      },
    }),
});

describe("sqlite store at runtime", () => {
  it("refuses a second store on the same file while the first is open, and takes over after it closes", async () => {
    const path = join(dir, "locked.db");
    const first = new SqliteStore({ path, sweepIntervalMs: 0 });
    expect(() => new SqliteStore({ path, sweepIntervalMs: 0 })).toThrow(/already open/);
    await first.close();
    const second = new SqliteStore({ path, sweepIntervalMs: 0 });
    await second.close();
  });

  it("opens a database file made before records had an encoding (adds the column, keeps the records)", async () => {
    const path = join(dir, "old-schema.db");
    const old = new Database(path);
    old.exec(`
      CREATE TABLE streams (ord INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        content_type TEXT NOT NULL, status TEXT NOT NULL, tenant TEXT, model TEXT, metadata TEXT NOT NULL,
        created_ms INTEGER NOT NULL, ended_ms INTEGER, expires_ms INTEGER, length INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0);
      CREATE TABLE events (stream TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT, data TEXT NOT NULL,
        PRIMARY KEY (stream, seq)) WITHOUT ROWID;
      INSERT INTO streams (id, kind, content_type, status, metadata, created_ms, length, bytes)
        VALUES ('st_old', 'log', 'text/plain', 'running', '{}', ${Date.now()}, 1, 3);
      INSERT INTO events (stream, seq, type, data) VALUES ('st_old', 1, NULL, 'old');
    `);
    old.close();
    for (let round = 0; round < 2; round++) {
      // Twice: the second open finds the column already there.
      const store = new SqliteStore({ path, sweepIntervalMs: 0 });
      try {
        if (round === 0) await store.append("st_old", [{ data: "AP8=", encoding: "base64" }]);
        const page = await store.read("st_old", 0, 10);
        expect(page.records).toEqual([
          { seq: 1, offset: "0000000000000001", data: "old" },
          { seq: 2, offset: "0000000000000002", data: "AP8=", encoding: "base64" },
        ]);
      } finally {
        await store.close();
      }
    }
  });

  it("checks each conditional append of one group commit against the length at its turn; only a conflicting one fails", async () => {
    const store = new SqliteStore({ path: join(dir, "cas.db"), sweepIntervalMs: 0, commitIntervalMs: 20 });
    try {
      const { id } = await store.create({ id: "st_cas", kind: "log", content_type: "text/plain" });
      const before = store.commits;
      // Queued in one turn: one transaction.
      const results = await Promise.allSettled([
        store.append(id, [{ data: "a" }], { if_length: 0 }),
        store.append(id, [{ data: "b" }], { if_length: 0, metadata: { lost: true } }),
        store.append(id, [{ data: "c" }, { data: "d" }], { if_length: 1 }),
        store.append(id, [{ data: "e" }]),
        store.append(id, [{ data: "f" }], { if_length: 3 }),
        store.append(id, [{ data: "g" }], { if_length: 4 }),
      ]);
      expect(store.commits).toBe(before + 1);
      expect(results.map((r) => r.status)).toEqual([
        "fulfilled",
        "rejected",
        "fulfilled",
        "fulfilled",
        "rejected",
        "fulfilled",
      ]);
      expect((results[1] as PromiseRejectedResult).reason.code).toBe("append_conflict");
      expect((results[4] as PromiseRejectedResult).reason.code).toBe("append_conflict");
      expect((await store.read(id, 0, 10)).records.map((r) => r.data)).toEqual(["a", "c", "d", "e", "g"]);
      expect((await store.info(id))?.metadata.lost).toBeUndefined();
    } finally {
      await store.close();
    }
  });

  it("a sweep leaves alone a stream re-created over an expired id meanwhile", async () => {
    const clock = new ManualClock();
    const store = new SqliteStore({ path: join(dir, "sweep.db"), clock, sweepIntervalMs: 0 });
    try {
      for (const id of ["st_a", "st_b", "st_c"])
        await store.create({ id, kind: "log", content_type: "text/plain", ttl_s: 60 });
      for (const id of ["st_a", "st_b", "st_c"])
        await store.append(id, [{ data: id }], { close: "completed" });
      clock.t += 61_000;
      // Queued ahead of the sweep's deletes, in the same turn as its query (which still sees st_a expired).
      const recreated = store.create({ id: "st_a", kind: "log", content_type: "text/plain" });
      expect(await store.sweep()).toBe(2);
      await recreated;
      expect((await store.info("st_a"))?.status).toBe("running");
      await store.create({ id: "st_d", kind: "log", content_type: "text/plain", ttl_s: 60 });
      await store.append("st_d", [], { close: "completed" });
      clock.t += 61_000;
      // An expired stream cannot be revived by an update: it is swept.
      const updated = store.update("st_d", { expires_at: null });
      expect(await store.sweep()).toBe(1);
      expect(await updated).toBeUndefined();
      expect(await store.info("st_d")).toBeUndefined();
    } finally {
      await store.close();
    }
  });

  it("group-commits: a fast generation's events share transactions", async () => {
    const store = new SqliteStore({ path: join(dir, "batch.db"), sweepIntervalMs: 0 });
    const s = await startSluice({}, store);
    try {
      const { id } = await startStream(s.url, demoBody({ length: 300, tokens_per_s: 3000 }));
      await s.server.runner.settled(id);
      const events = await readAllJson(s.url, id);
      expect(events.length).toBeGreaterThan(300);
      expect(store.commits).toBeLessThan(events.length / 3);
    } finally {
      await s.close();
    }
  });

  it("retention gives the space back: churning many streams with a short TTL, the file does not grow", async () => {
    const clock = new ManualClock();
    const path = join(dir, "churn.db");
    const store = new SqliteStore({ path, clock, sweepIntervalMs: 0, limits: { defaultTtlS: 5 } });
    const onDisk = () => statSync(path).size + (existsSync(`${path}-wal`) ? statSync(`${path}-wal`).size : 0);
    const data = JSON.stringify({ type: "text-delta", delta: "y".repeat(400) });
    const rounds = 12;
    const perRound = 60;
    const sizes: number[] = [];
    let written = 0;
    try {
      for (let round = 0; round < rounds; round++) {
        await Promise.all(
          Array.from({ length: perRound }, async (_, i) => {
            const { id } = await store.create({
              id: `st_churn_${round}_${i}`,
              kind: "generation",
              content_type: "application/vnd.sluice.events+json",
            });
            await store.append(
              id,
              Array.from({ length: 20 }, () => ({ type: "text-delta", data })),
            );
            await store.append(id, [{ type: "finish", data: "{}" }], { close: "completed" });
          }),
        );
        written += perRound * 20 * data.length;
        clock.t += 6_000;
        expect(await store.sweep()).toBe(perRound);
        sizes.push(onDisk());
        // Every page the removed streams used went back to the file system.
        expect(store.pages().free).toBe(0);
      }
      // What the churn wrote is many times the file: without retention and vacuum the file would
      // hold all of it (each round ~500 KB of text).
      expect(written).toBeGreaterThan(5_000_000);
      const first = sizes[0] as number;
      // Stable from the first round on (a few pages of slack for b-tree layout).
      for (const size of sizes) expect(size).toBeLessThanOrEqual(first + 16 * 4096);
      expect(Math.max(...sizes)).toBeLessThan(written / 10);
      expect((await store.list({ limit: 10 })).length).toBe(0);
    } finally {
      await store.close();
    }
  });

  it("a file made before auto_vacuum converts with the SQL operations.md gives, then shrinks after sweeps", async () => {
    const clock = new ManualClock();
    const path = join(dir, "old-vacuum.db");
    // An old-style file: tables made without auto_vacuum.
    const old = new Database(path);
    old.exec("CREATE TABLE other (x INTEGER)");
    expect(old.pragma("auto_vacuum", { simple: true })).toBe(0);
    // docs/operations.md, "One node: SQLite": run once while the server is stopped.
    old.exec("PRAGMA auto_vacuum=INCREMENTAL; VACUUM;");
    expect(old.pragma("auto_vacuum", { simple: true })).toBe(2);
    old.close();
    const store = new SqliteStore({ path, clock, sweepIntervalMs: 0, limits: { defaultTtlS: 1 } });
    try {
      const data = "z".repeat(4000);
      for (let i = 0; i < 50; i++) {
        const { id } = await store.create({ id: `st_old_${i}`, kind: "log", content_type: "text/plain" });
        await store.append(id, [{ data }, { data }], { close: "completed" });
      }
      const full = store.pages().total;
      clock.t += 2000;
      expect(await store.sweep()).toBe(50);
      expect(store.pages().free).toBe(0);
      expect(store.pages().total).toBeLessThan(full / 4);
    } finally {
      await store.close();
    }
  });
});
