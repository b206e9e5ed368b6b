import { formatOffset } from "@sluice/protocol";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryStore } from "../src/stores/memory.js";
import { runStoreContract } from "./store-contract.js";

runStoreContract({
  name: "memory",
  newStore: ({ clock, maxRecordsPerStream, defaultTtlS, maxStreams }) =>
    new MemoryStore({
      clock,
      ...(maxStreams !== undefined ? { maxStreams } : {}),
      sweepIntervalMs: 0,
      limits: {
        ...(maxRecordsPerStream !== undefined ? { maxRecordsPerStream } : {}),
        ...(defaultTtlS !== undefined ? { defaultTtlS } : {}),
      },
    }),
});

describe("memory store: ended streams are packed", () => {
  const recArb = fc.record(
    {
      data: fc.string({ unit: "grapheme", maxLength: 30 }),
      type: fc.constantFrom("text-delta", "start", "finish", "x", "ü-type"),
      encoding: fc.constant("base64" as const),
    },
    { requiredKeys: ["data"] },
  );

  it("reads back every record exactly (data, type, encoding, offsets) at any page boundary, before and after the close", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(recArb, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 12 }),
        fc.nat(60),
        fc.integer({ min: 1, max: 70 }),
        async (batches, after, limit) => {
          const store = new MemoryStore({ sweepIntervalMs: 0 });
          await store.create({ id: "p", kind: "log", content_type: "text/plain" });
          for (const b of batches.slice(0, -1)) await store.append("p", b);
          const running = await store.read("p", 0, 10_000);
          await store.append("p", batches.at(-1) ?? [], { close: "completed" });
          const all = await store.read("p", 0, 10_000);
          const inputs = batches.flat();
          expect(all.records).toHaveLength(inputs.length);
          all.records.forEach((r, i) => {
            const want: Record<string, unknown> = {
              seq: i + 1,
              offset: formatOffset(i + 1),
              data: inputs[i]?.data,
            };
            if (inputs[i]?.type !== undefined) want.type = inputs[i]?.type;
            if (inputs[i]?.encoding !== undefined) want.encoding = inputs[i]?.encoding;
            expect(r).toEqual(want);
          });
          // What was read while running is what is read after packing.
          expect(all.records.slice(0, running.records.length)).toEqual(running.records);
          const from = Math.min(after, inputs.length);
          const page = await store.read("p", from, limit);
          expect(page.records).toEqual(all.records.slice(from, from + limit));
          expect(page.up_to_date).toBe(from + limit >= inputs.length);
          expect(page.next_offset).toBe(formatOffset(Math.min(inputs.length, from + limit)));
        },
      ),
      { numRuns: 150 },
    );
  });

  it("keeps types exact past 256 and past 65,536 distinct types", async () => {
    for (const n of [300, 70_000]) {
      const store = new MemoryStore({ sweepIntervalMs: 0 });
      await store.create({ id: "t", kind: "log", content_type: "text/plain" });
      const recs = Array.from({ length: n }, (_, i) => ({ data: `d${i}`, type: `t${i}` }));
      await store.append("t", recs, {});
      await store.append("t", [], { close: "completed" });
      const page = await store.read("t", n - 5, 10);
      expect(page.records.map((r) => [r.data, r.type])).toEqual(
        recs.slice(n - 5).map((r) => [r.data, r.type]),
      );
      const first = await store.read("t", 0, 3);
      expect(first.records.map((r) => r.type)).toEqual(["t0", "t1", "t2"]);
    }
  });
});
