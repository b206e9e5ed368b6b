import { SluiceError } from "@sluice/protocol";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Clock, realClock, VirtualClock } from "../src/core/clock.js";
import type { DemoOptions } from "../src/core/request.js";
import { planDemo, tokenize } from "../src/providers/demo/generator.js";
import { DemoProvider } from "../src/providers/demo/provider.js";
import type { ProviderEvent, ProviderRequest } from "../src/providers/provider.js";

const PROMPT = "How do I stream tokens from an LLM to the browser with Server-Sent Events?";

function req(demo: DemoOptions = {}, extra: Partial<ProviderRequest> = {}): ProviderRequest {
  return {
    model: "demo",
    upstream_model: "demo",
    messages: [{ role: "user", content: PROMPT }],
    demo,
    ...extra,
  };
}

interface Timed {
  event: ProviderEvent;
  at: number;
}

async function run(
  request: ProviderRequest,
  clock: Clock = new VirtualClock(),
  signal?: AbortSignal,
): Promise<Timed[]> {
  const out: Timed[] = [];
  const ctx = { signal: signal ?? new AbortController().signal, clock };
  for await (const event of new DemoProvider().stream(request, ctx)) out.push({ event, at: clock.now() });
  return out;
}

const isDelta = (e: ProviderEvent) =>
  e.type === "text-delta" || e.type === "reasoning-delta" || e.type === "tool-call-delta";
const textOf = (events: Timed[], type = "text-delta") =>
  events.map(({ event: e }) => (e.type === type && "delta" in e ? e.delta : "")).join("");

describe("demo model: determinism", () => {
  it("the same seed gives identical events and times; another seed differs", async () => {
    const a = await run(req({ seed: 42 }));
    const b = await run(req({ seed: 42 }));
    const c = await run(req({ seed: 43 }));
    expect(b).toEqual(a);
    expect(textOf(c)).not.toBe(textOf(a));
    expect(c.map((x) => x.at)).not.toEqual(a.map((x) => x.at));
  });

  it("without a seed the prompt decides: same prompt, same answer; another prompt, another", async () => {
    const a = await run(req());
    const b = await run(req());
    const other = await run({
      ...req(),
      messages: [{ role: "user", content: "Explain Redis cluster failover" }],
    });
    expect(b).toEqual(a);
    expect(textOf(other)).not.toBe(textOf(a));
    expect(textOf(other)).toMatch(/Redis cluster failover/);
  });
});

describe("demo model: pacing on a virtual clock", () => {
  it("uses realistic defaults: ttft 300 ms, 40 tok/s ± 20%, 150–400 tokens", async () => {
    const plan = planDemo(req());
    expect(plan.pacing).toEqual({ ttft_ms: 300, tokens_per_s: 40, jitter: 0.2 });
    expect(plan.kind).toBe("markdown");
    expect(plan.length).toBeGreaterThanOrEqual(150);
    expect(plan.length).toBeLessThanOrEqual(400);
    const events = await run(req());
    const deltas = events.filter((e) => isDelta(e.event));
    expect(deltas).toHaveLength(plan.length);
    expect(deltas[0]?.at).toBe(300);
  });

  it("first token at ttft, each interval within the jitter bounds, mean ≈ 1000/tps", async () => {
    const events = await run(req({ seed: 7, ttft_ms: 500, tokens_per_s: 40, jitter: 0.2, length: 300 }));
    const times = events.filter((e) => isDelta(e.event)).map((e) => e.at);
    expect(times[0]).toBe(500);
    const intervals = times.slice(1).map((t, i) => t - (times[i] as number));
    for (const d of intervals) {
      expect(d).toBeGreaterThanOrEqual(25 * 0.8 - 1e-9);
      expect(d).toBeLessThanOrEqual(25 * 1.2 + 1e-9);
    }
    const mean = intervals.reduce((a, b) => a + b, 0) / intervals.length;
    expect(Math.abs(mean - 25)).toBeLessThan(1.5);
    expect(new Set(intervals.map((d) => d.toFixed(6))).size).toBeGreaterThan(10); // really jittered
  });

  it("jitter 0 gives exact intervals; due times are relative to the start, so nothing drifts", async () => {
    const clock = new VirtualClock(1_000_000);
    const events = await run(req({ ttft_ms: 120, tokens_per_s: 30, jitter: 0, length: 90 }), clock);
    const times = events.filter((e) => isDelta(e.event)).map((e) => e.at);
    times.forEach((t, i) => {
      expect(t).toBeCloseTo(1_000_000 + 120 + (i * 1000) / 30, 6);
    });
  });
});

describe("demo model: what it writes", () => {
  it("markdown: a heading, prose about the topic, a list, a closed code fence, BPE-like tokens", async () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const events = await run(req({ seed }));
      const text = textOf(events);
      expect(text).toMatch(/^## \S/);
      expect(text).toMatch(/Server-Sent Events|stream tokens|LLM/);
      expect(text).toMatch(/^(- |1\. )\*\*/m);
      const fences = text.match(/^```/gm) ?? [];
      expect(fences.length).toBeGreaterThanOrEqual(2);
      expect(fences.length % 2).toBe(0);
      expect(text).toMatch(/```ts\n[\s\S]+\n```/);
      const deltas = events.flatMap(({ event: e }) => (e.type === "text-delta" ? [e.delta] : []));
      expect(deltas.every((d) => d.length > 0 && d.length <= 40)).toBe(true);
      // Words come with their leading space; newlines are tokens of their own.
      expect(deltas.filter((d) => /^ \p{L}+$/u.test(d)).length).toBeGreaterThan(deltas.length / 3);
      expect(deltas.filter((d) => d.includes("\n")).every((d) => /^\n+$/.test(d))).toBe(true);
      expect(new Set(deltas).size).toBeGreaterThan(40); // not "token 1, token 2"
    }
  });

  it("markdown: long answers repeat sections with variety; exact length", async () => {
    const events = await run(req({ seed: 9, length: 1500, tokens_per_s: 1000 }));
    expect(events.filter((e) => isDelta(e.event))).toHaveLength(1500);
    const text = textOf(events);
    expect((text.match(/^### /gm) ?? []).length).toBeGreaterThanOrEqual(3);
    expect((text.match(/^```/gm) ?? []).length % 2).toBe(0);
  });

  it("json: the deltas concatenate to valid JSON about the prompt", async () => {
    for (const seed of [1, 2, 3]) {
      const events = await run(req({ seed, kind: "json" }));
      const doc = JSON.parse(textOf(events)) as { topic: string; keywords: string[]; steps: unknown[] };
      expect(doc.topic).toBeTruthy();
      expect(doc.keywords).toContain("browser");
      expect(Array.isArray(doc.steps)).toBe(true);
      expect(events.filter((e) => isDelta(e.event)).length).toBeGreaterThanOrEqual(150);
    }
  });

  it("tool-call: argument pieces join to the JSON of the final tool-call event", async () => {
    const events = (await run(req({ seed: 3, kind: "tool-call" }))).map((e) => e.event);
    const deltas = events.filter((e) => e.type === "tool-call-delta");
    const call = events.find((e) => e.type === "tool-call");
    expect(deltas.length).toBeGreaterThan(3);
    expect(call).toMatchObject({ type: "tool-call", name: "get_weather" });
    if (call?.type !== "tool-call") throw new Error("no call");
    expect(deltas[0]).toMatchObject({ id: call.id, name: "get_weather" });
    expect(deltas.slice(1).every((d) => d.id === call.id && d.name === undefined)).toBe(true);
    const joined = deltas.map((d) => d.args_delta).join("");
    expect(JSON.parse(joined)).toEqual(call.args);
    expect(call.args).toHaveProperty("location");
    expect(events.indexOf(call)).toBe(events.indexOf(deltas.at(-1) as ProviderEvent) + 1);
    expect(events.at(-1)).toEqual({ type: "finish", reason: "tool-calls" });
  });

  it("tool-call: calls the request's first tool with arguments that follow its schema", async () => {
    const tools = [
      {
        type: "function" as const,
        function: {
          name: "search_docs",
          parameters: {
            type: "object",
            properties: {
              query: { type: "string" },
              limit: { type: "integer" },
              lang: { enum: ["en", "fr"] },
            },
          },
        },
      },
    ];
    const events = (await run(req({ kind: "tool-call" }, { tools }))).map((e) => e.event);
    const call = events.find((e) => e.type === "tool-call");
    expect(call).toMatchObject({ name: "search_docs" });
    const args = (call as { args: { query: unknown; limit: unknown; lang: unknown } }).args;
    expect(typeof args.query).toBe("string");
    expect(Number.isInteger(args.limit)).toBe(true);
    expect(["en", "fr"]).toContain(args.lang);
    // A request that requires a tool gets a tool call without asking for the kind.
    expect(planDemo(req({}, { tools, tool_choice: "required" })).kind).toBe("tool-call");
  });

  it("reasoning: thinking first, then a Markdown answer; usage counts the reasoning tokens", async () => {
    const events = (await run(req({ seed: 11, kind: "reasoning" }))).map((e) => e.event);
    const types = events.map((e) => e.type);
    const lastThought = types.lastIndexOf("reasoning-delta");
    const firstText = types.indexOf("text-delta");
    expect(types[0]).toBe("reasoning-delta");
    expect(lastThought).toBeGreaterThan(10);
    expect(firstText).toBe(lastThought + 1);
    const usage = events.find((e) => e.type === "usage");
    expect(usage).toMatchObject({ reasoning_tokens: lastThought + 1 });
    const answer = events.flatMap((e) => (e.type === "text-delta" ? [e.delta] : [])).join("");
    expect(answer).toMatch(/^## /);
  });

  it("ends with usage (words in, tokens out) then finish: stop", async () => {
    const request = {
      ...req({ length: 50 }),
      messages: [
        { role: "system" as const, content: "You are terse." },
        { role: "user" as const, content: "Explain backpressure in Node streams please" },
      ],
    };
    const events = (await run(request)).map((e) => e.event);
    expect(events.at(-2)).toEqual({ type: "usage", input_tokens: 9, output_tokens: 50, total_tokens: 59 });
    expect(events.at(-1)).toEqual({ type: "finish", reason: "stop" });
  });

  it("any kind and length: exact length (structure permitting), valid JSON, text unchanged by tokenization", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 31 }),
        fc.integer({ min: 1, max: 700 }),
        fc.constantFrom("markdown" as const, "json" as const, "reasoning" as const),
        fc.string({ maxLength: 80 }),
        (seed, length, kind, prompt) => {
          const plan = planDemo({
            model: "demo",
            messages: [{ role: "user", content: prompt }],
            demo: { seed, length, kind },
          });
          expect(plan.delta_count).toBe(length);
          expect(
            plan.events.every((e) => e.type === "tool-call" || ("delta" in e && e.delta.length > 0)),
          ).toBe(true);
          if (kind === "json") {
            expect(() =>
              JSON.parse(plan.events.map((e) => ("delta" in e ? e.delta : "")).join("")),
            ).not.toThrow();
          }
        },
      ),
      { numRuns: 150 },
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (s) => {
        expect(tokenize(s).join("")).toBe(s);
      }),
    );
  });
});

describe("demo model: limits, failures, cancel", () => {
  it("max_tokens stops after exactly that many deltas with finish: length", async () => {
    const events = (await run(req({ seed: 5, length: 200 }, { max_tokens: 17 }))).map((e) => e.event);
    expect(events.filter(isDelta)).toHaveLength(17);
    expect(events.at(-2)).toMatchObject({ type: "usage", output_tokens: 17 });
    expect(events.at(-1)).toEqual({ type: "finish", reason: "length" });
    // A tool call cut short never claims to be complete.
    const tool = (await run(req({ kind: "tool-call" }, { max_tokens: 3 }))).map((e) => e.event);
    expect(tool.filter(isDelta)).toHaveLength(3);
    expect(tool.some((e) => e.type === "tool-call")).toBe(false);
    expect(tool.at(-1)).toEqual({ type: "finish", reason: "length" });
    // A limit above the answer's length changes nothing.
    const whole = (await run(req({ seed: 5, length: 20 }, { max_tokens: 21 }))).map((e) => e.event);
    expect(whole.at(-1)).toEqual({ type: "finish", reason: "stop" });
  });

  it("fail_after_tokens throws upstream_error after exactly N tokens, when the next one was due", async () => {
    const clock = new VirtualClock();
    const seen: Timed[] = [];
    const request = req({
      seed: 2,
      length: 100,
      ttft_ms: 100,
      tokens_per_s: 10,
      jitter: 0,
      fail_after_tokens: 12,
    });
    const err = await (async () => {
      for await (const event of new DemoProvider().stream(request, {
        signal: new AbortController().signal,
        clock,
      }))
        seen.push({ event, at: clock.now() });
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).code).toBe("upstream_error");
    expect((err as SluiceError).message).toBe("demo model failed after 12 tokens (simulated failure)");
    expect(seen.filter((e) => isDelta(e.event))).toHaveLength(12);
    expect(seen.some((e) => e.event.type === "finish" || e.event.type === "usage")).toBe(false);
    expect(clock.now()).toBe(100 + 12 * 100);
    await expect(run(req({ fail_after_tokens: 0 }))).rejects.toThrow(/after 0 tokens/);
  });

  it("an abort mid-stream rejects the iterator with the reason at once (real clock)", async () => {
    const ac = new AbortController();
    const reason = new Error("cancelled by test");
    const seen: ProviderEvent[] = [];
    const iterate = (async () => {
      for await (const e of new DemoProvider().stream(req({ ttft_ms: 5, tokens_per_s: 50, length: 1000 }), {
        signal: ac.signal,
        clock: realClock,
      })) {
        seen.push(e);
        if (seen.length === 3) setTimeout(() => ac.abort(reason), 5);
      }
    })();
    const t0 = performance.now();
    await expect(iterate).rejects.toBe(reason);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(seen.length).toBeLessThan(10);
  });

  it("an abort during a long wait for the first token rejects promptly", async () => {
    const ac = new AbortController();
    const reason = new Error("gone");
    setTimeout(() => ac.abort(reason), 20);
    const t0 = performance.now();
    await expect(run(req({ ttft_ms: 60_000 }), realClock, ac.signal)).rejects.toBe(reason);
    expect(performance.now() - t0).toBeLessThan(500);
  });
});
