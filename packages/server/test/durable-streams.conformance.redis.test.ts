import { runConformanceTests } from "@durable-streams/server-conformance-tests";
import { afterAll, beforeAll } from "vitest";
import { type Running, startSluice } from "./helpers.js";
import { type RedisProc, startRedis } from "./redis-helper.js";

/**
 * The Durable Streams conformance suite (see durable-streams.conformance.test.ts) with the
 * Redis store underneath: its own redis-server on a free port.
 */
const LONG_POLL_MS = 500;
const options = { baseUrl: "http://127.0.0.1:0/ds", longPollTimeoutMs: LONG_POLL_MS };
let redis: RedisProc;
let sluice: Running;

beforeAll(async () => {
  redis = await startRedis();
  sluice = await startSluice({ store: redis.url, long_poll: { max_wait_ms: LONG_POLL_MS } });
  options.baseUrl = `${sluice.url}/ds`;
});

afterAll(async () => {
  await sluice?.close();
  await redis?.close();
});

runConformanceTests(options);
