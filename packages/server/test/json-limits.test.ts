import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { PROTO_OPTIONS, PROTO_PATH } from "../src/grpc/server.js";
import { jsonDepth } from "../src/http/json-body.js";
import { demoBody, type Running, startSluice, waitForStatus } from "./helpers.js";
import { type RedisProc, startRedis } from "./redis-helper.js";

/** Issue 11 item 5: JSON nested deep enough to overflow a recursive walk is refused at the edge. */

/** `[[[…1…]]]` nested `n` deep, built as text (no recursion here either). */
function nestedArray(n: number): string {
  return `${"[".repeat(n)}1${"]".repeat(n)}`;
}
/** `{"a":{"a":…{}…}}` nested `n` deep. */
function nestedObject(n: number): string {
  return `${'{"a":'.repeat(n - 1)}{}${"}".repeat(n - 1)}`;
}

const post = (url: string, path: string, body: string, headers: Record<string, string> = {}) =>
  fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
  });

function generationWithMetadata(metadataJson: string): string {
  const b = demoBody({ length: 5 });
  const text = JSON.stringify({ ...b, metadata: { x: "__M__" } });
  return text.replace('"__M__"', metadataJson);
}

describe("jsonDepth", () => {
  it("counts arrays and objects, ignores brackets in strings and escapes, and stops past the bound", () => {
    expect(jsonDepth("1", 64)).toBe(0);
    expect(jsonDepth('{"a":[1,{"b":[]}]}', 64)).toBe(4);
    expect(jsonDepth('{"a":"[[[[[[{{{{\\"[[["}', 64)).toBe(1);
    expect(jsonDepth(nestedArray(65), 64)).toBe(65);
    expect(jsonDepth(nestedArray(5_000_000), 64)).toBe(65);
    expect(jsonDepth(nestedObject(64), 64)).toBe(64);
  });
});

let redis: RedisProc;
const dir = mkdtempSync(join(tmpdir(), "sluice-json-"));
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.close();
  rmSync(dir, { recursive: true, force: true });
});

const stores: [string, () => string][] = [
  ["memory", () => "memory"],
  ["sqlite", () => `sqlite:${join(dir, `j-${Math.random().toString(36).slice(2)}.db`)}`],
  ["redis", () => redis.url],
];

describe.each(stores)("deep JSON on the %s store", (_name, spec) => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice({ store: spec(), grpc_port: 0 });
  });
  afterAll(async () => {
    await s?.close();
  });

  it("POST /v1/streams with metadata 5,000 deep is a 400 invalid_request, and nothing is stored", async () => {
    const before = (await (await fetch(`${s.url}/v1/streams?limit=1000`)).json()) as { streams: unknown[] };
    for (const deep of [nestedArray(5000), nestedObject(5000)]) {
      const res = await post(s.url, "/v1/streams", generationWithMetadata(deep));
      const text = await res.text();
      expect(res.status).toBe(400);
      expect(JSON.parse(text).error.code).toBe("invalid_request");
      expect(text).toMatch(/64 levels/);
      expect(text).not.toMatch(/RangeError|call stack|sqlite|redis/i);
    }
    const list = await fetch(`${s.url}/v1/streams?limit=1000`);
    expect(list.status).toBe(200);
    expect(((await list.json()) as { streams: unknown[] }).streams.length).toBe(before.streams.length);
  });

  it("metadata within the bound is kept and readable through /info and the list", async () => {
    const res = await post(s.url, "/v1/streams", generationWithMetadata(nestedObject(60)));
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    await waitForStatus(s.url, id, (st) => st !== "running");
    const info = await fetch(`${s.url}/v1/streams/${id}/info`);
    expect(info.status).toBe(200);
    const meta = ((await info.json()) as { metadata: { x: unknown } }).metadata.x;
    expect(jsonDepth(JSON.stringify(meta), 1000)).toBe(60);
    const list = await fetch(`${s.url}/v1/streams?limit=1000`);
    expect(list.status).toBe(200);
  });

  it("metadata larger than 16 KiB as JSON is a 400 naming the field; 10 KB is kept", async () => {
    const big = await post(
      s.url,
      "/v1/streams",
      JSON.stringify(demoBody({ length: 3 }, { metadata: { note: "x".repeat(20_000) } })),
    );
    expect(big.status).toBe(400);
    const err = ((await big.json()) as { error: { code: string; message: string } }).error;
    expect(err.code).toBe("invalid_request");
    expect(err.message).toMatch(/^metadata: at most 16384 characters/);
    const ok = await post(
      s.url,
      "/v1/streams",
      JSON.stringify(demoBody({ length: 3 }, { metadata: { note: "x".repeat(10_000) } })),
    );
    expect(ok.status).toBe(201);
  });

  it("the OpenAI façade and the AI SDK chat refuse deep bodies with 400 (a 50,000-deep tool input)", async () => {
    const chat = await post(
      s.url,
      "/v1/chat/completions",
      `{"model":"demo","messages":[{"role":"user","content":"hi"}],"metadata":{"x":${nestedArray(5000)}}}`,
    );
    expect(chat.status).toBe(400);
    expect(((await chat.json()) as { error: { code: string } }).error.code).toBe("invalid_request");

    const ui = `{"id":"c1","messages":[{"id":"m1","role":"assistant","parts":[{"type":"tool-search","toolCallId":"t1","state":"input-available","input":${nestedObject(50_000)}}]},{"id":"m2","role":"user","parts":[{"type":"text","text":"hi"}]}]}`;
    const res = await post(s.url, "/v1/ai-sdk/chat", ui);
    const text = await res.text();
    expect(res.status).toBe(400);
    expect(JSON.parse(text).error.code).toBe("invalid_request");
    expect(text).not.toMatch(/RangeError|call stack/);
  });

  it("a WebSocket start message nested too deep gets an invalid_request error and the socket stays usable", async () => {
    const ws = new WebSocket(`${s.url.replace(/^http/, "ws")}/v1/ws`);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    const replies: Record<string, unknown>[] = [];
    ws.on("message", (d) => replies.push(JSON.parse(d.toString()) as Record<string, unknown>));
    ws.send(`{"type":"start","id":1,${generationWithMetadata(nestedArray(5000)).slice(1)}`);
    ws.send(JSON.stringify({ type: "start", id: 2, subscribe: false, ...demoBody({ length: 3 }) }));
    const until = Date.now() + 10_000;
    while (!replies.some((m) => m.id === 2) && Date.now() < until)
      await new Promise((r) => setTimeout(r, 10));
    ws.close();
    const first = replies.find((m) => m.type === "error");
    expect(first).toMatchObject({ type: "error", code: "invalid_request" });
    expect(String(first?.message)).toMatch(/64 levels/);
    expect(replies.find((m) => m.id === 2)?.type).toBe("started");
  });

  it("gRPC Start with a deep request_json is INVALID_ARGUMENT", async () => {
    const def = protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      sluice: { v1: { Sluice: grpc.ServiceClientConstructor } };
    };
    const client = new pkg.sluice.v1.Sluice(
      s.server.grpc?.address as string,
      grpc.credentials.createInsecure(),
    ) as unknown as grpc.Client & { Start: (r: unknown, cb: (e: grpc.ServiceError | null) => void) => void };
    const err = await new Promise<grpc.ServiceError | null>((resolve) =>
      client.Start({ request_json: generationWithMetadata(nestedArray(5000)) }, (e) => resolve(e)),
    );
    client.close();
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.metadata.get("sluice-error-code")).toEqual(["invalid_request"]);
  });

  it("a Durable Streams JSON append nested too deep is a 400 and the stream is unchanged", async () => {
    const url = `${s.url}/ds/v1/stream/deep-${Math.random().toString(36).slice(2)}`;
    const put = await fetch(url, { method: "PUT", headers: { "content-type": "application/json" } });
    expect(put.status).toBe(201);
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: nestedArray(5000),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_request");
    const ok = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"n":1}',
    });
    expect(ok.status).toBe(204);
    const read = await fetch(`${url}?offset=-1`);
    expect(await read.json()).toEqual([{ n: 1 }]);
  });
});
