import { existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply } from "fastify";

/** Where `npm run build` puts the web app (packages/web/dist), from src/http or dist/http alike. */
const REPO_WEB_ROOT = fileURLToPath(new URL("../../../web/dist/", import.meta.url));
/** Where the packed @sluice/server carries a copy of it (`prepack` copies it to web/). */
const PACKAGE_WEB_ROOT = fileURLToPath(new URL("../../web/", import.meta.url));
/** In the repository the freshly built app; in an installed package its packed copy. */
export const DEFAULT_WEB_ROOT =
  !existsSync(path.join(REPO_WEB_ROOT, "index.html")) && existsSync(path.join(PACKAGE_WEB_ROOT, "index.html"))
    ? PACKAGE_WEB_ROOT
    : REPO_WEB_ROOT;

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
};

/** A file name Vite emits into assets/: one path segment, no dots at the start, nothing else. */
const ASSET_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}$/;
const MAX_ASSET_BYTES = 16 * 1024 * 1024;

/**
 * Serves the built playground and dashboard: `/` and `/dashboard` get index.html (no
 * caching: it names the current hashed assets); `/assets/<name>` are content-hashed
 * files, cached for a year. A fixed root, one path segment, no traversal possible.
 */
export function registerWeb(app: FastifyInstance, opts: { root?: string } = {}): void {
  const root = path.resolve(opts.root ?? DEFAULT_WEB_ROOT);
  const assets = path.join(root, "assets");
  const security = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
  };

  async function index(reply: FastifyReply) {
    const file = path.join(root, "index.html");
    if (!existsSync(file)) {
      return reply
        .code(503)
        .type("text/html; charset=utf-8")
        .send(
          "<!doctype html><title>Sluice</title><p>The web UI is not built. Run <code>npm run build</code> and reload.</p>",
        );
    }
    return reply
      .headers({
        ...security,
        "cache-control": "no-cache",
        // Model output is rendered as HTML (escaped by the app); the policy is the second line of defence.
        "content-security-policy":
          "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
          "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
      })
      .type(TYPES[".html"] as string)
      .send(await readFile(file));
  }

  app.get("/", (_req, reply) => index(reply));
  app.get("/dashboard", (_req, reply) => index(reply));

  app.get("/assets/:name", async (req, reply) => {
    const { name } = req.params as { name: string };
    const type = TYPES[path.extname(name).toLowerCase()];
    const notFound = () =>
      reply.code(404).send({ error: { code: "not_found", message: `no asset ${name.slice(0, 100)}` } });
    if (!ASSET_NAME.test(name) || name.includes("..") || !type) return notFound();
    const file = path.join(assets, name);
    if (path.dirname(file) !== assets) return notFound();
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile() || st.size > MAX_ASSET_BYTES) return notFound();
    return reply
      .headers({ ...security, "cache-control": "public, max-age=31536000, immutable" })
      .type(type)
      .send(await readFile(file));
  });
}
