import { readFileSync } from "node:fs";
import { z } from "zod";
import { isStoreSpec } from "./stores/open.js";

export const RouteConfigSchema = z
  .object({
    provider: z.enum(["openai-compatible", "demo"]),
    base_url: z.string().url().optional(),
    api_key: z.string().optional(),
    /** Name of an environment variable holding the key (so config files carry no secrets). */
    api_key_env: z.string().optional(),
    /** Model name sent upstream (default: the route's name). */
    model: z.string().optional(),
    headers: z.record(z.string(), z.string()).optional(),
    fallbacks: z.array(z.string()).optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.provider === "openai-compatible" && !r.base_url) {
      ctx.addIssue({
        code: "custom",
        message: "an openai-compatible route needs base_url",
        path: ["base_url"],
      });
    }
  });

export const ConfigSchema = z
  .object({
    host: z.string().min(1).default("127.0.0.1"),
    port: z.number().int().min(0).max(65535).default(8080),
    /** `memory`, `sqlite:PATH` (one node, durable) or `redis://host:port` (several nodes). */
    store: z
      .string()
      .default("memory")
      .refine(isStoreSpec, { message: 'store must be "memory", "sqlite:PATH" or "redis://host:port"' }),
    /** Ownership of generations across nodes (Redis store) and Redis outage handling. */
    cluster: z
      .object({
        /** A node's lease on a running generation expires this long after its last renewal. */
        lease_ttl_ms: z.number().int().min(500).default(8000),
        /** How often leases are renewed and expired ones looked for. */
        lease_renew_ms: z.number().int().min(100).default(2000),
        /** Prefix of every Redis key and channel (several deployments can share a Redis). */
        redis_prefix: z.string().min(1).default("sluice:"),
        /** How long appends wait for a lost Redis connection before the generation fails. */
        outage_ms: z.number().int().min(0).default(30_000),
        /** Most events one generation buffers in memory while the store is unreachable. */
        max_buffered_events: z.number().int().positive().default(100_000),
      })
      .strict()
      .refine((c) => c.lease_renew_ms < c.lease_ttl_ms, {
        message: "lease_renew_ms must be shorter than lease_ttl_ms",
      })
      .prefault({}),
    /** On SIGTERM, running generations get this long to finish before they are closed as interrupted. */
    shutdown_grace_ms: z.number().int().min(0).default(10_000),
    routes: z.record(z.string().min(1), RouteConfigSchema).default({}),
    /** OpenAI-compatible servers whose models are all added (Ollama, vLLM, llama.cpp, LM Studio…). */
    upstreams: z.array(z.string().url()).default([]),
    default_model: z.string().default("demo"),
    limits: z
      .object({
        body_bytes: z
          .number()
          .int()
          .positive()
          .default(1024 * 1024),
        max_events_per_stream: z.number().int().positive().default(1_000_000),
        max_bytes_per_stream: z
          .number()
          .int()
          .positive()
          .default(64 * 1024 * 1024),
        max_streams: z.number().int().positive().default(100_000),
        stream_ttl_s: z
          .number()
          .int()
          .positive()
          .default(24 * 3600),
        page_limit_max: z.number().int().positive().default(1000),
      })
      .strict()
      .default({
        body_bytes: 1024 * 1024,
        max_events_per_stream: 1_000_000,
        max_bytes_per_stream: 64 * 1024 * 1024,
        max_streams: 100_000,
        stream_ttl_s: 24 * 3600,
        page_limit_max: 1000,
      }),
    sse: z
      .object({
        heartbeat_ms: z.number().int().min(100).default(15_000),
        retry_ms: z.number().int().min(0).default(1000),
      })
      .strict()
      .default({ heartbeat_ms: 15_000, retry_ms: 1000 }),
    log_level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema>;
export type RouteConfig = z.infer<typeof RouteConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;

export class ConfigError extends Error {
  override name = "ConfigError";
}

function describe(err: z.ZodError): string {
  return err.issues.map((i) => `  - ${i.path.length ? i.path.join(".") : "(root)"}: ${i.message}`).join("\n");
}

/** Parses a config object (defaults filled in); throws ConfigError naming every bad field. */
export function parseConfig(input: unknown, source = "config"): Config {
  const r = ConfigSchema.safeParse(input);
  if (!r.success) throw new ConfigError(`invalid ${source}:\n${describe(r.error)}`);
  return r.data;
}

export interface LoadConfigOptions {
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags (win over the file and the environment). */
  overrides?: Partial<ConfigInput>;
}

/** Defaults < config file < environment (SLUICE_*) < flags. */
export function loadConfig(opts: LoadConfigOptions = {}): Config {
  const env = opts.env ?? process.env;
  let fromFile: Record<string, unknown> = {};
  const file = opts.file ?? env.SLUICE_CONFIG;
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    try {
      fromFile = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof fromFile !== "object" || fromFile === null || Array.isArray(fromFile)) {
      throw new ConfigError(`config file ${file} must hold a JSON object`);
    }
  }
  const merged: Record<string, unknown> = { ...fromFile };
  if (env.SLUICE_HOST) merged.host = env.SLUICE_HOST;
  if (env.SLUICE_PORT) {
    const port = Number(env.SLUICE_PORT);
    if (!Number.isInteger(port))
      throw new ConfigError(`SLUICE_PORT must be an integer, got "${env.SLUICE_PORT}"`);
    merged.port = port;
  }
  if (env.SLUICE_LOG_LEVEL) merged.log_level = env.SLUICE_LOG_LEVEL;
  if (env.SLUICE_STORE) merged.store = env.SLUICE_STORE;
  for (const [k, v] of Object.entries(opts.overrides ?? {})) {
    if (v === undefined) continue;
    if (k === "upstreams") merged.upstreams = [...((merged.upstreams as string[]) ?? []), ...(v as string[])];
    else merged[k] = v;
  }
  return parseConfig(
    merged,
    file ? `config (${file} + environment + flags)` : "config (environment + flags)",
  );
}
