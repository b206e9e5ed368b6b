import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { SluiceError } from "@sluice/protocol";
import { Redis } from "ioredis";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { parseConfig } from "../src/config.js";
import { PROTO_OPTIONS, PROTO_PATH } from "../src/grpc/server.js";
import { createSluice, type SluiceServer } from "../src/server.js";
import { MemoryStore } from "../src/stores/memory.js";
import { RedisStore } from "../src/stores/redis.js";
import { SqliteStore } from "../src/stores/sqlite.js";
import type { AppendOptions, CreateStream, RecordInput, Store } from "../src/stores/store.js";
import { demoBody, readAllJson, waitForStatus } from "./helpers.js";
import { type RedisProc, startRedis } from "./redis-helper.js";

/**
 * "Never put an internal error's text in a response": a store that fails the way drivers do
 * (a raw exception, or an internal_error quoting one) must show clients only "internal error",
 * on every door, while the log keeps the original text.
 */

const SECRET = "SECRET-/var/lib/sluice/db.sqlite-RangeError: Maximum call stack size exceeded";

type Fault = "raw" | "wrapped" | undefined;
function failure(kind: Fault): Error {
  return kind === "raw" ? new Error(SECRET) : new SluiceError("internal_error", `sqlite: ${SECRET}`);
}

/** A memory store whose create / append (after the first record) fail on demand. */
class FaultyStore extends MemoryStore {
  createFault: Fault;
  appendFault: Fault;
  override async create(init: CreateStream) {
    if (this.createFault) throw failure(this.createFault);
    return super.create(init);
  }
  override async append(id: string, records: RecordInput[], opts: AppendOptions = {}) {
    const info = await super.info(id);
    // The start event goes in; what follows fails (the closing append still works).
    if (this.appendFault && info && info.length > 0 && opts.close === undefined)
      throw failure(this.appendFault);
    return super.append(id, records, opts);
  }
}

describe("internal error text never reaches a client", () => {
  const store = new FaultyStore();
  const lines: string[] = [];
  let server: SluiceServer;
  let url: string;
  beforeAll(async () => {
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const config = parseConfig({ host: "127.0.0.1", port: 0, log_level: "error", grpc_port: 0 });
    server = await createSluice(config, {
      env: {},
      store: store as Store,
      logger: pino({ level: "error" }, sink),
    });
    url = await server.listen();
  });
  afterAll(async () => {
    await server?.close();
  });

  const kinds: Fault[] = ["raw", "wrapped"];

  it.each(kinds)(
    "POST /v1/streams and the façades answer 500 internal_error without the text (%s)",
    async (kind) => {
      store.createFault = kind;
      lines.length = 0;
      try {
        for (const path of ["/v1/streams", "/v1/chat/completions", "/v1/ai-sdk/chat"]) {
          const body =
            path === "/v1/ai-sdk/chat"
              ? {
                  messages: [{ id: "m", role: "user", parts: [{ type: "text", text: "hi" }] }],
                  model: "demo",
                }
              : demoBody({ length: 5 });
          const res = await fetch(`${url}${path}`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(body),
          });
          const text = await res.text();
          expect(res.status, path).toBe(500);
          expect(text, path).not.toContain("SECRET");
          expect(text, path).not.toMatch(/RangeError|sqlite/);
          expect(JSON.parse(text).error).toMatchObject({ code: "internal_error", message: "internal error" });
        }
        // The operator still sees what happened.
        expect(lines.join("").includes("SECRET")).toBe(true);
      } finally {
        store.createFault = undefined;
      }
    },
  );

  it.each(kinds)("a WebSocket start and a gRPC Start get the generic error (%s)", async (kind) => {
    store.createFault = kind;
    try {
      const ws = new WebSocket(`${url.replace(/^http/, "ws")}/v1/ws`);
      await new Promise<void>((resolve, reject) => {
        ws.once("open", () => resolve());
        ws.once("error", reject);
      });
      const reply = new Promise<string>((resolve) => ws.once("message", (d) => resolve(d.toString())));
      ws.send(JSON.stringify({ type: "start", id: 1, ...demoBody({ length: 5 }) }));
      const text = await reply;
      ws.close();
      expect(text).not.toContain("SECRET");
      expect(JSON.parse(text)).toMatchObject({
        type: "error",
        code: "internal_error",
        message: "internal error",
      });

      const def = protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS);
      const pkg = grpc.loadPackageDefinition(def) as unknown as {
        sluice: { v1: { Sluice: grpc.ServiceClientConstructor } };
      };
      const client = new pkg.sluice.v1.Sluice(
        server.grpc?.address as string,
        grpc.credentials.createInsecure(),
      ) as unknown as grpc.Client & {
        Start: (r: unknown, cb: (e: grpc.ServiceError | null) => void) => void;
      };
      const err = await new Promise<grpc.ServiceError | null>((resolve) =>
        client.Start({ request_json: JSON.stringify(demoBody({ length: 5 })) }, (e) => resolve(e)),
      );
      client.close();
      expect(err?.code).toBe(grpc.status.INTERNAL);
      expect(err?.details).toBe("internal_error: internal error");
      expect(JSON.stringify(err?.metadata.getMap())).not.toContain("SECRET");
    } finally {
      store.createFault = undefined;
    }
  });

  it.each(kinds)(
    "a store failing mid-generation ends the stream with a generic error event (%s)",
    async (kind) => {
      store.appendFault = kind;
      lines.length = 0;
      try {
        const res = await fetch(`${url}/v1/streams`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(demoBody({ length: 20 })),
        });
        expect(res.status).toBe(201);
        const { id } = (await res.json()) as { id: string };
        const info = await waitForStatus(url, id, (s) => s !== "running");
        expect(JSON.stringify(info)).not.toContain("SECRET");
        expect(info.error).toEqual({ code: "internal_error", message: "internal error" });
        const events = await readAllJson(url, id);
        expect(JSON.stringify(events)).not.toContain("SECRET");
        expect(events.at(-1)?.event).toMatchObject({
          type: "error",
          code: "internal_error",
          message: "internal error",
        });
        expect(lines.join("").includes("SECRET")).toBe(true);
      } finally {
        store.appendFault = undefined;
      }
    },
  );
});

describe("the stores' own failures carry no driver text", () => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-ierr-"));
  let redis: RedisProc;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("SQLite: a write the driver throws on is internal_error 'the sqlite store failed', the exception as its cause", async () => {
    const store = new SqliteStore({ path: join(dir, "s.db") });
    // Deep enough to overflow JSON.stringify inside the store's write (the edge refuses such bodies).
    let deep: unknown = 1;
    for (let i = 0; i < 200_000; i++) deep = [deep];
    const err = await store
      .create({ id: "st_deep", kind: "generation", content_type: "x", metadata: { deep } })
      .catch((e: unknown) => e);
    await store.close();
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).code).toBe("internal_error");
    expect((err as SluiceError).message).toBe("the sqlite store failed");
    expect(String((err as Error).cause)).toMatch(/RangeError/);
  });

  it("Redis: an error reply (WRONGTYPE) is internal_error 'the redis store failed', the reply as its cause", async () => {
    const store = new RedisStore({ url: redis.url, prefix: "ierr:", sweepIntervalMs: 0 });
    await store.connected();
    const raw = new Redis(redis.url);
    try {
      await store.create({ id: "st_wrong", kind: "generation", content_type: "x" });
      // The stream's log key holds a string instead of a Redis stream: XADD/XRANGE answer WRONGTYPE.
      await raw.set("ierr:l:st_wrong", "not a stream");
      for (const op of [
        () => store.append("st_wrong", [{ data: "{}" }]),
        () => store.read("st_wrong", 0, 10),
      ]) {
        const err = await op().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(SluiceError);
        expect((err as SluiceError).code).toBe("internal_error");
        expect((err as SluiceError).message).toBe("the redis store failed");
        expect(String((err as Error).cause)).toMatch(/WRONGTYPE/);
      }
    } finally {
      raw.disconnect();
      await store.close();
    }
  });
});
