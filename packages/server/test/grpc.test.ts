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
    for (let i = 0; i < 100 && s.server.connections.size > 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(s.server.connections.size).toBe(0);
    expect(s.server.hub.readerCount()).toBe(0);
  });
});
