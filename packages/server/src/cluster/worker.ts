import cluster from "node:cluster";
import type { FastifyInstance } from "fastify";
import { AggregatorRegistry } from "prom-client";
import type { Config } from "../config.js";
import { realClock } from "../core/clock.js";
import type { Coordinator } from "../core/coordinator.js";
import type { Metrics } from "../observability/metrics.js";
import type { Store } from "../stores/store.js";
import { IpcCoordinator, PrimaryChannel } from "./ipc-coordinator.js";
import { WORKER_SCRATCH_ENV, WORKER_STORE_ENV, workerHeader } from "./messages.js";
import { WorkerStore } from "./worker-store.js";

export interface WorkerParts {
  channel: PrimaryChannel;
  /** The shared SQLite store and its coordinator; absent on Redis (each worker is a node of the cluster). */
  store?: Store;
  coordinator?: Coordinator;
}

/** Whether this process is a worker forked by `sluice serve --workers N`. */
export function isWorker(): boolean {
  return cluster.isWorker;
}

/** A worker's store (the file the primary named) and its IPC coordinator. */
export function workerParts(config: Config, env: NodeJS.ProcessEnv = process.env): WorkerParts {
  const channel = new PrimaryChannel();
  const spec = env[WORKER_STORE_ENV];
  if (!spec?.startsWith("sqlite:")) return { channel };
  const store = new WorkerStore({
    path: spec.slice("sqlite:".length),
    limits: {
      maxRecordsPerStream: config.limits.max_events_per_stream,
      maxBytesPerStream: config.limits.max_bytes_per_stream,
      defaultTtlS: config.limits.stream_ttl_s,
    },
    clock: realClock,
    durable: env[WORKER_SCRATCH_ENV] !== "1",
    publish: (changes) => channel.send({ sluice: "notices", changes }),
    follow: (id, on) => {
      if (!on) return channel.send({ sluice: "unfollow", id });
      return channel.request({ sluice: "request", op: "follow", id }).then(() => {});
    },
  });
  channel.onNotices = (changes) => store.onRemote(changes);
  channel.onInterest = (id, on) => store.setInterest(id, on);
  return {
    channel,
    store,
    coordinator: new IpcCoordinator(channel, store, (ids) => store.setInterests(ids)),
  };
}

/** Adds `Sluice-Worker: <pid>` to every HTTP response when SLUICE_WORKER_HEADER=1. */
export function addWorkerHeader(app: FastifyInstance, env: NodeJS.ProcessEnv = process.env): void {
  const value = workerHeader(env);
  if (value === undefined) return;
  app.addHook("onRequest", (_req, reply, done) => {
    reply.raw.setHeader("sluice-worker", value);
    done();
  });
}

/**
 * `GET /metrics` on any worker answers for all of them: the primary gathers every worker's
 * registry (prom-client's AggregatorRegistry: counters and histograms summed, gauges summed
 * unless the metric says otherwise) and the worker serves that text.
 */
export function aggregateMetrics(metrics: Metrics, channel: PrimaryChannel): void {
  // Constructing one is what makes prom-client answer the primary's requests in a worker.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([metrics.registry]);
  metrics.scrape = () => channel.request<string>({ sluice: "request", op: "metrics" });
}
