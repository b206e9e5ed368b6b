/**
 * The Anthropic Messages API door (`POST /v1/messages`, `?format=anthropic`) with the real
 * `@anthropic-ai/sdk`: streaming (`messages.stream(...).finalMessage()`) and not, tool use,
 * thinking, errors in Anthropic's shape, abort + resume, on the demo route and on routes to
 * `sluice mock-upstream` (openai-compatible and anthropic).
 */
import { createHash } from "node:crypto";
import Anthropic from "@anthropic-ai/sdk";
import { Stream } from "@anthropic-ai/sdk/core/streaming";
import { MessageStream } from "@anthropic-ai/sdk/lib/MessageStream";
import { type MockUpstream, startMockUpstream } from "@sluice/mock-upstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Running, readAllJson, readSse, startSluice, textOf, waitForStatus } from "./helpers.js";

let s: Running;
let mock: MockUpstream;
let client: Anthropic;

const demo = (extra: Record<string, unknown> = {}) => ({
  seed: 7,
  ttft_ms: 5,
  tokens_per_s: 2000,
  jitter: 0,
  length: 40,
  ...extra,
});

const weatherTool = {
  name: "get_weather",
  description: "The weather in a city",
  input_schema: {
    type: "object" as const,
    properties: { location: { type: "string" } },
    required: ["location"],
  },
};

beforeAll(async () => {
  mock = await startMockUpstream({ apiKey: "sk-mock" });
  s = await startSluice({
    routes: {
      gpt: {
        provider: "openai-compatible",
        base_url: `http://127.0.0.1:${mock.port}/v1`,
        api_key: "sk-mock",
      },
      claude: { provider: "anthropic", base_url: `http://127.0.0.1:${mock.port}`, api_key: "sk-mock" },
    },
  });
  client = new Anthropic({ baseURL: s.url, apiKey: "unused", maxRetries: 0 });
});

afterAll(async () => {
  await s.close();
  await mock.close();
});

/** The SDK's own SSE parser and message accumulator over a `?format=anthropic` read. */
async function sdkRead(id: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${s.url}/v1/streams/${id}?format=anthropic`, {
    headers: { accept: "text/event-stream", ...headers },
  });
  expect(res.status).toBe(200);
  const events = Stream.fromSSEResponse(res, new AbortController());
  return MessageStream.fromReadableStream(events.toReadableStream()).finalMessage();
}

describe("POST /v1/messages with @anthropic-ai/sdk", () => {
  for (const model of ["demo", "gpt", "claude"]) {
    it(`${model}: messages.stream(...).finalMessage() gives the log's text, stop_reason and usage`, async () => {
      const stream = client.messages.stream({
        model,
        max_tokens: 1000,
        system: "Be brief.",
        messages: [{ role: "user", content: "Explain durable streams" }],
        demo: demo(),
      } as Anthropic.MessageStreamParams);
      let streamed = "";
      stream.on("text", (t) => {
        streamed += t;
      });
      const { response } = await stream.withResponse();
      const id = response.headers.get("sluice-stream-id") as string;
      const msg = await stream.finalMessage();
      const logText = textOf(await readAllJson(s.url, id));
      expect(logText.length).toBeGreaterThan(20);
      expect(msg.id).toBe(`msg_${id}`);
      expect(msg.role).toBe("assistant");
      expect(msg.content).toEqual([{ type: "text", text: logText }]);
      expect(streamed).toBe(logText);
      expect(msg.stop_reason).toBe("end_turn");
      expect(msg.usage.output_tokens).toBe(40);
      expect(msg.usage.input_tokens).toBeGreaterThan(0);
    });
  }

  it("messages.create without stream answers the whole message as JSON", async () => {
    const { data: msg, response } = await client.messages
      .create({
        model: "demo",
        max_tokens: 1000,
        messages: [{ role: "user", content: "Explain durable streams" }],
        demo: demo(),
      } as Anthropic.MessageCreateParamsNonStreaming)
      .withResponse();
    const id = response.headers.get("sluice-stream-id") as string;
    expect(response.headers.get("content-type")).toMatch(/application\/json/);
    expect(msg.type).toBe("message");
    expect(msg.content).toEqual([{ type: "text", text: textOf(await readAllJson(s.url, id)) }]);
    expect(msg.stop_reason).toBe("end_turn");
    expect(msg.usage.output_tokens).toBe(40);
  });

  it("max_tokens cuts the answer: stop_reason max_tokens", async () => {
    const msg = await client.messages
      .stream({
        model: "demo",
        max_tokens: 5,
        messages: [{ role: "user", content: "Explain durable streams" }],
        demo: demo(),
      } as Anthropic.MessageStreamParams)
      .finalMessage();
    expect(msg.stop_reason).toBe("max_tokens");
    expect(msg.usage.output_tokens).toBe(5);
  });

  for (const model of ["demo", "gpt", "claude"]) {
    it(`${model}: tool use streams input_json_delta; the SDK's tool_use input is the log's call; the result goes back`, async () => {
      const stream = client.messages.stream({
        model,
        max_tokens: 1000,
        messages: [{ role: "user", content: "What is the weather in Paris?" }],
        tools: [weatherTool],
        tool_choice: { type: "any" },
        demo: demo({ kind: "tool-call", length: undefined }),
      } as Anthropic.MessageStreamParams);
      let json = "";
      stream.on("inputJson", (partial) => {
        json += partial;
      });
      const { response } = await stream.withResponse();
      const id = response.headers.get("sluice-stream-id") as string;
      const msg = await stream.finalMessage();
      const call = (await readAllJson(s.url, id)).map((e) => e.event).find((e) => e.type === "tool-call");
      expect(call).toBeDefined();
      expect(msg.stop_reason).toBe("tool_use");
      const uses = msg.content.filter((b) => b.type === "tool_use");
      expect(uses).toHaveLength(1);
      expect(uses[0]).toMatchObject({
        type: "tool_use",
        id: call?.id,
        name: "get_weather",
        input: call?.args,
      });
      expect(JSON.parse(json)).toEqual(call?.args);

      // The next turn: the assistant's blocks as the SDK gave them, and the tool's result.
      const next = await client.messages.create({
        model,
        max_tokens: 1000,
        messages: [
          { role: "user", content: "What is the weather in Paris?" },
          { role: "assistant", content: msg.content },
          {
            role: "user",
            content: [
              { type: "tool_result", tool_use_id: (uses[0] as Anthropic.ToolUseBlock).id, content: "18C" },
            ],
          },
        ],
        tools: [weatherTool],
        demo: demo(),
      } as Anthropic.MessageCreateParamsNonStreaming);
      expect(next.stop_reason).toBe("end_turn");
      expect(next.content[0]?.type).toBe("text");
    });
  }

  it("thinking: a thinking block, then the text block, as the log's reasoning and text", async () => {
    const stream = client.messages.stream({
      model: "demo",
      max_tokens: 1000,
      thinking: { type: "enabled", budget_tokens: 1024 },
      messages: [{ role: "user", content: "Think about durable streams" }],
      demo: demo(),
    } as Anthropic.MessageStreamParams);
    let thinking = "";
    let text = "";
    stream.on("thinking", (d) => {
      thinking += d;
    });
    stream.on("text", (d) => {
      text += d;
    });
    const { response } = await stream.withResponse();
    const id = response.headers.get("sluice-stream-id") as string;
    const msg = await stream.finalMessage();
    const events = (await readAllJson(s.url, id)).map((e) => e.event);
    const reasoning = events.filter((e) => e.type === "reasoning-delta").map((e) => e.delta as string);
    expect(reasoning.length).toBeGreaterThan(0);
    // The runner numbers the blocks: the reasoning run is block 0 (no field), the text run block 1.
    expect(events.filter((e) => e.type === "reasoning-delta").every((e) => e.block === undefined)).toBe(true);
    expect(events.filter((e) => e.type === "text-delta").every((e) => e.block === 1)).toBe(true);
    expect(msg.content.map((b) => b.type)).toEqual(["thinking", "text"]);
    expect((msg.content[0] as Anthropic.ThinkingBlock).thinking).toBe(reasoning.join(""));
    expect((msg.content[1] as Anthropic.TextBlock).text).toBe(textOf(events.map((event) => ({ event }))));
    expect(thinking).toBe(reasoning.join(""));
    expect(text).toBe((msg.content[1] as Anthropic.TextBlock).text);
    // The same message, non-streaming and read again.
    expect((await sdkRead(id)).content).toEqual(msg.content);
  });

  it("reads any stream with ?format=anthropic through the SDK's parser: the same message", async () => {
    const stream = client.messages.stream({
      model: "demo",
      max_tokens: 1000,
      messages: [{ role: "user", content: "Explain durable streams" }],
      demo: demo(),
    } as Anthropic.MessageStreamParams);
    const { response } = await stream.withResponse();
    const id = response.headers.get("sluice-stream-id") as string;
    const msg = await stream.finalMessage();
    expect(await sdkRead(id)).toEqual(msg);
  });

  it("abort + resume: the SDK leaves mid-answer, the generation goes on, a resume from an event id gives the rest exactly", async () => {
    const stream = client.messages.stream({
      model: "demo",
      max_tokens: 1000,
      messages: [{ role: "user", content: "Explain durable streams" }],
      demo: demo({ length: 200, tokens_per_s: 200 }),
    } as Anthropic.MessageStreamParams);
    let seen = "";
    let deltas = 0;
    stream.on("text", (t) => {
      seen += t;
      if (++deltas === 10) stream.abort();
    });
    const { response } = await stream.withResponse();
    const id = response.headers.get("sluice-stream-id") as string;
    await expect(stream.finalMessage()).rejects.toThrow(/abort/i);
    // The SDK may still emit deltas it had already read when it aborted: resume after the last one seen.
    expect(deltas).toBeGreaterThanOrEqual(10);
    // Leaving did not cancel it (on_disconnect defaults to continue).
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("completed");

    // Read it whole once, raw, to learn the event ids; then resume after the last text delta seen.
    const sse = { accept: "text/event-stream" };
    const whole = await readSse(await fetch(`${s.url}/v1/streams/${id}?format=anthropic`, { headers: sse }));
    const textEvents = whole.filter((m) => m.data.includes('"text_delta"'));
    const tenth = textEvents[deltas - 1];
    expect(tenth?.id).toBeDefined();
    const at = whole.indexOf(tenth as (typeof whole)[number]);
    const rest = await readSse(
      await fetch(`${s.url}/v1/streams/${id}?format=anthropic`, {
        headers: { ...sse, "last-event-id": tenth?.id as string },
      }),
    );
    expect(rest.map((m) => [m.id, m.event, m.data])).toEqual(
      whole.slice(at + 1).map((m) => [m.id, m.event, m.data]),
    );
    const restText = rest
      .map((m) => JSON.parse(m.data) as { delta?: { type: string; text?: string } })
      .filter((d) => d.delta?.type === "text_delta")
      .map((d) => d.delta?.text)
      .join("");
    expect(seen + restText).toBe(textOf(await readAllJson(s.url, id)));
    // Resuming inside a record (between two events of the `start` record) is exact too.
    const sub = whole.find((m) => m.id?.includes("."));
    expect(sub).toBeDefined();
    const fromSub = await readSse(
      await fetch(`${s.url}/v1/streams/${id}?format=anthropic`, {
        headers: { ...sse, "last-event-id": sub?.id as string },
      }),
    );
    expect(fromSub.map((m) => m.data)).toEqual(
      whole.slice(whole.indexOf(sub as (typeof whole)[number]) + 1).map((m) => m.data),
    );
  });
});

describe("POST /v1/messages: heartbeat and leaving", () => {
  it("an idle stream gets Anthropic ping events", async () => {
    const quick = await startSluice({ sse: { heartbeat_ms: 100 } } as never);
    try {
      const ac = new AbortController();
      const res = await fetch(`${quick.url}/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        signal: ac.signal,
        body: JSON.stringify({
          model: "demo",
          max_tokens: 100,
          stream: true,
          messages: [{ role: "user", content: "hi" }],
          demo: demo({ ttft_ms: 60_000 }),
        }),
      });
      expect(res.status).toBe(200);
      const msgs = await readSse(res, (m) => (m.event === "ping" ? "stop" : undefined));
      ac.abort();
      expect(msgs.map((m) => m.event)).toEqual(["message_start", "ping"]);
      expect(JSON.parse(msgs[1]?.data as string)).toEqual({ type: "ping" });
    } finally {
      await quick.close();
    }
  });

  it("on_disconnect: cancel — the SDK aborting cancels the generation", async () => {
    const stream = client.messages.stream({
      model: "demo",
      max_tokens: 1000,
      messages: [{ role: "user", content: "Explain durable streams" }],
      on_disconnect: "cancel",
      demo: demo({ length: 2000, tokens_per_s: 100 }),
    } as Anthropic.MessageStreamParams);
    let n = 0;
    stream.on("text", () => {
      if (++n === 3) stream.abort();
    });
    const { response } = await stream.withResponse();
    const id = response.headers.get("sluice-stream-id") as string;
    await expect(stream.finalMessage()).rejects.toThrow(/abort/i);
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("cancelled");
  });
});

describe("POST /v1/messages errors, in Anthropic's shape", () => {
  it("a bad request is a 400 invalid_request_error the SDK raises as BadRequestError", async () => {
    const err = await client.messages
      .create({ model: "demo", messages: [{ role: "user", content: "hi" }] } as never)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    const e = err as InstanceType<typeof Anthropic.BadRequestError>;
    expect(e.status).toBe(400);
    expect(e.error).toMatchObject({
      type: "error",
      error: { type: "invalid_request_error", code: "invalid_request" },
    });
    expect((e.error as { error: { message: string } }).error.message).toMatch(/max_tokens/);
  });

  it("raw: the body is {type:error, error:{type, message}}; unknown fields, block kinds and top_k are refused by name", async () => {
    const post = (body: unknown) =>
      fetch(`${s.url}/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const base = { model: "demo", max_tokens: 10, messages: [{ role: "user", content: "hi" }] };
    for (const [body, pattern] of [
      [{ ...base, top_k: 5 }, /top_k/],
      [
        {
          ...base,
          messages: [{ role: "user", content: [{ type: "image", source: { type: "base64", data: "" } }] }],
        },
        /messages\.0\.content/,
      ],
      [{ ...base, max_tokens: 0 }, /max_tokens/],
      ["not an object", /JSON object/],
    ] as const) {
      const res = await post(body);
      expect(res.status).toBe(400);
      const j = (await res.json()) as { type: string; error: { type: string; message: string } };
      expect(j.type).toBe("error");
      expect(j.error.type).toBe("invalid_request_error");
      expect(j.error.message).toMatch(pattern);
    }
    const bad = await fetch(`${s.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{nope",
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe("invalid_json");
  });

  it("an unknown model is Sluice's unknown_model (400), an invalid_request_error", async () => {
    const err = await client.messages
      .create({ model: "nope", max_tokens: 10, messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    expect((err as InstanceType<typeof Anthropic.BadRequestError>).error).toMatchObject({
      type: "error",
      error: { type: "invalid_request_error", code: "unknown_model" },
    });
  });

  it("thinking on a route that cannot be told is refused, not dropped", async () => {
    const err = await client.messages
      .create({
        model: "gpt",
        max_tokens: 100,
        thinking: { type: "enabled", budget_tokens: 1024 },
        messages: [{ role: "user", content: "hi" }],
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String((err as Error).message)).toMatch(/thinking/);
  });

  it("a generation that fails mid-stream: an error event the SDK throws; non-streaming answers the error", async () => {
    const stream = client.messages.stream({
      model: "demo",
      max_tokens: 1000,
      messages: [{ role: "user", content: "Explain durable streams" }],
      demo: demo({ fail_after_tokens: 5 }),
    } as Anthropic.MessageStreamParams);
    await expect(stream.finalMessage()).rejects.toBeInstanceOf(Anthropic.APIError);
    const res = await fetch(`${s.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        max_tokens: 1000,
        messages: [{ role: "user", content: "hi" }],
        demo: demo({ fail_after_tokens: 5 }),
      }),
    });
    expect(res.status).toBeGreaterThanOrEqual(500);
    const j = (await res.json()) as { type: string; error: { type: string } };
    expect(j.type).toBe("error");
    expect(j.error.type).toMatch(/api_error|overloaded_error/);
  });

  it("credentials: the SDK's x-api-key is a Sluice key; a wrong one is an authentication_error", async () => {
    const secured = await startSluice({
      auth: {
        keys: [
          {
            id: "k1",
            role: "producer",
            key_sha256: createHash("sha256").update("sk-sluice-good-key-123456").digest("hex"),
          },
        ],
      },
    } as never);
    try {
      const good = new Anthropic({
        baseURL: secured.url,
        apiKey: "sk-sluice-good-key-123456",
        maxRetries: 0,
      });
      const msg = await good.messages.create({
        model: "demo",
        max_tokens: 5,
        messages: [{ role: "user", content: "hi" }],
      });
      expect(msg.content[0]?.type).toBe("text");
      const bad = new Anthropic({ baseURL: secured.url, apiKey: "sk-wrong", maxRetries: 0 });
      const err = await bad.messages
        .create({ model: "demo", max_tokens: 5, messages: [{ role: "user", content: "hi" }] })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.AuthenticationError);
      expect((err as InstanceType<typeof Anthropic.AuthenticationError>).error).toMatchObject({
        type: "error",
        error: { type: "authentication_error" },
      });
    } finally {
      await secured.close();
    }
  });
});
