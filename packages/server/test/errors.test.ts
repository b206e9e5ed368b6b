import { readFileSync } from "node:fs";
import { ERROR_CODES } from "@sluice/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  demoBody,
  type Running,
  readAllJson,
  startSluice,
  startStream,
  textOf,
  waitForStatus,
} from "./helpers.js";

let s: Running;
beforeAll(async () => {
  s = await startSluice({ limits: { body_bytes: 4096 } as never });
});
afterAll(async () => {
  await s.close();
});

async function call(method: string, path: string, body?: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${s.url}${path}`, {
    method,
    headers: body !== undefined ? { "content-type": "application/json", ...headers } : headers,
    ...(body !== undefined ? { body } : {}),
  });
  const text = await res.text();
  let json: { error?: { code: string; message: string } } = {};
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json, text, type: res.headers.get("content-type") };
}

describe("bad input gets its documented status and code, and the server keeps serving", () => {
  const cases: [string, () => ReturnType<typeof call>, number, string][] = [
    ["malformed JSON", () => call("POST", "/v1/streams", '{"model": "demo", '), 400, "invalid_json"],
    ["empty body", () => call("POST", "/v1/streams", ""), 400, "invalid_json"],
    ["a JSON array", () => call("POST", "/v1/streams", "[1,2]"), 400, "invalid_request"],
    [
      "messages of the wrong type",
      () => call("POST", "/v1/streams", '{"model":"demo","messages":"hi"}'),
      400,
      "invalid_request",
    ],
    [
      "no messages",
      () => call("POST", "/v1/streams", '{"model":"demo","messages":[]}'),
      400,
      "invalid_request",
    ],
    [
      "negative max_tokens",
      () => call("POST", "/v1/streams", JSON.stringify(demoBody({}, { max_tokens: -1 }))),
      400,
      "invalid_request",
    ],
    [
      "an unknown field",
      () => call("POST", "/v1/streams", JSON.stringify(demoBody({}, { bogus: 1 }))),
      400,
      "invalid_request",
    ],
    [
      "a bad demo option",
      () => call("POST", "/v1/streams", JSON.stringify(demoBody({ kind: "poetry" }))),
      400,
      "invalid_request",
    ],
    [
      "an unknown model",
      () => call("POST", "/v1/streams", '{"model":"gpt-17","messages":[{"role":"user","content":"x"}]}'),
      400,
      "unknown_model",
    ],
    [
      "an oversize body",
      () =>
        call("POST", "/v1/streams", JSON.stringify(demoBody({}, { metadata: { pad: "x".repeat(8000) } }))),
      413,
      "body_too_large",
    ],
    [
      "a non-JSON content type",
      () => call("POST", "/v1/streams", "hello", { "content-type": "text/plain" }),
      415,
      "unsupported_media_type",
    ],
    ["an unknown stream", () => call("GET", "/v1/streams/st_doesnotexist"), 404, "stream_not_found"],
    [
      "an unknown stream's info",
      () => call("GET", "/v1/streams/st_doesnotexist/info"),
      404,
      "stream_not_found",
    ],
    [
      "cancelling an unknown stream",
      () => call("POST", "/v1/streams/st_doesnotexist/cancel"),
      404,
      "stream_not_found",
    ],
    [
      "deleting an unknown stream",
      () => call("DELETE", "/v1/streams/st_doesnotexist"),
      404,
      "stream_not_found",
    ],
    ["an id with odd characters", () => call("GET", "/v1/streams/..%2F..%2Fetc"), 404, "stream_not_found"],
    ["an unknown route", () => call("GET", "/v2/whatever"), 404, "not_found"],
    ["a bad list status", () => call("GET", "/v1/streams?status=weird"), 400, "invalid_request"],
  ];
  for (const [what, run, status, code] of cases) {
    it(`${what} → ${status} ${code}`, async () => {
      const r = await run();
      expect(r.status).toBe(status);
      expect(r.type).toMatch(/application\/json/);
      expect(r.json.error?.code).toBe(code);
      expect(r.json.error?.message.length).toBeGreaterThan(3);
      expect(r.text).not.toMatch(/at .*\.(ts|js):\d+/); // never a stack trace
    });
  }

  it("bad offsets and formats on a real stream", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 5 }));
    await waitForStatus(s.url, id, (st) => st === "completed");
    for (const accept of ["text/event-stream", "application/x-ndjson", "application/json"]) {
      const bad = await call("GET", `/v1/streams/${id}?offset=abc`, undefined, { accept });
      expect([bad.status, bad.json.error?.code]).toEqual([400, "invalid_offset"]);
      const past = await call("GET", `/v1/streams/${id}?offset=0000000000009999`, undefined, { accept });
      expect([past.status, past.json.error?.code]).toEqual([400, "offset_out_of_range"]);
    }
    const badHeader = await call("GET", `/v1/streams/${id}`, undefined, {
      accept: "text/event-stream",
      "last-event-id": "12",
    });
    expect([badHeader.status, badHeader.json.error?.code]).toEqual([400, "invalid_offset"]);
    const fmt = await call("GET", `/v1/streams/${id}?format=klingon`, undefined, {
      accept: "text/event-stream",
    });
    expect([fmt.status, fmt.json.error?.code]).toEqual([400, "unsupported_format"]);
    const lim = await call("GET", `/v1/streams/${id}?limit=0`);
    expect([lim.status, lim.json.error?.code]).toEqual([400, "invalid_request"]);
  });

  it("after all of that, a generation still streams to the end", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 30 }));
    await waitForStatus(s.url, id, (st) => st === "completed");
    expect(textOf(await readAllJson(s.url, id)).length).toBeGreaterThan(30);
  });
});

describe("the error catalogue", () => {
  it("documents every code in docs/errors.md", () => {
    const doc = readFileSync(new URL("../../../docs/errors.md", import.meta.url), "utf8");
    for (const [code, def] of Object.entries(ERROR_CODES)) {
      expect(doc, `docs/errors.md must document ${code}`).toContain(`\`${code}\``);
      expect(doc).toMatch(new RegExp(`\\\`${code}\\\`\\s*\\|\\s*${def.status}`));
    }
  });
});
