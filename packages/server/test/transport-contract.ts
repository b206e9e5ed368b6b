/**
 * The transport contract: what every door onto the log must do, run against each door
 * (doors.ts) the way runStoreContract runs against every store. Real server, real clients.
 *
 * - an ended stream reads to its end and the read ends;
 * - resume is exact: a reader cut at any point and resumed from the position the door gave it
 *   sees every item once, in order (finished and live streams);
 * - a disconnect does not cancel the generation;
 * - `limits.max_connections` holds, and every slot is released on every exit path — including
 *   a client that leaves while its request waits on a store lookup;
 * - an idle connection gets heartbeats (doors that have them);
 * - streaming responses carry CORS for an allowed origin and not for another;
 * - the auth matrix: no credentials, another tenant's key, a token for another stream, the right key;
 * - shutdown ends the read cleanly, within its grace;
 * - compact catch-up (doors that offer it): the history comes folded, with the same content, and
 *   resuming from any position a compact read gave is exact; the live tail comes as it would
 *   without compact.
 */
import { createHash } from "node:crypto";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MemoryStore } from "../src/stores/memory.js";
import type { Store } from "../src/stores/store.js";
import { contentOf, idKey, normalize } from "./content.js";
import { closeGrpcClients, type Door, type Item, Refused, type Session } from "./doors.js";
import { demoBody, type Running, startSluice, startStream, waitForStatus } from "./helpers.js";

const ORIGIN = "http://app.test";

/** A real memory store whose `info` can be held at a gate (to leave a request mid-lookup). */
export function gatedStore(): { store: Store; hold(): void; waiting(): number; open(): void } {
  const inner = new MemoryStore({ sweepIntervalMs: 0 });
  let gate: Promise<void> | undefined;
  let release: () => void = () => {};
  let waiting = 0;
  const store = new Proxy(inner, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (prop === "info" && typeof v === "function") {
        return async (id: string) => {
          if (gate) {
            waiting++;
            await gate;
            waiting--;
          }
          return (v as Store["info"]).call(target, id);
        };
      }
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as Store;
  return {
    store,
    hold() {
      gate = new Promise((r) => {
        release = r;
      });
    },
    waiting: () => waiting,
    open() {
      gate = undefined;
      release();
    },
  };
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Reads items until the door ends the read (bounded). */
async function drain(s: Session, max = 100_000, ms = 15_000): Promise<Item[]> {
  const out: Item[] = [];
  const end = Date.now() + ms;
  for (;;) {
    const left = end - Date.now();
    if (left <= 0) throw new Error(`read did not end (${out.length} items)`);
    const item = await Promise.race([
      s.next(),
      new Promise<"timeout">((r) => setTimeout(() => r("timeout"), left)),
    ]);
    if (item === "timeout") throw new Error(`read did not end (${out.length} items)`);
    if (item === undefined) return out;
    out.push(item);
    if (out.length >= max) return out;
  }
}

/** Reads items until the door ends the read or fails; never throws (a shutdown may cut it). */
async function drainLoose(s: Session, ms = 15_000): Promise<Item[]> {
  const out: Item[] = [];
  const end = Date.now() + ms;
  try {
    for (;;) {
      const left = end - Date.now();
      if (left <= 0) return out;
      const item = await Promise.race([
        s.next(),
        new Promise<"timeout">((r) => setTimeout(() => r("timeout"), left)),
      ]);
      if (item === "timeout" || item === undefined) return out;
      out.push(item);
    }
  } catch {
    return out;
  }
}

async function refusedBy(s: Session): Promise<Refused> {
  try {
    await s.ready;
    // Some doors report a refusal as a message (a WS subscription) or on a later request (a
    // long-poll answers what is there at once and needs the slot only to wait).
    for (let n = 0; n < 100; n++) if ((await s.next()) === undefined) break;
  } catch (err) {
    if (err instanceof Refused) return err;
    throw err;
  }
  throw new Error("the read was not refused");
}

const sha = (x: string) => createHash("sha256").update(x).digest("hex");

/** The content of items (an SSE item's data is `<event>|<data>`). */
const contentOfItems = (items: Item[]) =>
  contentOf(
    items.map((i) => ({ data: i.data.startsWith("{") ? i.data : i.data.slice(i.data.indexOf("|") + 1) })),
  );

/** Sorts after every key (a position that was never given). */
const posKey = (pos: string) => idKey(pos);
const after = (a: [number, number], b: [number, number]) => a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);

export function runTransportContract(door: Door): void {
  describe(`transport contract: ${door.name}`, () => {
    let s: Running;
    let gated: ReturnType<typeof gatedStore>;
    const base = () => ({ url: s.url, grpcAddress: s.server.grpc?.address });
    const open = (id: string, from = door.start, headers?: Record<string, string>) =>
      door.open(base(), id, from, headers ? { headers } : {});
    const openCompact = (id: string, from = door.start) => door.open(base(), id, from, { compact: true });
    const sessions: Session[] = [];
    const track = (x: Session) => {
      sessions.push(x);
      return x;
    };

    beforeAll(async () => {
      gated = gatedStore();
      s = await startSluice(
        {
          grpc_port: 0,
          sse: { heartbeat_ms: 100, retry_ms: 0 },
          ws: { ping_interval_ms: 100 },
          cors: { origins: [ORIGIN] },
          limits: { max_connections: 3 },
          long_poll: { max_wait_ms: 2000 },
        } as never,
        { store: gated.store },
      );
    });
    afterEach(async () => {
      gated.open();
      for (const x of sessions.splice(0)) x.close();
      // No test leaves a slot or a reader behind.
      await until("every connection slot released", () => s.server.connections.size === 0);
    });
    afterAll(async () => {
      closeGrpcClients();
      await s.close();
    });

    async function finished(length: number) {
      const { id } = await startStream(s.url, demoBody({ length }));
      await waitForStatus(s.url, id, (x) => x !== "running");
      return id;
    }

    it("reads an ended stream from the start, then the read ends", async () => {
      const id = await finished(30);
      const items = await drain(track(open(id)));
      expect(items.length).toBeGreaterThan(5);
      expect(items.some((i) => i.pos !== undefined)).toBe(true);
    });

    it("resumes exactly from any cut of a finished stream", async () => {
      const id = await finished(60);
      const full = await drain(track(open(id)));
      const cuts = full.map((it, i) => (it.pos !== undefined ? i : -1)).filter((i) => i >= 0);
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...cuts), async (k) => {
          const pos = full[k]?.pos as string;
          const rest = await drain(track(open(id, pos)));
          expect([...full.slice(0, k + 1), ...rest].map((i) => i.data)).toEqual(full.map((i) => i.data));
        }),
        { numRuns: 8 },
      );
    });

    it("resumes exactly when cut while the generation runs", async () => {
      const { id } = await startStream(s.url, demoBody({ length: 80, tokens_per_s: 300, ttft_ms: 20 }));
      const first = track(open(id));
      const got: Item[] = [];
      // Cut at the first position after a few items arrived live.
      for (;;) {
        const it = await first.next();
        if (!it) break;
        got.push(it);
        if (got.length >= 5 && it.pos !== undefined) break;
      }
      first.close();
      const pos = got.at(-1)?.pos as string;
      const rest = await drain(track(open(id, pos)));
      await waitForStatus(s.url, id, (x) => x !== "running");
      const full = await drain(track(open(id)));
      expect([...got, ...rest].map((i) => i.data)).toEqual(full.map((i) => i.data));
    });

    it("a disconnect does not cancel the generation", async () => {
      const { id } = await startStream(s.url, demoBody({ length: 60, tokens_per_s: 200, ttft_ms: 20 }));
      const r = track(open(id));
      for (let n = 0; n < 3; n++) expect(await r.next()).toBeDefined();
      r.close();
      const info = await waitForStatus(s.url, id, (x) => x !== "running");
      expect(info.status).toBe("completed");
    });

    it("holds limits.max_connections and releases every slot when readers leave", async () => {
      const { id } = await startStream(s.url, demoBody({ length: 5, ttft_ms: 4000 }));
      for (let n = 0; n < 3; n++) track(open(id));
      await until("3 held slots", () => s.server.connections.size === 3);
      const refused = await refusedBy(track(open(id)));
      expect(refused.code).toBe("too_many_connections");
      for (const x of sessions.splice(0)) x.close();
      await until("slots released", () => s.server.connections.size === 0);
      await until("readers detached", () => s.server.hub.readerCount(id) === 0);
      track(open(id));
      await until("a slot again", () => s.server.connections.size === 1);
      await s.server.runner.cancel(id, "client", "test over");
    });

    it("releases the slot of a client that leaves while its request waits on a store lookup", async () => {
      const { id } = await startStream(s.url, demoBody({ length: 5, ttft_ms: 4000 }));
      gated.hold();
      const r = track(open(id));
      await until("the request at the store", () => gated.waiting() > 0);
      r.close();
      await new Promise((res) => setTimeout(res, 100)); // the server sees the close
      gated.open();
      await new Promise((res) => setTimeout(res, 200));
      expect(s.server.connections.size).toBe(0);
      expect(s.server.hub.readerCount(id)).toBe(0);
      await s.server.runner.cancel(id, "client", "test over");
    });

    it.runIf(door.compact !== undefined)(
      "compact: folds the history with the same content; resuming from any position it gave is exact",
      async () => {
        const id = await finished(200);
        const full = await drain(track(open(id)));
        const comp = await drain(track(openCompact(id)));
        expect(comp.length).toBeLessThan(full.length / 4);
        const whole = contentOfItems(full);
        expect(contentOfItems(comp)).toEqual(whole);
        const cuts = comp.map((it, i) => (it.pos !== undefined ? i : -1)).filter((i) => i >= 0);
        let last: [number, number] = [0, 0];
        for (const k of cuts) {
          const key = posKey(comp[k]?.pos as string);
          expect(after(key, last)).toBe(true);
          last = key;
        }
        for (const k of cuts) {
          const pos = comp[k]?.pos as string;
          for (const again of [true, false]) {
            const rest = await drain(track(again ? openCompact(id, pos) : open(id, pos)));
            expect(normalize([...contentOfItems(comp.slice(0, k + 1)), ...contentOfItems(rest)])).toEqual(
              whole,
            );
          }
        }
      },
    );

    it.runIf(door.compact === "stream")(
      "compact: the live tail comes as it would without compact",
      async () => {
        const { id } = await startStream(s.url, demoBody({ length: 60, tokens_per_s: 100, ttft_ms: 10 }));
        const lengthNow = async () =>
          ((await (await fetch(`${s.url}/v1/streams/${id}/info`)).json()) as { length: number }).length;
        while ((await lengthNow()) < 15) await new Promise((r) => setTimeout(r, 20));
        const comp = track(openCompact(id));
        const got: Item[] = [];
        const first = await comp.next();
        got.push(first as Item);
        // Everything after this was appended after the reader attached: the live tail.
        const live = await lengthNow();
        got.push(...(await drain(comp)));
        const full = await drain(track(open(id)));
        const tail = (items: Item[]) => items.filter((i) => i.pos !== undefined && idKey(i.pos)[0] > live);
        expect(tail(full).length).toBeGreaterThan(10);
        expect(tail(got)).toEqual(tail(full));
        expect(contentOfItems(got)).toEqual(contentOfItems(full));
        expect(got.length).toBeLessThan(full.length);
      },
    );

    it.runIf(door.heartbeats)("sends heartbeats on an idle connection", async () => {
      const { id } = await startStream(s.url, demoBody({ length: 5, ttft_ms: 3000 }));
      const r = track(open(id));
      await until("a heartbeat", () => r.raw().length > 0, 3000);
      expect(r.raw()).not.toContain("text-delta");
      await s.server.runner.cancel(id, "client", "test over");
    });

    it.runIf(door.http)("carries CORS on the streaming response for an allowed origin only", async () => {
      const { id } = await startStream(s.url, demoBody({ length: 5, ttft_ms: 2000 }));
      const ok = track(open(id, door.start, { origin: ORIGIN }));
      await ok.ready;
      expect([ORIGIN, "*"]).toContain(ok.headers["access-control-allow-origin"]);
      if (!door.name.startsWith("ds-")) {
        expect(ok.headers["access-control-expose-headers"]).toMatch(/sluice-stream-id/i);
        const other = track(open(id, door.start, { origin: "http://elsewhere.test" }));
        await other.ready;
        expect(other.headers["access-control-allow-origin"]).toBeUndefined();
      }
      await s.server.runner.cancel(id, "client", "test over");
    });
  });

  describe.runIf(door.pausable)(`transport contract: ${door.name} (slow reader)`, () => {
    it("cuts a reader that stops reading, naming where it got to; resuming there is exact", async () => {
      const slow = await startSluice({
        grpc_port: 0,
        // (Compressed, this stream is small enough to sit in loopback socket buffers whole.)
        compression: { enabled: false },
        flow: {
          high_water_bytes: 16 * 1024,
          slow_reader_lag_bytes: 256 * 1024,
          slow_reader_ms: 0,
          adaptive: false,
        },
      } as never);
      const b = { url: slow.url, grpcAddress: slow.server.grpc?.address };
      try {
        const { id } = await startStream(
          slow.url,
          demoBody({ length: 100_000, tokens_per_s: 25_000, ttft_ms: 50 }),
        );
        const r = door.open(b, id, door.start);
        const got: Item[] = [];
        const first = await r.next();
        expect(first).toBeDefined();
        got.push(first as Item);
        r.pause?.();
        await until("a slow-reader cut", () => slow.server.hub.slowReaderCuts > 0, 30_000);
        r.resume?.();
        got.push(...(await drainLoose(r, 60_000)));
        r.close();
        // Where the reader got to: the offset the door named, else the last position it delivered.
        const lastPos = [...got].reverse().find((i) => i.pos !== undefined)?.pos as string;
        const named = r.cutAt?.();
        if (door.name !== "ds-sse") expect(named).toBe(lastPos);
        const at = got.findLastIndex((i) => i.pos === lastPos);
        const rest = await drain(door.open(b, id, lastPos), Number.POSITIVE_INFINITY, 60_000);
        await until("the end", () => !slow.server.runner.isRunning(id), 30_000);
        const full = await drain(door.open(b, id, door.start), Number.POSITIVE_INFINITY, 60_000);
        expect(full.length).toBeGreaterThan(got.length);
        const joined = [...got.slice(0, at + 1), ...rest].map((i) => i.data);
        expect(joined.length).toBe(full.length);
        expect(joined).toEqual(full.map((i) => i.data));
      } finally {
        closeGrpcClients();
        await slow.close();
      }
    }, 120_000);
  });

  describe(`transport contract: ${door.name} (auth)`, () => {
    let s: Running;
    const keys = { a: "sk-contract-reader-a", b: "sk-contract-reader-b", admin: "sk-contract-admin-a" };
    beforeAll(async () => {
      s = await startSluice({
        grpc_port: 0,
        auth: {
          keys: [
            { id: "ra", key_sha256: sha(keys.a), role: "reader", tenant: "a" },
            { id: "rb", key_sha256: sha(keys.b), role: "reader", tenant: "b" },
            { id: "admin", key_sha256: sha(keys.admin), role: "admin", tenant: "a" },
          ],
        },
      } as never);
    });
    afterAll(async () => {
      closeGrpcClients();
      await s.close();
    });

    it("refuses without credentials, hides other tenants' and other tokens' streams, serves the right key and token", async () => {
      const res = await fetch(`${s.url}/v1/streams`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${keys.admin}` },
        body: JSON.stringify(demoBody({ length: 10 })),
      });
      const { id, read_token } = (await res.json()) as { id: string; read_token: string };
      const other = (await (
        await fetch(`${s.url}/v1/streams`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${keys.admin}` },
          body: JSON.stringify(demoBody({ length: 10 })),
        })
      ).json()) as { read_token: string };
      await until("the stream to end", () => !s.server.runner.isRunning(id), 10_000);
      const b = { url: s.url, grpcAddress: s.server.grpc?.address };
      const as = (h: Record<string, string>) => door.open(b, id, door.start, { headers: h });
      const none = await refusedBy(as({}));
      expect(none.code).toBe("unauthorized");
      expect((await refusedBy(as({ authorization: `Bearer ${keys.b}` }))).code).toBe("stream_not_found");
      expect((await refusedBy(as({ authorization: `Bearer ${other.read_token}` }))).code).toBe(
        "stream_not_found",
      );
      expect((await drain(as({ authorization: `Bearer ${keys.a}` }))).length).toBeGreaterThan(3);
      expect((await drain(as({ authorization: `Bearer ${read_token}` }))).length).toBeGreaterThan(3);
    });
  });

  describe(`transport contract: ${door.name} (shutdown)`, () => {
    it("ends the read cleanly when the server shuts down, within its grace", async () => {
      // The store records what is appended, so the test sees the terminal event a polling
      // reader cannot fetch once the server refuses new requests.
      const appended: string[] = [];
      const mem = new MemoryStore({ sweepIntervalMs: 0 });
      const store = new Proxy(mem, {
        get(target, prop) {
          const v = Reflect.get(target, prop, target) as unknown;
          if (prop === "append" && typeof v === "function") {
            return (id: string, records: { data: string }[], o?: unknown) => {
              for (const r of records) appended.push(r.data);
              return (v as (...a: unknown[]) => unknown).call(target, id, records, o);
            };
          }
          return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      }) as Store;
      const s = await startSluice({ grpc_port: 0 } as never, { store });
      const { id } = await startStream(s.url, demoBody({ length: 400, tokens_per_s: 20, ttft_ms: 10 }));
      const r = door.open({ url: s.url, grpcAddress: s.server.grpc?.address }, id, door.start);
      expect(await r.next()).toBeDefined();
      const t0 = Date.now();
      await s.server.close(200);
      const rest = await drainLoose(r);
      closeGrpcClients();
      expect(Date.now() - t0).toBeLessThan(8000);
      // The generation ended with one terminal event saying why; a streaming reader got it (a
      // polling one asks again, is refused by the closing server, and resumes elsewhere).
      expect(appended.filter((d) => d.includes('"interrupted"'))).toHaveLength(1);
      if (door.heartbeats || !door.http) {
        const text = rest.map((i) => i.data).join("");
        expect(text).toMatch(door.name === "sse-openai" ? /"finish_reason"|error/ : /interrupted/);
      }
    });
  });
}
