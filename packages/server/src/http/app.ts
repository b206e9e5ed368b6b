import { ERROR_CODES, quoteInput } from "@sluice/protocol";
import type { FastifyInstance } from "fastify";
import { registerSecurity } from "../auth/security.js";
import { ConnectionGate } from "../core/limits.js";
import { registerDurableStreams } from "../durable-streams/routes.js";
import { buildFormats } from "../formats/table.js";
import { storeReady } from "../stores/open.js";
import { registerAiSdk } from "./ai-sdk.js";
import { registerAnthropic } from "./anthropic.js";
import { type AppDeps, type DoorDeps, errorBody, sendError, toSluiceError } from "./context.js";
import { createFastify } from "./fastify.js";
import { registerJsonBodyParser } from "./json-body.js";
import { LiveResponses } from "./live-response.js";
import { registerObservability } from "./observability.js";
import { registerOpenAI } from "./openai.js";
import { registerOpenAIResponses } from "./openai-responses.js";
import { StreamAccess } from "./stream-access.js";
import { registerStreams } from "./streams.js";
import { registerWeb } from "./web.js";
import { registerWebSocket } from "./ws.js";

export type { AppDeps } from "./context.js";
export { parseGenerationRequest, STREAM_ID_HEADER } from "./context.js";
export { streamIdInUrl } from "./fastify.js";
export { parseFlushMs, publicInfo, streamLinks } from "./streams.js";

export function buildApp(deps: AppDeps): FastifyInstance {
  const { config, store, hub, runner, routes, security } = deps;
  const connections = deps.connections ?? new ConnectionGate(config.limits.max_connections);
  const formats = deps.formats ?? buildFormats();
  const app = createFastify(config, deps.logger);
  // JSON only: a text/plain body is a client mistake worth a clear 415, not a string to validate.
  app.removeContentTypeParser("text/plain");
  registerJsonBodyParser(app, config.limits.json_max_depth);
  // The Durable Streams mount answers its own CORS (the protocol specifies it); auth still applies.
  registerSecurity(app, security, { skipPrefixes: ["/ds/"] });
  // The node-wide parts every door shares: the live-response path and the access layer.
  const live = new LiveResponses({ config, hub, runner, security, connections, metrics: deps.metrics });
  const access = new StreamAccess({ store, runner });
  const doors: DoorDeps = { ...deps, connections, formats, live, access };
  app.decorate("live", live);
  app.addHook("onClose", async () => live.stop());

  app.setErrorHandler((err: unknown, req, reply) => {
    const e = toSluiceError(err, config.limits.body_bytes);
    // An internal_error's own text (a store's exception, say) goes to the log, never the client.
    if (e.code === "internal_error") req.log.error({ err }, "internal error");
    return sendError(reply, e);
  });

  app.setNotFoundHandler((req, reply) => {
    reply
      .code(404)
      .send(errorBody("not_found", `no route ${req.method} ${quoteInput(req.url.split("?")[0], 100)}`));
  });

  registerDurableStreams(app, doors);
  registerObservability(app, deps);
  registerWeb(app);

  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    if (!storeReady(store)) return reply.code(503).send({ status: "not_ready", store: store.name });
    return { status: "ready", store: store.name };
  });

  app.get("/v1/models", async () => ({
    object: "list",
    data: routes.list().map((r) => ({ id: r.name, object: "model", created: 0, owned_by: r.owned_by })),
  }));

  registerStreams(app, doors);
  registerWebSocket(app, doors);
  registerOpenAI(app, doors);
  registerAiSdk(app, doors);
  registerAnthropic(app, doors);
  registerOpenAIResponses(app, doors);
  return app;
}

export const ERROR_CATALOGUE = ERROR_CODES;
