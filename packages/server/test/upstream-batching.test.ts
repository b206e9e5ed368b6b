/**
 * The upstream path's batching and TTFT phases, end to end: a real HTTP upstream that writes
 * several SSE chunks in one socket write, a real Sluice server (memory store) and real readers.
 * Several chunks read at once become one append (one batch of records, one wake of the readers),
 * with every record its own event: offsets and resume stay exact. Each generation's first token
 * gets its phases (sluice_ttft_phase_seconds{phase}), once, in order.
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { TTFT_PHASES } from "../src/core/phases.js";
import { MemoryStore } from "../src/stores/memory.js";
import type { AppendOptions, AppendResult, RecordInput } from "../src/stores/store.js";
import { type Running, readSse, startSluice, waitForStatus } from "./helpers.js";

/** The memory store, recording the record types of each append it is given (what it stores is unchanged). */
class RecordingStore extends MemoryStore {
  readonly batches: string[][] = [];
  override append(id: string, records: RecordInput[], opts?: AppendOptions): Promise<AppendResult> {
    this.batches.push(records.map((r) => r.type ?? ""));
    return super.append(id, records, opts);
  }
}

const chunk = (content: string) =>
  `data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content } }] })}\n\n`;
const FINISH = `data: ${JSON.stringify({ id: "c1", choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}\n\n`;
const USAGE = `data: ${JSON.stringify({ id: "c1", choices: [], usage: { prompt_tokens: 3, completion_tokens: 8, total_tokens: 11 } })}\n\n`;

let upstream: Server | undefined;
let sluice: Running | undefined;
afterEach(async () => {
  await sluice?.close();
  sluice = undefined;
  if (upstream) {
    upstream.closeAllConnections();
    await new Promise<void>((r) => upstream?.close(() => r()));
    upstream = undefined;
  }
});

/** An upstream answering every request with `writes`, each one socket write, `gapMs` apart. */
async function startUpstream(writes: string[], gapMs = 40): Promise<string> {
  upstream = createServer((req, res: ServerResponse) => {
    req.resume();
    req.on("end", async () => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.flushHeaders();
      for (const w of writes) {
        await new Promise((r) => setTimeout(r, gapMs));
        res.write(w);
      }
      res.end();
    });
  });
  await new Promise<void>((r) => upstream?.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`;
}

async function start(url: string): Promise<string> {
  const res = await fetch(`${url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "up", messages: [{ role: "user", content: "hi" }] }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

async function read(url: string, id: string, lastEventId?: string) {
  const res = await fetch(`${url}/v1/streams/${id}`, {
    headers: { accept: "text/event-stream", ...(lastEventId ? { "last-event-id": lastEventId } : {}) },
  });
  expect(res.status).toBe(200);
  return readSse(res);
}

describe("upstream batching", () => {
  it("several chunks in one read → one append of one record each; offsets and resume exact", async () => {
    const first = ["a", "b", "c", "d", "e"].map(chunk).join("");
    const second = ["f", "g", "h"].map(chunk).join("") + FINISH + USAGE + "data: [DONE]\n\n";
    const base = await startUpstream([first, second]);
    const store = new RecordingStore();
    sluice = await startSluice(
      { routes: { up: { provider: "openai-compatible", base_url: base, model: "m" } } },
      store,
    );
    const id = await start(sluice.url);
    await waitForStatus(sluice.url, id, (s) => s === "completed");

    // The five chunks of the first write went to the store as one append of five records.
    const deltaBatches = store.batches.filter((b) => b.includes("text-delta"));
    expect(deltaBatches[0]).toEqual(Array(5).fill("text-delta"));
    expect(deltaBatches.flat().filter((t) => t === "text-delta")).toHaveLength(8);
    expect(deltaBatches.length).toBeLessThan(8);

    // Every record its own event, in order, with consecutive offsets.
    const all = await read(sluice.url, id);
    const types = all.map((m) => JSON.parse(m.data).type as string);
    expect(types).toEqual(["start", ...Array(8).fill("text-delta"), "usage", "finish"]);
    const deltas = all.filter((m) => JSON.parse(m.data).type === "text-delta");
    expect(deltas.map((m) => JSON.parse(m.data).delta).join("")).toBe("abcdefgh");
    const ids = all.map((m) => m.id as string);
    expect(new Set(ids).size).toBe(ids.length);

    // Resume from inside the batch (after "c") gives exactly what follows it.
    const c = deltas[2];
    expect(JSON.parse(c?.data ?? "{}").delta).toBe("c");
    const rest = await read(sluice.url, id, c?.id);
    expect(rest.map((m) => m.id)).toEqual(ids.slice(ids.indexOf(c?.id as string) + 1));
    expect(
      rest
        .filter((m) => JSON.parse(m.data).type === "text-delta")
        .map((m) => JSON.parse(m.data).delta)
        .join(""),
    ).toBe("defgh");
  });
});

describe("TTFT phases", () => {
  it("each phase of the first token is observed once per generation, in order", async () => {
    const base = await startUpstream([chunk("hello"), chunk(" world") + FINISH + "data: [DONE]\n\n"], 5);
    sluice = await startSluice({
      routes: { up: { provider: "openai-compatible", base_url: base, model: "m" } },
    });
    const id = await start(sluice.url);
    await waitForStatus(sluice.url, id, (s) => s === "completed");

    const text = await (await fetch(`${sluice.url}/metrics`)).text();
    const count = (phase: string) =>
      Number(
        text.match(new RegExp(`^sluice_ttft_phase_seconds_count\\{phase="${phase}"\\} (\\S+)`, "m"))?.[1],
      );
    for (const phase of [...TTFT_PHASES.slice(1), "total"]) expect(count(phase), phase).toBe(1);

    // The generation's own marks (ms since received): every phase reached, in order.
    const ended = sluice.server.metrics.recent.find((r) => r.id === id);
    const marks = ended?.ttft_phases_ms ?? {};
    expect(Object.keys(marks)).toEqual(TTFT_PHASES.slice(1));
    const values = Object.values(marks);
    for (let i = 1; i < values.length; i++) expect(values[i]).toBeGreaterThanOrEqual(values[i - 1] as number);
    const sum = text.match(/^sluice_ttft_phase_seconds_sum\{phase="total"\} (\S+)/m)?.[1];
    expect(Number(sum) * 1000).toBeCloseTo(values.at(-1) as number, 1);
  });
});
