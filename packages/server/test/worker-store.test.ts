import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type WireChange, WorkerStore } from "../src/cluster/worker-store.js";
import { realClock } from "../src/core/clock.js";
import type { RecordInput, StoreNotice } from "../src/stores/store.js";
import { runStoreContract } from "./store-contract.js";

const dir = mkdtempSync(join(tmpdir(), "sluice-worker-store-"));
let n = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

runStoreContract({
  name: "sqlite shared by workers",
  maxStreams: false,
  newStore: ({ clock, maxRecordsPerStream, defaultTtlS }) =>
    new WorkerStore({
      path: join(dir, `contract-${++n}.db`),
      clock,
      sweepIntervalMs: 0,
      publish: () => {},
      limits: {
        ...(maxRecordsPerStream !== undefined ? { maxRecordsPerStream } : {}),
        ...(defaultTtlS !== undefined ? { defaultTtlS } : {}),
      },
    }),
});

/**
 * Two workers' stores on one file, in one process. Each one's notices to the other are held
 * in a queue the test delivers when it chooses (as the primary's relay would, maybe late).
 */
function pair() {
  const path = join(dir, `pair-${++n}.db`);
  const toB: WireChange[][] = [];
  const toA: WireChange[][] = [];
  const a = new WorkerStore({
    path,
    clock: realClock,
    limits: {},
    sweepIntervalMs: 0,
    publish: (c) => toB.push(c),
  });
  const b = new WorkerStore({
    path,
    clock: realClock,
    limits: {},
    sweepIntervalMs: 0,
    publish: (c) => toA.push(c),
  });
  return {
    a,
    b,
    drop() {
      toB.length = 0;
      toA.length = 0;
    },
    deliver() {
      for (const c of toB.splice(0)) b.onRemote(c);
      for (const c of toA.splice(0)) a.onRemote(c);
    },
    async close() {
      await a.close();
      await b.close();
    },
  };
}

const rec = (i: number): RecordInput => ({ type: "text-delta", data: JSON.stringify({ delta: `t${i}` }) });

function collect(notices: StoreNotice[]) {
  return {
    seqs: () => notices.flatMap((x) => x.records.map((r) => r.seq)),
    datas: () => notices.flatMap((x) => x.records.map((r) => r.data)),
    last: () => notices.at(-1),
  };
}

describe("WorkerStore: two workers on one SQLite file", () => {
  it("a subscriber on B hears A's appends, each record once, in order, then the close", async () => {
    const p = pair();
    await p.a.create({ id: "s1", kind: "generation", content_type: "x" });
    await p.a.append("s1", [rec(1), rec(2)]);
    const heard: StoreNotice[] = [];
    p.b.subscribe("s1", (x) => heard.push(x));
    p.deliver(); // the notice of what was there before B subscribed: nothing new for B
    expect(heard).toEqual([]);
    await p.a.append("s1", [rec(3)]);
    await p.a.append("s1", [rec(4), rec(5)]);
    p.deliver();
    p.deliver();
    await p.a.append("s1", [rec(6)], { close: "completed" });
    p.deliver();
    const c = collect(heard);
    expect(c.seqs()).toEqual([3, 4, 5, 6]);
    expect(c.datas()[0]).toBe(rec(3).data);
    expect(c.last()?.status).toBe("completed");
    await p.close();
  });

  it("with writers on both (a Durable Streams log), both sides hear 1..n once, whatever the notice delays", async () => {
    const p = pair();
    await p.a.create({ id: "log", kind: "log", content_type: "text/plain" });
    const onA: StoreNotice[] = [];
    const onB: StoreNotice[] = [];
    p.a.subscribe("log", (x) => onA.push(x));
    p.b.subscribe("log", (x) => onB.push(x));
    await p.a.append("log", [rec(1)]);
    await p.b.append("log", [rec(2), rec(3)]); // A has not heard of B's append: a gap on A's next local notice
    await p.a.append("log", [rec(4)]);
    p.deliver(); // late: everything already delivered locally is not repeated
    await p.b.append("log", [rec(5)]);
    p.deliver();
    await p.a.append("log", [rec(6)], { close: "completed" });
    // A stale notice that says "running" arrives after the close: the stream stays ended.
    p.b.onRemote([["log", 5, "running", []]]);
    p.deliver();
    for (const side of [onA, onB]) {
      expect(collect(side).seqs()).toEqual([1, 2, 3, 4, 5, 6]);
      expect(collect(side).last()?.status).toBe("completed");
    }
    await p.close();
  });

  it("a lost notice is repaired by the next one (the missing records are read from the file)", async () => {
    const p = pair();
    await p.a.create({ id: "lossy", kind: "generation", content_type: "x" });
    const heard: StoreNotice[] = [];
    p.b.subscribe("lossy", (x) => heard.push(x));
    await p.a.append("lossy", [rec(1), rec(2)]);
    p.drop();
    await p.a.append("lossy", [rec(3)]);
    p.deliver();
    expect(collect(heard).seqs()).toEqual([1, 2, 3]);
    expect(collect(heard).datas()).toEqual([rec(1).data, rec(2).data, rec(3).data]);
    await p.close();
  });

  it("a delete on A reaches B's subscribers", async () => {
    const p = pair();
    await p.a.create({ id: "gone", kind: "log", content_type: "text/plain" });
    const heard: StoreNotice[] = [];
    p.b.subscribe("gone", (x) => heard.push(x));
    expect(await p.a.delete("gone")).toBe(true);
    p.deliver();
    expect(heard.at(-1)?.deleted).toBe(true);
    await p.close();
  });
});
