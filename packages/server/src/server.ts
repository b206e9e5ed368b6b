import type { FastifyInstance } from "fastify";
import pino, { type Logger } from "pino";
import type { Config } from "./config.js";
import { type Clock, realClock } from "./core/clock.js";
import { FlowScheduler } from "./core/flow.js";
import { Hub } from "./core/hub.js";
import { ConnectionGate } from "./core/limits.js";
import { RouteTable } from "./core/routes.js";
import { Runner } from "./core/runner.js";
import { type GrpcServer, startGrpc } from "./grpc/server.js";
import { buildApp } from "./http/app.js";
import { DemoProvider } from "./providers/demo/provider.js";
import { listUpstreamModels, OpenAICompatibleProvider } from "./providers/openai-compatible.js";
import { MemoryStore } from "./stores/memory.js";
import type { Store } from "./stores/store.js";

export interface SluiceServer {
  config: Config;
  app: FastifyInstance;
  store: Store;
  hub: Hub;
  runner: Runner;
  routes: RouteTable;
  logger: Logger;
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
  env?: NodeJS.ProcessEnv;
}

/** The models an OPENAI_API_KEY in the environment adds (zero-config convenience). */
const OPENAI_MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o4-mini"];

export async function buildRoutes(
  config: Config,
  env: NodeJS.ProcessEnv,
  logger: Logger,
): Promise<RouteTable> {
  const routes = new RouteTable();
  const demo = new DemoProvider();
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
    });
    for (const m of OPENAI_MODELS)
      routes.add({ name: m, provider: openai, upstream_model: m, fallbacks: [], owned_by: "openai" });
  }

  for (const base of config.upstreams) {
    const provider = new OpenAICompatibleProvider({ name: `upstream ${base}`, baseUrl: base });
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
    // Model names nobody else serves go to the (first) upstream: it may load models later.
    routes.setCatchAll({ provider, fallbacks: [], owned_by: base });
  }

  for (const [name, rc] of Object.entries(config.routes)) {
    if (rc.provider === "demo") {
      routes.add({
        name,
        provider: demo,
        upstream_model: "demo",
        fallbacks: rc.fallbacks ?? [],
        owned_by: "sluice (simulator)",
      });
      continue;
    }
    const apiKey = rc.api_key ?? (rc.api_key_env ? env[rc.api_key_env] : undefined);
    const provider = new OpenAICompatibleProvider({
      name,
      baseUrl: rc.base_url as string,
      ...(apiKey ? { apiKey } : {}),
      ...(rc.headers ? { headers: rc.headers } : {}),
    });
    routes.add({
      name,
      provider,
      upstream_model: rc.model ?? name,
      fallbacks: rc.fallbacks ?? [],
      owned_by: rc.base_url as string,
    });
  }
  return routes;
}

export async function createSluice(config: Config, opts: CreateOptions = {}): Promise<SluiceServer> {
  const logger =
    opts.logger ??
    pino({
      level: config.log_level,
      redact: ["req.headers.authorization", "*.api_key", "*.apiKey"],
    });
  const clock = opts.clock ?? realClock;
  const store =
    opts.store ??
    new MemoryStore({
      clock,
      maxStreams: config.limits.max_streams,
      limits: {
        maxRecordsPerStream: config.limits.max_events_per_stream,
        maxBytesPerStream: config.limits.max_bytes_per_stream,
        defaultTtlS: config.limits.stream_ttl_s,
      },
    });
  const routes = await buildRoutes(config, opts.env ?? process.env, logger);
  const runner = new Runner({
    store,
    routes,
    clock,
    onError: (err, streamId) => logger.error({ err, stream: streamId }, "generation failed unexpectedly"),
  });
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
  const app = buildApp({ config, store, hub, runner, routes, logger, connections });

  const server: SluiceServer = {
    config,
    app,
    store,
    hub,
    runner,
    routes,
    logger,
    flow,
    connections,
    grpc: undefined,
    async listen() {
      const address = await app.listen({ host: config.host, port: config.port });
      if (config.grpc_port !== undefined && !server.grpc) {
        server.grpc = await startGrpc({ config, store, hub, runner, connections, logger });
      }
      return address.replace("[::1]", "127.0.0.1");
    },
    async close(graceMs = 0) {
      await runner.shutdown(graceMs);
      await server.grpc?.close();
      await app.close();
      hub.stop();
      flow.stop();
      await store.close();
    },
  };
  return server;
}
