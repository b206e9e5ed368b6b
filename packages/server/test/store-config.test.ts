import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, parseConfig } from "../src/config.js";
import { isStoreSpec } from "../src/stores/open.js";
import { startSluice } from "./helpers.js";

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
