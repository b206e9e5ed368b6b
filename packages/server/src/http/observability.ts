import type { FastifyInstance, FastifyRequest } from "fastify";
import { requireAction } from "../auth/principal.js";
import type { Metrics } from "../observability/metrics.js";
import type { Store } from "../stores/store.js";

/**
 * `GET /metrics` (Prometheus text), `GET /v1/stats` (the dashboard's live JSON), and the
 * per-request bits of observability: a stream id on every log line of a request about a
 * stream, open streaming connections by transport, and resumes.
 */
export function registerObservability(app: FastifyInstance, deps: { metrics?: Metrics; store: Store }): void {
  const metrics = deps.metrics;

  // (The stream id on a request's log lines is bound when its logger is made: app.ts. Open
  // streaming connections are counted where they are held: http/live-response.ts.)
  app.addHook("onRequest", async (req) => {
    if (!metrics || req.method !== "GET") return;
    const transport = streamingTransport(req);
    if (transport && isResume(req)) metrics.resumes.labels(transport).inc();
  });

  app.addHook("onResponse", async (req, reply) => {
    const stream = reply.getHeader("sluice-stream-id");
    req.log.debug(
      {
        method: req.method,
        // The path only: query strings may carry credentials (?token=…).
        url: req.url.split("?")[0],
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
        ...(stream && !(req.params as { id?: string } | undefined)?.id ? { stream } : {}),
      },
      "request",
    );
  });

  // Operator endpoints: with API keys configured they need an admin key.
  app.get("/metrics", async (req, reply) => {
    requireAction(req.principal, "admin");
    if (!metrics) return reply.code(404).send({ error: { code: "not_found", message: "metrics are off" } });
    const body = metrics.scrape ? await metrics.scrape() : await metrics.registry.metrics();
    return reply.type(metrics.registry.contentType).send(body);
  });

  app.get("/v1/stats", async (req, reply) => {
    requireAction(req.principal, "admin");
    if (!metrics) return reply.code(404).send({ error: { code: "not_found", message: "metrics are off" } });
    reply.header("cache-control", "no-store");
    const stats = await metrics.stats();
    const tenant = req.principal.tenant;
    if (tenant === undefined) return stats;
    // A tenant's admin sees node-wide totals, but only its own tenant's streams by id.
    const tenants = new Map<string, string | undefined>();
    const mine = async (id: string) => {
      if (!tenants.has(id)) tenants.set(id, (await deps.store.info(id))?.tenant);
      return tenants.get(id) === tenant;
    };
    const keep = async <T>(items: T[], idOf: (x: T) => string) => {
      const out: T[] = [];
      for (const x of items) if (await mine(idOf(x))) out.push(x);
      return out;
    };
    return {
      ...stats,
      live: await keep(stats.live, (x) => x.id),
      recent: await keep(stats.recent, (x) => x.id),
      errors: await keep(stats.errors, (x) => x.stream),
    };
  });
}

function streamingTransport(req: FastifyRequest): "sse" | "ndjson" | undefined {
  const url = req.url;
  if (!url.startsWith("/v1/streams")) return undefined;
  const accept = String(req.headers.accept ?? "");
  if (accept.includes("text/event-stream")) return "sse";
  if (accept.includes("application/x-ndjson")) return "ndjson";
  return undefined;
}

function isResume(req: FastifyRequest): boolean {
  const last = req.headers["last-event-id"];
  if (typeof last === "string" && /^\d+$/.test(last) && Number(last) > 0) return true;
  const offset = (req.query as { offset?: string } | undefined)?.offset;
  return typeof offset === "string" && /^\d+$/.test(offset) && Number(offset) > 0;
}
