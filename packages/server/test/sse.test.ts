import net from "node:net";
import { EventSource } from "eventsource";
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

let s: Running;
beforeAll(async () => {
  s = await startSluice({ sse: { heartbeat_ms: 100, retry_ms: 50 } });
});
afterAll(async () => {
  await s.close();
});

function sse(path: string, headers: Record<string, string> = {}) {
  return fetch(`${s.url}${path}`, { headers: { accept: "text/event-stream", ...headers } });
}

describe("SSE over a real socket", () => {
  it("POST with Accept: text/event-stream streams tokens as they are generated", async () => {
    const res = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(demoBody({ ttft_ms: 20, tokens_per_s: 100, length: 30 })),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(res.headers.get("x-accel-buffering")).toBe("no");
    expect(res.headers.get("cache-control")).toContain("no-cache");
    const id = res.headers.get("sluice-stream-id");
    expect(id).toMatch(/^st_/);
    const msgs = (await readSse(res)).filter((m) => m.event);
    expect(msgs[0]?.event).toBe("start");
    expect(msgs.at(-1)?.event).toBe("finish");
    const deltas = msgs.filter((m) => m.event === "text-delta");
    expect(deltas.length).toBe(30);
    // 30 tokens at 100/s span ~290 ms: the first must arrive well before the last.
    const span = (deltas.at(-1)?.at ?? 0) - (deltas[0]?.at ?? 0);
    expect(span).toBeGreaterThan(150);
    // Offsets are the SSE ids, strictly increasing and fixed width.
    const ids = msgs.map((m) => m.id as string);
    expect(ids.every((x) => /^\d{16}$/.test(x))).toBe(true);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("resumes with Last-Event-ID from many random points with exactly the missing events", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 120 }));
    await waitForStatus(s.url, id, (st) => st !== "running");
    const log = await readAllJson(s.url, id);
    const full = (await readSse(await sse(`/v1/streams/${id}`))).filter((m) => m.event);
    expect(full.map((m) => m.id)).toEqual(log.map((e) => e.offset));
    expect(full.map((m) => JSON.parse(m.data))).toEqual(log.map((e) => e.event));
    expect(textOf(full).length).toBeGreaterThan(100);
    for (let k = 0; k < 25; k++) {
      // Any event but the terminal one (resuming after that answers 204, checked below).
      const cut = Math.floor(Math.random() * (full.length - 1));
      const lastId = full[cut]?.id as string;
      const rest = (
        await readSse(await sse(`/v1/streams/${id}?offset=-1`, { "last-event-id": lastId }))
      ).filter((m) => m.event);
      expect(rest.map((m) => m.id)).toEqual(full.slice(cut + 1).map((m) => m.id));
      expect(rest.map((m) => m.data)).toEqual(full.slice(cut + 1).map((m) => m.data));
      // ?offset= does the same without the header.
      const viaQuery = (await readSse(await sse(`/v1/streams/${id}?offset=${lastId}`))).filter(
        (m) => m.event,
      );
      expect(viaQuery.map((m) => m.id)).toEqual(rest.map((m) => m.id));
    }
    // Resuming after the terminal event: nothing more will come, 204 stops an EventSource.
    const done = await sse(`/v1/streams/${id}`, { "last-event-id": full.at(-1)?.id as string });
    expect(done.status).toBe(204);
  });

  it("resumes mid-generation, joining the live tail with nothing lost or duplicated", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 150, tokens_per_s: 300 }));
    const first: string[] = [];
    let cut = "";
    const res1 = await sse(`/v1/streams/${id}`);
    await readSse(res1, (m) => {
      if (!m.event) return;
      first.push(m.data);
      cut = m.id as string;
      return first.length >= 20 ? "stop" : undefined;
    });
    const info = (await (await fetch(`${s.url}/v1/streams/${id}/info`)).json()) as { status: string };
    expect(info.status).toBe("running");
    const rest = (await readSse(await sse(`/v1/streams/${id}`, { "last-event-id": cut }))).filter(
      (m) => m.event,
    );
    const log = await readAllJson(s.url, id);
    expect([...first, ...rest.map((m) => m.data)].map((d) => JSON.parse(d))).toEqual(log.map((e) => e.event));
    expect(rest.at(-1)?.event).toBe("finish");
  });

  it("two concurrent readers see identical sequences", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 80, tokens_per_s: 400 }));
    const [a, b] = await Promise.all([
      readSse(await sse(`/v1/streams/${id}`)),
      readSse(await sse(`/v1/streams/${id}`)),
    ]);
    const fa = a.filter((m) => m.event);
    const fb = b.filter((m) => m.event);
    expect(fa.length).toBeGreaterThan(80);
    expect(fa.map((m) => [m.id, m.event, m.data])).toEqual(fb.map((m) => [m.id, m.event, m.data]));
  });

  it("a reader that connects after the end gets the whole stream and the terminal event", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 25 }));
    await waitForStatus(s.url, id, (st) => st === "completed");
    const msgs = (await readSse(await sse(`/v1/streams/${id}`))).filter((m) => m.event);
    expect(msgs[0]?.event).toBe("start");
    expect(msgs.at(-1)?.event).toBe("finish");
    expect(msgs.filter((m) => m.event === "text-delta")).toHaveLength(25);
  });

  it("offset=now follows only what comes next", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 60, tokens_per_s: 200, ttft_ms: 100 }));
    const msgs = (await readSse(await sse(`/v1/streams/${id}?offset=now`))).filter((m) => m.event);
    expect(msgs[0]?.event).not.toBe("start");
    expect(msgs.at(-1)?.event).toBe("finish");
    const log = await readAllJson(s.url, id);
    expect(msgs.map((m) => m.id)).toEqual(log.slice(log.length - msgs.length).map((e) => e.offset));
  });

  it("sends heartbeat comments on an idle stream", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 3, ttft_ms: 450 }));
    const res = await sse(`/v1/streams/${id}`);
    const text = await res.text();
    expect(text).toContain(": keep-alive\n\n");
    expect(text).toContain("retry: 50\n\n");
    expect(text).toContain("event: finish");
  });
});

/** Reads raw bytes from a socket until `done(text)` says stop (or 10 s). */
function readUntil(sock: net.Socket, done: (text: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new Error(`timed out; got: ${text.slice(-300)}`)), 10_000);
    const onData = (b: Buffer) => {
      text += b.toString("latin1");
      if (done(text)) {
        clearTimeout(timer);
        sock.off("data", onData);
        resolve(text);
      }
    };
    sock.on("data", onData);
  });
}

/** Decodes an HTTP/1.1 chunked body strictly (every size line, CRLF and the terminator). */
function dechunk(raw: string): { body: string; rest: string } {
  let i = 0;
  let body = "";
  for (;;) {
    const eol = raw.indexOf("\r\n", i);
    if (eol < 0) throw new Error("truncated chunk size line");
    const size = Number.parseInt(raw.slice(i, eol), 16);
    if (!Number.isFinite(size)) throw new Error(`bad chunk size line: ${JSON.stringify(raw.slice(i, eol))}`);
    const start = eol + 2;
    if (size === 0) {
      if (raw.slice(start, start + 2) !== "\r\n") throw new Error("bad terminator");
      return { body, rest: raw.slice(start + 2) };
    }
    body += raw.slice(start, start + size);
    if (raw.slice(start + size, start + size + 2) !== "\r\n") throw new Error("chunk not followed by CRLF");
    i = start + size + 2;
  }
}

describe("HTTP/1.1 framing of streamed responses (bytes written straight to the socket)", () => {
  it("is valid chunked encoding, keeps the connection reusable, and serves pipelined requests in order", async () => {
    const done = await startStream(s.url, demoBody({ length: 20, tokens_per_s: 1000, ttft_ms: 0 }));
    await waitForStatus(s.url, done.id, (st) => st === "completed");
    const { id } = await startStream(s.url, demoBody({ length: 40, tokens_per_s: 400, ttft_ms: 50 }));
    const port = Number(new URL(s.url).port);
    const sock = net.connect(port, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    const get = (path: string, accept: string) =>
      `GET ${path} HTTP/1.1\r\nHost: x\r\nAccept: ${accept}\r\n\r\n`;
    // Live SSE, then (pipelined on the same socket) NDJSON of a finished stream from an offset,
    // and the live stream's info.
    sock.write(
      get(`/v1/streams/${id}`, "text/event-stream") +
        get(`/v1/streams/${done.id}?offset=0000000000000010`, "application/x-ndjson") +
        get(`/v1/streams/${id}/info`, "application/json"),
    );
    // The info request is answered when it is handled (while the stream runs) but sent after the
    // two streams end: its JSON (with `running_here`) is the last thing on the socket.
    const raw = await readUntil(sock, (t) => t.includes('"running_here"') && t.endsWith("}"));
    sock.destroy();
    const responses: { head: string; body: string }[] = [];
    let rest = raw;
    while (rest.length > 0) {
      const h = rest.indexOf("\r\n\r\n");
      const head = rest.slice(0, h);
      rest = rest.slice(h + 4);
      if (/transfer-encoding: chunked/i.test(head)) {
        const d = dechunk(rest);
        responses.push({ head, body: Buffer.from(d.body, "latin1").toString("utf8") });
        rest = d.rest;
      } else {
        const len = Number(/content-length: (\d+)/i.exec(head)?.[1]);
        responses.push({ head, body: Buffer.from(rest.slice(0, len), "latin1").toString("utf8") });
        rest = rest.slice(len);
      }
    }
    expect(responses).toHaveLength(3);
    for (const r of responses) expect(`${r.head}\n${r.body}`).toMatch(/^HTTP\/1\.1 200/);

    const log = await readAllJson(s.url, id);
    // SSE: every record, in order, ending with the terminal event.
    const ids = [...(responses[0] as { body: string }).body.matchAll(/^id: (\d+)$/gm)].map((m) => m[1]);
    expect(ids).toEqual(log.map((e) => e.offset));
    // NDJSON from offset 10: exactly the records after it.
    const lines = (responses[1] as { body: string }).body.split("\n").filter(Boolean);
    const doneLog = await readAllJson(s.url, done.id);
    expect(lines.map((l) => JSON.parse(l))).toEqual(doneLog.slice(10));
    expect(JSON.parse((responses[2] as { body: string }).body).id).toBe(id);
  });
});

describe("the eventsource package as a real client", () => {
  it("reconnects with Last-Event-ID by itself after its connection is killed; text equals the full answer", async () => {
    const target = new URL(s.url);
    let killed = 0;
    const proxy = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      client.pipe(upstream);
      let bytes = 0;
      const killThis = killed < 2;
      upstream.on("data", (chunk: Buffer) => {
        bytes += chunk.length;
        client.write(chunk);
        // Cut the first two connections once some events went through.
        if (killThis && bytes > 1500) {
          killed++;
          client.destroy();
          upstream.destroy();
        }
      });
      upstream.on("end", () => client.end());
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
      client.on("close", () => upstream.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", () => r()));
    const port = (proxy.address() as net.AddressInfo).port;
    try {
      const { id } = await startStream(s.url, demoBody({ length: 200, tokens_per_s: 400 }));
      const es = new EventSource(`http://127.0.0.1:${port}/v1/streams/${id}`);
      let text = "";
      const ids: string[] = [];
      let opens = 0;
      const done = new Promise<string>((resolve, reject) => {
        es.addEventListener("open", () => opens++);
        es.addEventListener("text-delta", (e) => {
          ids.push(e.lastEventId);
          text += (JSON.parse(e.data) as { delta: string }).delta;
        });
        // EventSource also fires its own "error" on a lost connection: a Sluice error event is
        // the one that carries data.
        for (const t of ["finish", "error", "abort"]) {
          es.addEventListener(t, (e) => {
            if ((e as MessageEvent).data !== undefined) resolve(t);
          });
        }
        setTimeout(() => reject(new Error("timed out")), 20_000);
      });
      const terminal = await done;
      es.close();
      expect(terminal).toBe("finish");
      expect(killed).toBe(2);
      expect(opens).toBe(3);
      expect(new Set(ids).size).toBe(ids.length);
      expect(text).toBe(textOf(await readAllJson(s.url, id)));
      expect(text.length).toBeGreaterThan(200);
    } finally {
      proxy.close();
    }
  });
});

describe("other read modes", () => {
  it("NDJSON follows live and ends after the terminal event", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 30 }));
    const res = await fetch(`${s.url}/v1/streams/${id}`, { headers: { accept: "application/x-ndjson" } });
    expect(res.headers.get("content-type")).toMatch(/^application\/x-ndjson/);
    const lines = (await res.text()).split("\n").filter((l) => l.trim() !== "");
    const parsed = lines.map((l) => JSON.parse(l) as { offset: string; event: { type: string } });
    expect(parsed[0]?.event.type).toBe("start");
    expect(parsed.at(-1)?.event.type).toBe("finish");
    expect(parsed.map((p) => p.offset)).toEqual((await readAllJson(s.url, id)).map((e) => e.offset));
  });

  it("JSON pages honor offset and limit", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 30 }));
    await waitForStatus(s.url, id, (st) => st === "completed");
    const all = await readAllJson(s.url, id);
    const res = await fetch(`${s.url}/v1/streams/${id}?offset=${all[4]?.offset}&limit=3`);
    expect(res.headers.get("sluice-stream-id")).toBe(id);
    const page = (await res.json()) as {
      events: { offset: string }[];
      next_offset: string;
      up_to_date: boolean;
      status: string;
    };
    expect(page.events.map((e) => e.offset)).toEqual(all.slice(5, 8).map((e) => e.offset));
    expect(page.next_offset).toBe(all[7]?.offset);
    expect(page.up_to_date).toBe(false);
    expect(page.status).toBe("completed");
  });
});

describe("generation lifecycle", () => {
  it("a client disconnect does not stop the generation", async () => {
    const res = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(demoBody({ length: 100, tokens_per_s: 300 })),
    });
    const id = res.headers.get("sluice-stream-id") as string;
    await readSse(res, (m) => (m.event === "text-delta" ? "stop" : undefined));
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("completed");
    expect(textOf(await readAllJson(s.url, id)).length).toBeGreaterThan(100);
  });

  it("on_disconnect: cancel stops the generation when its client leaves", async () => {
    const res = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(demoBody({ length: 400, tokens_per_s: 200 }, { on_disconnect: "cancel" })),
    });
    const id = res.headers.get("sluice-stream-id") as string;
    await readSse(res, (m) => (m.event === "text-delta" ? "stop" : undefined));
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("cancelled");
    const log = await readAllJson(s.url, id);
    expect(log.at(-1)?.event).toMatchObject({ type: "abort", by: "client-disconnect" });
  });

  it("cancel stops a running generation with an abort event; cancelling again answers the final status", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 1000, tokens_per_s: 100 }));
    const reader = readSse(await sse(`/v1/streams/${id}`));
    await new Promise((r) => setTimeout(r, 100));
    const c1 = await fetch(`${s.url}/v1/streams/${id}/cancel`, { method: "POST" });
    expect(c1.status).toBe(200);
    expect(((await c1.json()) as { status: string }).status).toBe("cancelled");
    const msgs = (await reader).filter((m) => m.event);
    expect(msgs.at(-1)?.event).toBe("abort");
    expect(msgs.filter((m) => ["finish", "error", "abort"].includes(m.event as string))).toHaveLength(1);
    const c2 = await fetch(`${s.url}/v1/streams/${id}/cancel`, { method: "POST" });
    expect(c2.status).toBe(200);
    expect(((await c2.json()) as { status: string }).status).toBe("cancelled");
    expect((await readAllJson(s.url, id)).length).toBe(msgs.length);
  });

  it("cancelling a completed stream answers 200 with its final status", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 5 }));
    await waitForStatus(s.url, id, (st) => st === "completed");
    const c = await fetch(`${s.url}/v1/streams/${id}/cancel`, { method: "POST" });
    expect(c.status).toBe(200);
    expect(((await c.json()) as { status: string }).status).toBe("completed");
  });

  it("timeout_ms ends the generation with deadline_exceeded, keeping the partial text", async () => {
    const { id } = await startStream(
      s.url,
      demoBody({ length: 1000, tokens_per_s: 200 }, { timeout_ms: 150 }),
    );
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("failed");
    const log = await readAllJson(s.url, id);
    expect(log.at(-1)?.event).toMatchObject({ type: "error", code: "deadline_exceeded" });
    expect(textOf(log).length).toBeGreaterThan(0);
  });

  it("max_tokens ends the generation with finish: length after exactly that many tokens", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 500 }, { max_tokens: 17 }));
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("completed");
    const log = await readAllJson(s.url, id);
    expect(log.filter((e) => e.event.type === "text-delta")).toHaveLength(17);
    expect(log.at(-1)?.event).toEqual({ type: "finish", reason: "length" });
  });

  it("a mid-stream model failure ends with one error event and the partial output stays readable", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 100, fail_after_tokens: 12 }));
    const msgs = (await readSse(await sse(`/v1/streams/${id}`))).filter((m) => m.event);
    expect(msgs.at(-1)?.event).toBe("error");
    expect(JSON.parse(msgs.at(-1)?.data as string)).toMatchObject({ code: "upstream_error" });
    expect(msgs.filter((m) => m.event === "text-delta")).toHaveLength(12);
    expect((await (await fetch(`${s.url}/v1/streams/${id}/info`)).json()).status).toBe("failed");
  });

  it("lists, shows info for and deletes streams", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 5 }));
    await waitForStatus(s.url, id, (st) => st === "completed");
    const list = (await (await fetch(`${s.url}/v1/streams?status=completed`)).json()) as {
      streams: { id: string }[];
    };
    expect(list.streams.map((x) => x.id)).toContain(id);
    const info = (await (await fetch(`${s.url}/v1/streams/${id}/info`)).json()) as Record<string, unknown>;
    expect(info).toMatchObject({ id, status: "completed", model: "demo", finish_reason: "stop" });
    expect(info.usage).toMatchObject({ output_tokens: 5 });
    const del = await fetch(`${s.url}/v1/streams/${id}`, { method: "DELETE" });
    expect(del.status).toBe(200);
    expect((await fetch(`${s.url}/v1/streams/${id}/info`)).status).toBe(404);
  });
});
