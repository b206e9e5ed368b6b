import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PROTO_OPTIONS, PROTO_PATH } from "../src/grpc/server.js";
import { demoBody, type Running, readAllJson, startSluice, textOf, waitForStatus } from "./helpers.js";

interface StreamEventMsg {
  stream: string;
  offset: string;
  type: string;
  event_json: string;
}
interface InfoMsg {
  id: string;
  status: string;
  next_offset: string;
  length: number;
}

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function unary<T>(client: Client, method: string, req: unknown, deadlineMs?: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const opts = deadlineMs ? { deadline: Date.now() + deadlineMs } : {};
    (
      client[method] as (
        r: unknown,
        m: grpc.Metadata,
        o: object,
        cb: (e: grpc.ServiceError | null, v: T) => void,
      ) => void
    )(req, new grpc.Metadata(), opts, (err, v) => (err ? reject(err) : resolve(v)));
  });
}

interface FollowResult {
  events: StreamEventMsg[];
  status: grpc.StatusObject | undefined;
  error: grpc.ServiceError | undefined;
}

function follow(
  client: Client,
  req: { stream: string; offset?: string },
  opts: {
    deadlineMs?: number;
    onEvent?: (e: StreamEventMsg, call: grpc.ClientReadableStream<StreamEventMsg>) => void;
  } = {},
): Promise<FollowResult> {
  const call = (client.Follow as (r: unknown, o: object) => grpc.ClientReadableStream<StreamEventMsg>)(
    req,
    opts.deadlineMs ? { deadline: Date.now() + opts.deadlineMs } : {},
  );
  const out: FollowResult = { events: [], status: undefined, error: undefined };
  return new Promise((resolve) => {
    call.on("data", (e: StreamEventMsg) => {
      out.events.push(e);
      opts.onEvent?.(e, call);
    });
    call.on("status", (st: grpc.StatusObject) => {
      out.status = st;
    });
    call.on("error", (err: grpc.ServiceError) => {
      out.error = err;
    });
    call.on("close", () => setImmediate(() => resolve(out)));
  });
}

describe("gRPC (Start, Follow, Cancel)", () => {
  let s: Running;
  let client: Client;
  beforeAll(async () => {
    s = await startSluice({ grpc_port: 0 });
    const def = protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      sluice: { v1: { Sluice: grpc.ServiceClientConstructor } };
    };
    client = new pkg.sluice.v1.Sluice(
      s.server.grpc?.address as string,
      grpc.credentials.createInsecure(),
    ) as unknown as Client;
  });
  afterAll(async () => {
    client.close();
    await s.close();
  });

  it("is off unless a port is given", async () => {
    const plain = await startSluice();
    expect(plain.server.grpc).toBeUndefined();
    await plain.close();
  });

  it("starts a generation and follows it from the beginning to the end", async () => {
    const info = await unary<InfoMsg>(client, "Start", {
      request_json: JSON.stringify(demoBody({ length: 40 })),
    });
    expect(info.id).toMatch(/^st_/);
    expect(info.status).toBe("running");
    const r = await follow(client, { stream: info.id, offset: "-1" });
    expect(r.error).toBeUndefined();
    expect(r.status?.code).toBe(grpc.status.OK);
    expect(r.status?.metadata.get("sluice-status")).toEqual(["completed"]);
    const all = await readAllJson(s.url, info.id);
    expect(r.events.map((e) => e.offset)).toEqual(all.map((e) => e.offset));
    expect(r.events.map((e) => JSON.parse(e.event_json))).toEqual(all.map((e) => e.event));
    expect(r.events.map((e) => e.type)).toEqual(all.map((e) => e.event.type));
    expect(r.events.every((e) => e.stream === info.id)).toBe(true);
  });

  it("starts from typed fields (model, messages, max_tokens)", async () => {
    const info = await unary<InfoMsg>(client, "Start", {
      model: "demo",
      messages: [{ role: "user", content: "hello there" }],
      max_tokens: 5,
    });
    const r = await follow(client, { stream: info.id });
    const last = JSON.parse(r.events.at(-1)?.event_json ?? "{}");
    expect(last).toEqual({ type: "finish", reason: "length" });
  });

  it("resumes after an offset with nothing lost or duplicated", async () => {
    const info = await unary<InfoMsg>(client, "Start", {
      request_json: JSON.stringify(demoBody({ length: 60, tokens_per_s: 300 })),
    });
    let count = 0;
    const first = await follow(
      client,
      { stream: info.id, offset: "-1" },
      {
        onEvent: (_e, call) => {
          if (++count === 10) call.cancel();
        },
      },
    );
    expect(first.error?.code).toBe(grpc.status.CANCELLED);
    const seen = first.events;
    const rest = await follow(client, { stream: info.id, offset: seen.at(-1)?.offset as string });
    const all = await readAllJson(s.url, info.id);
    const joined = [...seen, ...rest.events];
    expect(joined.map((e) => e.offset)).toEqual(all.map((e) => e.offset));
    expect(textOf(joined.map((e) => ({ event: JSON.parse(e.event_json) })))).toBe(textOf(all));
  });

  it("a client cancel of Follow only detaches: the generation completes", async () => {
    const info = await unary<InfoMsg>(client, "Start", {
      request_json: JSON.stringify(demoBody({ length: 80, tokens_per_s: 200 })),
    });
    let n = 0;
    const r = await follow(
      client,
      { stream: info.id },
      {
        onEvent: (_e, call) => {
          if (++n === 3) call.cancel();
        },
      },
    );
    expect(r.error?.code).toBe(grpc.status.CANCELLED);
    for (let i = 0; i < 100 && s.server.hub.readerCount(info.id) > 0; i++)
      await new Promise((res) => setTimeout(res, 10));
    expect(s.server.hub.readerCount(info.id)).toBe(0);
    const done = await waitForStatus(s.url, info.id, (st) => st !== "running");
    expect(done.status).toBe("completed");
  });

  it("a Follow deadline ends the call with DEADLINE_EXCEEDED and leaves the generation running", async () => {
    const info = await unary<InfoMsg>(client, "Start", {
      request_json: JSON.stringify(demoBody({ length: 2000, tokens_per_s: 50 })),
    });
    const r = await follow(client, { stream: info.id }, { deadlineMs: 300 });
    expect(r.error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(r.events.length).toBeGreaterThan(0);
    expect(s.server.runner.isRunning(info.id)).toBe(true);
    await unary(client, "Cancel", { stream: info.id });
  });

  it("Cancel stops the generation; a follower sees abort and the call ends OK", async () => {
    const info = await unary<InfoMsg>(client, "Start", {
      request_json: JSON.stringify(demoBody({ length: 5000, tokens_per_s: 50 })),
    });
    let cancelled: Promise<InfoMsg> | undefined;
    const r = await follow(
      client,
      { stream: info.id },
      {
        onEvent: (e) => {
          if (e.type === "text-delta" && !cancelled)
            cancelled = unary<InfoMsg>(client, "Cancel", { stream: info.id });
        },
      },
    );
    expect((await cancelled)?.status).toBe("cancelled");
    expect(r.status?.code).toBe(grpc.status.OK);
    expect(r.events.at(-1)?.type).toBe("abort");
  });

  it("maps errors to gRPC status codes with the catalogue code in metadata", async () => {
    const nf = await follow(client, { stream: "st_nope" });
    expect(nf.error?.code).toBe(grpc.status.NOT_FOUND);
    expect(nf.error?.metadata.get("sluice-error-code")).toEqual(["stream_not_found"]);
    const info = await unary<InfoMsg>(client, "Start", {
      request_json: JSON.stringify(demoBody({ length: 3 })),
    });
    const bad = await follow(client, { stream: info.id, offset: "banana" });
    expect(bad.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(bad.error?.metadata.get("sluice-error-code")).toEqual(["invalid_offset"]);
    const past = await follow(client, { stream: info.id, offset: "0000000000999999" });
    expect(past.error?.code).toBe(grpc.status.OUT_OF_RANGE);
    await expect(
      unary(client, "Start", { model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
    ).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining("unknown_model"),
    });
    await expect(unary(client, "Start", { request_json: "{oops" })).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining("invalid_json"),
    });
    await expect(unary(client, "Cancel", { stream: "st_nope" })).rejects.toMatchObject({
      code: grpc.status.NOT_FOUND,
    });
  });

  it("frees every connection slot when follows end, fail or are cancelled", async () => {
    // Its own follows (it must not lean on what earlier tests left behind).
    const idle = async () => {
      for (let i = 0; i < 200 && (s.server.connections.size > 0 || s.server.hub.readerCount() > 0); i++)
        await new Promise((r) => setTimeout(r, 10));
    };
    await idle();
    expect(s.server.connections.size).toBe(0);
    const long = await unary<InfoMsg>(client, "Start", {
      request_json: JSON.stringify(demoBody({ length: 5000, tokens_per_s: 50 })),
    });
    // Two live follows on a long generation: one cancelled by its client, one ended by its deadline.
    let cancelCall: grpc.ClientReadableStream<StreamEventMsg> | undefined;
    let deadlineGotData = false;
    const cancelled = follow(client, { stream: long.id }, { onEvent: (_e, call) => (cancelCall = call) });
    const expired = follow(
      client,
      { stream: long.id },
      { deadlineMs: 3000, onEvent: () => (deadlineGotData = true) },
    );
    for (let i = 0; i < 500 && !(cancelCall && deadlineGotData); i++)
      await new Promise((r) => setTimeout(r, 10));
    // The slots really are held while they read, so the check below is not vacuous.
    expect(s.server.connections.size).toBe(2);
    expect(s.server.hub.readerCount(long.id)).toBe(2);
    cancelCall?.cancel();
    expect((await cancelled).error?.code).toBe(grpc.status.CANCELLED);
    expect((await expired).error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    // One that ends with its stream, and two that fail (after and before taking a slot).
    const short = await unary<InfoMsg>(client, "Start", {
      request_json: JSON.stringify(demoBody({ length: 20 })),
    });
    const ended = await follow(client, { stream: short.id });
    expect(ended.status?.code).toBe(grpc.status.OK);
    expect(ended.events.at(-1)?.type).toBe("finish");
    const past = await follow(client, { stream: short.id, offset: "0000000000999999" });
    expect(past.error?.code).toBe(grpc.status.OUT_OF_RANGE);
    const missing = await follow(client, { stream: "st_nope" });
    expect(missing.error?.code).toBe(grpc.status.NOT_FOUND);
    await unary(client, "Cancel", { stream: long.id });
    await idle();
    expect(s.server.connections.size).toBe(0);
    expect(s.server.hub.readerCount()).toBe(0);
  });
});
