import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "vitest";
import { SqliteStore } from "../src/stores/sqlite.js";
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
