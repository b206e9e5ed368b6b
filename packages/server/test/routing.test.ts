/**
 * Routing robustness over real HTTP: retries with backoff honouring Retry-After and fallbacks to
 * other routes when an upstream fails before its first token; after the first token a failure is
 * terminal. Upstreams are `sluice mock-upstream` instances with server-wide fault injection.
 */
import { createServer } from "node:net";
import { type MockUpstream, startMockUpstream } from "@sluice/mock-upstream";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { ConfigInput } from "../src/config.js";
import { type Running, readAllJson, startSluice, textOf, waitForStatus } from "./helpers.js";

const mocks: MockUpstream[] = [];
const servers: Running[] = [];

async function mock(fault?: { status: number; retry_after?: number; times?: number }) {
  const m = await startMockUpstream(fault ? { fault } : {});
  mocks.push(m);
  return m;
}

async function sluice(routes: ConfigInput["routes"]) {
  const s = await startSluice({ routes });
  servers.push(s);
  return s;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});
afterAll(async () => {
  await Promise.all(mocks.splice(0).map((m) => m.close()));
});

async function freePortClosed(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const demo = (extra: Record<string, unknown> = {}) => ({
  seed: 2,
  ttft_ms: 5,
  tokens_per_s: 2000,
  jitter: 0,
  length: 20,
  ...extra,
});

async function run(s: Running, model: string, demoExtra: Record<string, unknown> = {}) {
  const t0 = Date.now();
  const res = await fetch(`${s.url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hello" }], demo: demo(demoExtra) }),
  });
  expect(res.status).toBe(201);
  const { id } = (await res.json()) as { id: string };
  const info = await waitForStatus(s.url, id, (st) => st !== "running", 20_000);
  const events = (await readAllJson(s.url, id)).map((e) => e.event);
  return { id, info, events, ms: Date.now() - t0 };
}

type Attempt = {
  route: string;
  provider: string;
  started_at: string;
  error?: { code: string; upstream_status?: number };
  retry_in_ms?: number;
};

describe("retries and fallbacks before the first token", () => {
  it("503s are retried with backoff, then the fallback route serves the answer; every attempt is in stream info", async () => {
    const down = await mock({ status: 503 });
    const up = await mock();
    const s = await sluice({
      primary: {
        provider: "openai-compatible",
        base_url: down.url,
        model: "demo",
        fallbacks: ["backup"],
        retry: { max_attempts: 2, base_delay_ms: 20 },
      },
      backup: { provider: "openai-compatible", base_url: up.url, model: "demo" },
    });
    const { info, events } = await run(s, "primary");
    expect(info.status).toBe("completed");
    const attempts = info.attempts as Attempt[];
    expect(attempts.map((a) => a.route)).toEqual(["primary", "primary", "backup"]);
    expect(attempts[0]?.error).toMatchObject({ code: "upstream_error", upstream_status: 503 });
    expect(attempts[0]?.retry_in_ms).toBe(20);
    expect(attempts[1]?.error?.upstream_status).toBe(503);
    expect(attempts[2]?.error).toBeUndefined();
    expect(info.route).toBe("backup");
    expect(down.requests).toHaveLength(2);
    expect(up.requests).toHaveLength(1);
    // Both failed tries of `primary` are counted as retries in the metrics.
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    expect(metrics).toMatch(/sluice_upstream_retries_total\{route="primary"\} 2\b/);
    expect(textOf(events.map((event) => ({ event }))).length).toBeGreaterThan(10);
  });

  it("a 429 with Retry-After is waited out on the same route", async () => {
    const limited = await mock({ status: 429, retry_after: 1, times: 1 });
    const s = await sluice({
      limited: {
        provider: "openai-compatible",
        base_url: limited.url,
        model: "demo",
        retry: { max_attempts: 3, max_wait_ms: 5000 },
      },
    });
    const pending = run(s, "limited");
    // While the runner waits out Retry-After, the failed try is already in stream info.
    let seenWhileRunning: Attempt[] | undefined;
    for (let i = 0; i < 80 && !seenWhileRunning; i++) {
      await new Promise((r) => setTimeout(r, 10));
      const list = (await (await fetch(`${s.url}/v1/streams?status=running`)).json()) as {
        streams: { id: string }[];
      };
      const id = list.streams[0]?.id;
      if (!id) continue;
      const live = (await (await fetch(`${s.url}/v1/streams/${id}/info`)).json()) as Record<string, unknown>;
      if (live.status === "running" && Array.isArray(live.attempts))
        seenWhileRunning = live.attempts as Attempt[];
    }
    expect(seenWhileRunning?.[0]?.error?.upstream_status).toBe(429);
    const { info, ms } = await pending;
    expect(info.status).toBe("completed");
    const attempts = info.attempts as Attempt[];
    expect(attempts).toHaveLength(2);
    expect(attempts[0]?.error?.upstream_status).toBe(429);
    expect(attempts[0]?.retry_in_ms).toBe(1000);
    expect(
      Date.parse(attempts[1]?.started_at as string) - Date.parse(attempts[0]?.started_at as string),
    ).toBeGreaterThanOrEqual(900);
    expect(ms).toBeGreaterThanOrEqual(900);
  });

  it("a Retry-After longer than max_wait_ms is not waited: the fallback is tried at once", async () => {
    const limited = await mock({ status: 429, retry_after: 60 });
    const up = await mock();
    const s = await sluice({
      limited: {
        provider: "openai-compatible",
        base_url: limited.url,
        model: "demo",
        fallbacks: ["backup"],
        retry: { max_attempts: 3, max_wait_ms: 2000 },
      },
      backup: { provider: "openai-compatible", base_url: up.url, model: "demo" },
    });
    const { info, ms } = await run(s, "limited");
    expect(info.status).toBe("completed");
    expect((info.attempts as Attempt[]).map((a) => a.route)).toEqual(["limited", "backup"]);
    expect(ms).toBeLessThan(10_000);
  });

  it("an unreachable upstream (connection refused) falls back too", async () => {
    const port = await freePortClosed();
    const up = await mock();
    const s = await sluice({
      gone: {
        provider: "openai-compatible",
        base_url: `http://127.0.0.1:${port}/v1`,
        model: "demo",
        fallbacks: ["backup"],
        retry: { max_attempts: 1 },
      },
      backup: { provider: "openai-compatible", base_url: up.url, model: "demo" },
    });
    const { info } = await run(s, "gone");
    expect(info.status).toBe("completed");
    const attempts = info.attempts as Attempt[];
    expect(attempts[0]?.error?.code).toBe("upstream_unreachable");
    expect(attempts[1]?.route).toBe("backup");
  });

  it("when every route fails the stream ends with the last error, every attempt listed", async () => {
    const a = await mock({ status: 502 });
    const b = await mock({ status: 500 });
    const s = await sluice({
      a: {
        provider: "openai-compatible",
        base_url: a.url,
        model: "demo",
        fallbacks: ["b"],
        retry: { max_attempts: 2, base_delay_ms: 1 },
      },
      b: { provider: "openai-compatible", base_url: b.url, model: "demo", retry: { max_attempts: 1 } },
    });
    const { info, events } = await run(s, "a");
    expect(info.status).toBe("failed");
    expect(events[events.length - 1]).toMatchObject({ type: "error", code: "upstream_error" });
    expect(String(events[events.length - 1]?.message)).toContain("500");
    expect((info.attempts as Attempt[]).map((x) => x.route)).toEqual(["a", "a", "b"]);
  });

  it("a 4xx other than 429 is not retried and does not fall back", async () => {
    const bad = await mock({ status: 400 });
    const up = await mock();
    const s = await sluice({
      bad: { provider: "openai-compatible", base_url: bad.url, model: "demo", fallbacks: ["backup"] },
      backup: { provider: "openai-compatible", base_url: up.url, model: "demo" },
    });
    const { info } = await run(s, "bad");
    expect(info.status).toBe("failed");
    expect(info.attempts as Attempt[]).toHaveLength(1);
    expect(up.requests).toHaveLength(0);
  });
});

describe("after the first token", () => {
  it("a failure is terminal: no retry, no fallback, the partial output is kept", async () => {
    const flaky = await mock();
    const up = await mock();
    const s = await sluice({
      flaky: { provider: "openai-compatible", base_url: flaky.url, model: "demo", fallbacks: ["backup"] },
      backup: { provider: "openai-compatible", base_url: up.url, model: "demo" },
    });
    const { info, events } = await run(s, "flaky", { fail_after_tokens: 5 });
    expect(info.status).toBe("failed");
    expect(events.filter((e) => e.type === "text-delta")).toHaveLength(5);
    expect(events[events.length - 1]).toMatchObject({ type: "error", code: "upstream_error" });
    expect(info.attempts as Attempt[]).toHaveLength(1);
    expect(flaky.requests).toHaveLength(1);
    expect(up.requests).toHaveLength(0);
  });
});

describe("stream bounds at the end of a generation", () => {
  it("when usage and the terminal event do not both fit, the stream still ends (error stream_too_large)", async () => {
    const s = await startSluice({ limits: { max_events_per_stream: 12 } });
    servers.push(s);
    for (const length of [10, 30]) {
      const { info, events } = await run(s, "demo", { length });
      expect(info.status).toBe("failed");
      expect(events[events.length - 1]).toMatchObject({ type: "error", code: "stream_too_large" });
      // The bound, plus the terminal event (a closing append of one record is always accepted).
      expect(events.length).toBeLessThanOrEqual(13);
    }
  });
});
