import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { type MockUpstream, startMockUpstream } from "@sluice/mock-upstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  demoBody,
  type Running,
  readAllJson,
  readSse,
  startSluice,
  startStream,
  textOf,
  waitForStatus,
} from "./helpers.js";

const CLI = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));

let mock: MockUpstream;
let s: Running;
const mockLog: string[] = [];

beforeAll(async () => {
  mock = await startMockUpstream({ port: 0, log: (line) => mockLog.push(line) });
  s = await startSluice({
    routes: {
      "mock-model": { provider: "openai-compatible", base_url: mock.url },
      "mock-renamed": { provider: "openai-compatible", base_url: mock.url, model: "demo-fast" },
      "nowhere-model": { provider: "openai-compatible", base_url: "http://127.0.0.1:9/v1" },
    },
  });
});
afterAll(async () => {
  await s.close();
  await mock.close();
});

const viaMock = (demo: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  ...demoBody(demo, extra),
  model: "mock-model",
});

describe("Sluice → openai-compatible → sluice mock-upstream, over HTTP", () => {
  it("streams the same text the demo model writes for the same seed", async () => {
    const direct = await startStream(s.url, demoBody({ length: 60, kind: "markdown" }));
    const proxied = await startStream(s.url, viaMock({ length: 60, kind: "markdown" }));
    await waitForStatus(s.url, direct.id, (st) => st === "completed");
    await waitForStatus(s.url, proxied.id, (st) => st === "completed");
    const a = await readAllJson(s.url, direct.id);
    const b = await readAllJson(s.url, proxied.id);
    expect(textOf(b)).toBe(textOf(a));
    expect(textOf(b).length).toBeGreaterThan(60);
    expect(b.at(-1)?.event).toEqual({ type: "finish", reason: "stop" });
    expect(b.find((e) => e.event.type === "usage")?.event).toMatchObject({ output_tokens: 60 });
    expect(b[0]?.event).toMatchObject({ type: "start", model: "mock-model" });
    const rec = mock.requests.find((r) => r.status === "completed" && r.model === "mock-model");
    expect(rec).toBeDefined();
  });

  it("carries tool calls and reasoning through", async () => {
    const tool = await startStream(s.url, viaMock({ kind: "tool-call" }));
    const reasoning = await startStream(s.url, viaMock({ kind: "reasoning", length: 40 }));
    await waitForStatus(s.url, tool.id, (st) => st !== "running");
    await waitForStatus(s.url, reasoning.id, (st) => st !== "running");
    const t = await readAllJson(s.url, tool.id);
    const call = t.find((e) => e.event.type === "tool-call")?.event as { name: string; args: unknown };
    expect(call.name).toBe("get_weather");
    expect(typeof call.args).toBe("object");
    expect(t.at(-1)?.event).toEqual({ type: "finish", reason: "tool-calls" });
    const r = await readAllJson(s.url, reasoning.id);
    const types = r.map((e) => e.event.type);
    expect(types.indexOf("reasoning-delta")).toBeGreaterThan(0);
    expect(types.lastIndexOf("reasoning-delta")).toBeLessThan(types.indexOf("text-delta"));
  });

  it("renames the model upstream when the route says so", async () => {
    const { id } = await startStream(s.url, { ...demoBody({ length: 5 }), model: "mock-renamed" });
    await waitForStatus(s.url, id, (st) => st === "completed");
    expect(mock.requests.some((r) => r.model === "demo-fast")).toBe(true);
  });

  it("cancel mid-stream aborts the upstream request and ends the stream with abort", async () => {
    const aborted = new Promise<unknown>((resolve) => mock.events.once("abort", resolve));
    const { id } = await startStream(s.url, viaMock({ length: 2000, tokens_per_s: 100 }));
    const reader = readSse(
      await fetch(`${s.url}/v1/streams/${id}`, { headers: { accept: "text/event-stream" } }),
    );
    await new Promise((r) => setTimeout(r, 150));
    const res = await fetch(`${s.url}/v1/streams/${id}/cancel`, { method: "POST" });
    expect(((await res.json()) as { status: string }).status).toBe("cancelled");
    await aborted;
    const msgs = (await reader).filter((m) => m.event);
    expect(msgs.at(-1)?.event).toBe("abort");
    expect(msgs.filter((m) => m.event === "text-delta").length).toBeGreaterThan(0);
    const rec = mock.requests.at(-1);
    expect(rec?.status).toBe("aborted");
    expect(rec?.chunks_sent).toBeLessThan(2000);
    expect(mockLog.some((l) => /client aborted/.test(l))).toBe(true);
  });

  it("a reader disconnecting does not abort the upstream", async () => {
    const res = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(viaMock({ length: 80, tokens_per_s: 400 })),
    });
    const id = res.headers.get("sluice-stream-id") as string;
    await readSse(res, (m) => (m.event === "text-delta" ? "stop" : undefined));
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("completed");
    expect(mock.requests.at(-1)?.status).toBe("completed");
  });

  it("an upstream failing mid-stream ends with an error event; the partial text is kept and readable", async () => {
    const { id } = await startStream(s.url, viaMock({ length: 100, fail_after_tokens: 15 }));
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("failed");
    const log = await readAllJson(s.url, id);
    expect(log.at(-1)?.event).toMatchObject({ type: "error", code: "upstream_error" });
    expect(log.filter((e) => e.event.type === "text-delta")).toHaveLength(15);
    const direct = await startStream(s.url, demoBody({ length: 100 }));
    await waitForStatus(s.url, direct.id, (st) => st === "completed");
    const full = textOf(await readAllJson(s.url, direct.id));
    expect(full.startsWith(textOf(log))).toBe(true);
  });

  it("an unreachable upstream ends the stream with upstream_unreachable", async () => {
    const { id } = await startStream(s.url, { ...demoBody(), model: "nowhere-model" });
    await waitForStatus(s.url, id, (st) => st !== "running");
    const log = await readAllJson(s.url, id);
    expect(log.at(-1)?.event).toMatchObject({ type: "error", code: "upstream_unreachable", retryable: true });
  });
});

describe("`sluice mock-upstream` as its own process", () => {
  let child: ChildProcess;
  let out = "";
  afterAll(() => {
    child?.kill("SIGTERM");
  });

  it("serves the demo model and logs when a client aborts its request", async () => {
    child = spawn(process.execPath, [CLI, "mock-upstream", "--port", "0"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const url = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 10_000);
      child.stdout?.on("data", () => {
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) {
          clearTimeout(t);
          resolve(m[1] as string);
        }
      });
    });
    const models = (await (await fetch(`${url}/models`)).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).toContain("demo");
    const ac = new AbortController();
    const res = await fetch(`${url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        stream: true,
        messages: [{ role: "user", content: "hi" }],
        demo: { ttft_ms: 1, tokens_per_s: 50, length: 500 },
      }),
      signal: ac.signal,
    });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    ac.abort();
    const start = Date.now();
    while (!/client aborted/.test(out) && Date.now() - start < 5000)
      await new Promise((r) => setTimeout(r, 20));
    expect(out).toMatch(/client aborted/);
    const recs = (await (await fetch(`${url.replace(/\/v1$/, "")}/mock/requests`)).json()) as {
      requests: { status: string }[];
    };
    expect(recs.requests.at(-1)?.status).toBe("aborted");
    child.kill("SIGTERM");
    await once(child, "exit");
  });
});
