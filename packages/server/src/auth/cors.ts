import type { FastifyReply, FastifyRequest } from "fastify";

/**
 * CORS for every door, in one place: which origin a response names, what a preflight allows,
 * which response headers a browser may read. The /v1 routes and the Durable Streams mount both
 * answer from here; the live-response path copies these headers onto every streaming response.
 */
export interface CorsPolicy {
  /** Allowed origins (`*` for any); empty = no CORS on /v1 (Durable Streams then answers `*`). */
  origins: string[];
  /** Send `Access-Control-Allow-Credentials: true` (the origin is then echoed, never `*`). */
  credentials: boolean;
}

/** Request headers our own clients send; a preflight always allows these. */
export const BASE_ALLOW_HEADERS = [
  "authorization",
  "content-type",
  "last-event-id",
  "x-api-key",
  "accept",
  "cache-control",
];

/** Bounds on reflecting a preflight's Access-Control-Request-Headers (a header list, not a payload). */
export const MAX_REFLECTED_HEADERS = 64;
export const MAX_REFLECTED_CHARS = 2048;
const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * The value of Access-Control-Allow-Origin for this request's origin, or undefined when the
 * origin is not allowed. `anyWhenUnset`: with no origins configured, answer `*` (Durable
 * Streams' protocol default) rather than nothing.
 */
export function allowedOrigin(
  policy: CorsPolicy,
  origin: string | undefined,
  anyWhenUnset = false,
): string | undefined {
  // `*` is the same answer for everyone, so it goes on requests without an Origin too (caches).
  if (policy.origins.length === 0) return anyWhenUnset ? "*" : undefined;
  const any = policy.origins.includes("*");
  if (any && !policy.credentials) return "*";
  if (typeof origin !== "string" || origin.length === 0) return undefined;
  if (!any && !policy.origins.includes(origin)) return undefined;
  // With credentials the Fetch standard refuses `*`: the one origin asking is named.
  return origin;
}

/**
 * The header names a preflight may allow: ours plus those the browser asks for (the `openai`
 * SDK's x-stainless-*, a framework's own), lower-cased and de-duplicated. An ask that is not a
 * plain list of header names, or longer than the bounds, is not reflected (ours only).
 */
export function allowHeaders(
  asked: string | undefined,
  base: readonly string[] = BASE_ALLOW_HEADERS,
): string {
  const out = new Set(base.map((h) => h.toLowerCase()));
  if (asked && asked.length <= MAX_REFLECTED_CHARS) {
    const names = asked
      .split(",")
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h.length > 0);
    if (names.length <= MAX_REFLECTED_HEADERS && names.every((h) => TOKEN_RE.test(h))) {
      for (const n of names) out.add(n);
    }
  }
  return [...out].join(", ");
}

function appendVary(reply: FastifyReply, value: string): void {
  const prev = reply.getHeader("vary");
  const have = typeof prev === "string" ? prev.split(",").map((v) => v.trim().toLowerCase()) : [];
  const add = value
    .split(",")
    .map((v) => v.trim())
    .filter((v) => !have.includes(v.toLowerCase()));
  if (add.length === 0) return;
  reply.header(
    "vary",
    typeof prev === "string" && prev.length > 0 ? `${prev}, ${add.join(", ")}` : add.join(", "),
  );
}

/**
 * Puts the CORS headers on a reply (before any streaming door hijacks it, so they travel with
 * the stream). Returns true when the origin is allowed.
 */
export function applyCors(
  policy: CorsPolicy,
  req: FastifyRequest,
  reply: FastifyReply,
  opts: { expose: string; anyWhenUnset?: boolean },
): boolean {
  const origin = req.headers.origin;
  // The answer depends on Origin whenever a list is configured: a shared cache must key on it.
  if (policy.origins.length > 0 && !(policy.origins.includes("*") && !policy.credentials))
    appendVary(reply, "Origin");
  const allow = allowedOrigin(policy, typeof origin === "string" ? origin : undefined, opts.anyWhenUnset);
  if (allow === undefined) return false;
  reply.header("access-control-allow-origin", allow);
  if (policy.credentials && allow !== "*") reply.header("access-control-allow-credentials", "true");
  reply.header("access-control-expose-headers", opts.expose);
  return true;
}

/** The extra headers of a preflight answer for an allowed origin. */
export function applyPreflight(
  req: FastifyRequest,
  reply: FastifyReply,
  opts: { methods: string; baseHeaders?: readonly string[]; maxAgeS: number },
): void {
  const asked = req.headers["access-control-request-headers"];
  reply.header("access-control-allow-methods", opts.methods);
  reply.header(
    "access-control-allow-headers",
    allowHeaders(typeof asked === "string" ? asked : undefined, opts.baseHeaders),
  );
  reply.header("access-control-max-age", String(opts.maxAgeS));
  appendVary(reply, "Access-Control-Request-Headers");
}

/**
 * May a WebSocket be opened with this `Origin`? Browsers send no preflight and apply no CORS
 * to WebSockets, so the server judges the origin itself (else any page the user visits could use
 * their local or cookie-authenticated Sluice): no Origin (not a browser), the server's own origin
 * (its `Host`), or one `cors.origins` allows.
 */
export function originMayConnect(
  policy: CorsPolicy,
  origin: string | undefined,
  host: string | undefined,
): boolean {
  if (origin === undefined) return true;
  if (allowedOrigin(policy, origin) !== undefined) return true;
  try {
    return host !== undefined && new URL(origin).host === host.toLowerCase();
  } catch {
    return false;
  }
}
