import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoBody, type Running, startSluice, startStream } from "./helpers.js";
import { type RedisProc, startRedis } from "./redis-helper.js";

// Bad query values and bodies get a 400 with a stable code, and the same answer on every store.

let dir: string;
let redis: RedisProc;
const servers: Record<string, Running> = {};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "sluice-validation-"));
  redis = await startRedis();
  servers.memory = await startSluice();
  servers.sqlite = await startSluice({ store: `sqlite:${join(dir, "v.db")}` });
  servers.redis = await startSluice({ store: redis.url });
  for (const s of Object.values(servers)) {
    await startStream(s.url, demoBody({ length: 3 }));
    await startStream(s.url, demoBody({ length: 3 }));
  }
}, 60_000);
afterAll(async () => {
  for (const s of Object.values(servers)) await s.close();
  await redis?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("GET /v1/streams?limit=", () => {
  for (const store of ["memory", "sqlite", "redis"]) {
    it(`${store}: a limit that is not an integer from 1 to 1000 is 400 invalid_request`, async () => {
      const s = servers[store] as Running;
      for (const bad of ["-1", "0", "1001", "1.5", "abc", "", "1e3", " 2", "0x10", "99999999999999999999"]) {
        const res = await fetch(`${s.url}/v1/streams?limit=${encodeURIComponent(bad)}`);
        expect(res.status, `limit=${JSON.stringify(bad)}`).toBe(400);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_request");
      }
    });

    it(`${store}: valid limits give that many streams at most`, async () => {
      const s = servers[store] as Running;
      const count = async (q: string) =>
        ((await (await fetch(`${s.url}/v1/streams${q}`)).json()) as { streams: unknown[] }).streams.length;
      expect(await count("?limit=1")).toBe(1);
      expect(await count("?limit=2")).toBe(2);
      expect(await count("?limit=1000")).toBe(2);
      expect(await count("")).toBe(2);
    });
  }
});

describe("POST /v1/streams/{id}/tokens", () => {
  it("a body that is not a JSON object (null, [], a string, a number) is 400 invalid_request", async () => {
    const s = servers.memory as Running;
    const { id } = await startStream(s.url, demoBody({ length: 3 }));
    for (const body of ["null", "[]", "[1]", '"read"', "5", "true"]) {
      const res = await fetch(`${s.url}/v1/streams/${id}/tokens`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      expect(res.status, body).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_request");
    }
    // No body at all, or an object, still mint a token.
    const none = await fetch(`${s.url}/v1/streams/${id}/tokens`, { method: "POST" });
    expect(none.status).toBe(201);
    const obj = await fetch(`${s.url}/v1/streams/${id}/tokens`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ scopes: ["read"] }),
    });
    expect(obj.status).toBe(201);
  });
});
