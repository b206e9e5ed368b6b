import { SluiceError } from "@sluice/protocol";
import type { FastifyInstance } from "fastify";
import { applyCors, applyPreflight } from "../auth/cors.js";
import { handleAppend } from "./append.js";
import { handleCreate } from "./create.js";
import { handleDelete } from "./delete.js";
import { ALLOWED_HEADERS, EXPOSED_HEADERS, MOUNT } from "./protocol.js";
import { handleHead, handleRead } from "./read.js";
import { type DurableStreamsDeps, dsState } from "./state.js";

export type { DurableStreamsDeps } from "./state.js";

/**
 * The Durable Streams protocol under /ds: streams at /ds/v1/stream/{path}, kept in Sluice's Store
 * (one record per append; DS state in stream metadata), live reads on the shared live-response
 * path. Generation streams are readable here too, read-only, in JSON mode. One handler per verb
 * (create.ts, append.ts, read.ts, delete.ts) over one shared state (state.ts); this file mounts
 * them with the protocol's CORS and error framing.
 *
 * Access control is Sluice's (docs/security.md): every route checks the caller's role, and with
 * API keys a tenant's streams live in its own namespace (tenantStreamId), so another tenant's
 * stream at the same path is simply a different stream; a read token reads its own stream only.
 */
export function registerDurableStreams(app: FastifyInstance, deps: DurableStreamsDeps): void {
  const opts = deps.config.durable_streams;
  if (!opts.enabled) return;
  const st = dsState(deps);

  // ── the plugin ───────────────────────────────────────────────────────────
  app.register(
    async (ds) => {
      ds.removeAllContentTypeParsers();
      ds.addContentTypeParser(
        "*",
        { parseAs: "buffer", bodyLimit: opts.max_append_bytes },
        (_req, body, done) => done(null, body),
      );

      // CORS per `cors.origins` (the same policy as /v1); with none configured, `*` as the
      // protocol's own servers answer (a key is still needed where keys are configured).
      const cors = deps.security.cors;
      ds.addHook("onRequest", async (req, reply) => {
        reply.header("x-content-type-options", "nosniff");
        reply.header("cross-origin-resource-policy", "cross-origin");
        applyCors(cors, req, reply, { expose: EXPOSED_HEADERS, anyWhenUnset: true });
      });

      ds.setErrorHandler((err: unknown, req, reply) => {
        // A 401 from the security hook comes before this plugin's onRequest: browsers must read it too.
        if (!reply.hasHeader("x-content-type-options")) {
          reply.header("x-content-type-options", "nosniff");
          applyCors(cors, req, reply, { expose: EXPOSED_HEADERS, anyWhenUnset: true });
        }
        const extra = (err as { dsHeaders?: Record<string, string> }).dsHeaders;
        if (extra) for (const [k, v] of Object.entries(extra)) reply.header(k, v);
        if ((err as { code?: string }).code === "FST_ERR_CTP_BODY_TOO_LARGE") {
          throw new SluiceError(
            "body_too_large",
            `an append carries at most ${opts.max_append_bytes} bytes (durable_streams.max_append_bytes)`,
          );
        }
        // Everything else is the app's error handling (catalogue codes, JSON bodies).
        throw err;
      });

      ds.options("/*", async (req, reply) => {
        // A disallowed origin gets a bare 204: without CORS headers the browser refuses.
        if (reply.hasHeader("access-control-allow-origin")) {
          applyPreflight(req, reply, {
            methods: "GET, HEAD, POST, PUT, DELETE, OPTIONS",
            baseHeaders: ALLOWED_HEADERS,
            maxAgeS: 86400,
          });
        }
        return reply.code(204).send();
      });
      ds.put("/v1/stream/*", (req, reply) => handleCreate(st, req, reply));
      ds.post("/v1/stream/*", (req, reply) => handleAppend(st, req, reply));
      ds.route({ method: "HEAD", url: "/v1/stream/*", handler: (req, reply) => handleHead(st, req, reply) });
      ds.delete("/v1/stream/*", (req, reply) => handleDelete(st, req, reply));
      ds.route({
        method: "GET",
        url: "/v1/stream/*",
        exposeHeadRoute: false,
        handler: (req, reply) => handleRead(st, req, reply),
      });
    },
    { prefix: MOUNT },
  );
}
