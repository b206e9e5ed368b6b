import type { FastifyRequest } from "fastify";
import type { ApiKey } from "../auth/keys.js";
import { type Principal, requireAction } from "../auth/principal.js";
import type { Security } from "../auth/security.js";
import type { GenerationRequest } from "../core/request.js";
import type { Runner } from "../core/runner.js";
import type { StreamInfo } from "../stores/store.js";

/**
 * Starts a generation on behalf of the request's principal, for every route that starts one
 * (`/v1/streams`, `/v1/chat/completions`, `/v1/ai-sdk/chat`, WebSocket `start`): the role must
 * allow it, the key's quotas are reserved (and released with the generation's output tokens
 * when it ends), and the stream belongs to the principal's tenant.
 */
export async function startFor(
  req: FastifyRequest,
  deps: { runner: Runner; security: Security },
  request: GenerationRequest,
  metadata?: Record<string, unknown>,
): Promise<StreamInfo> {
  return startAs(req.principal, req.apiKey, deps, request, metadata);
}

/** startFor for transports without a FastifyRequest (WebSocket messages, gRPC calls). */
export async function startAs(
  principal: Principal,
  key: ApiKey | undefined,
  deps: { runner: Runner; security: Security },
  request: GenerationRequest,
  metadata?: Record<string, unknown>,
): Promise<StreamInfo> {
  requireAction(principal, "start");
  const release = key ? await deps.security.quotas.beginGeneration(key.id, key.limits) : undefined;
  try {
    return await deps.runner.start(request, {
      ...(principal.tenant !== undefined ? { tenant: principal.tenant } : {}),
      ...(release ? { onEnd: release } : {}),
      ...(metadata ? { metadata } : {}),
    });
  } catch (err) {
    release?.(0);
    throw err;
  }
}

/**
 * Reserves a streaming connection against the key's `connections` limit (across nodes on the
 * Redis store); resolves to its release. For transports without a FastifyRequest.
 */
export async function holdConnectionAs(key: ApiKey | undefined, security: Security): Promise<() => void> {
  return key ? security.quotas.openConnection(key.id, key.limits) : () => {};
}
