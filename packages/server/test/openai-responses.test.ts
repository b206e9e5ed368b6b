/**
 * The OpenAI Responses API on the log, driven by the official `openai` SDK (and `ai` +
 * `@ai-sdk/openai`) against a real server, with a real mock-upstream behind an openai-compatible
 * route where the upstream must be seen (cancel reaching it, what a conversation forwards).
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createOpenAI } from "@ai-sdk/openai";
import { type MockUpstream, startMockUpstream } from "@sluice/mock-upstream";
import { generateText, streamText } from "ai";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Running, readAllJson, startSluice, textOf, waitForStatus } from "./helpers.js";
import { startRedis } from "./redis-helper.js";

let s: Running;
let mock: MockUpstream;
let client: OpenAI;

beforeAll(async () => {
  mock = await startMockUpstream({ port: 0 });
  s = await startSluice({
    routes: { "mock-model": { provider: "openai-compatible", base_url: mock.url } },
  } as never);
  client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
});
afterAll(async () => {
  await s.close();
  await mock.close();
});

const demo = (extra: Record<string, unknown> = {}) => ({
  seed: 5,
  ttft_ms: 5,
  tokens_per_s: 2000,
  jitter: 0,
  length: 40,
  ...extra,
});

/** Extra body fields the SDK types do not know (the SDK sends them as they are). */
function body<T>(params: T, extra: Record<string, unknown>): T {
  return { ...params, ...extra } as T;
}

const streamIdOf = (responseId: string) => responseId.replace(/^resp_/, "");

type Ev = OpenAI.Responses.ResponseStreamEvent;

async function collect(stream: AsyncIterable<Ev>): Promise<Ev[]> {
  const out: Ev[] = [];
  for await (const e of stream) out.push(e);
  return out;
}

const deltas = (events: Ev[]) =>
  events.map((e) => (e.type === "response.output_text.delta" ? e.delta : "")).join("");

describe("POST /v1/responses", () => {
  it("answers a response object (not streaming); its text is the log's text", async () => {
    const r = await client.responses.create(
      body({ model: "demo", input: "Explain a durable log" }, { demo: demo() }),
    );
    expect(r.object).toBe("response");
    expect(r.id).toMatch(/^resp_st_/);
    expect(r.status).toBe("completed");
    expect(r.output[0]?.type).toBe("message");
    expect(r.usage?.output_tokens).toBe(40);
    const log = textOf(await readAllJson(s.url, streamIdOf(r.id)));
    expect(log.length).toBeGreaterThan(20);
    expect(r.output_text).toBe(log);
  });

  it("streams events numbered 0..n; the text is the log's; the SDK's final response agrees", async () => {
    const events = await collect(
      await client.responses.create(
        body({ model: "demo", input: "Explain a durable log", stream: true as const }, { demo: demo() }),
      ),
    );
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    expect(events.slice(0, 4).map((e) => e.type)).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
    ]);
    expect(events.slice(-4).map((e) => e.type)).toEqual([
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    const last = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    const id = last.response.id;
    await waitForStatus(s.url, streamIdOf(id), (x) => x === "completed");
    const log = textOf(await readAllJson(s.url, streamIdOf(id)));
    expect(deltas(events)).toBe(log);
    expect(last.response.output_text).toBe(log);
    // The SDK's own accumulator (responses.stream) builds the same answer from these events.
    const final = await client.responses
      .stream(body({ model: "demo", input: "Explain a durable log" }, { demo: demo() }))
      .finalResponse();
    expect(final.output_text).toBe(log);
  });

  it("streams reasoning summaries from the log's reasoning records", async () => {
    const events = await collect(
      await client.responses.create(
        body(
          { model: "demo", input: "Why?", stream: true as const, reasoning: { summary: "auto" as const } },
          { demo: demo({ length: 60 }) },
        ),
      ),
    );
    const summary = events
      .map((e) => (e.type === "response.reasoning_summary_text.delta" ? e.delta : ""))
      .join("");
    expect(summary.length).toBeGreaterThan(0);
    const done = events.find((e) => e.type === "response.reasoning_summary_text.done");
    expect(done && "text" in done ? done.text : undefined).toBe(summary);
    const completed = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    expect(completed.response.output.map((o) => o.type)).toEqual(["reasoning", "message"]);
    expect(completed.response.output_text).toBe(deltas(events));
  });

  it("max_output_tokens cuts the answer: status incomplete, reason max_output_tokens", async () => {
    const r = await client.responses.create(
      body({ model: "demo", input: "Explain", max_output_tokens: 7 }, { demo: demo({ length: 50 }) }),
    );
    expect(r.status).toBe("incomplete");
    expect(r.incomplete_details?.reason).toBe("max_output_tokens");
    expect(r.max_output_tokens).toBe(7);
  });

  it("echoes instructions, metadata and temperature; instructions reach the upstream as a system message", async () => {
    const r = await client.responses.create(
      body(
        {
          model: "mock-model",
          input: [{ role: "user" as const, content: [{ type: "input_text" as const, text: "Hello there" }] }],
          instructions: "Answer briefly.",
          metadata: { app: "test" },
          temperature: 0.5,
        },
        { demo: demo({ length: 10 }) },
      ),
    );
    expect(r.status).toBe("completed");
    expect(r.instructions).toBe("Answer briefly.");
    expect(r.metadata).toEqual({ app: "test" });
    expect(r.temperature).toBe(0.5);
    const sent = mock.requests.at(-1)?.body as { messages: unknown[]; temperature: number };
    expect(sent.messages).toEqual([
      { role: "system", content: "Answer briefly." },
      { role: "user", content: "Hello there" },
    ]);
    expect(sent.temperature).toBe(0.5);
  });
});

describe("function tools and previous_response_id", () => {
  const tools = [
    {
      type: "function" as const,
      name: "get_weather",
      description: "The weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      strict: true,
    },
  ];

  it("a function call round trip: the call streams as function_call events, its output continues the conversation", async () => {
    const events = await collect(
      await client.responses.create(
        body(
          {
            model: "mock-model",
            input: "Weather in Paris?",
            tools,
            tool_choice: "required" as const,
            stream: true as const,
          },
          { demo: demo() },
        ),
      ),
    );
    const completed = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    expect(completed.type).toBe("response.completed");
    const call = completed.response.output.find((o) => o.type === "function_call");
    if (call?.type !== "function_call") throw new Error("no function call");
    expect(call.name).toBe("get_weather");
    const argDeltas = events
      .map((e) => (e.type === "response.function_call_arguments.delta" ? e.delta : ""))
      .join("");
    expect(argDeltas).toBe(call.arguments);
    expect(JSON.parse(call.arguments)).toBeTypeOf("object");
    const argsDone = events.find((e) => e.type === "response.function_call_arguments.done");
    expect(argsDone && "arguments" in argsDone ? argsDone.arguments : undefined).toBe(call.arguments);

    // Continue from it: the previous response's input and output come first, then the tool's output.
    const next = await client.responses.create(
      body(
        {
          model: "mock-model",
          previous_response_id: completed.response.id,
          input: [{ type: "function_call_output" as const, call_id: call.call_id, output: "18°C, sunny" }],
          tools,
        },
        { demo: demo({ length: 10 }) },
      ),
    );
    expect(next.status).toBe("completed");
    expect(next.previous_response_id).toBe(completed.response.id);
    const sent = mock.requests.at(-1)?.body as { messages: Record<string, unknown>[] };
    expect(sent.messages).toEqual([
      { role: "user", content: "Weather in Paris?" },
      {
        role: "assistant",
        content: "",
        tool_calls: [
          {
            id: call.call_id,
            type: "function",
            function: { name: "get_weather", arguments: call.arguments },
          },
        ],
      },
      { role: "tool", tool_call_id: call.call_id, content: "18°C, sunny" },
    ]);
  });

  it("previous_response_id chains text turns", async () => {
    const first = await client.responses.create(
      body({ model: "mock-model", input: "First question" }, { demo: demo({ length: 8 }) }),
    );
    await client.responses.create(
      body(
        { model: "mock-model", input: "Second question", previous_response_id: first.id },
        { demo: demo({ length: 8 }) },
      ),
    );
    const sent = mock.requests.at(-1)?.body as { messages: Record<string, unknown>[] };
    expect(sent.messages).toEqual([
      { role: "user", content: "First question" },
      { role: "assistant", content: first.output_text },
      { role: "user", content: "Second question" },
    ]);
  });

  it("an unknown previous_response_id is 404 in OpenAI's error shape", async () => {
    const err = await client.responses
      .create({ model: "demo", input: "x", previous_response_id: "resp_st_nothing" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((err as InstanceType<typeof OpenAI.NotFoundError>).param).toBe("previous_response_id");
  });
});

describe("background mode, resume, cancel, delete", () => {
  it("background returns at once; retrieve(stream, starting_after=k) gives exactly the events after k, live or ended", async () => {
    const created = await client.responses.create(
      body(
        { model: "demo", input: "Explain a durable log", background: true },
        { demo: demo({ length: 120, tokens_per_s: 200, ttft_ms: 20 }) },
      ),
    );
    expect(created.background).toBe(true);
    expect(["queued", "in_progress"]).toContain(created.status);
    // A full read from the start, and a resume opened mid-stream while the generation runs.
    const full = client.responses.retrieve(created.id, { stream: true });
    const fullEvents: Ev[] = [];
    let mid: Promise<Ev[]> | undefined;
    let midAfter = -1;
    for await (const e of await full) {
      fullEvents.push(e);
      if (mid === undefined && e.type === "response.output_text.delta" && fullEvents.length >= 12) {
        midAfter = e.sequence_number;
        mid = collect(
          await client.responses.retrieve(created.id, { stream: true, starting_after: midAfter }),
        );
      }
    }
    expect(mid).toBeDefined();
    const info = await waitForStatus(s.url, streamIdOf(created.id), (x) => x !== "running");
    expect(info.status).toBe("completed");
    expect(fullEvents.map((e) => e.sequence_number)).toEqual(fullEvents.map((_, i) => i));
    expect(fullEvents.at(-1)?.type).toBe("response.completed");
    expect(JSON.stringify(await mid)).toBe(JSON.stringify(fullEvents.slice(midAfter + 1)));
    // After the end, from several places: the exact tail each time.
    for (const k of [0, 1, 5, Math.floor(fullEvents.length / 2), fullEvents.length - 2]) {
      const tail = await collect(
        await client.responses.retrieve(created.id, { stream: true, starting_after: k }),
      );
      expect(JSON.stringify(tail)).toBe(JSON.stringify(fullEvents.slice(k + 1)));
    }
    // The object built from the log matches the streamed one.
    const got = await client.responses.retrieve(created.id);
    const completed = fullEvents.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    expect(got).toEqual(completed.response);
    expect(got.output_text).toBe(textOf(await readAllJson(s.url, streamIdOf(created.id))));
  });

  it("a stream created as a Sluice stream reads as a response (?format=openai-responses and /v1/responses)", async () => {
    const res = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }], demo: demo() }),
    });
    const { id } = (await res.json()) as { id: string };
    await waitForStatus(s.url, id, (x) => x === "completed");
    const viaFormat = await fetch(`${s.url}/v1/streams/${id}?format=openai-responses`, {
      headers: { accept: "text/event-stream" },
    });
    expect(viaFormat.headers.get("content-type")).toMatch(/text\/event-stream/);
    const text = await viaFormat.text();
    const viaApi = await collect(await client.responses.retrieve(`resp_${id}`, { stream: true }));
    const datas = [...text.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1] as string) as Ev);
    expect(datas).toEqual(viaApi);
    expect(deltas(viaApi)).toBe(textOf(await readAllJson(s.url, id)));
  });

  it("cancel stops a slow generation, reaches the upstream, and answers status cancelled", async () => {
    const aborted = new Promise<unknown>((resolve) => mock.events.once("abort", resolve));
    const created = await client.responses.create(
      body(
        { model: "mock-model", input: "Tell me a long story", background: true },
        { demo: demo({ length: 5000, tokens_per_s: 100 }) },
      ),
    );
    const reader = collect(await client.responses.retrieve(created.id, { stream: true }));
    await new Promise((r) => setTimeout(r, 200));
    const cancelled = await client.responses.cancel(created.id);
    expect(cancelled.status).toBe("cancelled");
    await aborted;
    expect(mock.requests.at(-1)?.status).toBe("aborted");
    expect(s.server.runner.isRunning(streamIdOf(created.id))).toBe(false);
    const info = await waitForStatus(s.url, streamIdOf(created.id), (x) => x !== "running");
    expect(info.status).toBe("cancelled");
    // The live reader got the end: a terminal event with status cancelled, then the stream closed.
    const events = await reader;
    const last = events.at(-1) as OpenAI.Responses.ResponseFailedEvent;
    expect(last.type).toBe("response.failed");
    expect(last.response.status).toBe("cancelled");
    expect((await client.responses.retrieve(created.id)).status).toBe("cancelled");
  });

  it("cancel on the demo model stops it (its log ends with abort)", async () => {
    const created = await client.responses.create(
      body(
        { model: "demo", input: "Long", background: true },
        { demo: demo({ length: 5000, tokens_per_s: 50 }) },
      ),
    );
    const cancelled = await client.responses.cancel(created.id);
    expect(cancelled.status).toBe("cancelled");
    const log = await readAllJson(s.url, streamIdOf(created.id));
    expect(log.at(-1)?.event.type).toBe("abort");
    expect(log.filter((e) => e.event.type === "text-delta").length).toBeLessThan(5000);
  });

  it("DELETE cancels a live response and removes its stream", async () => {
    const created = await client.responses.create(
      body(
        { model: "demo", input: "Long", background: true },
        { demo: demo({ length: 5000, tokens_per_s: 50 }) },
      ),
    );
    const deleted = await client.responses.delete(created.id).then(
      () => "ok",
      (e: unknown) => e,
    );
    expect(deleted).toBe("ok");
    const raw = await fetch(`${s.url}/v1/responses/${created.id}`, { method: "DELETE" });
    expect(raw.status).toBe(404);
    expect(s.server.runner.isRunning(streamIdOf(created.id))).toBe(false);
    expect((await fetch(`${s.url}/v1/streams/${streamIdOf(created.id)}/info`)).status).toBe(404);
    await expect(client.responses.retrieve(created.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it("DELETE answers {id, object: response.deleted, deleted: true}", async () => {
    const r = await client.responses.create(
      body({ model: "demo", input: "x" }, { demo: demo({ length: 3 }) }),
    );
    const res = await fetch(`${s.url}/v1/responses/${r.id}`, { method: "DELETE" });
    expect(await res.json()).toEqual({ id: r.id, object: "response.deleted", deleted: true });
  });

  it("store: false is not retrievable (and not a previous_response_id)", async () => {
    const r = await client.responses.create(
      body({ model: "demo", input: "x", store: false }, { demo: demo({ length: 3 }) }),
    );
    expect(r.status).toBe("completed");
    expect((r as unknown as { store: boolean }).store).toBe(false);
    await expect(client.responses.retrieve(r.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(
      client.responses.create({ model: "demo", input: "y", previous_response_id: r.id }),
    ).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });
});

describe("sequence numbers come from the log", () => {
  it("background + stream: a client that drops does not cancel; it resumes after its last sequence_number", async () => {
    const ac = new AbortController();
    const stream = await client.responses.create(
      body(
        { model: "demo", input: "Explain", background: true, stream: true as const },
        { demo: demo({ length: 80, tokens_per_s: 300, ttft_ms: 10 }) },
      ),
      { signal: ac.signal },
    );
    const got: Ev[] = [];
    try {
      for await (const e of stream) {
        got.push(e);
        if (got.length === 10) ac.abort();
      }
    } catch {
      // the client's own abort
    }
    const id = (got[0] as OpenAI.Responses.ResponseCreatedEvent).response.id;
    const last = got.at(-1)?.sequence_number as number;
    const rest = await collect(await client.responses.retrieve(id, { stream: true, starting_after: last }));
    expect(rest.at(-1)?.type).toBe("response.completed");
    const all = [...got, ...rest];
    expect(all.map((e) => e.sequence_number)).toEqual(all.map((_, i) => i));
    expect(deltas(all)).toBe(textOf(await readAllJson(s.url, streamIdOf(id))));
  });

  it("after a restart (SQLite) the same events carry the same numbers; an interrupted response ends failed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-responses-"));
    const store = `sqlite:${join(dir, "sluice.db")}`;
    try {
      const a = await startSluice({ store } as never);
      const c1 = new OpenAI({ baseURL: `${a.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const done = await c1.responses.create(body({ model: "demo", input: "One" }, { demo: demo() }));
      const full = await collect(await c1.responses.retrieve(done.id, { stream: true }));
      // A long one, cut by the restart after a few events were delivered.
      const long = await c1.responses.create(
        body(
          { model: "demo", input: "Two", background: true },
          { demo: demo({ length: 5000, tokens_per_s: 100 }) },
        ),
      );
      const before: Ev[] = [];
      for await (const e of await c1.responses.retrieve(long.id, { stream: true })) {
        before.push(e);
        if (before.length === 12) break;
      }
      await a.close();

      const b = await startSluice({ store } as never);
      try {
        const c2 = new OpenAI({ baseURL: `${b.url}/v1`, apiKey: "unused", maxRetries: 0 });
        for (const k of [0, 4, full.length - 3]) {
          const tail = await collect(
            await c2.responses.retrieve(done.id, { stream: true, starting_after: k }),
          );
          expect(JSON.stringify(tail)).toBe(JSON.stringify(full.slice(k + 1)));
        }
        const last = before.at(-1)?.sequence_number as number;
        const rest = await collect(
          await c2.responses.retrieve(long.id, { stream: true, starting_after: last }),
        );
        expect(rest[0]?.sequence_number).toBe(last + 1);
        const end = rest.at(-1) as OpenAI.Responses.ResponseFailedEvent;
        expect(end.type).toBe("response.failed");
        expect(end.response.status).toBe("failed");
        expect(end.response.error?.code).toBe("interrupted");
        const again = await collect(await c2.responses.retrieve(long.id, { stream: true }));
        expect(JSON.stringify(again.slice(0, before.length))).toBe(JSON.stringify(before));
        expect(JSON.stringify(again.slice(before.length))).toBe(JSON.stringify(rest));
      } finally {
        await b.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("two nodes on Redis", () => {
  it("a response started on one node resumes on the other with the same numbers; a cancel there stops it", async () => {
    const redis = await startRedis();
    const nodes: Running[] = [];
    try {
      for (let n = 0; n < 2; n++) nodes.push(await startSluice({ store: redis.url } as never));
      const [a, b] = nodes as [Running, Running];
      const ca = new OpenAI({ baseURL: `${a.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const cb = new OpenAI({ baseURL: `${b.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const created = await ca.responses.create(
        body(
          { model: "demo", input: "Explain", background: true },
          { demo: demo({ length: 100, tokens_per_s: 200, ttft_ms: 10 }) },
        ),
      );
      // Events from node A until 15 arrived, then the rest from node B while the generation runs.
      const got: Ev[] = [];
      for await (const e of await ca.responses.retrieve(created.id, { stream: true })) {
        got.push(e);
        if (got.length === 15) break;
      }
      const last = got.at(-1)?.sequence_number as number;
      const rest = await collect(
        await cb.responses.retrieve(created.id, { stream: true, starting_after: last }),
      );
      const all = [...got, ...rest];
      expect(all.at(-1)?.type).toBe("response.completed");
      expect(all.map((e) => e.sequence_number)).toEqual(all.map((_, i) => i));
      const fromB = await collect(await cb.responses.retrieve(created.id, { stream: true }));
      expect(JSON.stringify(fromB)).toBe(JSON.stringify(all));

      // A slow one started on A, cancelled through B: A's generation stops.
      const slow = await ca.responses.create(
        body(
          { model: "demo", input: "Long", background: true },
          { demo: demo({ length: 5000, tokens_per_s: 50 }) },
        ),
      );
      const cancelled = await cb.responses.cancel(slow.id);
      expect(cancelled.status).toBe("cancelled");
      await waitForStatus(a.url, streamIdOf(slow.id), (x) => x === "cancelled");
      expect(a.server.runner.isRunning(streamIdOf(slow.id))).toBe(false);
    } finally {
      for (const n of nodes) await n.close();
      await redis.close();
    }
  }, 60_000);
});

describe("refusals (400 in OpenAI's error shape, never dropped)", () => {
  const refuse = async (extra: Record<string, unknown>, param: string | RegExp) => {
    const err = await client.responses
      .create(body({ model: "demo", input: "x" }, extra))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    const e = err as InstanceType<typeof OpenAI.BadRequestError>;
    expect(e.param).toMatch(param);
    expect(e.code).toBe("invalid_request");
  };

  it("refuses what it cannot honour, by name", async () => {
    await refuse({ conversation: "conv_1" }, "conversation");
    await refuse({ tools: [{ type: "web_search" }] }, "tools.0.type");
    await refuse(
      { input: [{ role: "user", content: [{ type: "input_image", image_url: "x" }] }] },
      /input\.0/,
    );
    await refuse({ input: [{ type: "computer_call_output", call_id: "x" }] }, "input.0.type");
    await refuse({ truncation: "auto" }, "truncation");
    await refuse({ include: ["reasoning.encrypted_content"] }, "include");
    await refuse({ frobnicate: true }, "frobnicate");
    await refuse({ background: true, store: false }, "background");
    await refuse({ top_logprobs: 3 }, "top_logprobs");
    await refuse({ background: true, on_disconnect: "cancel" }, "on_disconnect");
  });

  it("a bad starting_after is 400", async () => {
    const r = await client.responses.create(
      body({ model: "demo", input: "x" }, { demo: demo({ length: 3 }) }),
    );
    const res = await fetch(`${s.url}/v1/responses/${r.id}?stream=true&starting_after=-5`);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { param: string } }).error.param).toBe("starting_after");
  });
});

describe("a chain of responses has the bound of one request body", () => {
  it("a previous_response_id whose conversation would pass limits.body_bytes is 413 body_too_large", async () => {
    const small = await startSluice({ limits: { body_bytes: 8 * 1024 } } as never);
    try {
      const c = new OpenAI({ baseURL: `${small.url}/v1`, apiKey: "unused", maxRetries: 0 });
      let prev = await c.responses.create(
        body({ model: "demo", input: "Go" }, { demo: demo({ length: 300 }) }),
      );
      let err: unknown;
      for (let turn = 0; turn < 20 && err === undefined; turn++) {
        prev = await c.responses
          .create(
            body(
              { model: "demo", input: "More", previous_response_id: prev.id },
              { demo: demo({ length: 300 }) },
            ),
          )
          .catch((e: unknown) => {
            err = e;
            return prev;
          });
      }
      expect(err).toBeInstanceOf(OpenAI.APIError);
      const e = err as InstanceType<typeof OpenAI.APIError>;
      expect(e.status).toBe(413);
      expect(e.code).toBe("body_too_large");
      expect(e.param).toBe("previous_response_id");
    } finally {
      await small.close();
    }
  });
});

describe("item_reference", () => {
  it("an item of an earlier response, referenced by id, is that item; an unknown one is 404", async () => {
    const first = await client.responses.create(
      body({ model: "mock-model", input: "First question" }, { demo: demo({ length: 8 }) }),
    );
    const item = first.output[0] as OpenAI.Responses.ResponseOutputMessage;
    await client.responses.create(
      body(
        {
          model: "mock-model",
          input: [
            { role: "user" as const, content: "First question" },
            { type: "item_reference" as const, id: item.id },
            { role: "user" as const, content: "Second question" },
          ],
        },
        { demo: demo({ length: 8 }) },
      ),
    );
    const sent = mock.requests.at(-1)?.body as { messages: Record<string, unknown>[] };
    expect(sent.messages).toEqual([
      { role: "user", content: "First question" },
      { role: "assistant", content: first.output_text },
      { role: "user", content: "Second question" },
    ]);
    const err = await client.responses
      .create({ model: "demo", input: [{ type: "item_reference", id: `${item.id}9` }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((err as InstanceType<typeof OpenAI.NotFoundError>).param).toBe("input.0.id");
  });
});

describe("ai + @ai-sdk/openai (the default model is the Responses API)", () => {
  it("streamText gets the whole text", async () => {
    const provider = createOpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused" });
    // (max_output_tokens keeps the demo model's default pace short.)
    const result = streamText({
      model: provider("demo"),
      prompt: "Explain a durable log",
      maxOutputTokens: 30,
    });
    let text = "";
    for await (const part of result.textStream) text += part;
    const id = (await result.response).id;
    expect(id).toMatch(/^resp_st_/);
    expect(text.length).toBeGreaterThan(20);
    await waitForStatus(s.url, streamIdOf(id), (x) => x !== "running", 60_000);
    expect(text).toBe(textOf(await readAllJson(s.url, streamIdOf(id))));
  }, 60_000);

  it("a second turn with the first turn's messages (sent back as item references) reaches the upstream whole", async () => {
    // What the SDK sends is recorded on its way (the real fetch does the request).
    const sentBodies: { input: { type?: string }[] }[] = [];
    const provider = createOpenAI({
      baseURL: `${s.url}/v1`,
      apiKey: "unused",
      fetch: (url, init) => {
        if (typeof init?.body === "string") sentBodies.push(JSON.parse(init.body));
        return fetch(url, init);
      },
    });
    const model = provider("mock-model");
    const first = await generateText({ model, prompt: "First question", maxOutputTokens: 12 });
    expect(first.text.length).toBeGreaterThan(0);
    const second = streamText({
      model,
      messages: [
        { role: "user", content: "First question" },
        ...first.response.messages,
        { role: "user", content: "Second question" },
      ],
      maxOutputTokens: 12,
    });
    let text = "";
    for await (const part of second.textStream) text += part;
    expect(text.length).toBeGreaterThan(0);
    expect(sentBodies.at(-1)?.input.some((x) => x.type === "item_reference")).toBe(true);
    const sent = mock.requests.at(-1)?.body as { messages: Record<string, unknown>[] };
    expect(sent.messages).toEqual([
      { role: "user", content: "First question" },
      { role: "assistant", content: first.text },
      { role: "user", content: "Second question" },
    ]);
  }, 60_000);
});

describe("docs/openai-responses.md", () => {
  it("its example runs against a server and prints the response's id and the log's text", async () => {
    const doc = readFileSync(new URL("../../../docs/openai-responses.md", import.meta.url), "utf8");
    const code = /```js\n([\s\S]*?)```/.exec(doc)?.[1];
    expect(code).toContain("http://127.0.0.1:8080/v1");
    const dir = mkdtempSync(join(tmpdir(), "sluice-doc-"));
    try {
      // The example as written, with this server's URL; the repo's node_modules give it `openai`.
      symlinkSync(
        fileURLToPath(new URL("../../../node_modules", import.meta.url)),
        join(dir, "node_modules"),
      );
      writeFileSync(join(dir, "example.mjs"), (code as string).replace("http://127.0.0.1:8080", s.url));
      const { stdout } = await promisify(execFile)(process.execPath, [join(dir, "example.mjs")], {
        timeout: 60_000,
      });
      const [id, ...rest] = stdout.split("\n");
      expect(id).toMatch(/^resp_st_/);
      const text = rest.join("\n").replace(/\n$/, "");
      expect(text.length).toBeGreaterThan(20);
      expect(text).toBe(textOf(await readAllJson(s.url, streamIdOf(id as string))));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
