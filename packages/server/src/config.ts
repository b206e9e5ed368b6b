import { readFileSync } from "node:fs";
import { z } from "zod";
import { isStoreSpec } from "./stores/open.js";

/** Upstream timeouts in ms (0 disables one); docs/providers.md "Timeouts and limits". */
const UpstreamTimeoutsSchema = z
  .object({
    /** TCP (and TLS) connect. Default 10000. */
    connect_ms: z.number().int().min(0).max(600_000).optional(),
    /** From sending the request (connect included) to the first byte of the response body. Default 60000. */
    first_byte_ms: z.number().int().min(0).max(3_600_000).optional(),
    /** Between two chunks of the response body. Default 30000. */
    idle_ms: z.number().int().min(0).max(3_600_000).optional(),
  })
  .strict();

/** The most characters one upstream SSE event may hold (a longer one ends the stream). */
const MaxEventCharsSchema = z
  .number()
  .int()
  .min(1024)
  .max(256 * 1024 * 1024);

export const RouteConfigSchema = z
  .object({
    provider: z.enum(["openai-compatible", "anthropic", "demo"]),
    base_url: z.string().url().optional(),
    api_key: z.string().optional(),
    /** Name of an environment variable holding the key (so config files carry no secrets). */
    api_key_env: z.string().optional(),
    /** Model name sent upstream (default: the route's name). */
    model: z.string().optional(),
    headers: z.record(z.string(), z.string()).optional(),
    fallbacks: z.array(z.string()).optional(),
    /** `anthropic-version` header (anthropic routes); default 2023-06-01. */
    anthropic_version: z.string().optional(),
    /** Upstream timeouts for this route (each field defaults to `upstream_defaults.timeouts`). */
    timeouts: UpstreamTimeoutsSchema.optional(),
    /** Bound on one upstream SSE event for this route (default `upstream_defaults.max_event_chars`). */
    max_event_chars: MaxEventCharsSchema.optional(),
    /** What a disconnect of the client that started a generation does on the protocol routes. */
    on_disconnect: z.enum(["continue", "cancel"]).optional(),
    /** Retries before the first token (connect error, 429, 5xx), then the fallbacks. */
    retry: z
      .object({
        /** Tries of this route in all (1 = no retry). Default 2. */
        max_attempts: z.number().int().min(1).max(10).optional(),
        /** First backoff, doubled each retry, when the upstream sends no Retry-After. Default 200. */
        base_delay_ms: z.number().int().min(0).max(60_000).optional(),
        /** A longer wait (Retry-After included) is not taken: the next fallback is tried. Default 10000. */
        max_wait_ms: z.number().int().min(0).max(600_000).optional(),
      })
      .strict()
      .optional(),
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

const KeyLimitsSchema = z
  .object({
    concurrent_generations: z.number().int().positive().optional(),
    generations_per_minute: z.number().int().positive().optional(),
    output_tokens_per_minute: z.number().int().positive().optional(),
    connections: z.number().int().positive().optional(),
  })
  .strict();

export const ApiKeyConfigSchema = z
  .object({
    id: z.string().min(1).max(64),
    /** SHA-256 (hex) of the key — the recommended form: the config then holds no secret. */
    key_sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits")
      .optional(),
    /** Name of an environment variable holding the key. */
    key_env: z.string().optional(),
    /** A file holding the key. */
    key_file: z.string().optional(),
    role: z.enum(["admin", "producer", "reader"]),
    tenant: z.string().min(1).max(128).default("default"),
    limits: KeyLimitsSchema.optional(),
  })
  .strict()
  .refine((k) => [k.key_sha256, k.key_env, k.key_file].filter((x) => x !== undefined).length === 1, {
    message: "give exactly one of key_sha256, key_env, key_file",
  });

export const TokenSecretConfigSchema = z
  .object({
    id: z.string().min(1).max(64),
    secret_env: z.string().optional(),
    secret_file: z.string().optional(),
  })
  .strict()
  .refine((k) => [k.secret_env, k.secret_file].filter((x) => x !== undefined).length === 1, {
    message: "give exactly one of secret_env, secret_file",
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
    /** Timeouts and the event bound for every upstream route (routes may override them). */
    upstream_defaults: z
      .object({
        timeouts: UpstreamTimeoutsSchema.default({}),
        max_event_chars: MaxEventCharsSchema.default(1024 * 1024),
      })
      .strict()
      .prefault({}),
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
        /** How deep arrays/objects may nest in any JSON a client sends (bodies, WS messages, gRPC request_json). */
        json_max_depth: z.number().int().min(2).max(1000).default(64),
        /**
         * Memory budget (docs/operations.md). Most bytes one generation may hold in memory (its planned
         * output, records queued for the store or, on the memory store, held while it runs); past it
         * the generation ends with stream_too_large. Default: a quarter of generations_bytes, at most 64 MiB.
         */
        generation_bytes: z
          .number()
          .int()
          .min(64 * 1024)
          .optional(),
        /** Most bytes all running generations of this node may hold; full → 503 capacity_exceeded. Default: 40 % of the V8 heap limit. */
        generations_bytes: z
          .number()
          .int()
          .min(1024 * 1024)
          .optional(),
        /** Most bytes the memory store keeps for ended streams before evicting the oldest. Default: 30 % of the V8 heap limit. */
        memory_store_bytes: z
          .number()
          .int()
          .min(1024 * 1024)
          .optional(),
      })
      .strict()
      .prefault({}),
    sse: z
      .object({
        heartbeat_ms: z.number().int().min(100).default(15_000),
        retry_ms: z.number().int().min(0).default(1000),
      })
      .strict()
      .default({ heartbeat_ms: 15_000, retry_ms: 1000 }),
    auth: z
      .object({
        keys: z.array(ApiKeyConfigSchema).max(10_000).default([]),
        /** Read-token signing secrets: the first signs, all verify (rotation). None → a random per-process secret. */
        token_secrets: z.array(TokenSecretConfigSchema).max(16).default([]),
        token_ttl_s: z
          .number()
          .int()
          .positive()
          .max(7 * 86400)
          .default(3600),
        /** Limits for keys that set none of their own. */
        default_limits: KeyLimitsSchema.default({}),
      })
      .strict()
      .default({ keys: [], token_secrets: [], token_ttl_s: 3600, default_limits: {} }),
    cors: z
      .object({
        origins: z.array(z.string().min(1)).default([]),
        credentials: z
          .boolean()
          .default(false)
          .describe(
            "Answer allowed origins with Access-Control-Allow-Credentials: true (cookies, HTTP auth); needs an explicit origins list",
          ),
      })
      .strict()
      .default({ origins: [], credentials: false }),
    /** Listen on a non-loopback address without API keys (refused unless set). */
    insecure: z.boolean().default(false),
    timeouts: z
      .object({
        /** Time allowed to send the request headers (slowloris guard). */
        headers_ms: z.number().int().positive().default(10_000),
        /** Time allowed to send the whole request (headers and body). */
        request_ms: z.number().int().positive().default(30_000),
        /** Idle keep-alive connections are closed after this. */
        keep_alive_ms: z.number().int().positive().default(5_000),
        /** How often connections are checked against those timeouts. */
        check_interval_ms: z.number().int().positive().default(1_000),
      })
      .strict()
      .default({ headers_ms: 10_000, request_ms: 30_000, keep_alive_ms: 5_000, check_interval_ms: 1_000 }),
    /** The Durable Streams protocol, mounted under /ds (docs/durable-streams.md). */
    durable_streams: z
      .object({
        enabled: z.boolean().default(true),
        /** How long a `live=long-poll` read waits for data before answering 204. */
        long_poll_timeout_ms: z.number().int().min(50).max(300_000).default(30_000),
        /** Largest body one append (POST, or PUT with a body) may carry. */
        max_append_bytes: z
          .number()
          .int()
          .positive()
          .default(16 * 1024 * 1024),
        /** A catch-up GET returns at most about this many bytes (always at least one record). */
        max_read_bytes: z
          .number()
          .int()
          .positive()
          .default(1024 * 1024),
      })
      .strict()
      .default({
        enabled: true,
        long_poll_timeout_ms: 30_000,
        max_append_bytes: 16 * 1024 * 1024,
        max_read_bytes: 1024 * 1024,
      }),
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
