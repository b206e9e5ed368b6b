/**
 * Issue 12 part 2: the Chat Completions façade forwards what it is given. Driven by the real
 * `openai` SDK against a real Sluice, with `sluice mock-upstream` recording what arrives upstream.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type MockUpstream, startMockUpstream } from "@sluice/mock-upstream";
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Running, startSluice, startStream, waitForStatus } from "./helpers.js";

let mock: MockUpstream;
let s: Running;
let client: OpenAI;
let extrasUpstream: Server;

/** An OpenAI-shaped upstream that sends what real OpenAI sends beyond text: logprobs, a refusal, fingerprint, tier. */
const lp = (token: string, logprob: number) => ({
  token,
  logprob,
  bytes: [...Buffer.from(token)],
  top_logprobs: [],
});
function extrasChunks(): unknown[] {
  const base = {
    id: "chatcmpl-up",
    object: "chat.completion.chunk",
    created: 1,
    model: "gpt-x",
    service_tier: "default",
    system_fingerprint: "fp_abc123",
  };
  const choice = (delta: unknown, logprobs: unknown = null, finish_reason: string | null = null) => ({
    ...base,
    choices: [{ index: 0, delta, logprobs, finish_reason }],
    usage: null,
  });
  return [
    choice({ role: "assistant", content: "", refusal: null }),
    choice({ content: "Hel" }, { content: [lp("Hel", -0.1)], refusal: null }),
    choice({ content: "lo" }, { content: [lp("lo", -0.2)], refusal: null }),
    choice({ refusal: "I can't" }, { content: null, refusal: [lp("I can't", -0.3)] }),
    choice({ refusal: " help." }),
    choice({}, null, "stop"),
    { ...base, choices: [], usage: { prompt_tokens: 5, completion_tokens: 4, total_tokens: 9 } },
  ];
}

/** What OpenAI streams for `modalities: ["text", "audio"]`: `delta.audio` pieces (base64 each), a transcript. */
const PCM = [Buffer.from([1, 2, 3, 4]), Buffer.from([5, 6]), Buffer.from([7, 8, 9, 10, 11])];
function audioChunks(): unknown[] {
  const base = { id: "chatcmpl-au", object: "chat.completion.chunk", created: 1, model: "gpt-audio" };
  const choice = (delta: unknown, finish_reason: string | null = null) => ({
    ...base,
    choices: [{ index: 0, delta, logprobs: null, finish_reason }],
  });
  return [
    choice({ role: "assistant", content: null }),
    choice({ audio: { id: "audio_1", transcript: "Hi" } }),
    ...PCM.map((b) => choice({ audio: { data: b.toString("base64") } })),
    choice({ audio: { transcript: " there", expires_at: 1700000000 } }),
    choice({}, "stop"),
  ];
}

beforeAll(async () => {
  extrasUpstream = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => {
      const wantsAudio = Buffer.concat(parts).toString("utf8").includes('"modalities"');
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (const c of wantsAudio ? audioChunks() : extrasChunks())
        res.write(`data: ${JSON.stringify(c)}\n\n`);
      res.end("data: [DONE]\n\n");
    });
  });
  await new Promise<void>((resolve) => extrasUpstream.listen(0, "127.0.0.1", resolve));
  const extrasUrl = `http://127.0.0.1:${(extrasUpstream.address() as AddressInfo).port}/v1`;
  mock = await startMockUpstream({ port: 0, log: () => {} });
  s = await startSluice({
    routes: {
      "mock-model": { provider: "openai-compatible", base_url: mock.url },
      "org/slashed-model": { provider: "openai-compatible", base_url: mock.url, model: "demo" },
      claude: { provider: "anthropic", base_url: `http://127.0.0.1:${mock.port}`, api_key: "sk-ant-mock" },
      "gpt-extras": { provider: "openai-compatible", base_url: extrasUrl },
      "mock-then-claude": {
        provider: "openai-compatible",
        base_url: mock.url,
        model: "demo",
        fallbacks: ["claude"],
      },
    },
  });
  client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
});
afterAll(async () => {
  await s.close();
  await mock.close();
  extrasUpstream.closeAllConnections();
  await new Promise<void>((resolve) => extrasUpstream.close(() => resolve()));
});

const fast = { ttft_ms: 1, tokens_per_s: 5000, jitter: 0 };
const messages = [{ role: "user" as const, content: "Plan a trip to Lisbon" }];

/** Extra body fields the SDK types do not know (the SDK sends them as they are). */
function body<T>(params: T, extra: Record<string, unknown>): T {
  return { ...params, ...extra } as T;
}

/** The body the mock received for the completion Sluice started for stream `id`. */
function lastBody(): Record<string, unknown> {
  const rec = mock.requests.at(-1);
  expect(rec?.body).toBeDefined();
  return rec?.body as Record<string, unknown>;
}

describe("openai-compatible routes: every field not Sluice's own goes upstream verbatim", () => {
  it("forwards response_format, seed, user, penalties, logit_bias, reasoning_effort, unknown fields; strips Sluice's", async () => {
    const responseFormat = {
      type: "json_schema",
      json_schema: {
        name: "trip",
        strict: true,
        schema: {
          type: "object",
          properties: { city: { type: "string" }, days: { type: "integer" } },
          required: ["city", "days"],
          additionalProperties: false,
        },
      },
    };
    const sent = {
      model: "mock-model",
      messages,
      stream: true as const,
      stream_options: { include_usage: true },
      max_completion_tokens: 300,
      seed: 42,
      user: "user-123",
      parallel_tool_calls: false,
      reasoning_effort: "low" as const,
      logit_bias: { "50256": -100 },
      frequency_penalty: 0.5,
      presence_penalty: 0.25,
      logprobs: true,
      top_logprobs: 2,
      service_tier: "default" as const,
      store: false,
      response_format: responseFormat as OpenAI.ResponseFormatJSONSchema,
    };
    const stream = await client.chat.completions.create(
      body(sent, {
        vendor_extension: { nested: [1, 2, { deep: true }] },
        on_disconnect: "continue",
        timeout_ms: 60_000,
        metadata: { tag: "sluice-only" },
        demo: fast,
      }),
    );
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    const got = lastBody();
    for (const key of [
      "seed",
      "user",
      "parallel_tool_calls",
      "reasoning_effort",
      "logit_bias",
      "frequency_penalty",
      "presence_penalty",
      "logprobs",
      "top_logprobs",
      "service_tier",
      "store",
      "response_format",
      "max_completion_tokens",
    ] as const) {
      expect(got[key], key).toEqual(sent[key]);
    }
    expect(got.vendor_extension).toEqual({ nested: [1, 2, { deep: true }] });
    // max_completion_tokens is not renamed (reasoning models refuse max_tokens).
    expect(got).not.toHaveProperty("max_tokens");
    // Sluice's own fields stay with Sluice; the upstream is always streamed, with usage.
    expect(got).not.toHaveProperty("on_disconnect");
    expect(got).not.toHaveProperty("timeout_ms");
    expect(got).not.toHaveProperty("metadata");
    expect(got.stream).toBe(true);
    expect(got.stream_options).toEqual({ include_usage: true });
    expect(got.model).toBe("mock-model");
    // The mock honours the schema as the demo model does: the answer conforms.
    const parsed = JSON.parse(text) as { city: unknown; days: unknown };
    expect(Object.keys(parsed).sort()).toEqual(["city", "days"]);
    expect(typeof parsed.city).toBe("string");
    expect(Number.isInteger(parsed.days)).toBe(true);
  });

  it("max_tokens stays max_tokens; other stream_options are forwarded, include_usage always on", async () => {
    await client.chat.completions.create(
      body(
        { model: "mock-model", messages, max_tokens: 12, stream: false as const },
        { stream_options: { include_obfuscation: false }, demo: fast },
      ),
    );
    const got = lastBody();
    expect(got.max_tokens).toBe(12);
    expect(got).not.toHaveProperty("max_completion_tokens");
    expect(got.stream_options).toEqual({ include_obfuscation: false, include_usage: true });
  });

  it("null means absent: a null field is not forwarded", async () => {
    await client.chat.completions.create(
      body({ model: "mock-model", messages }, { seed: null, user: null, demo: fast }),
    );
    const got = lastBody();
    expect(got).not.toHaveProperty("seed");
    expect(got).not.toHaveProperty("user");
  });

  it("POST /v1/streams carries upstream_extra too, and its max_tokens as max_tokens", async () => {
    const { id } = await startStream(s.url, {
      model: "mock-model",
      messages,
      max_tokens: 9,
      upstream_extra: { seed: 3, top_k: 40 },
      demo: fast,
    });
    await waitForStatus(s.url, id, (st) => st !== "running");
    const got = lastBody();
    expect(got.max_tokens).toBe(9);
    expect(got.seed).toBe(3);
    expect(got.top_k).toBe(40);
  });

  it("upstream_extra cannot override what Sluice owns (the route's upstream model, messages, streaming)", async () => {
    const { id } = await startStream(s.url, {
      model: "org/slashed-model",
      messages,
      upstream_extra: {
        model: "gpt-expensive",
        messages: [{ role: "user", content: "injected" }],
        stream: false,
        stream_options: { include_usage: false },
      },
      demo: fast,
    });
    await waitForStatus(s.url, id, (st) => st !== "running");
    const got = lastBody();
    expect(got.model).toBe("demo"); // the route's upstream model
    expect(got.messages).toEqual(messages);
    expect(got.stream).toBe(true);
    expect(got.stream_options).toEqual({ include_usage: true });
  });

  it("a malformed response_format is refused with OpenAI's error shape", async () => {
    const err = await client.chat.completions
      .create(body({ model: "mock-model", messages }, { response_format: "json" }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).code).toBe("invalid_request");
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("response_format");
  });
});

describe("structured outputs with the SDK's parse()", () => {
  const Trip = z.object({
    destination: z.string(),
    nights: z.number().int().min(1).max(14),
    budget_eur: z.number().min(100).max(5000),
    refundable: z.boolean(),
    mode: z.enum(["train", "plane", "car"]),
    stops: z
      .array(z.object({ city: z.string(), day: z.number().int() }))
      .min(2)
      .max(4),
    note: z.string().nullable(),
  });

  for (const model of ["demo", "mock-model"]) {
    it(`${model}: the answer conforms to the schema and parses`, async () => {
      const completion = await client.chat.completions.parse(
        body(
          { model, messages, response_format: zodResponseFormat(Trip, "trip") },
          { demo: { ...fast, length: 30 } },
        ),
      );
      const parsed = completion.choices[0]?.message.parsed;
      expect(parsed).toBeTruthy();
      // parse() already validated with zod; check it again independently.
      expect(Trip.safeParse(parsed).success).toBe(true);
      expect(parsed?.stops.length).toBeGreaterThanOrEqual(2);
    });
  }

  it("the demo model follows $ref/$defs, const, anyOf, bounds and lengths of a raw JSON schema", async () => {
    const schema = {
      type: "object",
      $defs: {
        stop: {
          type: "object",
          properties: {
            city: { type: "string", maxLength: 5 },
            order: { type: "integer", exclusiveMinimum: 10, maximum: 12 },
          },
          required: ["city", "order"],
          additionalProperties: false,
        },
      },
      properties: {
        version: { const: 3 },
        code: { type: "string", minLength: 12, maxLength: 12 },
        ratio: { type: "number", exclusiveMinimum: 0, exclusiveMaximum: 1 },
        stops: { type: "array", items: { $ref: "#/$defs/stop" }, minItems: 3, maxItems: 3 },
        maybe: { anyOf: [{ type: "null" }, { type: "boolean" }] },
        tags: { type: "array", items: { enum: ["a", "b"] } },
      },
      required: ["version", "code", "ratio", "stops", "maybe", "tags"],
      additionalProperties: false,
    };
    for (const seed of [1, 2, 3, 4, 5]) {
      const c = await client.chat.completions.create(
        body(
          {
            model: "demo",
            messages,
            seed,
            response_format: { type: "json_schema" as const, json_schema: { name: "raw", schema } },
          },
          { demo: fast },
        ),
      );
      const v = JSON.parse(c.choices[0]?.message.content ?? "") as Record<string, unknown>;
      expect(Object.keys(v).sort()).toEqual(["code", "maybe", "ratio", "stops", "tags", "version"]);
      expect(v.version).toBe(3);
      expect((v.code as string).length).toBe(12);
      expect(v.ratio as number).toBeGreaterThan(0);
      expect(v.ratio as number).toBeLessThan(1);
      expect(typeof v.maybe).toBe("boolean");
      const stops = v.stops as { city: string; order: number }[];
      expect(stops).toHaveLength(3);
      for (const st of stops) {
        expect(Object.keys(st).sort()).toEqual(["city", "order"]);
        expect(st.city.length).toBeLessThanOrEqual(5);
        expect([11, 12]).toContain(st.order);
      }
      for (const t of v.tags as unknown[]) expect(["a", "b"]).toContain(t);
    }
  });

  it("a schema with no small instance (recursive, huge, malformed) still gets a bounded answer", async () => {
    const wide = (depth: number): Record<string, unknown> =>
      depth === 0
        ? { type: "string", minLength: 1_000_000_000 }
        : { type: "array", minItems: 20, maxItems: 20, items: wide(depth - 1) };
    const schemas = [
      { type: "object", properties: { child: { $ref: "#" } }, required: ["child"] },
      {
        type: "object",
        properties: { list: { type: "array", minItems: 1, items: { $ref: "#" } } },
        required: ["list"],
      },
      wide(8),
      { $ref: "#/$defs/%E0%A4%A", $defs: {} },
    ];
    for (const schema of schemas) {
      const c = await client.chat.completions.create(
        body(
          {
            model: "demo",
            messages,
            response_format: { type: "json_schema" as const, json_schema: { name: "x", schema } },
          },
          { demo: fast },
        ),
      );
      const content = c.choices[0]?.message.content ?? "";
      expect(() => JSON.parse(content)).not.toThrow();
      expect(content.length).toBeLessThan(2_000_000);
    }
  });

  it("json_object without a schema gets a JSON object from the demo model", async () => {
    const completion = await client.chat.completions.create(
      body({ model: "demo", messages, response_format: { type: "json_object" as const } }, { demo: fast }),
    );
    const content = completion.choices[0]?.message.content ?? "";
    expect(typeof JSON.parse(content)).toBe("object");
  });
});

describe("seed", () => {
  const ask = async (seed: number | undefined, extraDemo: Record<string, unknown> = {}) => {
    const c = await client.chat.completions.create(
      body(
        { model: "demo", messages: [{ role: "user" as const, content: "Describe a harbour" }] },
        { ...(seed !== undefined ? { seed } : {}), demo: { ...fast, length: 30, ...extraDemo } },
      ),
    );
    return c.choices[0]?.message.content ?? "";
  };

  it("the demo model honours OpenAI's seed: same seed same answer, another seed another answer", async () => {
    const a1 = await ask(1);
    const a2 = await ask(1);
    const b = await ask(2);
    const none = await ask(undefined);
    expect(a1).toBe(a2);
    expect(b).not.toBe(a1);
    expect(none).not.toBe(a1);
    // seed is the same knob as demo.seed.
    expect(await ask(undefined, { seed: 1 })).toBe(a1);
  });
});

describe("GET /v1/models/{id}", () => {
  it("answers OpenAI's model object, for ids with slashes too", async () => {
    const m = await client.models.retrieve("demo");
    expect(m).toEqual({ id: "demo", object: "model", created: 0, owned_by: expect.any(String) });
    const slashed = await client.models.retrieve("org/slashed-model");
    expect(slashed.id).toBe("org/slashed-model");
    const list = await client.models.list();
    expect(list.data.map((x) => x.id)).toContain("org/slashed-model");
  });

  it("an unknown id is 404 in OpenAI's error shape", async () => {
    const err = await client.models.retrieve("no-such-model").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    const e = err as InstanceType<typeof OpenAI.NotFoundError>;
    expect(e.status).toBe(404);
    expect(e.code).toBe("model_not_found");
    expect(e.param).toBe("model");
    const res = await fetch(`${s.url}/v1/models/no-such-model`);
    expect(await res.json()).toEqual({
      error: {
        message: 'The model "no-such-model" does not exist',
        type: "invalid_request_error",
        param: "model",
        code: "model_not_found",
      },
    });
  });
});

describe("anthropic routes: what has a mapping is mapped, the rest is refused with 400", () => {
  const PNG =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
  const tools = [
    {
      type: "function" as const,
      function: { name: "lookup", parameters: { type: "object", properties: { q: { type: "string" } } } },
    },
  ];

  it("maps response_format json_schema, reasoning_effort, stop, user, parallel_tool_calls, images", async () => {
    const schema = {
      type: "object",
      properties: { city: { type: "string" }, nights: { type: "integer" } },
      required: ["city", "nights"],
      additionalProperties: false,
    };
    const completion = await client.chat.completions.create(
      body(
        {
          model: "claude",
          messages: [
            { role: "system" as const, content: "Be brief." },
            {
              role: "user" as const,
              content: [
                { type: "text" as const, text: "What is in these?" },
                { type: "image_url" as const, image_url: { url: `data:image/png;base64,${PNG}` } },
                { type: "image_url" as const, image_url: { url: "https://example.com/cat.jpg" } },
              ],
            },
          ],
          max_completion_tokens: 5000,
          reasoning_effort: "low" as const,
          stop: ["END"],
          user: "user-9",
          parallel_tool_calls: false,
          tools,
          frequency_penalty: 0,
          store: false,
          response_format: { type: "json_schema" as const, json_schema: { name: "stay", schema } },
        },
        { demo: fast },
      ),
    );
    const got = lastBody();
    expect(got.max_tokens).toBe(5000);
    expect(got.thinking).toEqual({ type: "enabled", budget_tokens: 2048 });
    expect(got.output_config).toEqual({ format: { type: "json_schema", schema } });
    expect(got.stop_sequences).toEqual(["END"]);
    expect(got.metadata).toEqual({ user_id: "user-9" });
    expect(got.tool_choice).toEqual({ type: "auto", disable_parallel_tool_use: true });
    expect(got.system).toBe("Be brief.");
    expect((got.messages as { content: unknown }[])[0]?.content).toEqual([
      { type: "text", text: "What is in these?" },
      { type: "image", source: { type: "base64", media_type: "image/png", data: PNG } },
      { type: "image", source: { type: "url", url: "https://example.com/cat.jpg" } },
    ]);
    // Nothing OpenAI-only leaked into the Messages API body.
    for (const k of [
      "reasoning_effort",
      "response_format",
      "user",
      "parallel_tool_calls",
      "frequency_penalty",
      "store",
    ]) {
      expect(got, k).not.toHaveProperty(k);
    }
    // The mock honours output_config like Claude: the answer conforms.
    const answer = JSON.parse(completion.choices[0]?.message.content ?? "") as Record<string, unknown>;
    expect(typeof answer.city).toBe("string");
    expect(Number.isInteger(answer.nights)).toBe(true);
  });

  const refused: Array<[string, Record<string, unknown>, string]> = [
    ["seed", { seed: 1 }, "seed"],
    ["logit_bias", { logit_bias: { "1": 5 } }, "logit_bias"],
    ["logprobs", { logprobs: true }, "logprobs"],
    ["frequency_penalty", { frequency_penalty: 0.4 }, "frequency_penalty"],
    ["json_object", { response_format: { type: "json_object" } }, "response_format"],
    ["audio output", { modalities: ["text", "audio"] }, "modalities"],
    ["unknown field", { vendor_extension: true }, "vendor_extension"],
    [
      "reasoning in a tiny budget",
      { reasoning_effort: "high", max_completion_tokens: 500 },
      "reasoning_effort",
    ],
    [
      "an allowed_tools tool_choice",
      { tools, tool_choice: { type: "allowed_tools", allowed_tools: { mode: "auto", tools: [] } } },
      "tool_choice",
    ],
    [
      "audio input",
      {
        messages: [
          { role: "user", content: [{ type: "input_audio", input_audio: { data: "AAAA", format: "wav" } }] },
        ],
      },
      "messages.0.content.0.type",
    ],
    [
      "an image in a system message",
      {
        messages: [
          {
            role: "system",
            content: [{ type: "image_url", image_url: { url: "https://example.com/a.png" } }],
          },
          { role: "user", content: "hi" },
        ],
      },
      "messages.0.content",
    ],
  ];
  it("a request one of the route's fallbacks could not honour is refused before anything starts", async () => {
    const before = mock.requests.length;
    const err = await client.chat.completions
      .create(body({ model: "mock-then-claude", messages, seed: 5 }, { demo: fast }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("seed");
    expect(mock.requests.length).toBe(before);
    // Without the field, the route serves it.
    const ok = await client.chat.completions.create(
      body({ model: "mock-then-claude", messages }, { demo: fast }),
    );
    expect(ok.choices[0]?.message.content?.length).toBeGreaterThan(0);
  });

  for (const [what, extra, param] of refused) {
    it(`refuses ${what} before anything starts (400, OpenAI's error shape, param ${param})`, async () => {
      const before = mock.requests.length;
      const err = await client.chat.completions
        .create(body({ model: "claude", messages, stream: true as const }, { demo: fast, ...extra }))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.BadRequestError);
      const e = err as InstanceType<typeof OpenAI.BadRequestError>;
      expect(e.status).toBe(400);
      expect(e.code).toBe("invalid_request");
      expect(e.param).toBe(param);
      expect(e.message).toMatch(/not supported on Anthropic routes/);
      expect(mock.requests.length).toBe(before);
    });
  }
});

describe("what the upstream sends beyond text comes back (logprobs, refusal, system_fingerprint, service_tier)", () => {
  it("streamed: chunks carry logprobs and refusal deltas; the last ones the fingerprint and tier", async () => {
    const { data: stream, response } = await client.chat.completions
      .create({
        model: "gpt-extras",
        messages,
        stream: true,
        logprobs: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    const content = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
    const refusal = chunks.map((c) => c.choices[0]?.delta.refusal ?? "").join("");
    expect(content).toBe("Hello");
    expect(refusal).toBe("I can't help.");
    const contentLp = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    expect(contentLp.map((x) => [x.token, x.logprob])).toEqual([
      ["Hel", -0.1],
      ["lo", -0.2],
    ]);
    expect(chunks.flatMap((c) => c.choices[0]?.logprobs?.refusal ?? []).map((x) => x.token)).toEqual([
      "I can't",
    ]);
    const finish = chunks.find((c) => c.choices[0]?.finish_reason === "stop");
    expect(finish?.system_fingerprint).toBe("fp_abc123");
    expect(finish?.service_tier).toBe("default");
    expect(chunks.at(-1)?.usage?.total_tokens).toBe(9);
    expect(chunks.at(-1)?.system_fingerprint).toBe("fp_abc123");

    // Read again from the log: the same chunks, byte for byte.
    const id = response.headers.get("sluice-stream-id") as string;
    const again = await fetch(`${s.url}/v1/streams/${id}?format=openai-usage`, {
      headers: { accept: "text/event-stream" },
    });
    const text = await again.text();
    expect(text).toContain('"refusal":"I can\'t"');
    expect(text).toContain('"logprobs":{"content":[{"token":"Hel"');
    expect(text).toContain('"system_fingerprint":"fp_abc123"');
  });

  it("not streamed: message.refusal, choices[0].logprobs, system_fingerprint and service_tier", async () => {
    const c = await client.chat.completions.create({ model: "gpt-extras", messages, logprobs: true });
    expect(c.choices[0]?.message.content).toBe("Hello");
    expect(c.choices[0]?.message.refusal).toBe("I can't help.");
    expect(c.choices[0]?.logprobs?.content?.map((x) => x.token)).toEqual(["Hel", "lo"]);
    expect(c.choices[0]?.logprobs?.refusal?.map((x) => x.token)).toEqual(["I can't"]);
    expect(c.system_fingerprint).toBe("fp_abc123");
    expect(c.service_tier).toBe("default");
  });

  it("the SDK's stream helper accumulates them into its final completion", async () => {
    const runner = client.chat.completions.stream({ model: "gpt-extras", messages, logprobs: true });
    const final = await runner.finalChatCompletion();
    expect(final.choices[0]?.message.refusal).toBe("I can't help.");
    expect(final.choices[0]?.logprobs?.content?.length).toBe(2);
    expect(final.system_fingerprint).toBe("fp_abc123");
  });
});

describe("audio output comes back", () => {
  const ask = {
    model: "gpt-extras",
    messages,
    modalities: ["text", "audio"],
    audio: { voice: "alloy", format: "pcm16" },
  };

  it("streamed: delta.audio pieces as the upstream sent them", async () => {
    const stream = await client.chat.completions.create({
      ...ask,
      stream: true,
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    const pieces: Record<string, unknown>[] = [];
    for await (const c of stream) {
      const audio = (c.choices[0]?.delta as { audio?: Record<string, unknown> } | undefined)?.audio;
      if (audio) pieces.push(audio);
    }
    expect(pieces).toEqual([
      { id: "audio_1", transcript: "Hi" },
      ...PCM.map((b) => ({ data: b.toString("base64") })),
      { transcript: " there", expires_at: 1700000000 },
    ]);
  });

  it("not streamed: message.audio with the joined bytes and transcript", async () => {
    const c = await client.chat.completions.create(ask as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const audio = c.choices[0]?.message.audio;
    expect(audio?.id).toBe("audio_1");
    expect(audio?.transcript).toBe("Hi there");
    expect(audio?.expires_at).toBe(1700000000);
    expect(Buffer.from(audio?.data ?? "", "base64")).toEqual(Buffer.concat(PCM));
    expect(c.choices[0]?.message.content).toBeNull();
  });
});
