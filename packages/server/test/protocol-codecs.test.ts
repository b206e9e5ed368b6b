/**
 * The protocol codecs (OpenAI chunks, AI SDK UI message stream) depend on the record before each
 * one. Whatever path the hub serves a reader from — the live window, the store, a window that
 * restarted — a reader attached after seq k gets exactly the bytes of records k+1… of the full
 * encoding: the same bytes for everyone, wherever they started.
 */
import { MessageStream } from "@anthropic-ai/sdk/lib/MessageStream";
import { formatOffset, type SluiceEvent } from "@sluice/protocol";
import { ResponseStream } from "openai/lib/responses/ResponseStream";
import { describe, expect, it } from "vitest";
import { Hub, type Sink } from "../src/core/hub.js";
import { sseAiSdk } from "../src/formats/ai-sdk.js";
import { sseAnthropic } from "../src/formats/anthropic.js";
import type { Codec } from "../src/formats/codec.js";
import { lite } from "../src/formats/codec.js";
import { sseOpenAIUsage } from "../src/formats/openai.js";
import {
  ResponsesEncoder,
  ResponsesSink,
  recordLines,
  sseResponsesEvents,
} from "../src/formats/openai-responses.js";
import { MemoryStore } from "../src/stores/memory.js";
import { EVENTS_CONTENT_TYPE } from "../src/stores/store.js";

class Collect implements Sink {
  out = "";
  ended = false;
  buffered = 0;
  closed = false;
  write(chunk: string) {
    this.out += chunk;
  }
  onDrain(cb: () => void) {
    cb();
  }
  end() {
    this.ended = true;
    this.closed = true;
  }
  cut() {
    this.end();
  }
}

const EVENTS: SluiceEvent[] = [
  { type: "start", model: "demo", created_at: "2026-01-01T00:00:00.000Z" },
  { type: "reasoning-delta", delta: "think " },
  { type: "reasoning-delta", delta: "hard" },
  { type: "text-delta", delta: "Hello", block: 1 },
  { type: "text-delta", delta: ", ", block: 1 },
  { type: "text-delta", delta: "world", block: 1 },
  { type: "tool-call-delta", id: "c1", name: "f", args_delta: '{"a"', index: 0, block: 2 },
  { type: "tool-call-delta", id: "c1", args_delta: ":1}", index: 0, block: 2 },
  { type: "tool-call", id: "c1", name: "f", args: { a: 1 }, index: 0, block: 2 },
  { type: "text-delta", delta: "again", block: 3 },
  { type: "usage", input_tokens: 3, output_tokens: 9, total_tokens: 12 },
  { type: "finish", reason: "tool-calls" },
];

async function setup() {
  const store = new MemoryStore();
  const info = await store.create({
    id: "st_codec",
    kind: "generation",
    content_type: EVENTS_CONTENT_TYPE,
    model: "demo",
  });
  return { store, info };
}

function reference(codec: Codec, info: ReturnType<typeof lite>): string[] {
  const recs = EVENTS.map((e, i) => ({
    seq: i + 1,
    offset: String(i + 1).padStart(16, "0"),
    type: e.type,
    data: JSON.stringify(e),
  }));
  return recs.map((r, i) => codec.encode(r, info, recs[i - 1]));
}

const tick = () => new Promise((r) => setImmediate(r));

describe.each([
  ["sse:openai-usage", sseOpenAIUsage],
  ["sse:ai-sdk", sseAiSdk],
  ["sse:anthropic", sseAnthropic],
])("%s through the hub", (_name, codec) => {
  it("readers attached at every offset, live and after the end, get the exact suffix", async () => {
    const { store, info } = await setup();
    const hub = new Hub(store, { windowSize: 3, catchUpPage: 2 });
    const ref = reference(codec, lite(info));
    const readers: { after: number; sink: Collect }[] = [];
    // Append in small batches; after each, attach readers at every offset so far.
    for (let i = 0; i < EVENTS.length; i += 2) {
      const batch = EVENTS.slice(i, i + 2).map((e) => ({ type: e.type, data: JSON.stringify(e) }));
      const last = i + 2 >= EVENTS.length;
      await store.append("st_codec", batch, last ? { close: "completed" } : {});
      for (let after = 0; after <= Math.min(i + 2, EVENTS.length); after += 1) {
        const sink = new Collect();
        readers.push({ after, sink });
        await hub.attach("st_codec", after, codec, sink);
      }
      await tick();
    }
    for (let n = 0; n < 50 && readers.some((r) => !r.sink.ended); n++) await tick();
    for (const r of readers) {
      expect(r.sink.ended).toBe(true);
      expect(r.sink.out).toBe(ref.slice(r.after).join(""));
    }
  });

  it.runIf(codec !== sseAnthropic)("the encoding is a valid stream of its format", () => {
    const ref = reference(codec, {
      id: "st_codec",
      created_at: "2026-01-01T00:00:00.000Z",
      model: "demo",
    }).join("");
    const datas = ref
      .split("\n")
      .filter((l) => l.startsWith("data: "))
      .map((l) => l.slice(6));
    expect(datas[datas.length - 1]).toBe("[DONE]");
    const parsed = datas.slice(0, -1).map((d) => JSON.parse(d));
    if (codec === sseAiSdk) {
      expect(parsed.map((p) => p.type)).toEqual([
        "start",
        "start-step",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-delta",
        "text-delta",
        "text-end",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-available",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
      ]);
    } else {
      expect(parsed[0].choices[0].delta.role).toBe("assistant");
      const finish = parsed.find((p) => p.choices[0]?.finish_reason);
      expect(finish.choices[0].finish_reason).toBe("tool_calls");
      expect(parsed[parsed.length - 1]).toMatchObject({
        choices: [],
        usage: { prompt_tokens: 3, completion_tokens: 9, total_tokens: 12 },
      });
      const tools = parsed.flatMap((p) => p.choices[0]?.delta.tool_calls ?? []);
      expect(tools[0]).toEqual({
        index: 0,
        id: "c1",
        type: "function",
        function: { name: "f", arguments: '{"a"' },
      });
      expect(tools[1]).toEqual({ index: 0, function: { arguments: ":1}" } });
    }
  });
});

describe("sse:anthropic is a valid Anthropic Messages stream", () => {
  it("the SDK's accumulator builds the message the log describes", async () => {
    const ref = reference(sseAnthropic, {
      id: "st_codec",
      created_at: "2026-01-01T00:00:00.000Z",
      model: "demo",
    }).join("");
    const events = ref
      .split("\n\n")
      .filter((b) => b.trim() !== "")
      .map((b) => {
        const name = /^event: (.*)$/m.exec(b)?.[1];
        const data = JSON.parse(/^data: (.*)$/m.exec(b)?.[1] as string) as { type: string };
        expect(data.type).toBe(name); // every event names itself: the SDK drops data without event
        return data;
      });
    expect(events.map((e) => e.type)).toEqual([
      "message_start",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "content_block_start",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    // The SDK's own MessageStream over these events (as JSON lines, its readable-stream form).
    const body = new ReadableStream({
      start(c) {
        for (const e of events) c.enqueue(new TextEncoder().encode(`${JSON.stringify(e)}\n`));
        c.close();
      },
    });
    const msg = await MessageStream.fromReadableStream(body).finalMessage();
    expect(msg).toMatchObject({
      id: "msg_st_codec",
      model: "demo",
      stop_reason: "tool_use",
      usage: { input_tokens: 3, output_tokens: 9 },
      content: [
        { type: "thinking", thinking: "think hard" },
        { type: "text", text: "Hello, world" },
        { type: "tool_use", id: "c1", name: "f", input: { a: 1 } },
        { type: "text", text: "again" },
      ],
    });
  });
});

describe("openai-responses: a fold over the log", () => {
  const INFO: { id: string; created_at: string; model?: string; metadata: Record<string, unknown> } = {
    id: "st_codec",
    created_at: "2026-01-01T00:00:00.000Z",
    model: "demo",
    metadata: {},
  };
  /** Each record's events in the full encoding (one fold from the first record). */
  function referenceResponses(info: typeof INFO = INFO): string[] {
    const enc = new ResponsesEncoder(info);
    return EVENTS.map((e, i) =>
      sseResponsesEvents(
        enc.step({ seq: i + 1, type: e.type, data: JSON.stringify(e) }),
        formatOffset(i + 1),
      ),
    );
  }

  it("readers attached through the hub at every position, live and after the end, get the exact suffix", async () => {
    const { store, info } = await setup();
    const hub = new Hub(store, { windowSize: 3, catchUpPage: 2 });
    const ref = referenceResponses(info);
    const readers: { after: number; sink: Collect }[] = [];
    for (let i = 0; i < EVENTS.length; i += 2) {
      const batch = EVENTS.slice(i, i + 2).map((e) => ({ type: e.type, data: JSON.stringify(e) }));
      const last = i + 2 >= EVENTS.length;
      await store.append("st_codec", batch, last ? { close: "completed" } : {});
      for (let after = 0; after <= Math.min(i + 2, EVENTS.length); after += 1) {
        const sink = new Collect();
        readers.push({ after, sink });
        // As every Responses reader: attached at the start, the fold sends what follows `after`.
        await hub.attach("st_codec", 0, recordLines, new ResponsesSink(sink, info, { afterRecord: after }));
      }
      await tick();
    }
    for (let n = 0; n < 50 && readers.some((r) => !r.sink.ended); n++) await tick();
    for (const r of readers) {
      expect(r.sink.ended).toBe(true);
      expect(r.sink.out).toBe(ref.slice(r.after).join(""));
    }
  });

  it("numbers every event from 0, and the openai SDK's accumulator builds the response the log describes", async () => {
    const events = referenceResponses()
      .join("")
      .split("\n\n")
      .filter((b) => b.trim() !== "")
      .map((b) => {
        const name = /^event: (.*)$/m.exec(b)?.[1];
        const data = JSON.parse(/^data: (.*)$/m.exec(b)?.[1] as string) as {
          type: string;
          sequence_number: number;
        };
        expect(data.type).toBe(name);
        return data;
      });
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    expect(events.map((e) => e.type)).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.reasoning_summary_part.added",
      "response.reasoning_summary_text.delta",
      "response.reasoning_summary_text.delta",
      "response.reasoning_summary_text.done",
      "response.reasoning_summary_part.done",
      "response.output_item.done",
      "response.output_item.added",
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.delta",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.output_item.added",
      "response.function_call_arguments.delta",
      "response.function_call_arguments.delta",
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.output_item.added",
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    const body = new ReadableStream({
      start(c) {
        for (const e of events) c.enqueue(new TextEncoder().encode(`${JSON.stringify(e)}\n`));
        c.close();
      },
    });
    const final = await ResponseStream.fromReadableStream(body).finalResponse();
    expect(final).toMatchObject({
      id: "resp_st_codec",
      status: "completed",
      output_text: "Hello, worldagain",
      usage: { input_tokens: 3, output_tokens: 9, total_tokens: 12 },
      output: [
        { type: "reasoning", summary: [{ type: "summary_text", text: "think hard" }] },
        { type: "message", content: [{ type: "output_text", text: "Hello, world" }] },
        { type: "function_call", call_id: "c1", name: "f", arguments: '{"a":1}', status: "completed" },
        { type: "message", content: [{ type: "output_text", text: "again" }] },
      ],
    });
    // The same as the response.completed event carries (less the fields the SDK's parse helpers add).
    const helpers = new Set(["output_parsed", "parsed", "parsed_arguments"]);
    const built = JSON.parse(JSON.stringify(final, (k, v) => (helpers.has(k) ? undefined : v)));
    expect(built).toEqual((events.at(-1) as unknown as { response: unknown }).response);
  });
});
