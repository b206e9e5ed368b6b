import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runConformanceTests } from "@durable-streams/server-conformance-tests";
import { afterAll, beforeAll } from "vitest";
import { type Running, startSluice } from "./helpers.js";

/**
 * The Durable Streams conformance suite (see durable-streams.conformance.test.ts) with the
 * SQLite store underneath: a temp database file, group commit at its default window.
 */
const LONG_POLL_MS = 500;
const options = { baseUrl: "http://127.0.0.1:0/ds", longPollTimeoutMs: LONG_POLL_MS };
const dir = mkdtempSync(join(tmpdir(), "sluice-ds-sqlite-"));
let sluice: Running;

beforeAll(async () => {
  sluice = await startSluice({
    store: `sqlite:${join(dir, "ds.db")}`,
    long_poll: { max_wait_ms: LONG_POLL_MS },
  });
  options.baseUrl = `${sluice.url}/ds`;
});

afterAll(async () => {
  await sluice?.close();
  rmSync(dir, { recursive: true, force: true });
});

runConformanceTests(options);
