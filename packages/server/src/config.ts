import { readFileSync } from "node:fs";
import { z } from "zod";
import { DEFAULT_RETRY } from "./core/routes.js";
import { ANTHROPIC_VERSION } from "./providers/anthropic.js";
import { DEFAULT_MAX_EVENT_CHARS, DEFAULT_UPSTREAM_TIMEOUTS } from "./providers/upstream-http.js";
import { isStoreSpec } from "./stores/open.js";

/**
 * The config schema. Every field carries a `.describe()`: docs/configuration.md is generated from
 * it (config-docs.ts, `npm run docs:config`) and a test keeps the two equal. A default applied in
 * code rather than by the schema goes in `x-default`: a number is shown as the default, a string
 * is words (a default computed at startup, or taken from another setting).
 */

/** A key that moved: setting it is an error naming its replacement (old config files fail clearly). */
function movedTo(oldPath: string, newPath: string) {
  return z
    .undefined({ error: `${oldPath} is now ${newPath}` })
    .optional()
    .describe(`Removed: use \`${newPath}\`. A config that still sets it is refused with that message.`)
    .meta({ "x-moved-to": newPath });
}

/** Upstream timeouts in ms (0 disables one); `inherited` says where a left-out field comes from. */
function upstreamTimeoutsSchema(
  inherited: (field: keyof typeof DEFAULT_UPSTREAM_TIMEOUTS) => string | number,
) {
  return z
    .object({
      connect_ms: z
        .number()
        .int()
        .min(0)
        .max(600_000)
        .optional()
        .describe(
          "TCP (and TLS) connect timeout to the upstream, in ms; past it the attempt fails with a retryable `upstream_timeout`. 0 disables it.",
        )
        .meta({ "x-default": inherited("connect_ms") }),
      first_byte_ms: z
        .number()
        .int()
        .min(0)
        .max(3_600_000)
        .optional()
        .describe(
          "From sending the request (connect included) to the first byte of the response body, in ms (response headers alone do not count); past it: `upstream_timeout`. 0 disables it.",
        )
        .meta({ "x-default": inherited("first_byte_ms") }),
      idle_ms: z
        .number()
        .int()
        .min(0)
        .max(3_600_000)
        .optional()
        .describe(
          "Longest gap between two chunks of the response body, in ms; past it the stream ends with `upstream_timeout` (retried or sent to a fallback only when no token came yet). 0 disables it.",
        )
        .meta({ "x-default": inherited("idle_ms") }),
    })
    .strict();
}

/** The most characters one upstream SSE event may hold (a longer one ends the stream). */
const MaxEventCharsSchema = z
  .number()
  .int()
  .min(1024)
  .max(256 * 1024 * 1024);

const RetrySchema = z
  .object({
    max_attempts: z
      .number()
      .int()
      .min(1)
      .max(10)
      .optional()
      .describe("Tries of this route in all, before its fallbacks (1 = no retry).")
      .meta({ "x-default": DEFAULT_RETRY.max_attempts }),
    base_delay_ms: z
      .number()
      .int()
      .min(0)
      .max(60_000)
      .optional()
      .describe(
        "Wait before the first retry, in ms, when the upstream sent no `Retry-After`; doubled at each retry.",
      )
      .meta({ "x-default": DEFAULT_RETRY.base_delay_ms }),
    max_wait_ms: z
      .number()
      .int()
      .min(0)
      .max(600_000)
      .optional()
      .describe(
        "A retry that would wait longer than this (ms, `Retry-After` included) is not taken: the fallbacks are tried instead.",
      )
      .meta({ "x-default": DEFAULT_RETRY.max_wait_ms }),
  })
  .strict();

export const RouteConfigSchema = z
  .object({
    provider: z
      .enum(["openai-compatible", "anthropic", "demo"])
      .describe(
        "`openai-compatible` (any Chat Completions server: OpenAI, vLLM, Ollama, llama.cpp, LM Studio, Groq, OpenRouter…), `anthropic` (the Messages API) or `demo` (the built-in simulator).",
      ),
    base_url: z
      .string()
      .url()
      .optional()
      .describe(
        "The upstream's base URL, e.g. `http://127.0.0.1:11434/v1`. Required for `openai-compatible`; `anthropic` defaults to `https://api.anthropic.com`; `demo` ignores it.",
      ),
    api_key: z
      .string()
      .optional()
      .describe(
        "The upstream API key, inline (prefer `api_key_env`, so the config file holds no secret). Wins over `api_key_env`; redacted from any upstream error text.",
      ),
    api_key_env: z
      .string()
      .optional()
      .describe("Name of an environment variable holding the upstream API key, read at startup."),
    model: z
      .string()
      .optional()
      .describe("The model name sent upstream.")
      .meta({ "x-default": "the route's name" }),
    headers: z
      .record(z.string(), z.string())
      .optional()
      .describe(
        "Extra HTTP headers sent with every upstream request; their values are redacted from upstream error text.",
      ),
    fallbacks: z
      .array(z.string())
      .optional()
      .describe(
        "Route names tried in order when this route fails before its first token (after its retries); their own fallbacks are not followed (docs/providers.md).",
      ),
    anthropic_version: z
      .string()
      .optional()
      .describe("The `anthropic-version` header sent on `anthropic` routes.")
      .meta({ "x-default": `\`${JSON.stringify(ANTHROPIC_VERSION)}\`` }),
    timeouts: upstreamTimeoutsSchema((f) => `\`upstream_defaults.timeouts.${f}\``)
      .optional()
      .describe("This route's upstream timeouts; each field left out takes `upstream_defaults.timeouts`'s."),
    max_event_chars: MaxEventCharsSchema.optional()
      .describe(
        "Most characters one upstream SSE event may hold on this route; a longer one ends the stream with `upstream_error` without being buffered.",
      )
      .meta({ "x-default": "`upstream_defaults.max_event_chars`" }),
    on_disconnect: z
      .enum(["continue", "cancel"])
      .optional()
      .describe(
        "What a disconnect of the client that started a generation does (`POST /v1/streams` streaming, the OpenAI, Anthropic, Responses and AI SDK routes, a WebSocket `start`: the socket closing): `continue` lets it run (readable and resumable by anyone allowed), `cancel` cancels it. A request's own `on_disconnect` wins.",
      )
      .meta({ "x-default": '`"continue"`' }),
    retry: RetrySchema.optional().describe(
      "Retries of this route before its first token (connection refused, timeout, 429, 5xx), before the fallbacks (docs/providers.md#retries-and-fallbacks).",
    ),
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
    concurrent_generations: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        "Generations the key may have running at once on this node; one more is refused with `429 rate_limited` (`limit: concurrent_generations`, `Retry-After`).",
      ),
    generations_per_minute: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        "Generations the key may start per minute (a fixed one-minute window, per node); more → `429 rate_limited`.",
      ),
    output_tokens_per_minute: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        "Output tokens the key's generations may produce per minute (counted when each ends, per node); once used up, new generations get `429 rate_limited` until the window turns. A running generation is never cut.",
      ),
    connections: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        "Long-lived connections the key may hold at once on this node (streaming responses, WebSockets, waiting long-polls, gRPC follows); more → `429 rate_limited` (`limit: connections`).",
      ),
  })
  .strict();

export const ApiKeyConfigSchema = z
  .object({
    id: z
      .string()
      .min(1)
      .max(64)
      .describe("The key's name (not a secret; unique): it names the key in logs and its quotas."),
    key_sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits")
      .optional()
      .describe(
        'SHA-256 of the key in 64 lowercase hex digits (`printf %s "$KEY" | sha256sum`): the recommended form, the config then holds no secret.',
      ),
    key_env: z
      .string()
      .optional()
      .describe("Name of an environment variable holding the key, read at startup (unset → startup fails)."),
    key_file: z
      .string()
      .optional()
      .describe("A file holding the key (surrounding whitespace ignored), read at startup."),
    role: z
      .enum(["admin", "producer", "reader"])
      .describe(
        "`admin`: everything in its tenant, delete and `/metrics` included; `producer`: start and cancel generations, append, read, list, mint read tokens; `reader`: read, follow, list, info.",
      ),
    tenant: z
      .string()
      .min(1)
      .max(128)
      .default("default")
      .describe(
        "The key's tenant: a stream belongs to the tenant of the key that created it, and no tenant sees another's streams.",
      ),
    limits: KeyLimitsSchema.optional().describe(
      "This key's quotas; each field left out takes `auth.default_limits`'s.",
    ),
  })
  .strict()
  .refine((k) => [k.key_sha256, k.key_env, k.key_file].filter((x) => x !== undefined).length === 1, {
    message: "give exactly one of key_sha256, key_env, key_file",
  });

export const TokenSecretConfigSchema = z
  .object({
    id: z
      .string()
      .min(1)
      .max(64)
      .describe(
        "The secret's name, written into each token it signs (`kid`) so the right secret verifies it.",
      ),
    secret_env: z
      .string()
      .optional()
      .describe("Name of an environment variable holding the secret (at least 32 characters)."),
    secret_file: z
      .string()
      .optional()
      .describe("A file holding the secret (at least 32 characters, surrounding whitespace ignored)."),
  })
  .strict()
  .refine((k) => [k.secret_env, k.secret_file].filter((x) => x !== undefined).length === 1, {
    message: "give exactly one of secret_env, secret_file",
  });

export const ConfigSchema = z
  .object({
    host: z
      .string()
      .min(1)
      .default("127.0.0.1")
      .describe(
        "Address the HTTP server (and gRPC) binds. A non-loopback address needs `auth.keys` or `insecure` (docs/security.md). Also `--host`, `SLUICE_HOST`.",
      ),
    port: z
      .number()
      .int()
      .min(0)
      .max(65535)
      .default(8080)
      .describe("HTTP port; 0 picks a free one. Also `--port`, `SLUICE_PORT`."),
    store: z
      .string()
      .default("memory")
      .refine(isStoreSpec, { message: 'store must be "memory", "sqlite:PATH" or "redis://host:port"' })
      .describe(
        "Where streams are kept: `memory` (lost at restart), `sqlite:PATH` (one node, durable) or `redis://host:port[/db]` (`rediss://` for TLS; several nodes share every stream). docs/operations.md. Also `--store`, `SLUICE_STORE`.",
      ),
    cluster: z
      .object({
        lease_ttl_ms: z
          .number()
          .int()
          .min(500)
          .default(8000)
          .describe(
            "A node's lease on a generation it runs expires this long (ms) after its last renewal; another node then closes the generation with `interrupted`. The same lease covers the node's share of each key's `concurrent_generations` and `connections` counts: a dead node's share stops counting this long after its last renewal. Must be longer than `lease_renew_ms`.",
          ),
        lease_renew_ms: z
          .number()
          .int()
          .min(100)
          .default(2000)
          .describe(
            "How often (ms) a node renews its leases (and re-asserts its share of the key quota counts) and looks for expired ones.",
          ),
        redis_prefix: z
          .string()
          .min(1)
          .default("sluice:")
          .describe(
            "Prefix of every Redis key and channel Sluice uses, so several deployments can share one Redis.",
          ),
        outage_ms: z
          .number()
          .int()
          .min(0)
          .default(30_000)
          .describe(
            "How long (ms) an append waits for a lost Redis connection to come back; past it the generation ends with `store_unavailable`.",
          ),
        max_buffered_events: z
          .number()
          .int()
          .positive()
          .default(100_000)
          .describe(
            "Most events one generation keeps in memory while the store is slow or unreachable (on any store); past it the generation ends with `store_unavailable`.",
          ),
      })
      .strict()
      .refine((c) => c.lease_renew_ms < c.lease_ttl_ms, {
        message: "lease_renew_ms must be shorter than lease_ttl_ms",
      })
      .prefault({})
      .describe(
        "Ownership of generations across nodes and Redis outages; the lease settings apply to the Redis store only (docs/operations.md).",
      ),
    shutdown_grace_ms: z
      .number()
      .int()
      .min(0)
      .default(10_000)
      .describe(
        "On SIGTERM/SIGINT, running generations get this long (ms) to finish while readers keep receiving; the rest are closed with `error`/`interrupted`, then the store is closed.",
      ),
    routes: z
      .record(z.string().min(1), RouteConfigSchema)
      .default({})
      .describe(
        "Model routes by the name clients ask for: each maps to a provider, base URL, key, timeouts and fallbacks (docs/providers.md). `demo` is always there.",
      ),
    upstream_defaults: z
      .object({
        timeouts: upstreamTimeoutsSchema((f) => DEFAULT_UPSTREAM_TIMEOUTS[f])
          .default({})
          .describe("Upstream timeouts; a route's own `timeouts` fields win one by one."),
        max_event_chars: MaxEventCharsSchema.default(DEFAULT_MAX_EVENT_CHARS).describe(
          "Most characters one upstream SSE event may hold; a longer one ends the stream with `upstream_error` without being buffered.",
        ),
      })
      .strict()
      .prefault({})
      .describe(
        "Timeouts and the event bound of every upstream route, including those added by `OPENAI_API_KEY`, `ANTHROPIC_API_KEY` and `upstreams` (docs/providers.md#timeouts-and-limits).",
      ),
    upstreams: z
      .array(z.string().url())
      .default([])
      .describe(
        "Base URLs of OpenAI-compatible servers (Ollama, vLLM, llama.cpp, LM Studio…) whose models are all added at startup; model names no route serves go to the first one listed. Also `--upstream`.",
      ),
    default_model: z
      .string()
      .default("demo")
      .describe("The model of an AI SDK chat request (`POST /v1/ai-sdk/chat`) whose body names none."),
    limits: z
      .object({
        body_bytes: z
          .number()
          .int()
          .positive()
          .default(1024 * 1024)
          .describe(
            "Largest request body (bytes) on the HTTP API, and largest gRPC message; larger → `413 body_too_large`. Durable Streams appends have `durable_streams.max_append_bytes`.",
          ),
        max_events_per_stream: z
          .number()
          .int()
          .positive()
          .default(1_000_000)
          .describe(
            "Most events (records) one stream may hold; an append past it fails with `stream_too_large` (a generation's closing terminal event is always accepted).",
          ),
        max_bytes_per_stream: z
          .number()
          .int()
          .positive()
          .default(64 * 1024 * 1024)
          .describe(
            "Most data characters one stream may hold; an append past it fails with `stream_too_large`. What a generation costs in memory is bounded by `generation_bytes`.",
          ),
        max_streams: z
          .number()
          .int()
          .positive()
          .default(100_000)
          .describe(
            "Most streams the store holds (every store; on Redis, all nodes together): at the bound an ended stream is removed to make room (memory and SQLite: the oldest; Redis: the one that expires first); with only running ones left, creating one fails with `capacity_exceeded`.",
          ),
        stream_ttl_s: z
          .number()
          .int()
          .positive()
          .default(24 * 3600)
          .describe("How long (s) an ended stream is kept before it expires, unless it set its own `ttl_s`."),
        page_limit_max: z
          .number()
          .int()
          .positive()
          .default(1000)
          .describe(
            "Largest `?limit=` (events) of a JSON page of a stream, `GET /v1/streams/{id}` (default page: 100); larger → `400 invalid_request`.",
          ),
        max_connections: z
          .number()
          .int()
          .positive()
          .default(100_000)
          .describe(
            "Long-lived connections this node holds at once (SSE/NDJSON responses on every door, WebSockets, waiting long-polls, gRPC follows); one more → `503 too_many_connections`.",
          ),
        max_readers_per_stream: z
          .number()
          .int()
          .positive()
          .default(100_000)
          .describe("Live readers of one stream on this node; one more → `503 too_many_readers`."),
        json_max_depth: z
          .number()
          .int()
          .min(2)
          .max(1000)
          .default(64)
          .describe(
            "How deep arrays and objects may nest in any JSON a client sends (request bodies, WebSocket messages, gRPC `request_json`, Durable Streams JSON appends); deeper → `400 invalid_request`.",
          ),
        generation_bytes: z
          .number()
          .int()
          .min(64 * 1024)
          .optional()
          .describe(
            "Most bytes one generation may hold in memory (its planned output, records queued for the store, on the memory store its records while it runs); past it the generation ends with `stream_too_large` (docs/operations.md#memory-budget).",
          )
          .meta({ "x-default": "a quarter of `generations_bytes`, at most 64 MiB" }),
        generations_bytes: z
          .number()
          .int()
          .min(1024 * 1024)
          .optional()
          .describe(
            "Most bytes all running generations of this node may hold together; a new one that does not fit gets `503 capacity_exceeded` (`Retry-After`), a growing one ends with `capacity_exceeded`.",
          )
          .meta({ "x-default": "40 % of the V8 heap limit, computed at startup" }),
        memory_store_bytes: z
          .number()
          .int()
          .min(1024 * 1024)
          .optional()
          .describe(
            "Most bytes the memory store holds; past it the oldest ended streams are evicted, and with only running ones left, creating or appending fails with `capacity_exceeded`.",
          )
          .meta({ "x-default": "30 % of the V8 heap limit, computed at startup" }),
      })
      .strict()
      .prefault({})
      .describe(
        "Bounds on requests, streams, connections and memory (docs/security.md#limits, docs/operations.md#memory-budget).",
      ),
    sse: z
      .object({
        heartbeat_ms: z
          .number()
          .int()
          .min(100)
          .default(15_000)
          .describe(
            "Period (ms) of the node's one heartbeat timer: every streaming HTTP response (SSE on every door, and NDJSON) that wrote nothing since the last tick gets `: keep-alive` (NDJSON: a blank line), so proxies keep idle streams open.",
          ),
        retry_ms: z
          .number()
          .int()
          .min(0)
          .default(1000)
          .describe(
            "The `retry:` line that starts each `/v1/streams` SSE response: how long (ms) an `EventSource` waits before reconnecting. 0 sends none.",
          ),
      })
      .strict()
      .prefault({})
      .describe("Server-Sent Events responses (docs/transports.md#heartbeats-and-proxies)."),
    auth: z
      .object({
        keys: z
          .array(ApiKeyConfigSchema)
          .max(10_000)
          .default([])
          .describe(
            "API keys. None: no authentication, allowed only on a loopback `host` unless `insecure`.",
          ),
        token_secrets: z
          .array(TokenSecretConfigSchema)
          .max(16)
          .default([])
          .describe(
            "Read-token signing secrets: the first signs, all verify, so a secret rotates without invalidating tokens. None: a random secret per process (tokens then end with the process and hold on no other node).",
          ),
        token_ttl_s: z
          .number()
          .int()
          .positive()
          .max(7 * 86400)
          .default(3600)
          .describe(
            "Lifetime (s) of the read token `POST /v1/streams` returns, and the longest `ttl_s` `POST /v1/streams/{id}/tokens` accepts.",
          ),
        default_limits: KeyLimitsSchema.default({}).describe(
          "Quotas of keys that set no `limits` of their own (a field left out: no limit).",
        ),
      })
      .strict()
      .prefault({})
      .describe("API keys, roles, tenants, quotas and read tokens (docs/security.md)."),
    cors: z
      .object({
        origins: z
          .array(z.string().min(1))
          .default([])
          .describe(
            'Origins allowed to call the API from a browser (`["*"]` for any); others get no CORS headers. Durable Streams (`/ds`) follows the same list; with no list it answers any origin (`*`), as the protocol expects.',
          ),
        credentials: z
          .boolean()
          .default(false)
          .describe(
            "Answer allowed origins with `Access-Control-Allow-Credentials: true` (cookies, HTTP auth): the origin is echoed, never `*`; needs an explicit `origins` list (refused at startup otherwise).",
          ),
      })
      .strict()
      .prefault({})
      .describe("Cross-origin browser access (docs/security.md#cors)."),
    insecure: z
      .boolean()
      .default(false)
      .describe(
        "Allow listening on a non-loopback `host` with no API keys (refused at startup otherwise). Also `--insecure`.",
      ),
    timeouts: z
      .object({
        headers_ms: z
          .number()
          .int()
          .positive()
          .default(10_000)
          .describe(
            "Time (ms) a client has to send its request headers (slowloris guard); past it the connection is closed. Not applied with `tls`.",
          ),
        request_ms: z
          .number()
          .int()
          .positive()
          .default(30_000)
          .describe(
            "Time (ms) a client has to send its whole request, headers and body; past it the request fails with `408`.",
          ),
        keep_alive_ms: z
          .number()
          .int()
          .positive()
          .default(5_000)
          .describe("An idle keep-alive connection is closed after this long (ms)."),
        check_interval_ms: z
          .number()
          .int()
          .positive()
          .default(1_000)
          .describe(
            "How often (ms) connections are checked against `headers_ms` and `request_ms`. Not applied with `tls`.",
          ),
      })
      .strict()
      .prefault({})
      .describe(
        "HTTP server timeouts against slow clients (docs/security.md#limits); streaming responses are bounded by `flow` instead.",
      ),
    durable_streams: z
      .object({
        enabled: z.boolean().default(true).describe("Serve the Durable Streams protocol under `/ds`."),
        long_poll_timeout_ms: movedTo("durable_streams.long_poll_timeout_ms", "long_poll.max_wait_ms"),
        max_append_bytes: z
          .number()
          .int()
          .positive()
          .default(16 * 1024 * 1024)
          .describe(
            "Largest body (bytes) one append (`POST`, or `PUT` with a body) may carry; larger → `413 body_too_large`.",
          ),
        max_read_bytes: z
          .number()
          .int()
          .positive()
          .default(1024 * 1024)
          .describe(
            "A catch-up `GET` answers with about this many bytes at most (always at least one record); the client follows `Stream-Next-Offset`.",
          ),
      })
      .strict()
      .prefault({})
      .describe("The Durable Streams protocol, mounted under `/ds` (docs/durable-streams.md)."),
    flow: z
      .object({
        flush_interval_ms: z
          .number()
          .int()
          .min(0)
          .max(10_000)
          .default(0)
          .describe(
            "At most one write per connection every this many ms; 0 = on the next turn of the event loop.",
          ),
        max_batch_bytes: z
          .number()
          .int()
          .min(256)
          .default(64 * 1024)
          .describe(
            "A connection with this many bytes pending is flushed on the next tick whatever its cadence; one write rarely carries much more.",
          ),
        adaptive: z
          .boolean()
          .default(true)
          .describe(
            "Widen the node-wide flush window (up to `latency_budget_ms`) while the event loop is late and busy, so a loaded node sends fewer, larger writes.",
          ),
        latency_budget_ms: z
          .number()
          .int()
          .min(1)
          .max(10_000)
          .default(25)
          .describe("The widest flush window (ms) adaptive coalescing may reach."),
        target_loop_delay_ms: z
          .number()
          .int()
          .min(1)
          .default(10)
          .describe(
            "Event-loop delay p99 (ms) above which, with the loop at least 60 % busy, the flush window widens.",
          ),
        high_water_bytes: z
          .number()
          .int()
          .min(1024)
          .default(64 * 1024)
          .describe(
            "A connection holding more unflushed bytes than this is not written to until it drains (what arrives meanwhile goes out as one batch); bounds memory per reader.",
          ),
        slow_reader_lag_bytes: z
          .number()
          .int()
          .min(0)
          .default(4 * 1024 * 1024)
          .describe(
            "A reader waiting for drain is disconnected with `slow_reader` (naming its offset) when its stream grows by more than this meanwhile; 0 = never.",
          ),
        slow_reader_ms: z
          .number()
          .int()
          .min(0)
          .default(30_000)
          .describe(
            "A reader whose connection has not drained for this long (ms) is disconnected with `slow_reader`; 0 = never.",
          ),
        window_records: z
          .number()
          .int()
          .min(1)
          .default(1024)
          .describe(
            "Records of each live stream kept in memory for its readers; a reader that falls behind the window catches up from the store a page at a time.",
          ),
      })
      .strict()
      .prefault({})
      .describe(
        "Write coalescing and slow readers, on every streaming door (docs/transports.md#flow-control).",
      ),
    compression: z
      .object({
        enabled: z
          .boolean()
          .default(true)
          .describe(
            "Compress `/v1/streams` SSE and NDJSON responses when the client's `Accept-Encoding` allows it.",
          ),
        encodings: z
          .array(z.enum(["gzip", "br"]))
          .default(["gzip", "br"])
          .describe("Encodings offered, most preferred first (the order breaks ties of equal `q`)."),
      })
      .strict()
      .prefault({})
      .describe(
        "gzip/brotli for `/v1/streams` SSE and NDJSON responses, flushed after every batch (docs/transports.md#compression-sse-and-ndjson).",
      ),
    ws: z
      .object({
        enabled: z.boolean().default(true).describe("Serve the WebSocket endpoint `/v1/ws`."),
        per_message_deflate: z
          .boolean()
          .default(false)
          .describe(
            "Negotiate permessage-deflate when the client offers it: smaller frames, for more CPU and memory per socket.",
          ),
        max_payload_bytes: z
          .number()
          .int()
          .min(1024)
          .default(1024 * 1024)
          .describe("Largest message (bytes) a client may send; a larger one closes the socket with 1009."),
        ping_interval_ms: z
          .number()
          .int()
          .min(100)
          .default(30_000)
          .describe(
            "Every socket is pinged this often (ms); one that did not answer the previous ping is terminated.",
          ),
        max_subscriptions: z
          .number()
          .int()
          .positive()
          .default(1000)
          .describe(
            "Streams one socket may follow at once; one more is refused with `too_many_subscriptions`.",
          ),
      })
      .strict()
      .prefault({})
      .describe("The WebSocket transport (docs/transports.md)."),
    long_poll: z
      .object({
        max_wait_ms: z
          .number()
          .int()
          .min(1)
          .max(300_000)
          .default(30_000)
          .describe(
            "How long (ms) a long-poll read waits for new data. `/v1/streams/{id}?live=long-poll` waits this long unless `timeout_ms` asks for less (more → `400 invalid_request`); a Durable Streams `live=long-poll` waits this long, then answers `204`.",
          ),
      })
      .strict()
      .prefault({})
      .describe(
        "Every long-poll read on this node, `/v1` and Durable Streams (docs/transports.md#long-poll).",
      ),
    grpc_port: z
      .number()
      .int()
      .min(0)
      .max(65535)
      .optional()
      .describe(
        "Also serve gRPC (`proto/sluice.proto`) on this port (0 picks a free one); off when absent. Also `--grpc-port`.",
      ),
    tls: z
      .object({
        cert: z.string().min(1).describe("PEM certificate file (its chain included)."),
        key: z.string().min(1).describe("PEM private key file of `cert`."),
      })
      .strict()
      .optional()
      .describe(
        "Serve HTTPS with HTTP/2 and HTTP/1.1 fallback (ALPN), and gRPC over TLS. Also `--tls-cert` and `--tls-key`.",
      ),
    log_level: z
      .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
      .default("info")
      .describe(
        "Least severe log level written (pino, JSON lines on stdout). Also `--log-level`, `SLUICE_LOG_LEVEL`.",
      ),
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
