import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PROTO_OPTIONS, PROTO_PATH } from "../src/grpc/server.js";
import { demoBody, type Running, startSluice, startStream } from "./helpers.js";

// A bad value a client sent may be named in the error, but never echoed at length: a 15 KB
// Last-Event-ID must not come back as a 15 KB error body (nor in gRPC status details).

const LONG = "x".repeat(15_000);
/** Room for the message itself plus a short quotation of the input. */
const MAX_BODY = 400;

let s: Running;
let id: string;
beforeAll(async () => {
  s = await startSluice({ grpc_port: 0 });
  id = (await startStream(s.url, demoBody({ length: 5 }))).id;
});
afterAll(async () => {
  await s?.close();
});

async function expectShortError(res: Response, code: string) {
  const text = await res.text();
  expect(res.status).toBe(400);
  expect(JSON.parse(text).error.code).toBe(code);
  expect(text.length).toBeLessThan(MAX_BODY);
  expect(text).not.toContain("x".repeat(100));
}

describe("long input is never echoed into an error", () => {
  it("Last-Event-ID of 15 KB on SSE, NDJSON and JSON reads", async () => {
    for (const accept of ["text/event-stream", "application/x-ndjson", "application/json"]) {
      const res = await fetch(`${s.url}/v1/streams/${id}`, { headers: { accept, "last-event-id": LONG } });
      await expectShortError(res, "invalid_offset");
    }
  });

  it("?offset= of 15 KB on /v1/streams and on /ds", async () => {
    await expectShortError(await fetch(`${s.url}/v1/streams/${id}?offset=${LONG}`), "invalid_offset");
    await expectShortError(await fetch(`${s.url}/ds/v1/stream/${id}?offset=${LONG}`), "invalid_offset");
  });

  it("a 404 names at most the start of a long path", async () => {
    const res = await fetch(`${s.url}/nothing/${LONG}`);
    const text = await res.text();
    expect(res.status).toBe(404);
    expect(text.length).toBeLessThan(MAX_BODY);
    expect(text).toContain("/nothing/xxx");
  });

  it("the short quotation still names the start of the input", async () => {
    const res = await fetch(`${s.url}/v1/streams/${id}`, {
      headers: { accept: "text/event-stream", "last-event-id": `abc${LONG}` },
    });
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).toContain('"abcxxx');
    expect(body.error.message).toContain("15003 characters");
  });

  it("gRPC Follow with a 15 KB offset", async () => {
    const def = protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      sluice: { v1: { Sluice: grpc.ServiceClientConstructor } };
    };
    const client = new pkg.sluice.v1.Sluice(
      s.server.grpc?.address as string,
      grpc.credentials.createInsecure(),
    ) as unknown as grpc.Client & {
      Follow: (r: unknown) => grpc.ClientReadableStream<unknown>;
    };
    try {
      const err = await new Promise<grpc.ServiceError>((resolve) => {
        const call = client.Follow({ stream: id, offset: LONG });
        call.on("data", () => {});
        call.on("error", (e: grpc.ServiceError) => resolve(e));
      });
      expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err.details.length).toBeLessThan(MAX_BODY);
    } finally {
      client.close();
    }
  });
});
