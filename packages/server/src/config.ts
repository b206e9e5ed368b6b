import { readFileSync } from "node:fs";
import { z } from "zod";

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
    store: z.literal("memory").default("memory"),
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
        /** Long-lived connections (SSE/NDJSON readers, WebSockets, long-polls, gRPC follows) at once. */
        max_connections: z.number().int().positive().default(100_000),
        /** Readers attached to one stream on this node. */
        max_readers_per_stream: z.number().int().positive().default(100_000),
      })
      .strict()
      .prefault({}),
    sse: z
      .object({
        heartbeat_ms: z.number().int().min(100).default(15_000),
        retry_ms: z.number().int().min(0).default(1000),
      })
      .strict()
      .prefault({}),
    /** Coalescing and slow readers (docs/transports.md). */
    flow: z
      .object({
        /** At most one write per connection every this many ms; 0 = next tick. */
        flush_interval_ms: z.number().int().min(0).max(10_000).default(0),
        /** A connection with this many pending bytes is flushed at once. */
        max_batch_bytes: z
          .number()
          .int()
          .min(256)
          .default(64 * 1024),
        /** Widen the flush window when the event loop is late (within latency_budget_ms). */
        adaptive: z.boolean().default(true),
        latency_budget_ms: z.number().int().min(1).max(10_000).default(25),
        /** Event-loop delay p99 (ms) above which the window widens. */
        target_loop_delay_ms: z.number().int().min(1).default(10),
        /** A reader whose connection holds more unflushed bytes than this waits for drain. */
        high_water_bytes: z
          .number()
          .int()
          .min(1024)
          .default(64 * 1024),
        /** A waiting reader whose stream grew by more than this is disconnected (0 = never). */
        slow_reader_lag_bytes: z
          .number()
          .int()
          .min(0)
          .default(4 * 1024 * 1024),
        /** A reader whose connection has not drained for this long is disconnected (0 = never). */
        slow_reader_ms: z.number().int().min(0).default(30_000),
        /** Records kept in memory per live stream. */
        window_records: z.number().int().min(1).default(1024),
      })
      .strict()
      .prefault({}),
    /** gzip/brotli for SSE and NDJSON when the client asks (Accept-Encoding). */
    compression: z
      .object({
        enabled: z.boolean().default(true),
        /** Offered encodings, most preferred first. */
        encodings: z.array(z.enum(["gzip", "br"])).default(["gzip", "br"]),
      })
      .strict()
      .prefault({}),
    ws: z
      .object({
        enabled: z.boolean().default(true),
        /** Negotiate permessage-deflate when the client offers it. */
        per_message_deflate: z.boolean().default(false),
        max_payload_bytes: z
          .number()
          .int()
          .min(1024)
          .default(1024 * 1024),
        ping_interval_ms: z.number().int().min(100).default(30_000),
        max_subscriptions: z.number().int().positive().default(1000),
      })
      .strict()
      .prefault({}),
    long_poll: z
      .object({
        /** The longest a long-poll read waits for new events (ms). */
        max_wait_ms: z.number().int().min(1).max(300_000).default(30_000),
      })
      .strict()
      .prefault({}),
    /** gRPC on its own port; off unless a port is given. */
    grpc_port: z.number().int().min(0).max(65535).optional(),
    /** TLS certificate and key (PEM files): serve HTTP/2 with HTTP/1.1 fallback. */
    tls: z
      .object({ cert: z.string().min(1), key: z.string().min(1) })
      .strict()
      .optional(),
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
