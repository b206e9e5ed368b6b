/**
 * What readers see when an upstream misbehaves, end to end through a real Sluice server and
 * `sluice mock-upstream` with fault injection: stalls end the stream with a retryable
 * `upstream_timeout` (and are retried like a connect error before the first token), a huge SSE
 * line ends it with `upstream_error` while the server keeps serving, and a key the upstream
 * quotes never reaches a reader (terminal event, /info error and attempts, the OpenAI façade,
 * logs).
 */
import { Writable } from "node:stream";
import { type MockOptions, type MockUpstream, startMockUpstream } from "@sluice/mock-upstream";
import pino from "pino";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { type ConfigInput, parseConfig } from "../src/config.js";
import { createSluice } from "../src/server.js";
import { type Running, readAllJson, startSluice, textOf, waitForStatus } from "./helpers.js";

const mocks: MockUpstream[] = [];
const servers: Running[] = [];

async function mock(fault?: MockOptions & { times?: number }) {
  const m = await startMockUpstream(fault ? { fault } : {});
  mocks.push(m);
  return m;
}

async function sluice(routes: ConfigInput["routes"], extra: Partial<ConfigInput> = {}) {
  const s = await startSluice({ routes, ...extra });
  servers.push(s);
  return s;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await Promise.all(mocks.splice(0).map((m) => m.close()));
});
afterAll(async () => {
  await Promise.all(mocks.splice(0).map((m) => m.close()));
});

const demo = { seed: 3, ttft_ms: 1, tokens_per_s: 5000, jitter: 0, length: 20 };

async function run(url: string, model: string) {
  const res = await fetch(`${url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hello" }], demo }),
  });
  expect(res.status).toBe(201);
  const { id } = (await res.json()) as { id: string };
  const info = await waitForStatus(url, id, (st) => st !== "running", 20_000);
  const events = (await readAllJson(url, id)).map((e) => e.event);
  return { id, info, events };
}

describe("stalled upstreams (per-route timeouts)", () => {
  it("a stall after 3 tokens ends the stream with a retryable upstream_timeout, keeping the tokens", async () => {
    const m = await mock({ stall_after_tokens: 3 });
    const s = await sluice({
      slow: { provider: "openai-compatible", base_url: m.url, model: "demo", timeouts: { idle_ms: 300 } },
    });
    const { info, events } = await run(s.url, "slow");
    expect(info.status).toBe("failed");
    expect(events.filter((e) => e.type === "text-delta")).toHaveLength(3);
    const last = events.at(-1) as Record<string, unknown>;
    expect(last).toMatchObject({ type: "error", code: "upstream_timeout", retryable: true });
    expect(String(last.message)).toMatch(/nothing for 300 ms/);
    expect(info.error).toMatchObject({ code: "upstream_timeout" });
  });

  it("upstream_defaults apply to every route; a route's own timeouts win", async () => {
    const m = await mock({ stall: "headers" });
    const s = await sluice(
      {
        dflt: { provider: "openai-compatible", base_url: m.url, model: "demo", retry: { max_attempts: 1 } },
        own: {
          provider: "anthropic",
          base_url: m.url,
          model: "demo",
          retry: { max_attempts: 1 },
          timeouts: { first_byte_ms: 250 },
        },
      },
      { upstream_defaults: { timeouts: { first_byte_ms: 200 } } },
    );
    const a = await run(s.url, "dflt");
    expect(a.events.at(-1)).toMatchObject({ type: "error", code: "upstream_timeout" });
    expect(String((a.events.at(-1) as { message: string }).message)).toMatch(/within 200 ms/);
    const b = await run(s.url, "own");
    expect(String((b.events.at(-1) as { message: string }).message)).toMatch(/within 250 ms/);
  });

  it("a stall before the first token is retried and falls back like a connect error", async () => {
    const stuck = await mock({ stall: "headers" });
    const good = await mock();
    const s = await sluice({
      primary: {
        provider: "openai-compatible",
        base_url: stuck.url,
        model: "demo",
        timeouts: { first_byte_ms: 200 },
        retry: { max_attempts: 2, base_delay_ms: 1 },
        fallbacks: ["backup"],
      },
      backup: { provider: "openai-compatible", base_url: good.url, model: "demo" },
    });
    const { info, events } = await run(s.url, "primary");
    expect(info.status).toBe("completed");
    expect(textOf(events.map((event) => ({ event })))).not.toBe("");
    const attempts = info.attempts as { route: string; error?: { code: string } }[];
    expect(attempts.map((a) => [a.route, a.error?.code])).toEqual([
      ["primary", "upstream_timeout"],
      ["primary", "upstream_timeout"],
      ["backup", undefined],
    ]);
    expect(stuck.requests.map((r) => r.status)).toEqual(["aborted", "aborted"]);
  });
});

describe("a huge upstream SSE line", () => {
  it("ends that stream with upstream_error; the server and other streams are unaffected", async () => {
    const huge = await mock({ huge_line_chars: 200 * 1024 * 1024, huge_line_after_tokens: 2 });
    const good = await mock();
    const s = await sluice(
      {
        huge: { provider: "openai-compatible", base_url: huge.url, model: "demo" },
        good: { provider: "openai-compatible", base_url: good.url, model: "demo" },
      },
      { upstream_defaults: { max_event_chars: 256 * 1024 } },
    );
    const a = await run(s.url, "huge");
    expect(a.info.status).toBe("failed");
    expect(a.events.at(-1)).toMatchObject({ type: "error", code: "upstream_error" });
    expect(String((a.events.at(-1) as { message: string }).message)).toMatch(/larger than 262144 characters/);
    expect(huge.requests[0]?.huge_line_chars_sent ?? 0).toBeLessThan(50 * 1024 * 1024);
    const b = await run(s.url, "good");
    expect(b.info.status).toBe("completed");
  });
});

describe("upstream credentials never reach readers", () => {
  const KEY = "sk-live-REDACTME0123456789";
  const HEADER_SECRET = "org-secret-ABCDEF987654";

  it("terminal error, /info error and attempts, the OpenAI façade and the logs are redacted", async () => {
    // 503 (retried, so attempts carry errors) whose body quotes the credentials it received.
    const m = await mock({ status: 503, echo_credentials: true, message: "Upstream overloaded." });
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const config = parseConfig({
      host: "127.0.0.1",
      port: 0,
      log_level: "debug",
      routes: {
        leaky: {
          provider: "openai-compatible",
          base_url: m.url,
          model: "demo",
          api_key: KEY,
          headers: { "x-api-key": HEADER_SECRET },
          retry: { max_attempts: 2, base_delay_ms: 1 },
        },
      },
    });
    const server = await createSluice(config, { env: {}, logger: pino({ level: "debug" }, sink) });
    const url = await server.listen();
    try {
      const { info, events } = await run(url, "leaky");
      const terminal = events.at(-1) as { type: string; code: string; message: string };
      expect(terminal).toMatchObject({ type: "error", code: "upstream_error" });
      // The upstream did quote them (the test would prove nothing otherwise)…
      expect(terminal.message).toMatch(
        /Received Authorization: Bearer \[REDACTED\]; x-api-key: \[REDACTED\]/,
      );

      const chat = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "leaky", messages: [{ role: "user", content: "hi" }] }),
      });
      const chatBody = await chat.text();
      expect(chatBody).toContain("[REDACTED]");

      const everything = [
        JSON.stringify(events),
        JSON.stringify(info),
        JSON.stringify(info.attempts),
        chatBody,
        lines.join(""),
      ];
      for (const text of everything) {
        expect(text).not.toContain(KEY);
        expect(text).not.toContain("REDACTME");
        expect(text).not.toContain(HEADER_SECRET);
      }
      expect((info.attempts as unknown[]).length).toBe(2);
      expect(JSON.stringify(info.attempts)).toContain("[REDACTED]");
      expect(m.requests.length).toBeGreaterThanOrEqual(4);
    } finally {
      await server.close();
    }
  });
});
