import { readFileSync } from "node:fs";
import { posix } from "node:path";
import { SluiceError } from "@sluice/protocol";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Config } from "../config.js";
import { ConfigError } from "../config.js";
import { applyCors, applyPreflight, type CorsPolicy } from "./cors.js";
import { type ApiKey, type KeyLimits, KeyRing, sha256 } from "./keys.js";
import { OPEN_PRINCIPAL, type Principal } from "./principal.js";
import { type KeyQuotas, Quotas } from "./quotas.js";
import { TokenIssuer } from "./tokens.js";

declare module "fastify" {
  interface FastifyRequest {
    principal: Principal;
    apiKey: ApiKey | undefined;
  }
}

export interface Security {
  /** False when no API keys are configured: open mode, loopback only. */
  enabled: boolean;
  keys: KeyRing;
  tokens: TokenIssuer;
  /** Per-key quotas: this node's (memory, SQLite) or every node's (Redis). */
  quotas: KeyQuotas;
  defaultLimits: KeyLimits;
  /** Who may call from a browser (`cors.origins`, `cors.credentials`); /v1 and /ds share it. */
  cors: CorsPolicy;
}

function readSecret(what: string, env: NodeJS.ProcessEnv, envName?: string, file?: string): string {
  if (envName !== undefined) {
    const v = env[envName];
    if (!v) throw new ConfigError(`${what}: environment variable ${envName} is not set`);
    return v;
  }
  if (file !== undefined) {
    try {
      const v = readFileSync(file, "utf8").trim();
      if (!v) throw new ConfigError(`${what}: ${file} is empty`);
      return v;
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError(`${what}: cannot read ${file}: ${(err as Error).message}`);
    }
  }
  throw new ConfigError(`${what}: no secret given`);
}

/** Loads keys and token secrets (from env or files; never logged) into their in-memory forms. */
export function buildSecurity(config: Config, env: NodeJS.ProcessEnv, quotas?: KeyQuotas): Security {
  const keys: ApiKey[] = config.auth.keys.map((k) => {
    const hash =
      k.key_sha256 !== undefined
        ? Buffer.from(k.key_sha256, "hex")
        : sha256(readSecret(`auth key ${k.id}`, env, k.key_env, k.key_file));
    return {
      id: k.id,
      hash,
      role: k.role,
      tenant: k.tenant,
      limits: { ...config.auth.default_limits, ...(k.limits ?? {}) },
    };
  });
  const ids = new Set<string>();
  for (const k of keys) {
    if (ids.has(k.id)) throw new ConfigError(`auth key id "${k.id}" is used twice`);
    ids.add(k.id);
  }
  const tokens =
    config.auth.token_secrets.length > 0
      ? new TokenIssuer(
          config.auth.token_secrets.map((s) => {
            const secret = readSecret(`token secret ${s.id}`, env, s.secret_env, s.secret_file);
            if (secret.length < 32)
              throw new ConfigError(`token secret ${s.id} must be at least 32 characters`);
            return { id: s.id, secret: new TextEncoder().encode(secret) };
          }),
          config.auth.token_ttl_s,
        )
      : TokenIssuer.ephemeral(config.auth.token_ttl_s);
  return {
    enabled: keys.length > 0,
    keys: new KeyRing(keys),
    tokens,
    quotas: quotas ?? new Quotas(),
    defaultLimits: config.auth.default_limits,
    cors: corsPolicy(config),
  };
}

/** The CORS policy of a config; credentials need a list of origins (never `*`, never none). */
export function corsPolicy(config: Config): CorsPolicy {
  const { origins, credentials } = config.cors;
  if (credentials && (origins.length === 0 || origins.includes("*"))) {
    throw new ConfigError(
      'cors.credentials needs cors.origins to list the allowed origins: with ["*"] or none, any web site could make credentialed calls',
    );
  }
  return { origins, credentials };
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** Refuses to expose an open (keyless) server beyond loopback unless told to. */
export function checkBinding(config: Config, security: Security): void {
  if (!security.enabled && !isLoopback(config.host) && !config.insecure) {
    throw new ConfigError(
      `refusing to listen on ${config.host} with no API keys: anyone who can reach it could read and start generations. ` +
        "Configure auth.keys (see docs/security.md), bind 127.0.0.1, or pass --insecure to accept the risk.",
    );
  }
}

/**
 * The path a request is judged by: the pattern of the route the router matched (the router
 * decodes percent-escapes, so `/%761/models` is the route `/v1/models`), or for a request no
 * route matches, its path decoded, normalized (`//`, `.` and `..` resolved) and in lower case, so no
 * spelling of a protected path looks public. Undefined when the path cannot be decoded.
 */
export function routedPath(req: FastifyRequest): string | undefined {
  const routed = req.routeOptions.url;
  if (routed !== undefined) return routed;
  const raw = req.url.split("?")[0] ?? "";
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    return undefined;
  }
  return posix.normalize(decoded).toLowerCase();
}

/** Routes anyone may call, with or without credentials. */
function isPublic(req: FastifyRequest): boolean {
  const path = routedPath(req);
  if (path === undefined) return false;
  if (path === "/healthz" || path === "/readyz") return true;
  if (req.method === "GET" || req.method === "HEAD") {
    // The web app's pages and assets; their data comes from authenticated /v1 routes.
    return !path.startsWith("/v1/") && !path.startsWith("/ds/") && path !== "/metrics" && path !== "/v1";
  }
  return false;
}

const JWT_RE = /^eyJ[\w-]*\.[\w-]+\.[\w-]*$/;

/** True when a presented credential has the shape of a read token (a compact JWS). */
export function looksLikeToken(value: string): boolean {
  return JWT_RE.test(value);
}

/** A credential as presented: from a header (key or token) or from the URL (tokens only). */
export interface Credential {
  value: string;
  from: "header" | "query";
}

/**
 * Picks the credential out of a request's headers and `?token=` — the same rules for every
 * transport (HTTP routes, the WebSocket upgrade, gRPC metadata): `Authorization: Bearer …`,
 * then `x-api-key`, then the query token.
 */
export function credentialFrom(
  authorization: unknown,
  xApiKey: unknown,
  queryToken: unknown,
): Credential | undefined {
  if (typeof authorization === "string" && authorization.length > 0) {
    const m = /^Bearer\s+(.+)$/i.exec(authorization);
    if (!m) throw new SluiceError("unauthorized", "the Authorization header must be `Bearer <key or token>`");
    return { value: (m[1] as string).trim(), from: "header" };
  }
  if (typeof xApiKey === "string" && xApiKey.length > 0) return { value: xApiKey, from: "header" };
  if (typeof queryToken === "string" && queryToken.length > 0) return { value: queryToken, from: "query" };
  return undefined;
}

function credentials(req: FastifyRequest): Credential | undefined {
  const q = req.query as Record<string, unknown> | undefined;
  return credentialFrom(req.headers.authorization, req.headers["x-api-key"], q?.token);
}

/** Who a credential is: a read token (verified) or an API key (looked up in constant time). */
export interface Identity {
  principal: Principal;
  apiKey: ApiKey | undefined;
}

/** Resolves a credential to its principal; throws `unauthorized` for anything not valid. */
export async function resolveCredential(sec: Security, cred: Credential): Promise<Identity> {
  if (looksLikeToken(cred.value)) {
    const claims = await sec.tokens.verify(cred.value);
    return {
      principal: {
        kind: "token",
        stream: claims.stream,
        tenant: claims.tenant,
        scopes: claims.scopes,
        tokenId: claims.tokenId,
      },
      apiKey: undefined,
    };
  }
  if (cred.from === "query") {
    throw new SluiceError(
      "unauthorized",
      "?token= takes a read token; send API keys in the Authorization header, never in a URL",
    );
  }
  const key = sec.keys.find(cred.value);
  if (!key) throw new SluiceError("unauthorized", "the API key is not valid");
  return { principal: { kind: "key", keyId: key.id, role: key.role, tenant: key.tenant }, apiKey: key };
}

/** Response headers a browser on another origin may read from /v1 routes. */
const EXPOSE_HEADERS = "sluice-stream-id, retry-after, www-authenticate, location";

/**
 * Identifies every request's principal (API key, read token, or open mode) and answers CORS
 * preflights. Which principal may do what to which stream is decided by the routes with
 * requireAction / requireStreamAccess (principal.ts).
 */
export function registerSecurity(
  app: FastifyInstance,
  sec: Security,
  opts: { skipPrefixes?: string[] } = {},
): void {
  // Decorated with null so every request object has the same shape (Fastify's advice); set in onRequest.
  const decorate = app.decorateRequest.bind(app) as unknown as (name: string, value: unknown) => void;
  decorate("principal", null);
  decorate("apiKey", undefined);
  app.addHook("onRequest", async (req, reply) => {
    const path = routedPath(req) ?? "";
    const own = !(opts.skipPrefixes ?? []).some((p) => path.startsWith(p));
    if (own) {
      const cors = applyCors(sec.cors, req, reply, { expose: EXPOSE_HEADERS });
      if (req.method === "OPTIONS" && req.headers["access-control-request-method"]) {
        if (cors) applyPreflight(req, reply, { methods: "GET, POST, DELETE, OPTIONS", maxAgeS: 600 });
        return reply.code(204).send();
      }
    } else if (req.method === "OPTIONS") {
      // A preflight carries no credentials: the mounted protocol answers it with its own CORS rules.
      req.principal = OPEN_PRINCIPAL_NONE;
      return;
    }
    if (!sec.enabled) {
      req.principal = OPEN_PRINCIPAL;
      return;
    }
    try {
      await identify(req, reply);
    } catch (err) {
      if (err instanceof SluiceError && err.code === "unauthorized" && !reply.hasHeader("www-authenticate")) {
        reply.header("www-authenticate", 'Bearer realm="sluice", error="invalid_token"');
      }
      throw err;
    }
  });

  async function identify(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const cred = credentials(req);
    if (!cred) {
      if (isPublic(req)) {
        req.principal = OPEN_PRINCIPAL_NONE;
        return;
      }
      reply.header("www-authenticate", 'Bearer realm="sluice"');
      throw new SluiceError(
        "unauthorized",
        "this route needs an API key (Authorization: Bearer …) or a read token (?token=…)",
      );
    }
    const id = await resolveCredential(sec, cred);
    req.principal = id.principal;
    req.apiKey = id.apiKey;
  }
}

/** The principal of an unauthenticated request to a public route: may do nothing with streams. */
const OPEN_PRINCIPAL_NONE: Principal = {
  kind: "key",
  keyId: "(anonymous)",
  role: "reader",
  tenant: "\u0000none",
};

/** Redacts credentials from a URL before it is logged. */
export function redactUrl(url: string): string {
  return url.replace(/([?&](?:token|api_key|key)=)[^&#]*/gi, "$1[REDACTED]");
}
