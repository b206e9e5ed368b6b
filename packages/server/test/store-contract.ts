import { formatOffset, isOffset, SluiceError } from "@sluice/protocol";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import type { Clock } from "../src/core/clock.js";
import type { CreateStream, RecordInput, Store, StoredRecord, StoreNotice } from "../src/stores/store.js";

/** A clock tests move by hand (for expiry). */
export class ManualClock implements Clock {
  constructor(public t = Date.UTC(2026, 0, 1)) {}
  now() {
    return this.t;
  }
  async sleep(ms: number) {
    this.t += ms;
  }
}

export interface ContractOptions {
  name: string;
  /** A fresh, empty store. Limits given must be honored. */
  newStore(opts: {
    clock: Clock;
    maxRecordsPerStream?: number;
    defaultTtlS?: number;
    /** `limits.max_streams`. */
    maxStreams?: number;
  }): Promise<Store> | Store;
  /**
   * false: the store does not enforce `limits.max_streams` itself (the worker store: several
   * processes share the file, and docs/operations.md says max_streams does not apply there).
   */
  maxStreams?: boolean;
}

let counter = 0;
function sid(): string {
  counter++;
  return `st_contract_${process.pid}_${counter}_${Math.random().toString(36).slice(2, 8)}`;
}

function gen(id = sid(), extra: Partial<CreateStream> = {}): CreateStream {
  return { id, kind: "generation", content_type: "application/vnd.sluice.events+json", ...extra };
}

function recs(n: number, prefix = "r"): RecordInput[] {
  return Array.from({ length: n }, (_, i) => ({
    type: "text-delta",
    data: JSON.stringify({ type: "text-delta", delta: `${prefix}${i}` }),
  }));
}

async function expectCode(p: Promise<unknown>, code: string) {
  await expect(p).rejects.toSatisfy((e: unknown) => e instanceof SluiceError && e.code === code);
}

/** The one contract every Store implementation passes. */
export function runStoreContract(opts: ContractOptions): void {
  describe(`store contract: ${opts.name}`, () => {
    const open: Store[] = [];
    const clock = new ManualClock();
    async function make(o: { maxRecordsPerStream?: number; defaultTtlS?: number; maxStreams?: number } = {}) {
      const s = await opts.newStore({ clock, ...o });
      open.push(s);
      return s;
    }
    afterEach(async () => {
      for (const s of open.splice(0)) await s.close();
    });

    it("creates a stream and reports its info", async () => {
      const store = await make();
      const c = gen(sid(), { tenant: "t1", model: "demo", metadata: { a: 1 } });
      const info = await store.create(c);
      expect(info).toMatchObject({
        id: c.id,
        status: "running",
        length: 0,
        tenant: "t1",
        model: "demo",
        bytes: 0,
      });
      expect(info.next_offset).toBe(formatOffset(0));
      expect((await store.info(c.id))?.metadata).toMatchObject({ a: 1 });
      expect(await store.info("st_nope")).toBeUndefined();
      await expectCode(store.create(c), "stream_exists");
    });

    it("mints fixed-width, strictly increasing offsets and reads after any of them", async () => {
      const store = await make();
      const { id } = await store.create(gen());
      const a = await store.append(id, recs(3));
      const b = await store.append(id, recs(2, "s"));
      expect(a.next_offset < b.next_offset).toBe(true);
      const all = await store.read(id, 0, 100);
      expect(all.records.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
      for (const r of all.records) expect(isOffset(r.offset)).toBe(true);
      const offs = all.records.map((r) => r.offset);
      expect([...offs].sort()).toEqual(offs);
      expect(new Set(offs).size).toBe(5);
      expect(all.up_to_date).toBe(true);
      expect(all.next_offset).toBe(b.next_offset);
      const mid = await store.read(id, 2, 2);
      expect(mid.records.map((r) => JSON.parse(r.data).delta)).toEqual(["r2", "s0"]);
      expect(mid.up_to_date).toBe(false);
      expect(mid.next_offset).toBe(formatOffset(4));
      const end = await store.read(id, 5, 10);
      expect(end.records).toEqual([]);
      expect(end.up_to_date).toBe(true);
      expect(end.next_offset).toBe(formatOffset(5));
      expect(all.records[0]?.type).toBe("text-delta");
    });

    it("refuses reads past the end and unknown streams", async () => {
      const store = await make();
      const { id } = await store.create(gen());
      await store.append(id, recs(2));
      await expectCode(store.read(id, 3, 10), "offset_out_of_range");
      await expectCode(store.read("st_missing", 0, 10), "stream_not_found");
      await expectCode(store.append("st_missing", recs(1)), "stream_not_found");
    });

    it("closes atomically with the last records and refuses appends after", async () => {
      const store = await make();
      const { id } = await store.create(gen());
      await store.append(id, recs(1));
      const notices: StoreNotice[] = [];
      store.subscribe(id, (n) => notices.push(n));
      const finish = [{ type: "finish", data: '{"type":"finish","reason":"stop"}' }];
      // A closing append that is refused changes nothing: no record, no status, no notice.
      await expectCode(store.append(id, finish, { close: "completed", if_length: 5 }), "append_conflict");
      expect(await store.info(id)).toMatchObject({ status: "running", length: 1 });
      // Reads racing the close see the last record and the end together or neither.
      const racing = Array.from({ length: 10 }, () => [store.read(id, 0, 10), store.info(id)] as const);
      const r = await store.append(id, finish, {
        close: "completed",
        metadata: { usage: { output_tokens: 1 } },
      });
      for (const [read, inf] of racing) {
        const page = await read;
        expect(page.records.length === 2).toBe(page.status === "completed");
        const i = await inf;
        expect(i?.length === 2).toBe(i?.status === "completed");
      }
      expect(r.status).toBe("completed");
      // Subscribers hear the last record and the end in one notice.
      // (A late notice of the record appended before subscribing is not what this checks.)
      await waitFor(() => notices.some((n) => n.status !== "running"));
      const closing = notices.filter((n) => n.status !== "running" || n.records.some((x) => x.seq === 2));
      expect(closing.map((n) => ({ seqs: n.records.map((x) => x.seq), status: n.status }))).toEqual([
        { seqs: [2], status: "completed" },
      ]);
      const info = await store.info(id);
      expect(info).toMatchObject({ status: "completed", length: 2 });
      expect(info?.metadata).toMatchObject({ usage: { output_tokens: 1 } });
      expect(info?.ended_at).toBeTruthy();
      expect(info?.expires_at).toBeTruthy();
      await expectCode(store.append(id, recs(1)), "stream_closed");
      await expectCode(store.append(id, [], { close: "failed" }), "stream_closed");
      const page = await store.read(id, 0, 10);
      expect(page.status).toBe("completed");
      expect(page.records).toHaveLength(2);
    });

    it("notifies subscribers of appends, closes and deletes, in order", async () => {
      const store = await make();
      const { id } = await store.create(gen());
      const notices: StoreNotice[] = [];
      const unsub = store.subscribe(id, (n) => notices.push(n));
      await store.append(id, recs(2));
      await store.append(id, recs(1, "x"), { close: "cancelled" });
      await waitFor(() => notices.length >= 2);
      expect(notices.flatMap((n) => n.records.map((r) => r.seq))).toEqual([1, 2, 3]);
      expect(notices.at(-1)?.status).toBe("cancelled");
      unsub();
      const other = await store.create(gen());
      const seen: StoreNotice[] = [];
      store.subscribe(other.id, (n) => seen.push(n));
      await store.delete(other.id);
      await waitFor(() => seen.length >= 1);
      expect(seen.at(-1)?.deleted).toBe(true);
    });

    it("deletes streams", async () => {
      const store = await make();
      const { id } = await store.create(gen());
      await store.append(id, recs(1));
      expect(await store.delete(id)).toBe(true);
      expect(await store.info(id)).toBeUndefined();
      await expectCode(store.read(id, 0, 1), "stream_not_found");
      expect(await store.delete(id)).toBe(false);
    });

    it("lists newest first, by tenant and status", async () => {
      const store = await make();
      const a = await store.create(gen(sid(), { tenant: "ta" }));
      const b = await store.create(gen(sid(), { tenant: "tb" }));
      const c = await store.create(gen(sid(), { tenant: "ta" }));
      await store.append(c.id, [], { close: "completed" });
      const ta = await store.list({ tenant: "ta", limit: 10 });
      expect(ta.map((s) => s.id)).toEqual([c.id, a.id]);
      const running = await store.list({ tenant: "ta", status: "running", limit: 10 });
      expect(running.map((s) => s.id)).toEqual([a.id]);
      expect((await store.list({ tenant: "tb", limit: 10 })).map((s) => s.id)).toEqual([b.id]);
      expect(await store.list({ tenant: "ta", limit: 1 })).toHaveLength(1);
    });

    it("expires ended streams after their TTL", async () => {
      const store = await make({ defaultTtlS: 60 });
      const ended = await store.create(gen());
      const running = await store.create(gen());
      const custom = await store.create(gen(sid(), { ttl_s: 3600 }));
      await store.append(ended.id, recs(1), { close: "completed" });
      await store.append(custom.id, recs(1), { close: "completed" });
      clock.t += 59_000;
      expect(await store.info(ended.id)).toBeDefined();
      clock.t += 2_000;
      expect(await store.info(ended.id)).toBeUndefined();
      await store.sweep();
      await expectCode(store.read(ended.id, 0, 1), "stream_not_found");
      expect(await store.info(running.id)).toBeDefined();
      expect(await store.info(custom.id)).toBeDefined();
    });

    it("maps a chat to its stream; a new stream replaces it; the entry goes with its stream", async () => {
      const store = await make({ defaultTtlS: 60 });
      const key = JSON.stringify(["tenant", `chat-${sid()}`]);
      expect(await store.getChat(key)).toBeUndefined();
      const a = await store.create(gen());
      await store.setChat(key, a.id);
      expect(await store.getChat(key)).toBe(a.id);
      // Chats are per key: another tenant's same chat id is another entry.
      const other = JSON.stringify(["other", JSON.parse(key)[1]]);
      expect(await store.getChat(other)).toBeUndefined();
      const b = await store.create(gen());
      await store.setChat(key, b.id);
      expect(await store.getChat(key)).toBe(b.id);
      // Deleted stream: the chat names nothing.
      await store.delete(b.id);
      expect(await store.getChat(key)).toBeUndefined();
      // Expired stream (ended, then past its TTL): nothing either, before and after the sweep.
      await store.setChat(key, a.id);
      await store.append(a.id, recs(1), { close: "completed" });
      expect(await store.getChat(key)).toBe(a.id);
      clock.t += 61_000;
      expect(await store.getChat(key)).toBeUndefined();
      await store.sweep();
      expect(await store.getChat(key)).toBeUndefined();
    });

    it.skipIf(opts.maxStreams === false)(
      "holds at most maxStreams: the ended stream that expires first makes room; only running ones → capacity_exceeded",
      async () => {
        const store = await make({ maxStreams: 3, defaultTtlS: 600 });
        const a = await store.create(gen());
        const b = await store.create(gen());
        const c = await store.create(gen());
        await store.append(a.id, recs(2), { close: "completed" });
        clock.t += 1000;
        await store.append(c.id, recs(1), { close: "completed" });
        const heard: StoreNotice[] = [];
        store.subscribe(a.id, (n) => heard.push(n));
        const d = await store.create(gen());
        expect(await store.info(a.id)).toBeUndefined();
        await waitFor(() => heard.some((n) => n.deleted));
        expect(await store.info(b.id)).toBeDefined();
        expect(await store.info(c.id)).toBeDefined();
        const e = await store.create(gen());
        expect(await store.info(c.id)).toBeUndefined();
        // b, d and e all run: nothing can make room.
        await expectCode(store.create(gen()), "capacity_exceeded");
        await store.append(e.id, [], { close: "cancelled" });
        await store.create(gen());
        expect(await store.info(e.id)).toBeUndefined();
        expect((await store.list({ limit: 10 })).map((x) => x.id).sort()).toHaveLength(3);
        expect(await store.info(d.id)).toBeDefined();
      },
    );

    it("keeps binary records exactly (encoding base64) and text records without an encoding", async () => {
      const store = await make();
      const { id } = await store.create(
        gen(sid(), { kind: "log", content_type: "application/octet-stream" }),
      );
      const bytes = Buffer.from([0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 0x0a, 0x0d]);
      const notices: StoreNotice[] = [];
      const unsub = store.subscribe(id, (n) => notices.push(n));
      await store.append(id, [
        { data: bytes.toString("base64"), encoding: "base64" },
        { data: "plain text ✓" },
      ]);
      // A store may notify after append resolves (Redis does): wait for it before unsubscribing.
      await waitFor(() => notices.length > 0);
      unsub();
      const page = await store.read(id, 0, 10);
      expect(page.records.map((r) => r.encoding)).toEqual(["base64", undefined]);
      expect("encoding" in (page.records[1] as StoredRecord)).toBe(false);
      expect(Buffer.from((page.records[0] as StoredRecord).data, "base64")).toEqual(bytes);
      expect(page.records[1]?.data).toBe("plain text ✓");
      expect(notices[0]?.records.map((r) => r.encoding)).toEqual(["base64", undefined]);
    });

    it("updates metadata and expiry in any status, without appending", async () => {
      const store = await make();
      const { id } = await store.create(gen(sid(), { metadata: { keep: 1, a: { x: 1 } } }));
      const notices: StoreNotice[] = [];
      const unsub = store.subscribe(id, (n) => notices.push(n));
      const u1 = await store.update(id, { metadata: { a: { y: 2 }, b: "new" } });
      expect(u1?.metadata).toEqual({ keep: 1, a: { y: 2 }, b: "new" });
      expect(u1?.length).toBe(0);
      await store.append(id, recs(1), { close: "completed" });
      // Ended streams take metadata changes and a new expiry too.
      const later = new Date(clock.now() + 3_600_000).toISOString();
      const u2 = await store.update(id, { metadata: { c: true }, expires_at: later });
      expect(u2?.status).toBe("completed");
      expect(u2?.metadata).toMatchObject({ keep: 1, b: "new", c: true });
      expect(u2?.expires_at).toBe(later);
      expect((await store.info(id))?.expires_at).toBe(later);
      expect(notices).toHaveLength(1); // the closing append only: updates do not notify
      unsub();
      // An expiry on a running stream: gone once it passes.
      const { id: id2 } = await store.create(gen());
      await store.append(id2, recs(2));
      await store.update(id2, { expires_at: new Date(clock.now() + 5_000).toISOString() });
      await clock.sleep(4_000);
      expect(await store.info(id2)).toBeDefined();
      // Clearing the expiry keeps it forever.
      await store.update(id2, { expires_at: null });
      await clock.sleep(10_000);
      expect((await store.info(id2))?.expires_at).toBeUndefined();
      await store.update(id2, { expires_at: new Date(clock.now() + 1_000).toISOString() });
      await clock.sleep(1_001);
      expect(await store.info(id2)).toBeUndefined();
      await expectCode(store.read(id2, 0, 10), "stream_not_found");
      // An expired stream's id is free again (even before a sweep).
      const again = await store.create(gen(id2));
      expect(again.length).toBe(0);
      await store.delete(id2);
      await store.sweep();
      expect(await store.update(id2, { metadata: { z: 1 } })).toBeUndefined();
      expect(await store.update("st_missing", { metadata: { z: 1 } })).toBeUndefined();
    });

    it("appends with if_length only when the length matches (compare-and-append)", async () => {
      const store = await make();
      const { id } = await store.create(gen());
      await store.append(id, recs(2), { if_length: 0 });
      await expectCode(
        store.append(id, recs(1), { if_length: 0, metadata: { lost: true } }),
        "append_conflict",
      );
      await expectCode(store.append(id, [], { if_length: 1, close: "completed" }), "append_conflict");
      const info = await store.info(id);
      expect(info).toMatchObject({ length: 2, status: "running" });
      expect(info?.metadata.lost).toBeUndefined();
      const r = await store.append(id, recs(1), { if_length: 2, metadata: { won: true } });
      expect(r.length).toBe(3);
      expect((await store.info(id))?.metadata.won).toBe(true);
      // Of two appends decided on the same read, exactly one lands.
      const results = await Promise.allSettled([
        store.append(id, recs(1, "a"), { if_length: 3 }),
        store.append(id, recs(1, "b"), { if_length: 3 }),
      ]);
      expect(results.filter((x) => x.status === "fulfilled")).toHaveLength(1);
      expect((await store.info(id))?.length).toBe(4);
    });

    it("bounds the records of one stream but still accepts the terminal event", async () => {
      const store = await make({ maxRecordsPerStream: 5 });
      const { id } = await store.create(gen());
      await store.append(id, recs(5));
      await expectCode(store.append(id, recs(1)), "stream_too_large");
      const r = await store.append(id, [{ type: "error", data: '{"type":"error"}' }], { close: "failed" });
      expect(r.status).toBe("failed");
      expect((await store.read(id, 0, 100)).records).toHaveLength(6);
    });

    it("property: any appends, any resume points, any page sizes → nothing lost, duplicated or reordered", async () => {
      const store = await make();
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 25 }),
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 9 })), { minLength: 1, maxLength: 6 }),
          async (batches, resumes) => {
            const { id } = await store.create(gen());
            const expected: string[] = [];
            let n = 0;
            for (const size of batches) {
              const batch = Array.from({ length: size }, () => {
                const d = `e${n++}`;
                expected.push(d);
                return { type: "data", data: JSON.stringify(d) };
              });
              await store.append(id, batch);
            }
            for (const [point, page] of resumes) {
              const from = point % (expected.length + 1);
              const got: StoredRecord[] = [];
              let after = from;
              for (;;) {
                const r = await store.read(id, after, page);
                got.push(...r.records);
                if (r.records.length > 0) after = (r.records.at(-1) as StoredRecord).seq;
                if (r.up_to_date) break;
              }
              expect(got.map((r) => JSON.parse(r.data))).toEqual(expected.slice(from));
              expect(got.map((r) => r.seq)).toEqual(expected.slice(from).map((_, i) => from + i + 1));
            }
          },
        ),
        { numRuns: 60 },
      );
    });

    it("property: a reader that catches up and then follows notices sees every record once, in order", async () => {
      const store = await make();
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 2, maxLength: 20 }),
          fc.nat(),
          async (batches, joinAt) => {
            const { id } = await store.create(gen());
            const join = joinAt % batches.length;
            const seen: number[] = [];
            // How often each record was notified: the follower may skip what its read already
            // covered, but a store that notifies a record twice must not pass.
            const notified = new Map<number, number>();
            let total = 0;
            let follow: Promise<void> | undefined;
            for (let b = 0; b < batches.length; b++) {
              if (b === join) {
                // Subscribe first, then catch up; drop notices already covered by the read.
                const buffered: StoredRecord[] = [];
                let live = false;
                store.subscribe(id, (n) => {
                  for (const r of n.records) {
                    notified.set(r.seq, (notified.get(r.seq) ?? 0) + 1);
                    if (live) {
                      if (r.seq > (seen.at(-1) ?? 0)) seen.push(r.seq);
                    } else buffered.push(r);
                  }
                });
                follow = (async () => {
                  const r = await store.read(id, 0, 10_000);
                  for (const x of r.records) seen.push(x.seq);
                  for (const x of buffered) if (x.seq > (seen.at(-1) ?? 0)) seen.push(x.seq);
                  live = true;
                })();
              }
              await store.append(id, recs(batches[b] as number));
              total += batches[b] as number;
            }
            await follow;
            await waitFor(() => seen.length >= total);
            expect(seen).toEqual(Array.from({ length: total }, (_, i) => i + 1));
            // Every record appended after the subscription was notified, each exactly once.
            const appendedBefore = batches.slice(0, join).reduce((a, x) => a + x, 0);
            await waitFor(() => notified.has(total));
            const twice = [...notified].filter(([, times]) => times !== 1).map(([seq]) => seq);
            expect(twice).toEqual([]);
            expect([...notified.keys()].sort((a, b) => a - b)).toEqual(
              Array.from({ length: total - appendedBefore }, (_, i) => appendedBefore + i + 1),
            );
          },
        ),
        { numRuns: 40 },
      );
    });
  });
}

export async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error("waitFor: timed out");
    await new Promise((r) => setTimeout(r, 2));
  }
}
