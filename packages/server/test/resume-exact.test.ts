import http from "node:http";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Running, startSluice, waitForStatus } from "./helpers.js";

// Formats where one record is several SSE events (AI SDK: run closers/openers, finish-step +
// finish + [DONE]; OpenAI with usage: finish + usage + [DONE]). A connection cut at any byte
// leaves the client with the complete events before the cut; resuming with the Last-Event-ID
// an EventSource would send must deliver every remaining event once: no part lost or repeated.

let s: Running;
const streams: string[] = [];
beforeAll(async () => {
  s = await startSluice();
  for (const [kind, seed] of [
    ["reasoning", 3],
    ["tool-call", 4],
    ["markdown", 5],
  ] as const) {
    const res = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        messages: [{ role: "user", content: "Explain the weather, then look it up" }],
        demo: { seed, kind, ttft_ms: 1, tokens_per_s: 5000, jitter: 0, length: 60 },
      }),
    });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    await waitForStatus(s.url, id, (st) => st !== "running");
    streams.push(id);
  }
});
afterAll(async () => {
  await s?.close();
});

interface Ev {
  id: string | undefined;
  data: string;
}

/** Complete SSE events in `text` (a torn last event is dropped, as a client parser would). */
function events(text: string): Ev[] {
  const out: Ev[] = [];
  const blocks = text.split("\n\n");
  blocks.pop(); // whatever follows the last blank line is incomplete
  for (const b of blocks) {
    let id: string | undefined;
    const data: string[] = [];
    for (const line of b.split("\n")) {
      if (line.startsWith("id: ")) id = line.slice(4);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    if (data.length > 0) out.push({ id, data: data.join("\n") });
  }
  return out;
}

/** GETs the stream; with `cutAt`, stops after that many body bytes (the connection drops). */
function read(id: string, format: string, lastEventId: string | undefined, cutAt?: number): Promise<string> {
  const u = new URL(s.url);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (lastEventId !== undefined) headers["last-event-id"] = lastEventId;
    const req = http.request(
      { host: u.hostname, port: u.port, path: `/v1/streams/${id}?format=${format}`, headers },
      (res) => {
        if (res.statusCode === 204) {
          res.resume();
          resolve("");
          return;
        }
        if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
        let body = Buffer.alloc(0);
        res.on("data", (c: Buffer) => {
          body = Buffer.concat([body, c]);
          if (cutAt !== undefined && body.length >= cutAt) {
            req.destroy();
            resolve(body.subarray(0, cutAt).toString("utf8"));
          }
        });
        res.on("end", () => resolve(body.toString("utf8")));
        res.on("error", () => {});
      },
    );
    req.on("error", () => {});
    req.setTimeout(20_000, () => {
      req.destroy();
      reject(new Error("the read did not end"));
    });
    req.end();
  });
}

/** Reads with cuts at the given fractions of what remains, resuming like an EventSource. */
async function readWithCuts(id: string, format: string, cuts: number[]): Promise<string[]> {
  const parts: string[] = [];
  let last: string | undefined;
  for (let round = 0; round < cuts.length + 1; round++) {
    const full = await read(id, format, last);
    const cut = cuts[round];
    const text = cut === undefined ? full : await read(id, format, last, Math.floor(full.length * cut));
    const evs = events(text).filter((e) => !e.data.startsWith("retry:"));
    for (const e of evs) {
      parts.push(e.data);
      if (e.id !== undefined) last = e.id;
    }
    if (cut === undefined || evs.some((e) => e.data === "[DONE]")) break;
  }
  return parts;
}

/** Like readWithCuts, on a running stream: each cut after a number of bytes of that read. */
async function readLiveWithCuts(id: string, format: string, cuts: number[]): Promise<string[]> {
  const parts: string[] = [];
  let last: string | undefined;
  for (let round = 0; ; round++) {
    const text = await read(id, format, last, cuts[round]);
    const evs = events(text);
    for (const e of evs) {
      parts.push(e.data);
      if (e.id !== undefined) last = e.id;
    }
    if (evs.some((e) => e.data === "[DONE]") || text === "") break;
  }
  return parts;
}

describe("resume is exact in multi-event formats", () => {
  it("ai-sdk, live: cuts while the generation runs, resumed by Last-Event-ID, give every part once", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("reasoning", "tool-call", "markdown"),
        fc.array(fc.integer({ min: 20, max: 1500 }), { minLength: 3, maxLength: 12 }),
        async (kind, cuts) => {
          const res = await fetch(`${s.url}/v1/streams`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({
              model: "demo",
              messages: [{ role: "user", content: "Explain the weather, then look it up" }],
              demo: { seed: 9, kind, ttft_ms: 1, tokens_per_s: 400, jitter: 0, length: 80 },
            }),
          });
          const { id } = (await res.json()) as { id: string };
          const parts = await readLiveWithCuts(id, "ai-sdk", cuts);
          await waitForStatus(s.url, id, (st) => st !== "running");
          const whole = events(await read(id, "ai-sdk", undefined)).map((e) => e.data);
          expect(parts).toEqual(whole);
        },
      ),
      { numRuns: 8 },
    );
  });

  for (const format of ["ai-sdk", "openai-usage", "anthropic", "openai-responses"]) {
    it(`${format}: random cuts at any byte, resumed by Last-Event-ID, give every part once`, async () => {
      const whole: Record<string, string[]> = {};
      for (const id of streams) whole[id] = events(await read(id, format, undefined)).map((e) => e.data);
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...streams),
          fc.array(fc.double({ min: 0.01, max: 0.99, noNaN: true }), { minLength: 1, maxLength: 6 }),
          async (id, cuts) => {
            const parts = await readWithCuts(id, format, cuts);
            expect(parts).toEqual(whole[id]);
          },
        ),
        { numRuns: 60 },
      );
    });
  }
});
