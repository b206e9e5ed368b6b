import { MemoryStore } from "../src/stores/memory.js";
import { runStoreContract } from "./store-contract.js";

runStoreContract({
  name: "memory",
  newStore: ({ clock, maxRecordsPerStream, defaultTtlS }) =>
    new MemoryStore({
      clock,
      sweepIntervalMs: 0,
      limits: {
        ...(maxRecordsPerStream !== undefined ? { maxRecordsPerStream } : {}),
        ...(defaultTtlS !== undefined ? { defaultTtlS } : {}),
      },
    }),
});
