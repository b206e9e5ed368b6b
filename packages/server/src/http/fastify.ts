/**
 * The Fastify instance a node serves with: logging (one child logger per request, the stream id
 * bound), errors before routing in our JSON shape, every server timeout set (slowloris), and
 * TLS with HTTP/2 when a certificate is configured.
 */
import { readFileSync } from "node:fs";
import { createServer, type RequestListener } from "node:http";
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  LogController,
} from "fastify";
import type { Logger } from "pino";
import { type Config, ConfigError } from "../config.js";
import { errorBody } from "./context.js";

export function createFastify(config: Config, logger: Logger | false): FastifyInstance {
  return (Fastify as unknown as (opts: Record<string, unknown>) => FastifyInstance)({
    ...(logger === false ? { logger: false } : { loggerInstance: logger as unknown as FastifyBaseLogger }),
    bodyLimit: config.limits.body_bytes,
    // Requests are logged by our own hook (path only: query strings may carry tokens).
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { maxParamLength: 512 },
    // One child logger per request, carrying the stream id for requests about a stream (made
    // here rather than by a second child in a hook: an open SSE reader holds its request's
    // logger for as long as it is connected, and each pino child costs ~0.5 KB).
    childLoggerFactory: (
      logger: FastifyBaseLogger,
      bindings: Record<string, unknown>,
      opts: Record<string, unknown>,
      raw: { url?: string },
    ) => {
      const stream = streamIdInUrl(raw.url);
      return logger.child(stream === undefined ? bindings : { ...bindings, stream }, opts);
    },
    // Errors raised before routing (a path parameter past maxParamLength, a bad URL) get our
    // JSON error shape too, and never echo the offending input back.
    frameworkErrors: (error: Error, _req: unknown, rawReply: unknown) => {
      const reply = rawReply as unknown as FastifyReply;
      const code = (error as { code?: string }).code ?? "";
      const message =
        code === "FST_ERR_MAX_PARAM_LENGTH"
          ? "a path parameter is too long"
          : "the request URL or path is malformed";
      reply.code(400).type("application/json").send(errorBody("invalid_request", message));
    },
    return503OnClosing: true,
    // With a certificate: HTTP/2 (many SSE streams on one connection), HTTP/1.1 fallback.
    ...(config.tls
      ? {
          http2: true,
          https: {
            allowHTTP1: true,
            cert: readPem(config.tls.cert, "tls.cert"),
            key: readPem(config.tls.key, "tls.key"),
          },
          // (Fastify applies these to the TLS server it creates.)
          requestTimeout: config.timeouts.request_ms,
          keepAliveTimeout: config.timeouts.keep_alive_ms,
        }
      : {
          // Our own server so every timeout is set: slow senders of headers or bodies (slowloris)
          // are cut at their bound, and idle keep-alive connections do not pile up.
          serverFactory: (handler: RequestListener) => {
            const t = config.timeouts;
            const server = createServer(
              {
                headersTimeout: t.headers_ms,
                requestTimeout: t.request_ms,
                keepAliveTimeout: t.keep_alive_ms,
                connectionsCheckingInterval: t.check_interval_ms,
              },
              handler,
            );
            return server;
          },
        }),
  });
}

/** The `:id` of a `/v1/streams/:id[/…]` URL (decoded), for log lines; undefined otherwise. */
export function streamIdInUrl(url: string | undefined): string | undefined {
  if (url === undefined || !url.startsWith("/v1/streams/")) return undefined;
  const rest = url.slice(12);
  let end = rest.length;
  for (let i = 0; i < rest.length; i++) {
    const c = rest.charCodeAt(i);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) {
      end = i;
      break;
    }
  }
  if (end === 0 || end > 512) return undefined;
  const raw = rest.slice(0, end);
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new ConfigError(`cannot read ${what} ${file}: ${(err as Error).message}`);
  }
}
