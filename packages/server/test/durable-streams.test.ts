import { randomBytes } from "node:crypto";
import { DurableStream, stream as dsStream } from "@durable-streams/client";
import { formatOffset } from "@sluice/protocol";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { parseConfig } from "../src/config.js";
import { Deadlines } from "../src/core/limits.js";
import { createSluice, type SluiceServer } from "../src/server.js";
import { MemoryStore } from "../src/stores/memory.js";
import {
  demoBody,
  type Running,
  readAllJson,
  startSluice,
  startStream,
  textOf,
  waitForStatus,
} from "./helpers.js";

/** Sluice-specific parts of the Durable Streams mount (the protocol itself: the conformance suite). */

const DS_OPTS = {
  enabled: true,
  max_append_bytes: 64 * 1024,
  max_read_bytes: 8 * 1024,
};

let s: Running;
let n = 0;
const path = (p: string) => `${s.url}/ds/v1/stream/${p}-${process.pid}-${++n}`;

beforeAll(async () => {
  s = await startSluice({
    durable_streams: DS_OPTS,
    long_poll: { max_wait_ms: 5000 },
    limits: {
      body_bytes: 1024 * 1024,
      max_events_per_stream: 1_000_000,
      max_bytes_per_stream: 256 * 1024,
      max_streams: 10_000,
      stream_ttl_s: 3600,
      page_limit_max: 1000,
    },
  });
});
afterAll(async () => {
  await s.close();
});

type Event = { type: string; [k: string]: unknown };

describe("generation streams through /ds", () => {
  it("read in JSON mode: the same events, in order, with Sluice offsets inside DS offsets", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 40 }));
    await waitForStatus(s.url, id, (st) => st === "completed");
    const res = await fetch(`${s.url}/ds/v1/stream/${id}?offset=-1`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("stream-up-to-date")).toBe("true");
    expect(res.headers.get("stream-closed")).toBe("true");
    const events = (await res.json()) as Event[];
    const log = await readAllJson(s.url, id);
    expect(events).toEqual(log.map((e) => e.event));
    expect(events[0]?.type).toBe("start");
    expect(events.at(-1)?.type).toBe("finish");
    // The DS offset starts with the Sluice offset of the last record included.
    expect(res.headers.get("stream-next-offset")?.slice(0, 16)).toBe(log.at(-1)?.offset);
    // A Sluice offset from /v1/streams resumes the DS read right after that event.
    const mid = log[10]?.offset as string;
    const rest = (await (await fetch(`${s.url}/ds/v1/stream/${id}?offset=${mid}`)).json()) as Event[];
    expect(rest).toEqual(log.slice(11).map((e) => e.event));
  });

  it("the official DS client follows a running generation over SSE until it ends", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 120, tokens_per_s: 400 }));
    const res = await dsStream<Event>({ url: `${s.url}/ds/v1/stream/${id}`, live: "sse", warnOnHttp: false });
    const seen: Event[] = [];
    for await (const ev of res.jsonStream()) seen.push(ev);
    expect(res.streamClosed).toBe(true);
    expect(seen[0]?.type).toBe("start");
    expect(seen.at(-1)?.type).toBe("finish");
    const log = await readAllJson(s.url, id);
    expect(seen).toEqual(log.map((e) => e.event));
    expect(textOf(seen.map((event) => ({ event })))).toBe(textOf(log));
  });

  it("long-poll wakes on the generation's next events", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 20, ttft_ms: 150, tokens_per_s: 100 }));
    const head = await fetch(`${s.url}/ds/v1/stream/${id}`, { method: "HEAD" });
    const tail = head.headers.get("stream-next-offset") as string;
    const res = await fetch(`${s.url}/ds/v1/stream/${id}?offset=${tail}&live=long-poll`);
    expect(res.status).toBe(200);
    const batch = (await res.json()) as Event[];
    expect(batch.length).toBeGreaterThan(0);
    expect(res.headers.get("stream-cursor")).toMatch(/^\d+$/);
  });

  it("is read-only: appends, closes and deletes are refused with a clear error; PUT conflicts", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 400, tokens_per_s: 200 }));
    const url = `${s.url}/ds/v1/stream/${id}`;
    const attempts: RequestInit[] = [
      { method: "POST", headers: { "content-type": "application/json" }, body: `{"type":"text-delta"}` },
      { method: "POST", headers: { "stream-closed": "true" } },
      { method: "DELETE" },
    ];
    for (const init of attempts) {
      const res = await fetch(url, init);
      expect(res.status).toBe(403);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe("stream_read_only");
      expect(body.error.message).toContain("generation stream");
    }
    const put = await fetch(url, { method: "PUT", headers: { "content-type": "application/json" } });
    expect(put.status).toBe(409);
    expect(((await put.json()) as { error: { code: string } }).error.code).toBe("stream_exists");
    // Still running and intact.
    const info = (await (await fetch(`${s.url}/v1/streams/${id}/info`)).json()) as { status: string };
    expect(info.status).toBe("running");
    await fetch(`${s.url}/v1/streams/${id}/cancel`, { method: "POST" });
  });
});

describe("byte streams", () => {
  it("round-trips arbitrary binary (not UTF-8) exactly: catch-up, SSE base64, long-poll", async () => {
    const url = path("bin");
    const a = Buffer.concat([Buffer.from([0xff, 0xfe, 0x00, 0xc3]), randomBytes(3000)]);
    const b = Buffer.from("plain ascii, then ✓ and a lone byte: ");
    const c = Buffer.concat([b, Buffer.from([0x80])]);
    expect(
      (await fetch(url, { method: "PUT", headers: { "content-type": "application/octet-stream" }, body: a }))
        .status,
    ).toBe(201);
    const post = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: c,
    });
    expect(post.status).toBe(204);
    const whole = Buffer.concat([a, c]);
    const got = Buffer.from(await (await fetch(url)).arrayBuffer());
    expect(got.equals(whole)).toBe(true);

    const sse = await fetch(`${url}?offset=-1&live=sse`);
    expect(sse.headers.get("stream-sse-data-encoding")).toBe("base64");
    const reader = sse.body?.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    let text = "";
    while (!text.includes('"upToDate":true')) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await reader.cancel();
    const data = text
      .split("\n\n")
      .filter((block) => block.startsWith("event: data"))
      .map((block) => Buffer.from(block.split("\n")[1]?.slice(5) ?? "", "base64"));
    expect(Buffer.concat(data).equals(whole)).toBe(true);

    // A long-poll at the tail gets the next binary append, byte for byte.
    const tail = post.headers.get("stream-next-offset") as string;
    const waiting = fetch(`${url}?offset=${tail}&live=long-poll`);
    await new Promise((r) => setTimeout(r, 50));
    const d = randomBytes(500);
    await fetch(url, { method: "POST", headers: { "content-type": "application/octet-stream" }, body: d });
    const lp = await waiting;
    expect(lp.status).toBe(200);
    expect(Buffer.from(await lp.arrayBuffer()).equals(d)).toBe(true);
  });

  it("keeps text appends as text in the store and binary ones as base64", async () => {
    const url = path("enc");
    await fetch(url, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: "héllo",
    });
    await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: new Uint8Array([0xff]),
    });
    const id = new URL(url).pathname.slice("/ds/v1/stream/".length);
    const page = await s.server.store.read(id, 0, 10);
    expect(page.records.map((r) => [r.data, r.encoding])).toEqual([
      ["héllo", undefined],
      ["/w==", "base64"],
    ]);
  });
});

describe("limits", () => {
  it("refuses an append over max_append_bytes (413) and a stream over its byte bound (413)", async () => {
    const url = path("limits");
    await fetch(url, { method: "PUT", headers: { "content-type": "application/octet-stream" } });
    const big = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: new Uint8Array(DS_OPTS.max_append_bytes + 1),
    });
    expect(big.status).toBe(413);
    const bigErr = (await big.json()) as { error: { code: string; message: string } };
    expect(bigErr.error.code).toBe("body_too_large");
    expect(bigErr.error.message).toContain(String(DS_OPTS.max_append_bytes));
    let last = 0;
    for (let i = 0; i < 6; i++) {
      const r = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: new Uint8Array(60 * 1024).fill(65),
      });
      last = r.status;
      if (r.status !== 204) {
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe("stream_too_large");
        break;
      }
    }
    expect(last).toBe(413);
  });

  it("serves a long stream in bounded catch-up responses that chain by offset", async () => {
    const url = path("chunks");
    await fetch(url, { method: "PUT", headers: { "content-type": "text/plain" } });
    const parts: string[] = [];
    for (let i = 0; i < 40; i++) {
      const part = `${String(i).padStart(3, "0")}:${"x".repeat(1000)}|`;
      parts.push(part);
      await fetch(url, { method: "POST", headers: { "content-type": "text/plain" }, body: part });
    }
    let offset = "-1";
    let text = "";
    let responses = 0;
    for (;;) {
      const r = await fetch(`${url}?offset=${offset}`);
      const body = await r.text();
      responses++;
      expect(body.length).toBeLessThanOrEqual(DS_OPTS.max_read_bytes);
      text += body;
      offset = r.headers.get("stream-next-offset") as string;
      if (r.headers.get("stream-up-to-date") === "true") break;
    }
    expect(text).toBe(parts.join(""));
    expect(responses).toBeGreaterThan(4);
  });

  it("many long-polls wait on the Hub without per-request timers and all wake on one append", async () => {
    const url = path("fanout");
    const put = await fetch(url, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: "[1]",
    });
    const tail = put.headers.get("stream-next-offset") as string;
    const id = new URL(url).pathname.slice("/ds/v1/stream/".length);
    const timeouts = vi.spyOn(globalThis, "setTimeout");
    const intervals = vi.spyOn(globalThis, "setInterval");
    const polls = Array.from({ length: 50 }, () => fetch(`${url}?offset=${tail}&live=long-poll`));
    const t0 = Date.now();
    while (s.server.hub.readerCount(id) < 50 && Date.now() - t0 < 3000)
      await new Promise((r) => setTimeout(r, 5));
    expect(s.server.hub.readerCount(id)).toBe(50);
    // Timers started while 50 polls came in and waited (besides this test's own 5 ms waits):
    // a handful for the whole server, not one per poll.
    const started = [...timeouts.mock.calls, ...intervals.mock.calls].filter((c) => c[1] !== 5);
    timeouts.mockRestore();
    intervals.mockRestore();
    expect(started.length).toBeLessThan(10);
    await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: '[{"n":2}]' });
    const results = await Promise.all(polls);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(await r.json()).toEqual([{ n: 2 }]);
    }
    expect(s.server.hub.readerCount(id)).toBe(0);
  });

  it("a long-poll with nothing to wake it answers 204 after long_poll.max_wait_ms, and detaches", async () => {
    // One long-poll wait for the node: the /v1 setting bounds Durable Streams long-polls too.
    const quick = await startSluice({ long_poll: { max_wait_ms: 300 } });
    try {
      const url = `${quick.url}/ds/v1/stream/quiet`;
      await fetch(url, { method: "PUT", headers: { "content-type": "application/json" }, body: "[1]" });
      const t1 = Date.now();
      const quiet = await fetch(`${url}?offset=now&live=long-poll`);
      expect(quiet.status).toBe(204);
      expect(quiet.headers.get("stream-next-offset")).toBe(`${formatOffset(1)}_${formatOffset(0)}`);
      expect(quiet.headers.get("stream-up-to-date")).toBe("true");
      expect(Date.now() - t1).toBeGreaterThanOrEqual(250);
      expect(quick.server.hub.readerCount("quiet")).toBe(0);
    } finally {
      await quick.close();
    }
  });
});

describe("DS state lives in the Store (two nodes, one store)", () => {
  let a: SluiceServer;
  let b: SluiceServer;
  let urlA: string;
  let urlB: string;
  beforeAll(async () => {
    // One store shared by two nodes, with a few ms of latency per call like a networked store
    // (so concurrent requests on the two nodes really interleave between read and append).
    const mem = new MemoryStore({ sweepIntervalMs: 0 });
    const store = new Proxy(mem, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (typeof v !== "function" || prop === "subscribe") return v;
        return async (...args: unknown[]) => {
          await new Promise((r) => setTimeout(r, 2));
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const config = parseConfig({
      host: "127.0.0.1",
      port: 0,
      log_level: "silent",
      durable_streams: DS_OPTS,
      long_poll: { max_wait_ms: 5000 },
    });
    a = await createSluice(config, { env: {}, store });
    b = await createSluice(config, { env: {}, store });
    urlA = await a.listen();
    urlB = await b.listen();
  });
  afterAll(async () => {
    await a.close();
    await b.close();
  });

  it("producer dedup, Stream-Seq, config, closing and forks seen from the other node", async () => {
    const p = `/ds/v1/stream/shared-${process.pid}`;
    expect(
      (
        await fetch(urlA + p, {
          method: "PUT",
          headers: { "content-type": "text/plain", "stream-ttl": "600" },
        })
      ).status,
    ).toBe(201);
    expect(
      (
        await fetch(urlB + p, {
          method: "PUT",
          headers: { "content-type": "text/plain", "stream-ttl": "600" },
        })
      ).status,
    ).toBe(200);
    expect(
      (
        await fetch(urlB + p, {
          method: "PUT",
          headers: { "content-type": "text/plain", "stream-ttl": "60" },
        })
      ).status,
    ).toBe(409);
    const producer = { "producer-id": "p1", "producer-epoch": "3", "content-type": "text/plain" };
    expect(
      (await fetch(urlA + p, { method: "POST", headers: { ...producer, "producer-seq": "0" }, body: "one" }))
        .status,
    ).toBe(200);
    // The retry lands on the other node: a duplicate there too.
    const dup = await fetch(urlB + p, {
      method: "POST",
      headers: { ...producer, "producer-seq": "0" },
      body: "one",
    });
    expect(dup.status).toBe(204);
    const stale = await fetch(urlB + p, {
      method: "POST",
      headers: { ...producer, "producer-epoch": "2", "producer-seq": "0" },
      body: "zombie",
    });
    expect(stale.status).toBe(403);
    expect(stale.headers.get("producer-epoch")).toBe("3");
    await fetch(urlA + p, {
      method: "POST",
      headers: { "content-type": "text/plain", "stream-seq": "b" },
      body: "two",
    });
    const seq = await fetch(urlB + p, {
      method: "POST",
      headers: { "content-type": "text/plain", "stream-seq": "a" },
      body: "x",
    });
    expect(seq.status).toBe(409);
    expect(((await seq.json()) as { error: { code: string } }).error.code).toBe("sequence_conflict");
    // Fork on B, delete the source on A: soft-deleted (410) on both nodes while the fork lives.
    const f = `${p}-fork`;
    expect(
      (await fetch(urlB + f, { method: "PUT", headers: { "stream-forked-from": p.slice(3) } })).status,
    ).toBe(201);
    expect((await fetch(urlA + p, { method: "DELETE" })).status).toBe(204);
    expect((await fetch(urlB + p, { method: "HEAD" })).status).toBe(410);
    expect(await (await fetch(urlA + f)).text()).toBe("onetwo");
    expect((await fetch(urlA + f, { method: "DELETE" })).status).toBe(204);
    expect((await fetch(urlB + p, { method: "HEAD" })).status).toBe(404);
    const meta = (await a.store.list({ limit: 10 })).length;
    expect(meta).toBe(0);
  });

  it("the same producer append racing on both nodes lands exactly once (compare-and-append)", async () => {
    const p = `/ds/v1/stream/race-${process.pid}`;
    await fetch(urlA + p, { method: "PUT", headers: { "content-type": "text/plain" } });
    const expected: string[] = [];
    for (let i = 0; i < 20; i++) {
      const init = {
        method: "POST",
        headers: {
          "content-type": "text/plain",
          "producer-id": "racer",
          "producer-epoch": "0",
          "producer-seq": `${i}`,
        },
        body: `<${i}>`,
      };
      const statuses = (await Promise.all([fetch(urlA + p, init), fetch(urlB + p, init)])).map(
        (r) => r.status,
      );
      expect(statuses.sort()).toEqual([200, 204]);
      expected.push(`<${i}>`);
    }
    expect(await (await fetch(urlB + p)).text()).toBe(expected.join(""));
  });

  it("the same PUT racing on both nodes: one 201, one 200; a fork that inherited a TTL is idempotent too", async () => {
    for (let i = 0; i < 10; i++) {
      const p = `/ds/v1/stream/put-race-${process.pid}-${i}`;
      const init = { method: "PUT", headers: { "content-type": "text/plain", "stream-ttl": "600" } };
      const statuses = (await Promise.all([fetch(urlA + p, init), fetch(urlB + p, init)])).map(
        (r) => r.status,
      );
      expect(statuses.sort()).toEqual([200, 201]);
      const fork = { method: "PUT", headers: { "stream-forked-from": p.slice(3) } };
      expect((await fetch(`${urlA + p}-f`, fork)).status).toBe(201);
      const head = await fetch(`${urlB + p}-f`, { method: "HEAD" });
      expect(head.headers.get("stream-ttl")).toBe("600");
      expect((await fetch(`${urlB + p}-f`, fork)).status).toBe(200);
    }
  });

  it("a live SSE reader on one node sees appends and the close made on the other", async () => {
    const p = `/ds/v1/stream/live-${process.pid}`;
    await fetch(urlA + p, { method: "PUT", headers: { "content-type": "application/json" } });
    const res = await fetch(`${urlB}${p}?offset=now&live=sse`);
    const reader = res.body?.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    let text = "";
    const read = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += new TextDecoder().decode(value);
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    await fetch(urlA + p, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '[{"a":1},{"b":2}]',
    });
    await fetch(urlA + p, { method: "POST", headers: { "stream-closed": "true" } });
    await read;
    expect(text).toContain('event: data\ndata:[{"a":1},{"b":2}]');
    expect(text).toContain('"streamClosed":true');
    expect(text).toContain(`"streamNextOffset":"${formatOffset(1)}_${formatOffset(0)}"`);
  });
});

describe("the DS client writing", () => {
  it("creates, appends JSON and reads it back with DurableStream", async () => {
    const url = path("client");
    const handle = await DurableStream.create({ url, contentType: "application/json", warnOnHttp: false });
    await handle.append(JSON.stringify({ hello: "world" }));
    await handle.append(JSON.stringify([1, 2]));
    const res = await handle.stream<unknown>({ live: false });
    expect(await res.json()).toEqual([{ hello: "world" }, [1, 2]]);
  });
});

describe("JSON mode keeps message text", () => {
  it("numbers beyond double precision, key order and nested arrays survive; whitespace does not break SSE", async () => {
    const url = path("jsontext");
    await fetch(url, { method: "PUT", headers: { "content-type": "application/json" } });
    const body =
      '[\n  {"big": 12345678901234567890123, "b": 1, "a": "x, [y] \\" z\\n"},\n  [1, [2, 3]],\n  1.50\n]';
    expect(
      (await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body })).status,
    ).toBe(204);
    const text = await (await fetch(url)).text();
    expect(text).toBe('[{"big":12345678901234567890123,"b":1,"a":"x, [y] \\" z\\n"},[1,[2,3]],1.50]');
    const sse = await fetch(`${url}?offset=-1&live=sse`);
    const reader = sse.body?.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    let got = "";
    while (!got.includes('"upToDate":true')) {
      const { value, done } = await reader.read();
      if (done) break;
      got += new TextDecoder().decode(value);
    }
    await reader.cancel();
    expect(got).toContain(`event: data\ndata:${text}\n\n`);
  });
});

describe("the two APIs stay apart", () => {
  it("/v1/streams event reads refuse a Durable Streams stream and point to /ds", async () => {
    const name = `plain-${process.pid}`;
    await fetch(`${s.url}/ds/v1/stream/${name}`, {
      method: "PUT",
      headers: { "content-type": "text/plain" },
      body: "x",
    });
    for (const accept of ["application/json", "text/event-stream"]) {
      const r = await fetch(`${s.url}/v1/streams/${name}`, { headers: { accept } });
      expect(r.status).toBe(404);
      const body = (await r.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe("stream_not_found");
      expect(body.error.message).toContain(`/ds/v1/stream/${name}`);
    }
  });
});

describe("shutdown", () => {
  it("ends live DS readers so closing the server does not wait on them", async () => {
    const own = await startSluice({ durable_streams: DS_OPTS, long_poll: { max_wait_ms: 60_000 } });
    const url = `${own.url}/ds/v1/stream/shutdown`;
    await fetch(url, { method: "PUT", headers: { "content-type": "text/plain" } });
    const sse = await fetch(`${url}?offset=-1&live=sse`);
    const sseText = sse.text();
    const poll = fetch(`${url}?offset=now&live=long-poll`);
    const t0 = Date.now();
    while (own.server.hub.readerCount("shutdown") < 2 && Date.now() - t0 < 3000) {
      await new Promise((r) => setTimeout(r, 5));
    }
    await own.close();
    expect(Date.now() - t0).toBeLessThan(5000);
    expect((await poll).status).toBe(204);
    expect(await sseText).toContain('"upToDate":true');
  });
});

describe("SSE text", () => {
  it("a character split across two appends arrives whole", async () => {
    const url = path("split");
    const check = Buffer.from("✓", "utf8"); // 3 bytes
    await fetch(url, { method: "PUT", headers: { "content-type": "text/plain" } });
    const res = await fetch(`${url}?offset=now&live=sse`);
    const reader = res.body?.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    let got = "";
    const readUntil = async (s: string) => {
      while (!got.includes(s)) {
        const { value, done } = await reader.read();
        if (done) break;
        got += new TextDecoder().decode(value);
      }
    };
    await readUntil('"upToDate":true');
    for (const part of [
      Buffer.concat([Buffer.from("a"), check.subarray(0, 1)]),
      Buffer.concat([check.subarray(1), Buffer.from("b")]),
    ]) {
      await fetch(url, { method: "POST", headers: { "content-type": "text/plain" }, body: part });
      await new Promise((r) => setTimeout(r, 30));
    }
    await readUntil("b\n");
    await reader.cancel();
    const data = got
      .split("\n\n")
      .filter((b) => b.startsWith("event: data"))
      .map((b) => b.slice("event: data\ndata:".length))
      .join("");
    expect(data).toBe("a✓b");
  });
});

describe("long-poll deadlines", () => {
  it("fire in order from one timer; cancelled ones never fire; the timer stops when idle", async () => {
    let now = 1_000;
    const d = new Deadlines(10, () => now);
    const fired: number[] = [];
    d.add(100, () => fired.push(1));
    now += 30;
    const cancel2 = d.add(100, () => fired.push(2));
    now += 30;
    d.add(100, () => fired.push(3));
    cancel2();
    expect(d.size).toBe(2);
    expect(d.armed).toBe(true);
    now = 1_105; // past the first deadline only
    await new Promise((r) => setTimeout(r, 60));
    expect(fired).toEqual([1]);
    now = 1_200;
    await new Promise((r) => setTimeout(r, 60));
    expect(fired).toEqual([1, 3]);
    expect(d.size).toBe(0);
    expect(d.armed).toBe(false);
    d.stop();
  });
});
