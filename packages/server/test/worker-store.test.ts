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

/**
 * Two stores with interest routing, the primary's part played by the test: B's follow calls
 * wait in `asks` until `register()` tells A (setInterest) and answers B, as the primary does.
 */
function routed() {
  const path = join(dir, `routed-${++n}.db`);
  const toB: WireChange[][] = [];
  const asks: { id: string; on: boolean; answer: () => void }[] = [];
  const a = new WorkerStore({
    path,
    clock: realClock,
    limits: {},
    sweepIntervalMs: 0,
    publish: (c) => toB.push(c),
    follow: () => {},
  });
  const b = new WorkerStore({
    path,
    clock: realClock,
    limits: {},
    sweepIntervalMs: 0,
    publish: () => {},
    follow: (id, on) =>
      on
        ? new Promise<void>((answer) => asks.push({ id, on, answer }))
        : void asks.push({ id, on, answer: () => {} }),
  });
  return {
    a,
    b,
    toB,
    asks,
    /** The primary registers B's pending follows and unfollows (telling A), then answers B. */
    async register() {
      for (const ask of asks.splice(0)) {
        a.setInterest(ask.id, ask.on);
        ask.answer();
      }
      await new Promise((r) => setImmediate(r));
    },
    deliver() {
      for (const c of toB.splice(0)) b.onRemote(c);
    },
    async close() {
      await a.close();
      await b.close();
    },
  };
}

describe("WorkerStore: interest routing (notices only to the workers that follow the stream)", () => {
  it("publishes nothing for a stream no other worker follows", async () => {
    const r = routed();
    await r.a.create({ id: "own", kind: "generation", content_type: "x" });
    const local: StoreNotice[] = [];
    r.a.subscribe("own", (x) => local.push(x));
    await r.a.append("own", [rec(1), rec(2)]);
    await r.a.append("own", [rec(3)], { close: "completed" });
    expect(collect(local).seqs()).toEqual([1, 2, 3]);
    expect(r.toB).toEqual([]);
    await r.close();
  });

  it("a reader attaching on B mid-stream gets every record once, even those A committed before it heard of B", async () => {
    const r = routed();
    await r.a.create({ id: "mid", kind: "generation", content_type: "x" });
    await r.a.append("mid", [rec(1), rec(2), rec(3)]);
    const heard: StoreNotice[] = [];
    r.b.subscribe("mid", (x) => heard.push(x)); // starts after 3
    expect(r.asks.map((x) => [x.id, x.on])).toEqual([["mid", true]]);
    await r.a.append("mid", [rec(4)]); // A does not know yet: not published
    expect(r.toB).toEqual([]);
    await r.register(); // A publishes its head (4); B reads what it missed from the file
    expect(collect(heard).seqs()).toEqual([4]);
    await r.a.append("mid", [rec(5), rec(6)]);
    r.deliver(); // the head notice (nothing new), then 5 and 6 with their records
    await r.a.append("mid", [rec(7)], { close: "completed" });
    r.deliver();
    expect(collect(heard).seqs()).toEqual([4, 5, 6, 7]);
    expect(collect(heard).datas()).toEqual([4, 5, 6, 7].map((i) => rec(i).data));
    expect(collect(heard).last()?.status).toBe("completed");
    await r.close();
  });

  it("detach and reattach: B stops and resumes following; A publishes only while B follows", async () => {
    const r = routed();
    await r.a.create({ id: "re", kind: "generation", content_type: "x" });
    const first: StoreNotice[] = [];
    const off = r.b.subscribe("re", (x) => first.push(x));
    await r.register();
    await r.a.append("re", [rec(1)]);
    r.deliver();
    expect(collect(first).seqs()).toEqual([1]);
    off(); // B's last reader leaves: B unfollows
    expect(r.asks.map((x) => [x.id, x.on])).toEqual([["re", false]]);
    await r.register();
    await r.a.append("re", [rec(2)]);
    expect(r.toB).toEqual([]);
    // Reattached (a resume from offset 2): the new follower starts at the head, 2.
    const second: StoreNotice[] = [];
    r.b.subscribe("re", (x) => second.push(x));
    await r.a.append("re", [rec(3)]); // before A hears of B again
    await r.register();
    await r.a.append("re", [rec(4)], { close: "completed" });
    r.deliver();
    expect(collect(first).seqs()).toEqual([1]);
    expect(collect(second).seqs()).toEqual([3, 4]);
    expect(collect(second).last()?.status).toBe("completed");
    await r.close();
  });

  it("a delete reaches B's follower, which then unfollows", async () => {
    const r = routed();
    await r.a.create({ id: "del", kind: "log", content_type: "text/plain" });
    const heard: StoreNotice[] = [];
    r.b.subscribe("del", (x) => heard.push(x));
    await r.register();
    expect(await r.a.delete("del")).toBe(true);
    r.deliver();
    expect(heard.at(-1)?.deleted).toBe(true);
    expect(r.asks.map((x) => [x.id, x.on])).toEqual([["del", false]]);
    await r.close();
  });
});
