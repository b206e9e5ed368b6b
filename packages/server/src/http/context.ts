/**
 * What every HTTP door shares, kept out of app.ts so the doors (openai.ts, ai-sdk.ts, ws.ts,
 * durable-streams) and the app that mounts them do not import each other: the dependencies,
 * the stream id header, and turning whatever a handler threw into a stable error.
 */
import { isSluiceError, retryAfterSeconds, SluiceError } from "@sluice/protocol";
import type { FastifyReply } from "fastify";
import type { Logger } from "pino";
import type { Security } from "../auth/security.js";
import type { Config } from "../config.js";
import type { Hub } from "../core/hub.js";
import type { ConnectionGate } from "../core/limits.js";
import { publicError } from "../core/public-error.js";
import { type GenerationRequest, GenerationRequestSchema } from "../core/request.js";
import type { RouteTable } from "../core/routes.js";
import type { Runner } from "../core/runner.js";
import type { FormatTable } from "../formats/table.js";
import type { Metrics } from "../observability/metrics.js";
import type { Store } from "../stores/store.js";
import type { LiveResponses } from "./live-response.js";
import type { StreamAccess } from "./stream-access.js";

export interface AppDeps {
  config: Config;
  store: Store;
  hub: Hub;
  runner: Runner;
  routes: RouteTable;
  security: Security;
  logger: Logger | false;
  /** Prometheus metrics and the dashboard's live stats (off when absent). */
  metrics?: Metrics;
  /** Long-lived connection counter (limits.max_connections); one per node, shared with gRPC. */
  connections?: ConnectionGate;
  /** The formats streams can be read in (buildFormats() when absent). */
  formats?: FormatTable;
}

/** AppDeps once buildApp has filled in the node-wide parts every door uses. */
export interface DoorDeps extends AppDeps {
  connections: ConnectionGate;
  formats: FormatTable;
  live: LiveResponses;
  access: StreamAccess;
}

export const STREAM_ID_HEADER = "sluice-stream-id";

export function errorBody(code: SluiceError["code"], message: string) {
  return { error: { code, message } };
}

/** Sends a SluiceError as JSON; retryable refusals (429/503) carry Retry-After. */
export function sendError(reply: FastifyReply, err: SluiceError): FastifyReply {
  const retry = retryAfterSeconds(err);
  if (retry !== undefined) reply.header("retry-after", String(retry));
  return reply.code(err.status).type("application/json").send(err.toBody());
}

/** Turns whatever a handler threw (zod, Fastify body parsing, SluiceError) into a SluiceError. */
export function toSluiceError(err: unknown, bodyLimit: number): SluiceError {
  // An internal_error's own text (a store's exception, say) never reaches a client.
  if (isSluiceError(err)) return publicError(err);
  const e = err as { code?: string; statusCode?: number; message?: string; name?: string };
  if (e.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
    return new SluiceError("body_too_large", `the body is larger than ${bodyLimit} bytes`);
  }
  if (e.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
    return new SluiceError("unsupported_media_type", "send the body as application/json");
  }
  if (
    e.code === "FST_ERR_CTP_EMPTY_JSON_BODY" ||
    e.code === "FST_ERR_CTP_INVALID_JSON_BODY" ||
    e.name === "SyntaxError"
  ) {
    return new SluiceError("invalid_json", `the body is not valid JSON: ${e.message ?? ""}`);
  }
  if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
    return new SluiceError("invalid_request", e.message ?? "bad request");
  }
  return new SluiceError("internal_error", "internal error");
}

/** Zod issues → one message naming each bad field. */
export function describeIssues(issues: { path: PropertyKey[]; message: string }[]): string {
  return issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.map(String).join(".") : "body"}: ${i.message}`)
    .join("; ");
}

/** Validates a generation request body with zod; the message names each bad field. */
export function parseGenerationRequest(body: unknown): GenerationRequest {
  if (body === undefined || body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new SluiceError("invalid_request", "the body must be a JSON object");
  }
  const r = GenerationRequestSchema.safeParse(body);
  if (!r.success) throw new SluiceError("invalid_request", describeIssues(r.error.issues));
  return r.data;
}

export const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  "x-accel-buffering": "no",
};

/** The heartbeat of every SSE door: a comment line every client ignores. */
export const SSE_HEARTBEAT = ": keep-alive\n\n";

/**
 * `?compact=`: `true` (or `1`) folds the history a reader catches up on (core/compact.ts);
 * `false`, `0` or absent reads it record by record.
 */
export function parseCompact(raw: string | undefined): boolean {
  if (raw === undefined || raw === "false" || raw === "0") return false;
  if (raw === "true" || raw === "1") return true;
  throw new SluiceError("invalid_request", "compact must be true or false");
}
