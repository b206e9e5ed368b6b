/**
 * docs/configuration.md, generated from the config schema's descriptions (config.ts), so the
 * reference cannot drift from what the server accepts. `npm run docs:config` writes it
 * (scripts/config-docs.mjs); test/config-docs.test.ts fails when the file differs from this.
 * The output is already in Biome's Markdown format (tables padded), so `npm run lint` agrees.
 */
import { z } from "zod";
import { ConfigSchema } from "./config.js";

/** The parts of a JSON Schema (draft 2020-12, as zod writes it) the renderer reads. */
export interface JsonSchemaNode {
  type?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  minLength?: number;
  maxLength?: number;
  maxItems?: number;
  pattern?: string;
  format?: string;
  properties?: Record<string, JsonSchemaNode>;
  required?: string[];
  additionalProperties?: JsonSchemaNode | boolean;
  items?: JsonSchemaNode;
  /** A default applied in code rather than by the schema: a value, or words (a default computed at startup). */
  "x-default"?: string | number;
  /** A removed key: where its setting went (config.ts `movedTo`). */
  "x-moved-to"?: string;
}

/** The config schema as JSON Schema (what a client of the config file may write). */
export function configJsonSchema(): JsonSchemaNode {
  return z.toJSONSchema(ConfigSchema, { io: "input", unrepresentable: "any" }) as JsonSchemaNode;
}

/** JSON Schema's stand-in for "no bound" on integers. */
const NO_BOUND = Number.MAX_SAFE_INTEGER;

const INTRO = `# Configuration reference

<!-- Generated from packages/server/src/config.ts by \`npm run docs:config\`; do not edit by hand. -->

Sluice reads one JSON object: every field is optional and has a default, so \`sluice serve\` runs
with none. Sources, later ones winning: the defaults below < the config file
(\`--config FILE\` or \`SLUICE_CONFIG\`) < the environment (\`SLUICE_HOST\`, \`SLUICE_PORT\`,
\`SLUICE_STORE\`, \`SLUICE_LOG_LEVEL\`) < command-line flags (\`sluice serve --help\`). An unknown
key, a value out of range or a removed key is refused at startup with a message naming every bad
field (exit code 2).

This page is generated from the schema's descriptions (\`packages/server/src/config.ts\`): after
changing the schema, run \`npm run docs:config\`; a test fails while this file and the schema
disagree. Durations are in milliseconds (\`_ms\`) or seconds (\`_s\`), sizes in bytes (\`_bytes\`) or
characters (\`_chars\`). A range shows the bounds the schema enforces; no range means none beyond
the type.

## Where settings live

A setting sits in the section of the component that uses it:

- **One long-poll wait.** The node's long-poll path (one deadline structure,
  \`http/live-response.ts\`) serves both \`/v1/streams/{id}?live=long-poll\` and Durable Streams
  \`live=long-poll\`, so \`long_poll.max_wait_ms\` bounds both. It replaces
  \`durable_streams.long_poll_timeout_ms\`: a config that still sets the old key is refused with
  a message naming the new one (see [Moved settings](#moved-settings)).
- **\`sse.heartbeat_ms\` stays where it is.** It is the period of the one heartbeat timer of
  streaming HTTP responses: SSE on every door, and NDJSON (a blank line). Server-Sent Events are
  most of what it serves, the WebSocket has its own (\`ws.ping_interval_ms\`) and gRPC needs none;
  renaming it would break every config that sets it for a name alone.
- **\`cluster.max_buffered_events\`** bounds what a generation keeps in memory while any store is
  slow or unreachable; it stays in \`cluster\`, next to \`outage_ms\`, since a Redis outage is what
  makes it matter.
`;

function cell(text: string): string {
  return text.replaceAll("|", "\\|");
}

function code(v: unknown): string {
  return `\`${JSON.stringify(v)}\``;
}

/** `16777216 (16 MiB)`, `30000 (30 s)`: the unit a key's name says, spelled out. */
function withUnit(key: string, n: number): string {
  if (/(^|_)(bytes|chars)(_|$)/.test(key) && n >= 1024 && n % 1024 === 0) {
    const mib = n / (1024 * 1024);
    const unit = /bytes/.test(key) ? "iB" : "i chars";
    return Number.isInteger(mib) ? ` (${mib} M${unit})` : ` (${n / 1024} K${unit})`;
  }
  if (/_ms$/.test(key) && n >= 1000 && n % 1000 === 0) return ` (${n / 1000} s)`;
  if (/_s$/.test(key) && n >= 3600 && n % 3600 === 0) return ` (${n / 3600} h)`;
  return "";
}

function typeOf(s: JsonSchemaNode): string {
  if (s.enum) return "string";
  if (s.type === "array") {
    const item = s.items ?? {};
    if (item.properties) return "list of objects";
    return `list of ${item.enum ? "strings" : `${item.type ?? "value"}s`}`;
  }
  if (s.type === "object" && s.additionalProperties && typeof s.additionalProperties === "object") {
    const v = s.additionalProperties;
    return v.properties ? "map: name → object" : `map: string → ${v.type ?? "value"}`;
  }
  return s.type ?? "any";
}

function defaultOf(key: string, s: JsonSchemaNode, required: boolean): string {
  const given = s["x-default"];
  if (typeof given === "string") return given;
  const value = given ?? s.default;
  if (value === undefined) return required ? "required" : "—";
  if (s.type === "object" && !s.additionalProperties) return "—";
  const text = code(value);
  return typeof value === "number" ? `${text}${withUnit(key, value)}` : text;
}

function rangeOf(s: JsonSchemaNode): string {
  const parts: string[] = [];
  const values = s.enum ?? (s.type === "array" ? s.items?.enum : undefined);
  if (values) parts.push(values.map((v) => `\`${String(v)}\``).join(", "));
  let min = s.minimum;
  if (s.exclusiveMinimum !== undefined) min = s.type === "integer" ? s.exclusiveMinimum + 1 : undefined;
  if (min !== undefined && min <= -NO_BOUND) min = undefined;
  const max = s.maximum !== undefined && s.maximum < NO_BOUND ? s.maximum : undefined;
  if (min !== undefined && max !== undefined) parts.push(`${min}–${max}`);
  else if (min !== undefined) parts.push(`≥ ${min}`);
  else if (max !== undefined) parts.push(`≤ ${max}`);
  if (s.minLength !== undefined || s.maxLength !== undefined) {
    const lo = s.minLength ?? 0;
    if (s.maxLength !== undefined) parts.push(`${lo}–${s.maxLength} characters`);
    else if (lo === 1) parts.push("not empty");
    else parts.push(`at least ${lo} characters`);
  }
  if (s.pattern) parts.push(`matches \`${s.pattern}\``);
  if (s.format === "uri") parts.push("a URL");
  if (s.type === "array" && s.items?.format === "uri") parts.push("URLs");
  if (s.maxItems !== undefined) parts.push(`at most ${s.maxItems} items`);
  return parts.join("; ");
}

interface Row {
  key: string;
  type: string;
  def: string;
  range: string;
  description: string;
}

interface Nested {
  title: string;
  schema: JsonSchemaNode;
}

interface Moved {
  key: string;
  to: string;
}

/** Rows of an object's fields, nested objects flattened to dotted keys; maps and lists of objects go to `nested`. */
function rowsOf(s: JsonSchemaNode, prefix: string, nested: Nested[], moved: Moved[]): Row[] {
  const rows: Row[] = [];
  const required = new Set(s.required ?? []);
  for (const [name, f] of Object.entries(s.properties ?? {})) {
    const key = `${prefix}${name}`;
    if (f["x-moved-to"] !== undefined) {
      moved.push({ key, to: f["x-moved-to"] });
      continue;
    }
    rows.push({
      key,
      type: typeOf(f),
      def: defaultOf(name, f, required.has(name)),
      range: rangeOf(f),
      description: f.description ?? "",
    });
    const entry =
      f.additionalProperties && typeof f.additionalProperties === "object" ? f.additionalProperties : f.items;
    if (f.properties) rows.push(...rowsOf(f, `${key}.`, nested, moved));
    else if (entry?.properties) {
      nested.push({ title: f.type === "array" ? `${key}[]` : `${key}.<name>`, schema: entry });
    }
  }
  return rows;
}

/** Biome's Markdown table layout: every column padded to its widest cell (at least 3). */
function table(rows: Row[], keyTitle: string): string {
  const header = [keyTitle, "type", "default", "range / values", "description"];
  const body = rows.map((r) => [`\`${r.key}\``, r.type, r.def, r.range, r.description].map(cell));
  const width = (t: string) => [...t].length;
  const widths = header.map((h, i) => Math.max(3, width(h), ...body.map((b) => width(b[i] as string))));
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => c + " ".repeat((widths[i] as number) - width(c))).join(" | ")} |`;
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n");
}

/** docs/configuration.md: an intro, then one table per section, maps and lists of objects as their own tables. */
export function renderConfigDocs(schema: JsonSchemaNode = configJsonSchema()): string {
  const out: string[] = [INTRO];
  const moved: Moved[] = [];
  const props = Object.entries(schema.properties ?? {});
  const isSection = (f: JsonSchemaNode) =>
    f.properties !== undefined ||
    (typeof f.additionalProperties === "object" && f.additionalProperties.properties !== undefined);

  const top: JsonSchemaNode = {
    properties: Object.fromEntries(props.filter(([, f]) => !isSection(f))),
    required: schema.required ?? [],
  };
  out.push("## Top level\n", table(rowsOf(top, "", [], moved), "key"), "");

  for (const [name, f] of props) {
    if (!isSection(f)) continue;
    const nested: Nested[] = [];
    out.push(`## \`${name}\`\n`, `${f.description ?? ""}\n`);
    const section: JsonSchemaNode = { properties: { [name]: f }, required: schema.required ?? [] };
    const rows = rowsOf(section, "", nested, moved);
    // A section's own row would repeat the paragraph above; a map section (routes) keeps it for
    // its type and default, pointing to the table of its entries.
    const own = rows[0] as Row;
    own.description = nested[0] ? `One entry per name: see \`${nested[0].title}\` below.` : "";
    out.push(table(f.properties ? rows.slice(1) : rows, "key"), "");
    for (const n of nested) {
      const inner: Nested[] = [];
      out.push(`### \`${n.title}\`\n`, table(rowsOf(n.schema, "", inner, moved), "field"), "");
      for (const i of inner) nested.push(i);
    }
  }

  out.push(
    "## Moved settings\n",
    "A config that sets one of these keys is refused at startup with a message naming the replacement.\n",
  );
  const movedRows = moved.map((m) => [`\`${m.key}\``, `\`${m.to}\``]);
  const w0 = Math.max(3, "old key".length, ...movedRows.map((r) => [...(r[0] as string)].length));
  const w1 = Math.max(3, "now".length, ...movedRows.map((r) => [...(r[1] as string)].length));
  const mline = (a: string, b: string) => `| ${a.padEnd(w0)} | ${b.padEnd(w1)} |`;
  out.push(
    [
      mline("old key", "now"),
      mline("-".repeat(w0), "-".repeat(w1)),
      ...movedRows.map(([a, b]) => mline(a as string, b as string)),
    ].join("\n"),
  );
  return `${out.join("\n")}\n`;
}
