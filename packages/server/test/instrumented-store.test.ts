import { afterAll } from "vitest";
import { Metrics } from "../src/observability/metrics.js";
import { MemoryStore } from "../src/stores/memory.js";
import { runStoreContract } from "./store-contract.js";

// The latency-timing wrapper must be transparent: the store contract passes through it.
const metrics = new Metrics();
afterAll(() => metrics.close());

runStoreContract({
  name: "memory, instrumented",
  newStore: ({ clock, maxRecordsPerStream, defaultTtlS, maxStreams }) =>
    metrics.instrumentStore(
      new MemoryStore({
        clock,
        ...(maxStreams !== undefined ? { maxStreams } : {}),
        sweepIntervalMs: 0,
        limits: {
          ...(maxRecordsPerStream !== undefined ? { maxRecordsPerStream } : {}),
          ...(defaultTtlS !== undefined ? { defaultTtlS } : {}),
        },
      }),
    ),
});
