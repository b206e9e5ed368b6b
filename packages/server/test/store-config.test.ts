import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, parseConfig } from "../src/config.js";
import { isStoreSpec } from "../src/stores/open.js";
import { demoBody, startSluice, startStream } from "./helpers.js";
import { startRedis } from "./redis-helper.js";

describe("store configuration", () => {
  it("accepts memory, sqlite:PATH and redis:// URLs, and names the field otherwise", () => {
    expect(isStoreSpec("memory")).toBe(true);
    expect(isStoreSpec("sqlite:./data/sluice.db")).toBe(true);
    expect(isStoreSpec("redis://127.0.0.1:6379")).toBe(true);
    expect(isStoreSpec("rediss://cache.example:6380/2")).toBe(true);
    for (const bad of ["sqlite:", "redis://", "postgres://x", "", "Memory"])
      expect(isStoreSpec(bad)).toBe(false);
    expect(parseConfig({ store: "sqlite:/tmp/x.db" }).store).toBe("sqlite:/tmp/x.db");
    expect(() => parseConfig({ store: "mysql://db" })).toThrow(/store/);
    expect(() => parseConfig({ cluster: { lease_ttl_ms: 1000, lease_renew_ms: 2000 } })).toThrow(
      /lease_renew_ms/,
    );
    expect(parseConfig({}).cluster).toMatchObject({ lease_ttl_ms: 8000, lease_renew_ms: 2000 });
  });

  it("takes the store from SLUICE_STORE, and a flag wins over it", () => {
    expect(loadConfig({ env: { SLUICE_STORE: "sqlite:/tmp/a.db" } }).store).toBe("sqlite:/tmp/a.db");
    expect(
      loadConfig({ env: { SLUICE_STORE: "sqlite:/tmp/a.db" }, overrides: { store: "memory" } }).store,
    ).toBe("memory");
    expect(() => loadConfig({ env: { SLUICE_STORE: "nope" } })).toThrow(ConfigError);
  });

  it("/readyz names the store", async () => {
    const s = await startSluice();
    try {
      const res = await fetch(`${s.url}/readyz`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ status: "ready", store: "memory" });
    } finally {
      await s.close();
    }
  });
});

describe("limits.max_streams on every store", () => {
  async function fillsUp(store: string) {
    const s = await startSluice({ store, limits: { max_streams: 2 } });
    try {
      // Two generations that keep running: nothing ended can make room for a third.
      const long = demoBody({ length: 5000, tokens_per_s: 20 });
      const a = await startStream(s.url, long);
      await startStream(s.url, long);
      const res = await fetch(`${s.url}/v1/streams`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(long),
      });
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ error: { code: "capacity_exceeded" } });
      // Once one has ended, it makes room (it is removed for the new one).
      expect((await fetch(`${s.url}/v1/streams/${a.id}/cancel`, { method: "POST" })).status).toBe(200);
      const c = await startStream(s.url, demoBody());
      expect((await fetch(`${s.url}/v1/streams/${a.id}/info`)).status).toBe(404);
      await s.server.runner.settled(c.id);
    } finally {
      await s.close();
    }
  }

  it("sqlite", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-max-"));
    try {
      await fillsUp(`sqlite:${join(dir, "s.db")}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("redis", async () => {
    const redis = await startRedis();
    try {
      await fillsUp(redis.url);
    } finally {
      await redis.close();
    }
  });
});

describe("docs/operations.md", () => {
  it("shows exactly the nginx config the cluster test runs (docs/examples/nginx.conf)", async () => {
    const { readFileSync } = await import("node:fs");
    const conf = readFileSync(new URL("../../../docs/examples/nginx.conf", import.meta.url), "utf8");
    const doc = readFileSync(new URL("../../../docs/operations.md", import.meta.url), "utf8");
    const body = conf
      .split("\n")
      .filter((l, i, all) => !(l.startsWith("#") && all.slice(0, i).every((x) => x.startsWith("#"))))
      .join("\n")
      .trim();
    expect(body.length).toBeGreaterThan(200);
    expect(doc).toContain(body);
  });
});
