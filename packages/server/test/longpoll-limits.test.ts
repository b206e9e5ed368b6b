import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { demoBody, type Running, startSluice, startStream, waitForStatus } from "./helpers.js";

interface Page {
  status: string;
  events: { offset: string; event: { type: string } }[];
  next_offset: string;
  up_to_date: boolean;
}

async function page(
  url: string,
): Promise<{ status: number; body: Page & { error?: { code: string } }; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(url);
  const body = (await res.json()) as Page & { error?: { code: string } };
  return { status: res.status, body, ms: performance.now() - t0 };
}

describe("long-poll JSON reads (?live=long-poll)", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice({ long_poll: { max_wait_ms: 2000 } });
  });
  afterAll(async () => {
    await s.close();
  });

  it("waits for the next events and returns them with the next offset", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 5, ttft_ms: 400 }));
    const first = await page(`${s.url}/v1/streams/${id}?offset=-1`);
    expect(first.body.events.map((e) => e.event.type)).toEqual(["start"]);
    const after = first.body.next_offset;
    // Nothing after `start` for ~400 ms: the long-poll holds, then answers as soon as tokens come.
    const lp = await page(`${s.url}/v1/streams/${id}?offset=${after}&live=long-poll`);
    expect(lp.status).toBe(200);
    expect(lp.body.events.length).toBeGreaterThan(0);
    expect((lp.body.events[0]?.offset ?? "") > after).toBe(true);
    expect(lp.body.next_offset).toBe(lp.body.events.at(-1)?.offset);
    expect(lp.ms).toBeGreaterThan(100);
    expect(lp.ms).toBeLessThan(1900);
  });

  it("answers at its deadline with no events and the same offset", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 5, ttft_ms: 5000 }));
    const first = await page(`${s.url}/v1/streams/${id}?offset=-1`);
    const lp = await page(
      `${s.url}/v1/streams/${id}?offset=${first.body.next_offset}&live=long-poll&timeout_ms=250`,
    );
    expect(lp.status).toBe(200);
    expect(lp.body.events).toEqual([]);
    expect(lp.body.next_offset).toBe(first.body.next_offset);
    expect(lp.body.up_to_date).toBe(true);
    expect(lp.ms).toBeGreaterThanOrEqual(240);
    expect(lp.ms).toBeLessThan(1500);
    await s.server.runner.cancel(id);
  });

  it("wakes many waiting polls on one event", async () => {
    // Deadlines far beyond the test: a poll that answers was woken, not timed out (a poll that
    // times out also reads what is there by then, so it would look the same).
    const patient = await startSluice({ long_poll: { max_wait_ms: 120_000 } });
    try {
      // No token for two minutes: the polls surely arrive before anything follows `start`.
      const { id } = await startStream(patient.url, demoBody({ length: 3, ttft_ms: 120_000 }));
      const first = await page(`${patient.url}/v1/streams/${id}?offset=-1`);
      expect(first.body.events.map((e) => e.event.type)).toEqual(["start"]);
      const after = first.body.next_offset;
      const polls = Array.from({ length: 40 }, () =>
        page(`${patient.url}/v1/streams/${id}?offset=${after}&live=long-poll&timeout_ms=120000`),
      );
      // A waiting poll holds a connection slot (nothing else is open on this server).
      for (let i = 0; i < 1000 && patient.server.connections.size < 40; i++)
        await new Promise((r) => setTimeout(r, 10));
      // All 40 are waiting, and nothing has been written for them yet.
      expect(patient.server.connections.size).toBe(40);
      const info = (await (await fetch(`${patient.url}/v1/streams/${id}/info`)).json()) as { length: number };
      expect(info.length).toBe(1);
      // One event (the cancel's abort) wakes every one of them (the bound only keeps a
      // regression from hanging the test).
      await fetch(`${patient.url}/v1/streams/${id}/cancel`, { method: "POST" });
      let timer: NodeJS.Timeout | undefined;
      const answers = await Promise.race([
        Promise.all(polls),
        new Promise<"not woken">((resolve) => {
          timer = setTimeout(() => resolve("not woken"), 20_000);
        }),
      ]);
      clearTimeout(timer);
      if (answers === "not woken") throw new Error("the event did not wake every waiting poll");
      for (const p of answers) {
        expect(p.status).toBe(200);
        expect(p.body.events.map((e) => e.event.type)).toEqual(["abort"]);
        expect((p.body.events[0]?.offset ?? "") > after).toBe(true);
      }
      expect(patient.server.connections.size).toBe(0);
    } finally {
      await patient.close();
    }
  });

  it("returns at once when there is something to read or the stream ended", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 3 }));
    await waitForStatus(s.url, id, (st) => st === "completed");
    const all = await page(`${s.url}/v1/streams/${id}?offset=-1&live=long-poll`);
    expect(all.body.events.at(-1)?.event.type).toBe("finish");
    const end = await page(`${s.url}/v1/streams/${id}?offset=${all.body.next_offset}&live=long-poll`);
    expect(end.body.events).toEqual([]);
    expect(end.body.status).toBe("completed");
    expect(end.ms).toBeLessThan(500);
  });

  it("rejects a bad wait or live mode", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 3 }));
    for (const q of ["live=long-poll&timeout_ms=abc", "live=long-poll&timeout_ms=999999", "live=forever"]) {
      const r = await page(`${s.url}/v1/streams/${id}?${q}`);
      expect(r.status).toBe(400);
      expect(r.body.error?.code).toBe("invalid_request");
    }
  });
});

describe("connection limits", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice({ limits: { max_connections: 3, max_readers_per_stream: 2 } });
  });
  afterAll(async () => {
    await s.close();
  });

  async function openSse(id: string): Promise<{ res: Response; ac: AbortController }> {
    const ac = new AbortController();
    const res = await fetch(`${s.url}/v1/streams/${id}`, {
      headers: { accept: "text/event-stream" },
      signal: ac.signal,
    });
    return { res, ac };
  }

  it("bounds readers per stream with too_many_readers", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 5000, tokens_per_s: 20 }));
    const a = await openSse(id);
    const b = await openSse(id);
    expect(a.res.status).toBe(200);
    expect(b.res.status).toBe(200);
    const c = await openSse(id);
    expect(c.res.status).toBe(503);
    expect(((await c.res.json()) as { error: { code: string } }).error.code).toBe("too_many_readers");
    a.ac.abort();
    for (let i = 0; i < 100 && s.server.hub.readerCount(id) > 1; i++)
      await new Promise((r) => setTimeout(r, 10));
    const d = await openSse(id);
    expect(d.res.status).toBe(200);
    b.ac.abort();
    d.ac.abort();
    await s.server.runner.cancel(id);
  });

  it("bounds long-lived connections with too_many_connections, on every transport", async () => {
    for (let i = 0; i < 100 && s.server.connections.size > 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    const ids = await Promise.all(
      [0, 1, 2, 3].map(() => startStream(s.url, demoBody({ length: 5000, tokens_per_s: 20 }))),
    );
    const open = [];
    for (let i = 0; i < 3; i++) open.push(await openSse((ids[i] as { id: string }).id));
    for (const o of open) expect(o.res.status).toBe(200);
    const over = await openSse((ids[3] as { id: string }).id);
    expect(over.res.status).toBe(503);
    expect(((await over.res.json()) as { error: { code: string } }).error.code).toBe("too_many_connections");
    // WebSocket upgrades are refused the same way.
    const ws = new WebSocket(`${s.url.replace("http", "ws")}/v1/ws`);
    const status = await new Promise<number>((resolve) =>
      ws.once("unexpected-response", (_q, r) => resolve(r.statusCode ?? 0)),
    );
    expect(status).toBe(503);
    // Short requests are not counted.
    expect((await fetch(`${s.url}/v1/streams/${(ids[0] as { id: string }).id}/info`)).status).toBe(200);
    // Freed when a reader leaves.
    open[0]?.ac.abort();
    for (let i = 0; i < 100 && s.server.connections.size >= 3; i++)
      await new Promise((r) => setTimeout(r, 10));
    const again = await openSse((ids[3] as { id: string }).id);
    expect(again.res.status).toBe(200);
    again.ac.abort();
    for (const o of open) o.ac.abort();
    for (const { id } of ids) await s.server.runner.cancel(id);
  });
});
