import parsePrometheusTextFormat, { type PromFamily } from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  demoBody,
  type Running,
  readAllJson,
  readSse,
  startSluice,
  startStream,
  waitForStatus,
} from "./helpers.js";

let s: Running;
beforeAll(async () => {
  s = await startSluice({ sse: { heartbeat_ms: 200, retry_ms: 50 } });
});
afterAll(async () => {
  await s.close();
});

async function scrape(): Promise<Map<string, PromFamily>> {
  const res = await fetch(`${s.url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
  const fams = parsePrometheusTextFormat(await res.text());
  return new Map(fams.map((f) => [f.name, f]));
}

/**
 * Sum of a counter/gauge's values (optionally only samples whose labels match); for a
 * histogram, its observation count (the +Inf bucket). parse-prometheus-text-format 1.1.1
 * keeps neither labels nor _count for labelled histograms, only their buckets.
 */
function total(m: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}): number {
  const f = m.get(name);
  if (!f) throw new Error(`no metric ${name}`);
  return f.metrics
    .filter((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v))
    .reduce((a, x) => a + Number(x.value ?? x.count ?? x.buckets?.["+Inf"] ?? 0), 0);
}

describe("GET /metrics", () => {
  it("parses as Prometheus text and the histograms and counters move when streams run", async () => {
    const before = await scrape();
    for (const n of [
      "sluice_ttft_seconds",
      "sluice_inter_token_seconds",
      "sluice_tokens_out_total",
      "sluice_bytes_out_total",
      "sluice_streams_ended_total",
      "sluice_live_streams",
      "sluice_open_connections",
      "sluice_readers",
      "sluice_streams_by_readers",
      "sluice_resumes_total",
      "sluice_cancels_total",
      "sluice_upstream_errors_total",
      "sluice_upstream_retries_total",
      "sluice_slow_reader_disconnects_total",
      "sluice_store_operation_seconds",
      "nodejs_eventloop_lag_seconds",
    ]) {
      expect(before.has(n), n).toBe(true);
    }
    const ttft0 = total(before, "sluice_ttft_seconds");

    // A stream read live over SSE: while it runs, one SSE connection, one reader, one live stream.
    const { id } = await startStream(s.url, demoBody({ length: 60, tokens_per_s: 150 }));
    const res = await fetch(`${s.url}/v1/streams/${id}`, { headers: { accept: "text/event-stream" } });
    let mid: Map<string, PromFamily> | undefined;
    await readSse(res, (m) => {
      if (m.event === "text-delta" && !mid) {
        // scrape while the reader is attached (fire and keep reading)
        mid = new Map();
        void scrape().then((x) => {
          for (const [k, v] of x) mid?.set(k, v);
        });
      }
      return undefined;
    });
    await waitForStatus(s.url, id, (st) => st === "completed");
    expect(mid).toBeDefined();
    await expect.poll(() => mid?.size ?? 0).toBeGreaterThan(0);
    const m1 = mid as Map<string, PromFamily>;
    expect(total(m1, "sluice_open_connections", { transport: "sse" })).toBe(1);
    expect(total(m1, "sluice_readers")).toBe(1);
    expect(total(m1, "sluice_live_streams")).toBe(1);
    expect(total(m1, "sluice_streams_by_readers", { readers: "1" })).toBe(1);

    // A resume (Last-Event-ID), a cancelled stream and a failing one.
    const resumed = await fetch(`${s.url}/v1/streams/${id}?offset=0000000000000003`, {
      headers: { accept: "text/event-stream" },
    });
    await readSse(resumed);
    const c = await startStream(s.url, demoBody({ length: 5000, tokens_per_s: 200 }));
    await new Promise((r) => setTimeout(r, 100));
    await fetch(`${s.url}/v1/streams/${c.id}/cancel`, { method: "POST" });
    const f = await startStream(s.url, demoBody({ length: 50, fail_after_tokens: 10 }));
    await waitForStatus(s.url, f.id, (st) => st === "failed");

    const after = await scrape();
    expect(total(after, "sluice_ttft_seconds")).toBe(ttft0 + 3);
    const deltas = (await readAllJson(s.url, id)).filter((e) => e.event.type === "text-delta").length;
    expect(total(after, "sluice_inter_token_seconds")).toBeGreaterThanOrEqual(deltas - 1);
    expect(total(after, "sluice_tokens_out_total")).toBeGreaterThanOrEqual(deltas + 10);
    expect(total(after, "sluice_bytes_out_total")).toBeGreaterThan(1000);
    expect(total(after, "sluice_streams_ended_total", { status: "completed" })).toBeGreaterThanOrEqual(1);
    expect(total(after, "sluice_streams_ended_total", { status: "cancelled" })).toBeGreaterThanOrEqual(1);
    expect(total(after, "sluice_streams_ended_total", { status: "failed" })).toBeGreaterThanOrEqual(1);
    expect(total(after, "sluice_cancels_total", { by: "client" })).toBeGreaterThanOrEqual(1);
    expect(total(after, "sluice_upstream_errors_total", { route: "demo" })).toBeGreaterThanOrEqual(1);
    expect(total(after, "sluice_resumes_total", { transport: "sse" })).toBeGreaterThanOrEqual(1);
    expect(total(after, "sluice_open_connections", { transport: "sse" })).toBe(0);
    expect(total(after, "sluice_store_operation_seconds")).toBeGreaterThan(
      total(before, "sluice_store_operation_seconds"),
    );
    // Cardinality stays bounded: no stream id ever becomes a label value.
    for (const fam of after.values()) {
      for (const x of fam.metrics) {
        for (const v of Object.values(x.labels ?? {})) expect(v.startsWith("st_")).toBe(false);
      }
    }
    // In the text: the +Inf bucket equals the count, the sum is positive.
    const text = await (await fetch(`${s.url}/metrics`)).text();
    const inf = /sluice_ttft_seconds_bucket\{le="\+Inf",route="demo"\} (\d+)/.exec(text)?.[1];
    const count = /sluice_ttft_seconds_count\{route="demo"\} (\d+)/.exec(text)?.[1];
    expect(Number(inf)).toBeGreaterThanOrEqual(3);
    expect(inf).toBe(count);
    expect(
      Number(/sluice_inter_token_seconds_sum\{route="demo"\} ([\d.e-]+)/.exec(text)?.[1]),
    ).toBeGreaterThan(0);
    // The histogram buckets are cumulative.
    for (const x of after.get("sluice_ttft_seconds")?.metrics ?? []) {
      const counts = Object.entries(x.buckets ?? {})
        .sort(([a], [b]) => Number(a) - Number(b))
        .map(([, c]) => Number(c));
      expect([...counts].sort((a, b) => a - b)).toEqual(counts);
    }
  });

  it("GET /v1/stats lists live streams with readers, recent ones and errors; health endpoints answer", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 400, tokens_per_s: 100 }));
    await new Promise((r) => setTimeout(r, 200));
    const stats = (await (await fetch(`${s.url}/v1/stats`)).json()) as {
      live: { id: string; model: string; tokens: number; readers: number; age_ms: number }[];
      recent: { id: string; status: string }[];
      errors: { code: string }[];
      histograms: { ttft_seconds: { count: number } };
    };
    const live = stats.live.find((l) => l.id === id);
    expect(live).toMatchObject({ model: "demo", readers: 0 });
    expect(live?.tokens).toBeGreaterThan(0);
    expect(stats.recent.some((r) => r.status === "failed")).toBe(true);
    expect(stats.errors.length).toBeGreaterThan(0);
    expect(stats.histograms.ttft_seconds.count).toBeGreaterThan(0);
    await fetch(`${s.url}/v1/streams/${id}/cancel`, { method: "POST" });
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
  });
});

describe("connections by transport", () => {
  it("counts open WebSocket connections", async () => {
    const base = total(await scrape(), "sluice_open_connections", { transport: "ws" });
    const ws = new WebSocket(`${s.url.replace("http", "ws")}/v1/ws`);
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    expect(total(await scrape(), "sluice_open_connections", { transport: "ws" })).toBe(base + 1);
    ws.close();
    await new Promise((r) => ws.once("close", r));
    for (let i = 0; i < 50; i++) {
      if (total(await scrape(), "sluice_open_connections", { transport: "ws" }) === base) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(total(await scrape(), "sluice_open_connections", { transport: "ws" })).toBe(base);
  });
});
