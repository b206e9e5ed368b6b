/**
 * The OpenAI-compatible façade, driven by the official `openai` SDK against a real server.
 */
import OpenAI from "openai";
import { Stream } from "openai/core/streaming";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Running, readAllJson, readSse, startSluice, textOf, waitForStatus } from "./helpers.js";

let s: Running;
let client: OpenAI;

beforeAll(async () => {
  s = await startSluice();
  client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
});
afterAll(async () => {
  await s.close();
});

const demo = (extra: Record<string, unknown> = {}) => ({
  seed: 11,
  ttft_ms: 5,
  tokens_per_s: 2000,
  jitter: 0,
  length: 40,
  ...extra,
});

const messages = [{ role: "user" as const, content: "Explain how a durable stream log works" }];

/** Extra body fields the SDK types do not know (the SDK sends them as they are). */
function body<T>(params: T, extra: Record<string, unknown>): T {
  return { ...params, ...extra } as T;
}

describe("POST /v1/chat/completions (stream: true)", () => {
  it("streams chunks the SDK reads; text equals the stream's text; the stream id is in the header", async () => {
    const { data: stream, response } = await client.chat.completions
      .create(body({ model: "demo", messages, stream: true as const }, { demo: demo() }))
      .withResponse();
    const id = response.headers.get("sluice-stream-id");
    expect(id).toMatch(/^st_/);
    let text = "";
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
      text += chunk.choices[0]?.delta.content ?? "";
    }
    expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant");
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks[0]?.id).toBe(`chatcmpl-${id}`);
    expect(chunks[0]?.object).toBe("chat.completion.chunk");
    expect(chunks[0]?.model).toBe("demo");
    const last = chunks[chunks.length - 1];
    expect(last?.choices[0]?.finish_reason).toBe("stop");
    expect(chunks.slice(0, -1).every((c) => c.choices[0]?.finish_reason === null)).toBe(true);
    expect(text.length).toBeGreaterThan(20);
    await waitForStatus(s.url, id as string, (st) => st === "completed");
    expect(text).toBe(textOf(await readAllJson(s.url, id as string)));
  });

  it("ends with data: [DONE]; with include_usage every chunk has usage null and a usage chunk comes last", async () => {
    const res = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        messages,
        stream: true,
        stream_options: { include_usage: true },
        demo: demo({ length: 12 }),
      }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const msgs = await readSse(res);
    expect(msgs[msgs.length - 1]?.data).toBe("[DONE]");
    const chunks = msgs.slice(0, -1).map((m) => JSON.parse(m.data));
    const usageChunk = chunks[chunks.length - 1];
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage.completion_tokens).toBe(12);
    expect(usageChunk.usage.total_tokens).toBe(usageChunk.usage.prompt_tokens + 12);
    for (const c of chunks.slice(0, -1)) expect(c.usage).toBeNull();
    // Without include_usage: no usage key at all, no usage chunk.
    const res2 = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "demo", messages, stream: true, demo: demo({ length: 5 }) }),
    });
    const chunks2 = (await readSse(res2)).filter((m) => m.data !== "[DONE]").map((m) => JSON.parse(m.data));
    expect(chunks2.every((c) => !("usage" in c) && c.choices.length === 1)).toBe(true);
  });

  it("SDK usage via stream_options", async () => {
    const stream = await client.chat.completions.create(
      body(
        { model: "demo", messages, stream: true as const, stream_options: { include_usage: true } },
        { demo: demo({ length: 9 }) },
      ),
    );
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    expect(usage?.completion_tokens).toBe(9);
  });

  it("tool calls stream as tool_calls deltas by index; the SDK's stream helper assembles them", async () => {
    const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [
      {
        type: "function",
        function: {
          name: "get_weather",
          description: "Weather for a city",
          parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
        },
      },
    ];
    const runner = client.chat.completions.stream(
      body(
        { model: "demo", messages, tools, tool_choice: "required" as const, stream: true as const },
        { demo: demo({ kind: "tool-call" }) },
      ),
    );
    const final = await runner.finalChatCompletion();
    const call = final.choices[0]?.message.tool_calls?.[0];
    expect(final.choices[0]?.finish_reason).toBe("tool_calls");
    expect(call?.type).toBe("function");
    if (call?.type !== "function") throw new Error("no function call");
    expect(call.function.name).toBe("get_weather");
    const args = JSON.parse(call.function.arguments);
    expect(typeof args.city).toBe("string");
    expect(call.id).toBeTruthy();
  });

  it("reasoning arrives as delta.reasoning_content, before the content", async () => {
    const stream = await client.chat.completions.create(
      body(
        { model: "demo", messages, stream: true as const },
        { demo: demo({ kind: "reasoning", length: 30 }) },
      ),
    );
    let reasoning = "";
    let content = "";
    let reasoningAfterContent = false;
    for await (const chunk of stream) {
      const d = chunk.choices[0]?.delta as
        | { reasoning_content?: string; content?: string | null }
        | undefined;
      if (d?.reasoning_content) {
        reasoning += d.reasoning_content;
        if (content) reasoningAfterContent = true;
      }
      if (d?.content) content += d.content;
    }
    expect(reasoning.length).toBeGreaterThan(0);
    expect(content.length).toBeGreaterThan(0);
    expect(reasoningAfterContent).toBe(false);
  });

  it("an error mid-stream makes the SDK throw; the partial output stays in the stream", async () => {
    const { data: stream, response } = await client.chat.completions
      .create(
        body({ model: "demo", messages, stream: true as const }, { demo: demo({ fail_after_tokens: 5 }) }),
      )
      .withResponse();
    const id = response.headers.get("sluice-stream-id") as string;
    let text = "";
    let caught: unknown;
    try {
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(OpenAI.APIError);
    expect(String((caught as Error).message)).toContain("simulated failure");
    const info = await waitForStatus(s.url, id, (st) => st === "failed");
    expect((info.error as { code: string }).code).toBe("upstream_error");
    expect(text).toBe(textOf(await readAllJson(s.url, id)));
    expect(text.length).toBeGreaterThan(0);
    // On the wire: a data: event with an error object, and no [DONE].
    const res = await fetch(`${s.url}/v1/streams/${id}?format=openai`, {
      headers: { accept: "text/event-stream" },
    });
    const msgs = await readSse(res);
    expect(msgs.some((m) => m.data === "[DONE]")).toBe(false);
    const err = JSON.parse(msgs[msgs.length - 1]?.data as string);
    expect(err.error).toMatchObject({ type: "server_error", code: "upstream_error", param: null });
  });

  it("aborting from the SDK does not stop the generation (on_disconnect: continue by default)", async () => {
    const controller = new AbortController();
    const { data: stream, response } = await client.chat.completions
      .create(
        body(
          { model: "demo", messages, stream: true as const },
          { demo: demo({ tokens_per_s: 200, length: 60 }) },
        ),
        { signal: controller.signal },
      )
      .withResponse();
    const id = response.headers.get("sluice-stream-id") as string;
    // The client aborts after 3 chunks. (Chunks the SDK had already read may still be yielded
    // after its signal aborts; how many depends on how the bytes arrived, so stop iterating here.)
    let n = 0;
    for await (const _ of stream) {
      if (++n === 3) {
        controller.abort();
        break;
      }
    }
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("completed");
    expect(info.output_tokens).toBe(60);
  });

  it("with on_disconnect: cancel an SDK abort cancels the generation", async () => {
    const controller = new AbortController();
    const { data: stream, response } = await client.chat.completions
      .create(
        body(
          { model: "demo", messages, stream: true as const },
          { demo: demo({ tokens_per_s: 100, length: 200 }), on_disconnect: "cancel" },
        ),
        { signal: controller.signal },
      )
      .withResponse();
    const id = response.headers.get("sluice-stream-id") as string;
    // The client aborts after 3 chunks (and stops iterating: see the test above).
    let n = 0;
    for await (const _ of stream) {
      if (++n === 3) {
        controller.abort();
        break;
      }
    }
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("cancelled");
    const events = await readAllJson(s.url, id);
    expect(events[events.length - 1]?.event).toMatchObject({ type: "abort", by: "client-disconnect" });
  });
});

describe("POST /v1/chat/completions (not streaming)", () => {
  it("returns a full chat.completion with usage and the stream id header", async () => {
    const { data, response } = await client.chat.completions
      .create(body({ model: "demo", messages, max_completion_tokens: 15 }, { demo: demo({ length: 40 }) }))
      .withResponse();
    const id = response.headers.get("sluice-stream-id") as string;
    expect(data.object).toBe("chat.completion");
    expect(data.id).toBe(`chatcmpl-${id}`);
    expect(data.choices[0]?.finish_reason).toBe("length");
    expect(data.usage?.completion_tokens).toBe(15);
    expect(data.choices[0]?.message.content).toBe(textOf(await readAllJson(s.url, id)));
  });

  it("tool calls in the message", async () => {
    const data = await client.chat.completions.create(
      body(
        {
          model: "demo",
          messages,
          tools: [
            { type: "function" as const, function: { name: "lookup", parameters: { type: "object" } } },
          ],
          tool_choice: "required" as const,
        },
        { demo: demo({ kind: "tool-call" }) },
      ),
    );
    const msg = data.choices[0]?.message;
    expect(data.choices[0]?.finish_reason).toBe("tool_calls");
    expect(msg?.content).toBeNull();
    const call = msg?.tool_calls?.[0];
    if (call?.type !== "function") throw new Error("no call");
    expect(call.function.name).toBe("lookup");
    expect(() => JSON.parse(call.function.arguments)).not.toThrow();
  });

  it("an upstream failure is an OpenAI-shaped error the SDK raises", async () => {
    const err = await client.chat.completions
      .create(body({ model: "demo", messages }, { demo: demo({ fail_after_tokens: 3 }) }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe("upstream_error");
  });

  it("a generation cancelled while the completion waits answers the `cancelled` code, not a 500", async () => {
    const pending = client.chat.completions
      .create(body({ model: "demo", messages }, { demo: demo({ tokens_per_s: 20, length: 10_000 }) }))
      .catch((e: unknown) => e);
    // The stream id header comes with the answer: find the running stream in the list instead.
    let id: string | undefined;
    for (let i = 0; i < 500 && id === undefined; i++) {
      const list = (await (await fetch(`${s.url}/v1/streams`)).json()) as {
        streams: { id: string; status: string }[];
      };
      id = list.streams.find((x) => x.status === "running")?.id;
      if (id === undefined) await new Promise((r) => setTimeout(r, 10));
    }
    expect(id).toBeDefined();
    const cancel = await fetch(`${s.url}/v1/streams/${id}/cancel`, { method: "POST" });
    expect(cancel.status).toBe(200);
    const err = await pending;
    expect(err).toBeInstanceOf(OpenAI.APIError);
    const e = err as InstanceType<typeof OpenAI.APIError>;
    expect(e.status).toBe(409);
    expect(e.code).toBe("cancelled");
    expect(e.type).toBe("cancelled");
    expect(e.message).toContain("cancelled");
  });
});

describe("errors before the stream, in OpenAI's shape", () => {
  it("unknown model", async () => {
    const err = (await client.chat.completions
      .create({ model: "nope", messages, stream: true })
      .catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>;
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err.code).toBe("unknown_model");
    expect(err.type).toBe("invalid_request_error");
  });

  it("bad bodies and bad JSON", async () => {
    for (const [payload, param] of [
      [{ model: "demo" }, "messages"],
      [{ model: "demo", messages, n: 2 }, "n"],
      [{ model: "demo", messages, temperature: "hot" }, "temperature"],
    ] as const) {
      const res = await fetch(`${s.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(payload),
      });
      expect(res.status).toBe(400);
      const b = (await res.json()) as { error: Record<string, unknown> };
      expect(b.error).toMatchObject({ type: "invalid_request_error", code: "invalid_request", param });
      expect(typeof b.error.message).toBe("string");
    }
    const res = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json",
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_json");
  });

  it("accepts the fields real clients send (user, seed, logprobs, response_format, …)", async () => {
    const res = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        messages: [{ role: "system", content: "be brief" }, ...messages],
        user: "u1",
        seed: 3,
        n: 1,
        presence_penalty: 0,
        frequency_penalty: 0,
        logit_bias: {},
        logprobs: false,
        response_format: { type: "text" },
        parallel_tool_calls: true,
        store: false,
        stop: null,
        max_tokens: 4,
        temperature: 0.2,
        demo: demo(),
      }),
    });
    expect(res.status).toBe(200);
    const b = (await res.json()) as { choices: { finish_reason: string }[] };
    expect(b.choices[0]?.finish_reason).toBe("length");
  });
});

describe("GET /v1/streams/{id}?format=openai", () => {
  it("serves the same bytes to every reader and resumes with Last-Event-ID", async () => {
    const res = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        messages,
        stream: true,
        demo: demo({ tokens_per_s: 300, length: 30 }),
      }),
    });
    const id = res.headers.get("sluice-stream-id") as string;
    const original = await readSse(res);
    const read = async (headers: Record<string, string> = {}) =>
      readSse(
        await fetch(`${s.url}/v1/streams/${id}?format=openai`, {
          headers: { accept: "text/event-stream", ...headers },
        }),
      );
    const again = await read();
    const strip = (ms: { id?: string; data: string }[]) => ms.map((m) => ({ id: m.id, data: m.data }));
    expect(strip(again)).toEqual(strip(original));
    // Resume after the 10th event: exactly the rest.
    const cut = original[9];
    const rest = await read({ "last-event-id": cut?.id as string });
    expect(strip(rest)).toEqual(strip(original.slice(10)));
    const text = [...original]
      .filter((m) => m.data !== "[DONE]")
      .map((m) => JSON.parse(m.data).choices[0]?.delta?.content ?? "")
      .join("");
    expect(text).toBe(textOf(await readAllJson(s.url, id)));
  });

  it("resumes an SDK stream mid-generation: the two halves join into the full text", async () => {
    const res = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        messages,
        stream: true,
        demo: demo({ tokens_per_s: 100, length: 40 }),
      }),
    });
    const id = res.headers.get("sluice-stream-id") as string;
    const first = await readSse(res, (m) => (m.id && Number(m.id) >= 8 ? "stop" : undefined));
    const lastId = first[first.length - 1]?.id as string;
    const resumed = await fetch(`${s.url}/v1/streams/${id}?format=openai`, {
      headers: { accept: "text/event-stream", "last-event-id": lastId },
    });
    // The official SDK parses the resumed response.
    const sdkStream = Stream.fromSSEResponse<OpenAI.Chat.Completions.ChatCompletionChunk>(
      resumed,
      new AbortController(),
    );
    let text = first.map((m) => JSON.parse(m.data).choices[0]?.delta?.content ?? "").join("");
    for await (const chunk of sdkStream) text += chunk.choices[0]?.delta.content ?? "";
    await waitForStatus(s.url, id, (st) => st === "completed");
    expect(text).toBe(textOf(await readAllJson(s.url, id)));
  });
});

describe("on_disconnect on the route", () => {
  it("a route with on_disconnect: cancel cancels when the SDK aborts; the request can override it", async () => {
    const s2 = await startSluice({ routes: { strict: { provider: "demo", on_disconnect: "cancel" } } });
    try {
      const c2 = new OpenAI({ baseURL: `${s2.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const run = async (extra: Record<string, unknown>) => {
        const controller = new AbortController();
        const { data: stream, response } = await c2.chat.completions
          .create(
            body(
              { model: "strict", messages, stream: true as const },
              { demo: demo({ tokens_per_s: 100, length: 100 }), ...extra },
            ),
            { signal: controller.signal },
          )
          .withResponse();
        let n = 0;
        for await (const _ of stream) if (++n === 3) controller.abort();
        const id = response.headers.get("sluice-stream-id") as string;
        return waitForStatus(s2.url, id, (st) => st !== "running");
      };
      expect((await run({})).status).toBe("cancelled");
      expect((await run({ on_disconnect: "continue" })).status).toBe("completed");
    } finally {
      await s2.close();
    }
  });
});
