import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SluiceError } from "@sluice/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  GENERATION_RESERVE_BYTES,
  MemoryBudget,
  memoryLimits,
  RECORD_COST_BYTES,
} from "../src/core/budget.js";
import { MemoryStore } from "../src/stores/memory.js";
import { demoText } from "./cluster-helper.js";
import { demoBody, type Running, readAllJson, startSluice, textOf, waitForStatus } from "./helpers.js";
import { type RedisProc, startRedis } from "./redis-helper.js";

/** Issue 11 item 4: valid requests must not exhaust memory; the node enforces a budget. */

const MiB = 1024 * 1024;

describe("MemoryBudget", () => {
  it("derives its defaults from the heap limit", () => {
    const l = memoryLimits({}, 1000 * MiB);
    expect(l.generationsBytes).toBe(400 * MiB);
    expect(l.generationBytes).toBe(64 * MiB);
    expect(l.memoryStoreBytes).toBe(300 * MiB);
    expect(memoryLimits({}, 200 * MiB).generationBytes).toBe(20 * MiB);
    expect(memoryLimits({ generation_bytes: MiB, generations_bytes: 2 * MiB }, 1000 * MiB)).toMatchObject({
      generationBytes: MiB,
      generationsBytes: 2 * MiB,
    });
  });

  it("admits with a reserve, draws growth from the pool, and stops a generation at its bound or an empty pool", () => {
    const b = new MemoryBudget({
      generationBytes: 2 * MiB,
      generationsBytes: 2.5 * MiB,
      memoryStoreBytes: 0,
    });
    const a = b.admit(0);
    expect(b.used).toBe(GENERATION_RESERVE_BYTES);
    // Within the reserve: nothing more taken from the pool.
    expect(a.charge(32 * 1024)).toBeUndefined();
    expect(b.used).toBe(GENERATION_RESERVE_BYTES);
    expect(a.charge(MiB)).toBeUndefined();
    expect(b.used).toBe(a.held);
    // Past its own bound: stream_too_large, nothing charged.
    const tooBig = a.charge(MiB);
    expect(tooBig).toBeInstanceOf(SluiceError);
    expect(tooBig?.code).toBe("stream_too_large");
    // A second generation fits its reserve, then finds the pool empty.
    const c = b.admit(1_500_000);
    expect(c.charge(300_000)?.code).toBe("capacity_exceeded");
    // A third cannot even start: 503 with a retry hint.
    const refused = (() => {
      try {
        b.admit(0);
      } catch (e) {
        return e as SluiceError;
      }
    })();
    expect(refused?.code).toBe("capacity_exceeded");
    expect(refused?.details?.retry_after_s).toBe(1);
    // Stored records (a durable store) give pool back beyond the reserve; release gives all back.
    a.uncharge(a.held);
    expect(b.used).toBe(GENERATION_RESERVE_BYTES + 1_500_000);
    a.release();
    c.release();
    c.release();
    expect(b.used).toBe(0);
    // More planned than one generation may hold: refused at start.
    expect(() => b.admit(3 * MiB)).toThrow(/limits.generation_bytes/);
  });
});

describe("the memory store's byte bound", () => {
  it("evicts the oldest ended streams to make room, and refuses when only running streams are left", async () => {
    const s = new MemoryStore({ sweepIntervalMs: 0, maxBytes: 64 * 1024 });
    const data = "x".repeat(1000);
    for (const id of ["a", "b"]) {
      await s.create({ id, kind: "log", content_type: "text/plain" });
      for (let i = 0; i < 20; i++) await s.append(id, [{ data }]);
      await s.append(id, [{ data }], { close: "completed" });
    }
    expect(s.bytes).toBeGreaterThan(40_000);
    await s.create({ id: "c", kind: "log", content_type: "text/plain" });
    for (let i = 0; i < 30; i++) await s.append("c", [{ data }]);
    // The oldest ended stream made room; the newer one is still there.
    expect(await s.info("a")).toBeUndefined();
    expect(await s.info("b")).toBeDefined();
    expect(s.bytes).toBeLessThanOrEqual(64 * 1024);
    const err = await (async () => {
      for (let i = 0; i < 100; i++) await s.append("c", [{ data }]);
    })().catch((e: unknown) => e);
    expect((err as SluiceError).code).toBe("capacity_exceeded");
    expect(await s.info("b")).toBeUndefined();
    // A stream can always end with its terminal record.
    await s.append("c", [{ data: "end" }], { close: "failed" });
    expect((await s.info("c"))?.status).toBe("failed");
    expect(s.bytes).toBeLessThanOrEqual(64 * 1024 + 1000);
    await s.close();
  });
});

describe("a full memory store at a generation's end", () => {
  it("still ends the stream: the terminal event alone, capacity_exceeded, when the last records do not fit", async () => {
    // The bytes a demo generation's records take before its closing append (usage + finish).
    const body = demoBody({ seed: 11, length: 30 });
    const probe = new MemoryStore({ sweepIntervalMs: 0 });
    const a = await startSluice({}, probe);
    const { id } = (await (await post(a.url, body)).json()) as { id: string };
    await waitForStatus(a.url, id, (st) => st !== "running");
    const all = (await probe.read(id, 0, 1000)).records;
    await a.close();
    const beforeClose = all.slice(0, -2).reduce((n, r) => n + r.data.length + RECORD_COST_BYTES, 0);
    // Room for every record but the two that close it.
    const store = new MemoryStore({ sweepIntervalMs: 0, maxBytes: beforeClose + 100 });
    const b = await startSluice({}, store);
    try {
      const { id: id2 } = (await (await post(b.url, body)).json()) as { id: string };
      const info = await waitForStatus(b.url, id2, (st) => st !== "running");
      expect(info).toMatchObject({ status: "failed", error: { code: "capacity_exceeded" } });
      const events = await readAllJson(b.url, id2);
      expect(textOf(events)).toBe(demoText(body));
      expect(events.at(-1)?.event).toMatchObject({
        type: "error",
        code: "capacity_exceeded",
        retryable: true,
      });
    } finally {
      await b.close();
    }
  });
});

let redis: RedisProc;
const dir = mkdtempSync(join(tmpdir(), "sluice-budget-"));
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.close();
  rmSync(dir, { recursive: true, force: true });
});

const post = (url: string, body: unknown) =>
  fetch(`${url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });

describe.each([
  ["memory", () => "memory"],
  ["sqlite", () => `sqlite:${join(dir, `b-${Math.random().toString(36).slice(2)}.db`)}`],
  ["redis", () => redis.url],
] as [string, () => string][])("the memory budget on the %s store", (name, spec) => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice({
      store: spec(),
      limits: { generation_bytes: 6 * MiB, generations_bytes: 12 * MiB },
    });
  });
  afterAll(async () => {
    await s?.close();
  });

  it("refuses demo parameters past their bounds with 400 invalid_request", async () => {
    for (const demo of [{ length: 1_000_000 }, { length: 100_001 }, { fail_after_tokens: 1_000_000 }]) {
      const res = await post(s.url, demoBody(demo));
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_request");
    }
  });

  it("a generation planned past its bound is a 413 stream_too_large at start; nothing is left running", async () => {
    const res = await post(s.url, demoBody({ length: 60_000 }));
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("stream_too_large");
    expect(s.server.runner.runningCount).toBe(0);
  });

  it("a full node answers 503 capacity_exceeded with Retry-After; one generation past its bound is stopped; others finish intact", async () => {
    const small = demoBody({ seed: 3, length: 40, tokens_per_s: 100 });
    const { id: smallId } = (await (await post(s.url, small)).json()) as { id: string };
    // Each plans ~2.5 MiB up front (and waits before its first token): four fit in 12 MiB with
    // the small one, the fifth does not.
    const waiting = demoBody({ seed: 4, length: 20_000, ttft_ms: 600_000 });
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await post(s.url, waiting));
    expect(answers.slice(0, 4).map((r) => r.status)).toEqual([201, 201, 201, 201]);
    expect(answers[4]?.status).toBe(503);
    expect(answers[4]?.headers.get("retry-after")).toBe("1");
    const refusal = (await (answers[4] as Response).json()) as { error: { code: string } };
    expect(refusal.error.code).toBe("capacity_exceeded");
    for (const r of answers.slice(0, 4)) {
      const { id } = (await r.json()) as { id: string };
      expect((await fetch(`${s.url}/v1/streams/${id}/cancel`, { method: "POST" })).status).toBe(200);
    }

    // Alone, a 20,000-token answer: its records pass 6 MiB only where the store keeps them in memory.
    const big = demoBody({ seed: 5, length: 20_000, tokens_per_s: 10_000, ttft_ms: 0 });
    const res = await post(s.url, big);
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    const info = await waitForStatus(s.url, id, (st) => st !== "running", 30_000);
    const events = await readAllJson(s.url, id);
    if (name === "memory") {
      expect(info).toMatchObject({ status: "failed", error: { code: "stream_too_large" } });
      const last = events.at(-1)?.event as { type: string; code: string; message: string };
      expect(last).toMatchObject({ type: "error", code: "stream_too_large" });
      expect(last.message).toMatch(/limits.generation_bytes/);
    } else {
      expect(info, JSON.stringify(info.error)).toMatchObject({ status: "completed" });
      expect(textOf(events)).toBe(demoText(big));
    }

    await waitForStatus(s.url, smallId, (st) => st !== "running", 30_000);
    const smallEvents = await readAllJson(s.url, smallId);
    expect(textOf(smallEvents)).toBe(demoText(small));
    expect(smallEvents.at(-1)?.event).toMatchObject({ type: "finish" });
    // Everything ended: the whole budget is free again.
    expect(s.server.runner.runningCount).toBe(0);
    const again = await post(s.url, waiting);
    expect(again.status).toBe(201);
    await fetch(`${s.url}/v1/streams/${((await again.json()) as { id: string }).id}/cancel`, {
      method: "POST",
    });
  });
});

const CLI = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));

describe("a small-heap server under a load of large generations", () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  });

  it.each([
    ["memory", () => "memory"],
    ["sqlite", () => `sqlite:${join(dir, `cli-${Math.random().toString(36).slice(2)}.db`)}`],
    ["redis", () => redis.url],
  ] as [string, () => string][])(
    "stays alive on the %s store, refuses or stops what does not fit, and finishes every other stream",
    async (_name, spec) => {
      const child = spawn(
        process.execPath,
        ["--max-old-space-size=160", CLI, "serve", "--port", "0", "--store", spec()],
        { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SLUICE_LOG_LEVEL: "warn" } },
      );
      children.push(child);
      let out = "";
      child.stdout?.on("data", (d: Buffer) => {
        out += d.toString();
      });
      child.stderr?.on("data", (d: Buffer) => {
        out += d.toString();
      });
      const start = Date.now();
      while (!/listening on http/.test(out)) {
        if (Date.now() - start > 15_000 || child.exitCode !== null)
          throw new Error(`server did not start: ${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const url = (/listening on (http:\/\/\S+)/.exec(out) as RegExpExecArray)[1] as string;

      // Ordinary streams first, paced so they run through the whole load.
      const smalls = [1, 2, 3].map((seed) => demoBody({ seed, length: 60, tokens_per_s: 20, ttft_ms: 0 }));
      const smallIds: string[] = [];
      for (const b of smalls) smallIds.push(((await (await post(url, b)).json()) as { id: string }).id);

      // The load: 30 of the largest answers accepted, as fast as the demo goes (~37 MB each held
      // on the memory store without a budget; 1.1 GB together, far past a 160 MB heap).
      const big = demoBody({ length: 100_000, tokens_per_s: 1_000_000, ttft_ms: 0 });
      const answers = await Promise.all(Array.from({ length: 30 }, () => post(url, big)));
      const started: string[] = [];
      for (const r of answers) {
        const body = (await r.json()) as { id: string; error?: { code: string } };
        if (r.status === 201) started.push(body.id);
        else {
          expect(r.status).toBe(503);
          expect(body.error?.code).toBe("capacity_exceeded");
          expect(r.headers.get("retry-after")).toBeTruthy();
        }
      }
      for (const id of started) {
        const info = await waitForStatus(url, id, (st) => st !== "running", 120_000);
        if (info.status !== "completed")
          expect(["stream_too_large", "capacity_exceeded"]).toContain((info.error as { code: string }).code);
      }
      for (const [i, id] of smallIds.entries()) {
        await waitForStatus(url, id, (st) => st !== "running", 60_000);
        const events = await readAllJson(url, id);
        expect(textOf(events)).toBe(demoText(smalls[i] as ReturnType<typeof demoBody>));
        expect(events.at(-1)?.event).toMatchObject({ type: "finish" });
      }
      expect(child.exitCode).toBeNull();
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      expect(out).not.toMatch(/heap out of memory|FATAL/i);
      child.kill("SIGTERM");
    },
    240_000,
  );
});
