import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, parseConfig } from "../src/config.js";
import { configJsonSchema, type JsonSchemaNode, renderConfigDocs } from "../src/config-docs.js";

const doc = (name: string) => readFileSync(new URL(`../../../docs/${name}`, import.meta.url), "utf8");

/** Every field of the schema, nested objects, map entries and list items included, with its path. */
function fields(node: JsonSchemaNode, path = ""): [string, JsonSchemaNode][] {
  const out: [string, JsonSchemaNode][] = [];
  for (const [name, f] of Object.entries(node.properties ?? {})) {
    const key = `${path}${name}`;
    out.push([key, f]);
    if (f.properties) out.push(...fields(f, `${key}.`));
    const entry = typeof f.additionalProperties === "object" ? f.additionalProperties : undefined;
    if (entry?.properties) out.push(...fields(entry, `${key}.<name>.`));
    if (f.items?.properties) out.push(...fields(f.items, `${key}[].`));
  }
  return out;
}

describe("docs/configuration.md", () => {
  it("is exactly what the schema generates", () => {
    const expected = renderConfigDocs();
    const actual = doc("configuration.md");
    // One message that says what to do, rather than a 300-line diff first.
    expect(
      actual === expected,
      "docs/configuration.md differs from the config schema: run `npm run docs:config` and commit the result",
    ).toBe(true);
  });

  it("describes every field of the schema, and shows each in a table", () => {
    const all = fields(configJsonSchema());
    // The walk reaches the nested schemas (routes, keys, token secrets, limits, timeouts, retry).
    const keys = all.map(([k]) => k);
    for (const k of [
      "cluster.lease_ttl_ms",
      "routes.<name>.retry.max_wait_ms",
      "routes.<name>.timeouts.idle_ms",
      "auth.keys[].limits.connections",
      "auth.token_secrets[].secret_file",
      "auth.default_limits.output_tokens_per_minute",
      "upstream_defaults.timeouts.first_byte_ms",
      "long_poll.max_wait_ms",
    ]) {
      expect(keys).toContain(k);
    }
    expect(all.length).toBeGreaterThan(100);
    const missing = all.filter(([, f]) => !f.description || f.description.trim().length < 10).map(([k]) => k);
    expect(missing, "every config field needs a .describe() in config.ts").toEqual([]);
    const text = renderConfigDocs();
    for (const [key, f] of all) {
      if (f["x-moved-to"] !== undefined) continue;
      // Rows of map entries and list items are relative to their own table (`routes.<name>`).
      const rel = key.replace(/^.*(\.<name>\.|\[\]\.)/, "");
      // A section is a heading with its description as the paragraph under it.
      if (f.properties && !key.includes(".")) expect(text, key).toContain(`## \`${key}\``);
      else expect(text, key).toContain(`| \`${rel}\``);
      expect(text, key).toContain((f.description as string).replaceAll("|", "\\|"));
    }
  });

  it("shows computed defaults in words and no 'no bound' numbers", () => {
    const text = renderConfigDocs();
    const row = (key: string) => text.split("\n").find((l) => l.startsWith(`| \`${key}\``)) ?? "";
    expect(row("limits.generations_bytes")).toContain("40 % of the V8 heap limit");
    expect(row("limits.generation_bytes")).toContain("a quarter of `generations_bytes`");
    expect(row("upstream_defaults.timeouts.connect_ms")).toContain("`10000` (10 s)");
    expect(row("long_poll.max_wait_ms")).toContain("1–300000");
    expect(text).not.toContain(String(Number.MAX_SAFE_INTEGER));
    expect(row("durable_streams.long_poll_timeout_ms")).toContain("`long_poll.max_wait_ms`");
  });

  it("is linked from README.md and docs/operations.md", () => {
    expect(readFileSync(new URL("../../../README.md", import.meta.url), "utf8")).toContain(
      "(docs/configuration.md)",
    );
    expect(doc("operations.md")).toContain("(configuration.md)");
  });
});

describe("moved settings", () => {
  it("a config that sets durable_streams.long_poll_timeout_ms is refused, naming long_poll.max_wait_ms", () => {
    expect(() => parseConfig({ durable_streams: { long_poll_timeout_ms: 300 } })).toThrow(
      "durable_streams.long_poll_timeout_ms: durable_streams.long_poll_timeout_ms is now long_poll.max_wait_ms",
    );
    const dir = mkdtempSync(join(tmpdir(), "sluice-config-"));
    try {
      const file = join(dir, "sluice.json");
      writeFileSync(
        file,
        JSON.stringify({ durable_streams: { enabled: true, long_poll_timeout_ms: 30_000 } }),
      );
      let err: unknown;
      try {
        loadConfig({ file, env: {} });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain("is now long_poll.max_wait_ms");
      expect((err as Error).message).toContain(file);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the one long-poll wait has its default, and the old key is not in the parsed config", () => {
    const c = parseConfig({});
    expect(c.long_poll.max_wait_ms).toBe(30_000);
    expect("long_poll_timeout_ms" in c.durable_streams).toBe(false);
    expect(parseConfig({ long_poll: { max_wait_ms: 300 } }).long_poll.max_wait_ms).toBe(300);
  });
});
