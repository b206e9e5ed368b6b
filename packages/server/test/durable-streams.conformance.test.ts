import { runConformanceTests } from "@durable-streams/server-conformance-tests";
import { afterAll, beforeAll } from "vitest";
import { type Running, startSluice } from "./helpers.js";

/**
 * The published Durable Streams conformance suite (@durable-streams/server-conformance-tests)
 * against a real Sluice server, protocol mounted under /ds. Subscriptions (opt-in webhook
 * tests) stay off. The long-poll timeout is short so the timeout tests finish quickly.
 */
const LONG_POLL_MS = 500;
const options = { baseUrl: "http://127.0.0.1:0/ds", longPollTimeoutMs: LONG_POLL_MS };
let sluice: Running;

beforeAll(async () => {
  sluice = await startSluice({ long_poll: { max_wait_ms: LONG_POLL_MS } });
  // The suite reads baseUrl lazily, so the real port can be filled in here.
  options.baseUrl = `${sluice.url}/ds`;
});

afterAll(async () => {
  await sluice?.close();
});

runConformanceTests(options);
