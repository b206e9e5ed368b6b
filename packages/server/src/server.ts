import type { FastifyInstance } from "fastify";
import pino, { type Logger } from "pino";
import { buildSecurity, checkBinding, redactUrl, type Security } from "./auth/security.js";
import type { Config, RouteConfig } from "./config.js";
import { MemoryBudget, memoryLimits } from "./core/budget.js";
import { type Clock, realClock } from "./core/clock.js";
import { type Coordinator, LocalCoordinator } from "./core/coordinator.js";
import { FlowScheduler } from "./core/flow.js";
import { Hub } from "./core/hub.js";
import { ConnectionGate } from "./core/limits.js";
import { DEFAULT_RETRY, type Route, RouteTable } from "./core/routes.js";
import { Runner } from "./core/runner.js";
import { type GrpcServer, startGrpc } from "./grpc/server.js";
import { buildApp } from "./http/app.js";
import { trackConnections } from "./http/shutdown.js";
import { Metrics } from "./observability/metrics.js";
import { ANTHROPIC_BASE_URL, AnthropicProvider } from "./providers/anthropic.js";
import { DemoProvider } from "./providers/demo/provider.js";
import { listUpstreamModels, OpenAICompatibleProvider } from "./providers/openai-compatible.js";
import { openStore } from "./stores/open.js";
import type { Store } from "./stores/store.js";

export interface SluiceServer {
  config: Config;
  app: FastifyInstance;
  store: Store;
  hub: Hub;
  runner: Runner;
  routes: RouteTable;
  security: Security;
  logger: Logger;
  metrics: Metrics;
  flow: FlowScheduler;
  connections: ConnectionGate;
  /** The gRPC server once listening (config.grpc_port set). */
  grpc: GrpcServer | undefined;
  /** Starts listening; resolves to the base URL (e.g. http://127.0.0.1:8080). */
  listen(): Promise<string>;
  /** Stops accepting, ends running generations as `interrupted` after `graceMs`, closes the store. */
  close(graceMs?: number): Promise<void>;
}

export interface CreateOptions {
  clock?: Clock;
  logger?: Logger;
  store?: Store;
  /** With `store`: its ownership coordinator (a LocalCoordinator when absent). */
  coordinator?: Coordinator;
  env?: NodeJS.ProcessEnv;
}

/** The models an OPENAI_API_KEY in the environment adds (zero-config convenience). */
const OPENAI_MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o4-mini"];
/** The models an ANTHROPIC_API_KEY adds. */
const ANTHROPIC_MODELS = [
  "claude-opus-4-1",
  "claude-sonnet-4-5",
  "claude-haiku-4-5",
  "claude-3-5-haiku-latest",
];

export async function buildRoutes(
  config: Config,
  env: NodeJS.ProcessEnv,
  logger: Logger,
): Promise<RouteTable> {
  const routes = new RouteTable();
  const demo = new DemoProvider();
  // Timeouts and the event bound of every upstream provider: defaults, then the route's own.
  const defaults = config.upstream_defaults;
  const upstreamOpts = (rc?: RouteConfig) => ({
    timeouts: { ...defaults.timeouts, ...rc?.timeouts },
    maxEventChars: rc?.max_event_chars ?? defaults.max_event_chars,
  });
  routes.add({
    name: "demo",
    provider: demo,
    upstream_model: "demo",
    fallbacks: [],
    owned_by: "sluice (simulator)",
  });

  if (env.OPENAI_API_KEY) {
    const openai = new OpenAICompatibleProvider({
      name: "openai",
      baseUrl: env.OPENAI_BASE_URL ?? "https://api.openai.com/v1",
      apiKey: env.OPENAI_API_KEY,
      ...upstreamOpts(),
    });
    for (const m of OPENAI_MODELS)
      routes.add({ name: m, provider: openai, upstream_model: m, fallbacks: [], owned_by: "openai" });
  }

  if (env.ANTHROPIC_API_KEY) {
    const anthropic = new AnthropicProvider({
      name: "anthropic",
      baseUrl: env.ANTHROPIC_BASE_URL ?? ANTHROPIC_BASE_URL,
      apiKey: env.ANTHROPIC_API_KEY,
      ...upstreamOpts(),
    });
    for (const m of ANTHROPIC_MODELS)
      routes.add({ name: m, provider: anthropic, upstream_model: m, fallbacks: [], owned_by: "anthropic" });
  }

  for (const base of config.upstreams) {
    const provider = new OpenAICompatibleProvider({
      name: `upstream ${base}`,
      baseUrl: base,
      ...upstreamOpts(),
    });
    try {
      const models = await listUpstreamModels(base, undefined, AbortSignal.timeout(3000));
      for (const m of models) {
        if (!routes.has(m))
          routes.add({ name: m, provider, upstream_model: m, fallbacks: [], owned_by: base });
      }
      logger.info({ upstream: base, models }, "upstream models added");
    } catch (err) {
      logger.warn(
        { upstream: base, err: (err as Error).message },
        "could not list upstream models; unknown model names will be sent to it",
      );
    }
    // Model names nobody else serves go to the first upstream listed: it may load models later.
    if (base === config.upstreams[0]) routes.setCatchAll({ provider, fallbacks: [], owned_by: base });
  }

  for (const [name, rc] of Object.entries(config.routes)) {
    const extra: Partial<Route> = {};
    if (rc.on_disconnect) extra.on_disconnect = rc.on_disconnect;
    if (rc.retry) extra.retry = { ...DEFAULT_RETRY, ...rc.retry };
    if (rc.provider === "demo") {
      routes.add({
        name,
        provider: demo,
        upstream_model: "demo",
        fallbacks: rc.fallbacks ?? [],
        owned_by: "sluice (simulator)",
        ...extra,
      });
      continue;
    }
    const apiKey = rc.api_key ?? (rc.api_key_env ? env[rc.api_key_env] : undefined);
    const provider =
      rc.provider === "anthropic"
        ? new AnthropicProvider({
            name,
            baseUrl: rc.base_url ?? ANTHROPIC_BASE_URL,
            ...(apiKey ? { apiKey } : {}),
            ...(rc.anthropic_version ? { version: rc.anthropic_version } : {}),
            ...(rc.headers ? { headers: rc.headers } : {}),
            ...upstreamOpts(rc),
          })
        : new OpenAICompatibleProvider({
            name,
            baseUrl: rc.base_url as string,
            ...(apiKey ? { apiKey } : {}),
            ...(rc.headers ? { headers: rc.headers } : {}),
            ...upstreamOpts(rc),
          });
    routes.add({
      name,
      provider,
      upstream_model: rc.model ?? name,
      fallbacks: rc.fallbacks ?? [],
      owned_by: rc.base_url ?? (rc.provider === "anthropic" ? "anthropic" : "upstream"),
      ...extra,
    });
  }
  return routes;
}

/** The server's logger: credentials in headers, bodies and query strings are redacted. */
export function createLogger(level: Config["log_level"], destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    redact: {
      paths: [
        "req.headers.authorization",
        'req.headers["x-api-key"]',
        "*.api_key",
        "*.apiKey",
        "*.key",
        "*.secret",
        "*.token",
        "*.read_token",
      ],
      censor: "[REDACTED]",
    },
    serializers: {
      req: (req: { method?: string; url?: string; id?: string }) => ({
        id: req.id,
        method: req.method,
        url: req.url ? redactUrl(req.url) : undefined,
      }),
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

export async function createSluice(config: Config, opts: CreateOptions = {}): Promise<SluiceServer> {
  const logger = opts.logger ?? createLogger(config.log_level);
  const clock = opts.clock ?? realClock;
  const memory = memoryLimits(config.limits);
  const opened = opts.store
    ? { store: opts.store, coordinator: opts.coordinator ?? new LocalCoordinator(opts.store) }
    : await openStore(config.store, {
        clock,
        maxStreams: config.limits.max_streams,
        memoryStoreBytes: memory.memoryStoreBytes,
        limits: {
          maxRecordsPerStream: config.limits.max_events_per_stream,
          maxBytesPerStream: config.limits.max_bytes_per_stream,
          defaultTtlS: config.limits.stream_ttl_s,
        },
        redisPrefix: config.cluster.redis_prefix,
        outageMs: config.cluster.outage_ms,
        leaseTtlMs: config.cluster.lease_ttl_ms,
        leaseRenewMs: config.cluster.lease_renew_ms,
      });
  const { coordinator } = opened;
  const metrics = new Metrics({ logger });
  const store = metrics.instrumentStore(opened.store);
  const routes = await buildRoutes(config, opts.env ?? process.env, logger);
  const runner = new Runner({
    store,
    routes,
    clock,
    coordinator,
    maxBufferedEvents: config.cluster.max_buffered_events,
    budget: new MemoryBudget(memory),
    recordsInMemory: opened.store.name === "memory",
    onError: (err, streamId) => logger.error({ err, stream: streamId }, "generation failed unexpectedly"),
    observer: metrics,
  });
  // Generations left running by a crash (one node) or by a dead node (Redis) end as interrupted.
  await runner
    .startCoordination()
    .catch((err) =>
      logger.warn({ err: (err as Error).message }, "could not check for interrupted generations at startup"),
    );
  const flow = new FlowScheduler({
    flushIntervalMs: config.flow.flush_interval_ms,
    maxBatchBytes: config.flow.max_batch_bytes,
    adaptive: config.flow.adaptive,
    latencyBudgetMs: config.flow.latency_budget_ms,
    targetLoopDelayMs: config.flow.target_loop_delay_ms,
  });
  const hub = new Hub(store, {
    flow,
    windowSize: config.flow.window_records,
    highWaterBytes: config.flow.high_water_bytes,
    slowReaderLagBytes: config.flow.slow_reader_lag_bytes,
    slowReaderMs: config.flow.slow_reader_ms,
    maxReadersPerStream: config.limits.max_readers_per_stream,
  });
  const connections = new ConnectionGate(config.limits.max_connections);
  const security = buildSecurity(
    config,
    opts.env ?? process.env,
    "quotas" in opened ? opened.quotas : undefined,
  );
  checkBinding(config, security);
  metrics.attach({ hub, runner });
  const app = buildApp({ config, store, hub, runner, routes, security, logger, metrics, connections });
  const tracker = trackConnections(app.server);

  const server: SluiceServer = {
    config,
    app,
    store,
    hub,
    runner,
    routes,
    security,
    logger,
    metrics,
    flow,
    connections,
    grpc: undefined,
    async listen() {
      const address = await app.listen({ host: config.host, port: config.port, backlog: LISTEN_BACKLOG });
      if (config.grpc_port !== undefined && !server.grpc) {
        server.grpc = await startGrpc({ config, store, hub, runner, connections, security, logger });
      }
      return address.replace("[::1]", "127.0.0.1");
    },
    async close(graceMs = 0) {
      // Stop accepting connections now; running generations get up to graceMs to finish
      // (readers attached to them keep receiving), then the rest end as interrupted.
      // (app.close() first closes idle WebSockets and marks the others to close when their
      // subscriptions end; see http/ws.ts.)
      const closing = app.close();
      tracker.goAway();
      await runner.shutdown(graceMs);
      // Streaming responses and WebSocket subscribers get a moment to deliver those
      // generations' terminal events; the rest (readers of streams that end elsewhere) are
      // ended (WebSockets: a `closing` message with each subscription's last offset) and resume
      // on another node or after the restart.
      const settle = Math.min(1000, Math.max(100, graceMs));
      await Promise.all([app.live.shutdown(settle), app.closeWebSockets?.(settle)]);
      // Connections whose responses ended after close() began are idle keep-alives now: close
      // them as they go idle; stuck sockets of any protocol (HTTP/1.1, HTTP/2 sessions,
      // upgraded sockets) are destroyed at the bound so they never hold the exit.
      const http1 = app.server as { closeIdleConnections?: () => void };
      const idle = setInterval(() => http1.closeIdleConnections?.(), 25);
      const forced = setTimeout(() => tracker.destroyAll(), 2000);
      forced.unref();
      await closing;
      clearInterval(idle);
      clearTimeout(forced);
      await server.grpc?.close();
      // Pooled and spare upstream connections (no generation runs any more).
      await Promise.all([...routes.providers()].map((p) => p.close?.().catch(() => {})));
      hub.stop();
      flow.stop();
      await security.quotas.close?.();
      await coordinator.close();
      await store.close();
      metrics.close();
    },
  };
  return server;
}

/**
 * Connections the kernel holds for accept (capped by net.core.somaxconn). Node's default, 511,
 * overflows when thousands of readers arrive at once (a reconnect wave after a deploy, a fan-out,
 * a busy worker accepting for itself): the client's SYN is then dropped and retried a second or
 * more later. Queued connections cost the kernel, not this process.
 */
const LISTEN_BACKLOG = 4096;
