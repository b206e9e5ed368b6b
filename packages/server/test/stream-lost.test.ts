import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { parseConfig } from "../src/config.js";
import { PROTO_OPTIONS, PROTO_PATH } from "../src/grpc/server.js";
import { createSluice, type SluiceServer } from "../src/server.js";
import { type RedisProc, startRedis } from "./redis-helper.js";

// Redis restarted without persistence: every stream it held is gone. A reader attached to one
// must not just see its response end (after a text-delta, then 404 on reconnect): it gets one
// terminal error event, code `stream_lost`, in its own format, on every door.

let redis: RedisProc;
let s: SluiceServer;
let url: string;
beforeAll(async () => {
  redis = await startRedis({ persist: false });
  s = await createSluice(
    parseConfig({
      host: "127.0.0.1",
      port: 0,
      log_level: "silent",
      store: redis.url,
      grpc_port: 0,
      cluster: { lease_ttl_ms: 3000, lease_renew_ms: 500 },
    }),
    { env: {} },
  );
  url = await s.listen();
}, 30_000);
afterAll(async () => {
  await s?.close().catch(() => {});
  await redis?.close();
});

const BOUND_MS = 30_000;

async function start(): Promise<string> {
  const res = await fetch(`${url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "demo",
      messages: [{ role: "user", content: "hi" }],
      demo: { seed: 5, ttft_ms: 5, tokens_per_s: 40, jitter: 0, length: 100_000 },
    }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

/** Reads a streaming response's whole body as text, with a bound. */
async function readAll(res: Response, onText: (t: string) => void): Promise<string> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const dec = new TextDecoder();
  let text = "";
  const timer = setTimeout(() => void reader.cancel(), BOUND_MS);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
      onText(text);
    }
  } finally {
    clearTimeout(timer);
  }
  return text;
}

describe("a stream lost with its store (Redis restarted without persistence)", () => {
  it("every reader gets a terminal stream_lost error in its format", async () => {
    const id = await start();
    let lost!: () => void;
    const triggered = new Promise<void>((r) => {
      lost = r;
    });
    let seen = 0;
    const enough = () => {
      if (++seen === 6) lost();
    };
    const open = (q: string, accept: string) =>
      fetch(`${url}/v1/streams/${id}${q}`, { headers: { accept } }).then((res) => {
        expect(res.status).toBe(200);
        let once = false;
        return readAll(res, (t) => {
          if (!once && t.length > 300) {
            once = true;
            enough();
          }
        });
      });
    const reads = {
      sse: open("", "text/event-stream"),
      ndjson: open("", "application/x-ndjson"),
      openai: open("?format=openai", "text/event-stream"),
      aiSdk: open("?format=ai-sdk", "text/event-stream"),
    };
    const ws = new WebSocket(`${url.replace("http", "ws")}/v1/ws`);
    const wsMsgs: Record<string, unknown>[] = [];
    ws.on("message", (d) => {
      wsMsgs.push(JSON.parse(d.toString()) as Record<string, unknown>);
      if (wsMsgs.length === 20) enough();
    });
    const def = protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      sluice: { v1: { Sluice: grpc.ServiceClientConstructor } };
    };
    const client = new pkg.sluice.v1.Sluice(
      s.grpc?.address as string,
      grpc.credentials.createInsecure(),
    ) as unknown as grpc.Client & {
      Follow: (r: unknown) => grpc.ClientReadableStream<{ event_json: string }>;
    };
    const grpcEvents: { event_json: string }[] = [];
    const grpcDone = new Promise<grpc.StatusObject>((resolve) => {
      const call = client.Follow({ stream: id, offset: "-1" });
      call.on("data", (e: { event_json: string }) => {
        grpcEvents.push(e);
        if (grpcEvents.length === 20) enough();
      });
      call.on("status", (st: grpc.StatusObject) => resolve(st));
      call.on("error", () => {});
    });
    await new Promise<void>((r) => ws.once("open", () => r()));
    ws.send(JSON.stringify({ type: "subscribe", stream: id, offset: "-1" }));
    await triggered;

    await redis.stop();
    await redis.restart();
    // The generation's next append finds no stream; the readers' next read neither.
    const [sse, ndjson, openai, aiSdk] = await Promise.all([
      reads.sse,
      reads.ndjson,
      reads.openai,
      reads.aiSdk,
    ]);

    const sseEvents = sse.split("\n\n").filter((b) => b.includes("data:"));
    const lastSse = JSON.parse((sseEvents.at(-1) as string).split("data: ")[1] as string);
    expect(lastSse).toMatchObject({ type: "error", code: "stream_lost", retryable: false });
    expect(sse.match(/"code":"stream_lost"/g)?.length).toBe(1);

    const lines = ndjson
      .trim()
      .split("\n")
      .filter((l) => l.trim() !== "");
    expect(JSON.parse(lines.at(-1) as string).event).toMatchObject({ type: "error", code: "stream_lost" });

    expect(openai).toContain('"code":"stream_lost"');
    expect(openai).not.toContain("[DONE]");

    // The text run is closed, then the error part and the end of the UI message stream.
    expect(aiSdk).toMatch(
      /("type":"text-end","id":"text"\}\n\n)?data: \{"type":"error","errorText":"stream_lost: [^"]+"\}\n\nid: \d{16}\ndata: \[DONE\]\n\n$/,
    );

    const t0 = Date.now();
    while (!wsMsgs.some((m) => m.type === "end") && Date.now() - t0 < BOUND_MS) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const withEvent = wsMsgs.filter((m) => m.event !== undefined);
    expect((withEvent.at(-1)?.event as { code?: string } | undefined)?.code).toBe("stream_lost");
    expect(wsMsgs.at(-1)).toMatchObject({ type: "end", stream: id });
    ws.close();

    const st = await grpcDone;
    expect(st.code).toBe(grpc.status.OK);
    expect(JSON.parse(grpcEvents.at(-1)?.event_json as string)).toMatchObject({
      type: "error",
      code: "stream_lost",
    });
    client.close();
  }, 60_000);
});
