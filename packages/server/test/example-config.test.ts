import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ConfigError, ConfigSchema, loadConfig } from "../src/config.js";
import { createSluice } from "../src/server.js";

const EXAMPLE = fileURLToPath(new URL("../../../sluice.example.json", import.meta.url));
const DOC = fileURLToPath(new URL("../../../docs/operations.md", import.meta.url));
/** Sections left out of the example on purpose (docs/operations.md says why). */
const LEFT_OUT = ["grpc_port", "tls"];

describe("sluice.example.json", () => {
  it("loads with the real config loader and has every section of the config", () => {
    const config = loadConfig({ file: EXAMPLE, env: {} });
    expect(Object.keys(config.routes).sort()).toEqual(["claude-haiku", "gpt-4o-mini", "llama3.2"]);
    expect(config.routes["gpt-4o-mini"]?.fallbacks).toEqual(["claude-haiku"]);
    expect(config.auth.keys.map((k) => k.id)).toEqual(["admin", "web-app"]);
    const raw = JSON.parse(readFileSync(EXAMPLE, "utf8")) as Record<string, unknown>;
    for (const key of Object.keys(ConfigSchema.shape)) {
      if (!LEFT_OUT.includes(key)) expect(raw, `sluice.example.json lacks "${key}"`).toHaveProperty(key);
    }
  });

  it("every section is described in docs/operations.md", () => {
    const doc = readFileSync(DOC, "utf8");
    const section = doc.slice(doc.indexOf("## The example config: `sluice.example.json`"));
    expect(section.length).toBeGreaterThan(100);
    for (const key of Object.keys(ConfigSchema.shape))
      expect(section, `docs/operations.md does not describe "${key}"`).toContain(`\`${key}\``);
  });

  it("starts a server (its admin key from SLUICE_ADMIN_KEY) that serves its routes to that key only", async () => {
    const adminKey = "sk-example-admin-0123456789abcdef";
    const config = loadConfig({ file: EXAMPLE, env: {}, overrides: { port: 0, log_level: "silent" } });
    await expect(createSluice(config, { env: {} })).rejects.toThrow(ConfigError);
    await expect(createSluice(config, { env: {} })).rejects.toThrow(/SLUICE_ADMIN_KEY/);
    const server = await createSluice(config, { env: { SLUICE_ADMIN_KEY: adminKey } });
    try {
      const url = await server.listen();
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      expect((await fetch(`${url}/v1/models`)).status).toBe(401);
      const res = await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${adminKey}` } });
      expect(res.status).toBe(200);
      const models = ((await res.json()) as { data: { id: string }[] }).data.map((m) => m.id);
      expect(models).toEqual(expect.arrayContaining(["demo", "gpt-4o-mini", "claude-haiku", "llama3.2"]));
    } finally {
      await server.close();
    }
  });
});
