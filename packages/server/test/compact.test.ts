/**
 * Compact catch-up (core/compact.ts, Hub catch-up): history folded, resume exact, live tail as it
 * came. The property runs the real Hub over a real MemoryStore with every codec a reader can ask
 * to compact, on random logs shaped like a runner's (blocks numbered, tool calls named on their
 * first delta), with random page sizes and fold bounds.
 */
import { parseResumePosition } from "@sluice/protocol";
import { createParser } from "eventsource-parser";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { foldRecords } from "../src/core/compact.js";
import { FlowScheduler } from "../src/core/flow.js";
import { Hub, type Sink } from "../src/core/hub.js";
import { sseAiSdk } from "../src/formats/ai-sdk.js";
import { sseAnthropic } from "../src/formats/anthropic.js";
import type { Codec } from "../src/formats/codec.js";
import { sseOpenAIUsage } from "../src/formats/openai.js";
import { ndjsonSluice, sseSluice, wsSluice } from "../src/formats/sluice.js";
import { MemoryStore } from "../src/stores/memory.js";
import type { RecordInput, StoredRecord } from "../src/stores/store.js";
import { contentOf, idKey, normalize } from "./content.js";
import { demoBody, type Running, startSluice, startStream, waitForStatus } from "./helpers.js";

/** Collects what a reader writes; `done` resolves when the hub ends it. */
class CollectSink implements Sink {
  out = "";
  frames: string[] = [];
  buffered = 0;
  ended = false;
  writeFrames?: (frames: string[]) => void;
  readonly done: Promise<void>;
  private resolve: () => void = () => {};
  constructor(framed: boolean) {
    this.done = new Promise((r) => {
      this.resolve = r;
    });
    if (framed) this.writeFrames = (f) => this.frames.push(...f);
  }
  write(chunk: string): void {
    this.out += chunk;
  }
  onDrain(cb: () => void): void {
    cb();
  }
  end(): void {
    this.ended = true;
    this.resolve();
  }
  cut(): void {
    this.end();
  }
  get closed(): boolean {
    return this.ended;
  }
}

interface Ev {
  id: string;
  data: string;
}

/** The events of a read, as a client of the codec sees them (SSE events, NDJSON lines, WS frames). */
function eventsOf(codec: Codec, sink: CollectSink): Ev[] {
  const out: Ev[] = [];
  if (codec === wsSluice) {
    for (const f of sink.frames) {
      const m = JSON.parse(f) as { offset: string; event: unknown };
      out.push({ id: m.offset, data: JSON.stringify(m.event) });
    }
  } else if (codec === ndjsonSluice) {
    for (const line of sink.out.split("\n")) {
      if (line === "") continue;
      const m = JSON.parse(line) as { offset: string; event: unknown };
      out.push({ id: m.offset, data: JSON.stringify(m.event) });
    }
  } else {
    const p = createParser({ onEvent: (e) => out.push({ id: e.id ?? "", data: e.data }) });
    p.feed(sink.out);
  }
  return out;
}

const CODECS: Codec[] = [sseSluice, ndjsonSluice, wsSluice, sseOpenAIUsage, sseAiSdk, sseAnthropic];

type Segment =
  | { kind: "text"; pieces: string[]; refusal: boolean; logprobs: boolean }
  | { kind: "reasoning"; pieces: string[] }
  | { kind: "tool"; name: string; pieces: string[] }
  | { kind: "data" };

const pieces = fc.array(fc.string({ unit: "grapheme", maxLength: 6 }), { minLength: 1, maxLength: 12 });
const segment: fc.Arbitrary<Segment> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("text" as const),
      pieces,
      refusal: fc.boolean(),
      logprobs: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("reasoning" as const), pieces }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("tool" as const), name: fc.constantFrom("get", "put"), pieces }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("data" as const) }) },
);

/** A generation's records as the runner writes them: blocks numbered, tool calls indexed. */
function logOf(segments: Segment[]): RecordInput[] {
  const recs: RecordInput[] = [];
  const put = (o: Record<string, unknown>) => recs.push({ type: o.type as string, data: JSON.stringify(o) });
  put({ type: "start", model: "demo", created_at: "2026-12-01T00:00:00.000Z" });
  let block = 0;
  let calls = 0;
  for (const s of segments) {
    const b = block === 0 ? {} : { block };
    if (s.kind === "text") {
      for (const p of s.pieces) {
        put({
          type: "text-delta",
          delta: p,
          ...(s.refusal ? { refusal: true } : {}),
          ...(s.logprobs ? { logprobs: [{ token: p, logprob: -0.5 }] } : {}),
          ...b,
        });
      }
    } else if (s.kind === "reasoning") {
      for (const p of s.pieces) put({ type: "reasoning-delta", delta: p, ...b });
    } else if (s.kind === "tool") {
      const id = `call_${calls}`;
      s.pieces.forEach((p, i) => {
        put({
          type: "tool-call-delta",
          id,
          ...(i === 0 ? { name: s.name } : {}),
          args_delta: p,
          index: calls,
          ...b,
        });
      });
      put({ type: "tool-call", id, name: s.name, args: { joined: s.pieces.join("") }, index: calls, ...b });
      calls++;
    } else {
      put({ type: "data", name: "progress", value: { n: recs.length } });
      continue;
    }
    block++;
  }
  put({ type: "usage", input_tokens: 3, output_tokens: recs.length });
  put({ type: "finish", reason: "stop" });
  return recs;
}

async function setup(records: RecordInput[], catchUpPage: number, compactMaxChars: number) {
  const store = new MemoryStore({ sweepIntervalMs: 0 });
  const flow = new FlowScheduler({ adaptive: false });
  const hub = new Hub(store, { flow, catchUpPage, compactMaxChars, windowSize: 4 });
  await store.create({ id: "g", kind: "generation", content_type: "application/json", model: "demo" });
  const last = records.pop() as RecordInput;
  if (records.length > 0) await store.append("g", records);
  await store.append("g", [last], { close: "completed" });
  const read = async (codec: Codec, from: string | number, compact: boolean): Promise<Ev[]> => {
    const pos =
      typeof from === "number"
        ? { seq: from, skipEvents: 0 }
        : (parseResumePosition(from) as { seq: number; skipEvents?: number });
    const sink = new CollectSink(codec === wsSluice);
    const r = await hub.attach("g", pos.seq, codec, sink, { skipEvents: pos.skipEvents ?? 0, compact });
    await sink.done;
    r.detach();
    return eventsOf(codec, sink);
  };
  return {
    read,
    stop: async () => {
      hub.stop();
      flow.stop();
      await store.close();
    },
  };
}

describe("compact catch-up (Hub)", () => {
  it("resuming a compact read from any id it gave is exact, in compact and plain reads, for every codec", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(segment, { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 40 }),
        async (segments, page, maxChars) => {
          const records = logOf(segments);
          const length = records.length;
          const { read, stop } = await setup(records, page, maxChars);
          try {
            for (const codec of CODECS) {
              const plain = await read(codec, 0, false);
              const compact = await read(codec, 0, true);
              const whole = contentOf(plain);
              expect(contentOf(compact), codec.key).toEqual(whole);
              expect(compact.length).toBeLessThanOrEqual(plain.length);
              // Ids strictly increase and each names a real record (or an event inside one).
              let prev: [number, number] = [0, 0];
              for (const e of compact) {
                const k = idKey(e.id);
                expect(k[0]).toBeGreaterThanOrEqual(1);
                expect(k[0]).toBeLessThanOrEqual(length);
                expect(k[0] > prev[0] || (k[0] === prev[0] && k[1] > prev[1]), `${e.id} after ${prev}`).toBe(
                  true,
                );
                prev = k;
              }
              for (let i = 0; i < compact.length; i++) {
                const id = (compact[i] as Ev).id;
                const before = compact.slice(0, i + 1);
                for (const again of [true, false]) {
                  const rest = await read(codec, id, again);
                  expect(
                    normalize([...contentOf(before), ...contentOf(rest)]),
                    `${codec.key} resumed at ${id} (compact: ${again})`,
                  ).toEqual(whole);
                }
              }
            }
          } finally {
            await stop();
          }
        },
      ),
      { numRuns: 25 },
    );
  }, 120_000);

  it("folds the history of a running stream and delivers the live tail record by record", async () => {
    const store = new MemoryStore({ sweepIntervalMs: 0 });
    const flow = new FlowScheduler({ adaptive: false });
    const hub = new Hub(store, { flow });
    try {
      await store.create({ id: "g", kind: "generation", content_type: "application/json", model: "demo" });
      const text = (d: string): RecordInput => ({
        type: "text-delta",
        data: JSON.stringify({ type: "text-delta", delta: d }),
      });
      await store.append("g", [
        {
          type: "start",
          data: JSON.stringify({ type: "start", model: "demo", created_at: "2026-12-01T00:00:00Z" }),
        },
        ...["a", "b", "c", "d"].map(text),
      ]);
      const sink = new CollectSink(true);
      const reader = await hub.attach("g", 0, wsSluice, sink, { compact: true });
      const until = async (n: number) => {
        for (let i = 0; i < 500 && sink.frames.length < n; i++) await new Promise((r) => setTimeout(r, 2));
      };
      await until(2);
      // Live: one append of three deltas, then one of one: four events, none folded.
      await store.append("g", ["e", "f", "g"].map(text));
      await store.append("g", [text("h")]);
      await until(6);
      await store.append("g", [{ type: "finish", data: '{"type":"finish","reason":"stop"}' }], {
        close: "completed",
      });
      await sink.done;
      reader.detach();
      const got = eventsOf(wsSluice, sink).map((e) => [
        e.id.replace(/^0+/, ""),
        JSON.parse(e.data).delta ?? JSON.parse(e.data).type,
      ]);
      expect(got).toEqual([
        ["1", "start"],
        ["5", "abcd"],
        ["6", "e"],
        ["7", "f"],
        ["8", "g"],
        ["9", "h"],
        ["10", "finish"],
      ]);
    } finally {
      hub.stop();
      flow.stop();
      await store.close();
    }
  });
});

describe("foldRecords", () => {
  const rec = (seq: number, o: Record<string, unknown>): StoredRecord => ({
    seq,
    offset: String(seq).padStart(16, "0"),
    type: o.type as string,
    data: JSON.stringify(o),
  });
  const show = (rs: StoredRecord[]) =>
    rs.map((r) => [r.seq, r.first === undefined ? null : Number(r.first), JSON.parse(r.data)]);

  it("folds runs of one kind into the last record's offset, never across blocks, calls or other kinds", () => {
    const out = foldRecords([
      rec(1, { type: "text-delta", delta: "He" }),
      rec(2, { type: "text-delta", delta: "llo" }),
      rec(3, { type: "text-delta", delta: "!", block: 1 }),
      rec(4, { type: "reasoning-delta", delta: "hm", block: 2 }),
      rec(5, { type: "reasoning-delta", delta: "m", block: 2 }),
      rec(6, { type: "tool-call-delta", id: "a", name: "f", args_delta: '{"x"', index: 0, block: 3 }),
      rec(7, { type: "tool-call-delta", id: "a", args_delta: ":1}", index: 0, block: 3 }),
      rec(8, { type: "tool-call-delta", id: "b", name: "g", args_delta: "{}", index: 1, block: 4 }),
      rec(9, { type: "tool-call", id: "a", name: "f", args: { x: 1 }, index: 0, block: 3 }),
    ]);
    expect(show(out)).toEqual([
      [2, 1, { type: "text-delta", delta: "Hello" }],
      [3, null, { type: "text-delta", delta: "!", block: 1 }],
      [5, 4, { type: "reasoning-delta", delta: "hmm", block: 2 }],
      [7, 6, { type: "tool-call-delta", id: "a", name: "f", args_delta: '{"x":1}', index: 0, block: 3 }],
      [8, null, { type: "tool-call-delta", id: "b", name: "g", args_delta: "{}", index: 1, block: 4 }],
      [9, null, { type: "tool-call", id: "a", name: "f", args: { x: 1 }, index: 0, block: 3 }],
    ]);
  });

  it("keeps refusals, logprobs and unknown fields apart, joins logprobs, and bounds a folded event", () => {
    const out = foldRecords(
      [
        rec(1, { type: "text-delta", delta: "ab", logprobs: [1] }),
        rec(2, { type: "text-delta", delta: "cd", logprobs: [2] }),
        rec(3, { type: "text-delta", delta: "ef" }),
        rec(4, { type: "text-delta", delta: "no", refusal: true }),
        rec(5, { type: "text-delta", delta: "x", extra: 1 }),
        rec(6, { type: "text-delta", delta: "y", extra: 1 }),
        rec(7, { type: "text-delta", delta: "12345" }),
        rec(8, { type: "text-delta", delta: "6" }),
      ],
      5,
    );
    expect(show(out)).toEqual([
      [2, 1, { type: "text-delta", delta: "abcd", logprobs: [1, 2] }],
      [3, null, { type: "text-delta", delta: "ef" }],
      [4, null, { type: "text-delta", delta: "no", refusal: true }],
      [5, null, { type: "text-delta", delta: "x", extra: 1 }],
      [6, null, { type: "text-delta", delta: "y", extra: 1 }],
      [7, null, { type: "text-delta", delta: "12345" }],
      [8, null, { type: "text-delta", delta: "6" }],
    ]);
  });
});

describe("compact catch-up over HTTP", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice();
  });
  afterAll(async () => {
    await s.close();
  });

  it("refuses a compact value that is not true or false, before looking anything up", async () => {
    for (const path of [
      "/v1/streams/st_doesnotexist000000000?compact=yes",
      "/v1/ai-sdk/chat/some-chat/stream?compact=2",
    ]) {
      const res = await fetch(`${s.url}${path}`, { headers: { accept: "text/event-stream" } });
      expect(res.status, path).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_request");
    }
  });

  it("refuses compact=true with format=openai-responses (its sequence numbers count every record); compact=false reads", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 10 }));
    await waitForStatus(s.url, id, (x) => x !== "running");
    const sse = { accept: "text/event-stream" };
    const refused = await fetch(`${s.url}/v1/streams/${id}?format=openai-responses&compact=true`, {
      headers: sse,
    });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("invalid_request");
    const plain = await fetch(`${s.url}/v1/streams/${id}?format=openai-responses&compact=false`, {
      headers: sse,
    });
    expect(plain.status).toBe(200);
    expect(await plain.text()).toContain("response.completed");
  });

  it("a JSON page folds what it holds; compact=false and compact=0 read every record", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 50 }));
    await waitForStatus(s.url, id, (x) => x !== "running");
    const page = async (q: string) =>
      (await (await fetch(`${s.url}/v1/streams/${id}?limit=1000${q}`)).json()) as {
        events: { offset: string; event: { type: string; delta?: string } }[];
        next_offset: string;
      };
    const plain = await page("");
    for (const q of ["&compact=false", "&compact=0"]) expect(await page(q)).toEqual(plain);
    const compact = await page("&compact=true");
    const text = (p: typeof plain) => p.events.map((e) => e.event.delta ?? "").join("");
    expect(text(compact)).toBe(text(plain));
    expect(compact.events.map((e) => e.event.type)).toEqual(["start", "text-delta", "usage", "finish"]);
    expect(compact.events[1]?.offset).toBe(
      plain.events.filter((e) => e.event.type === "text-delta").at(-1)?.offset,
    );
    expect(compact.next_offset).toBe(plain.next_offset);
  });
});
