import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SqliteStore } from "../src/stores/sqlite.js";
import { demoBody, readAllJson, startSluice, startStream } from "./helpers.js";
import { runStoreContract } from "./store-contract.js";

const dir = mkdtempSync(join(tmpdir(), "sluice-sqlite-"));
let n = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

runStoreContract({
  name: "sqlite",
  newStore: ({ clock, maxRecordsPerStream, defaultTtlS }) =>
    new SqliteStore({
      path: join(dir, `contract-${++n}.db`),
      clock,
      sweepIntervalMs: 0,
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
});
