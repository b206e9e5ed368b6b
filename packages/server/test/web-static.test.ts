import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import Fastify from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerWeb } from "../src/http/web.js";

/** The static handler on a fixture root, over a real socket (raw requests for traversal attempts). */
const root = mkdtempSync(path.join(os.tmpdir(), "sluice-web-"));
mkdirSync(path.join(root, "assets"));
writeFileSync(path.join(root, "index.html"), "<!doctype html><title>t</title>");
writeFileSync(path.join(root, "assets", "index-AbC123.js"), "console.log(1)");
writeFileSync(path.join(root, "assets", "index-AbC123.css"), "body{}");
writeFileSync(path.join(root, "secret.txt"), "SECRET");

const app = Fastify();
registerWeb(app, { root });
let url = "";
beforeAll(async () => {
  url = await app.listen({ host: "127.0.0.1", port: 0 });
});
afterAll(() => app.close());

function raw(pathname: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname, () => {
      sock.write(`GET ${pathname} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    });
    let out = "";
    sock.on("data", (d) => {
      out += d.toString();
    });
    sock.on("end", () => resolve(out));
    sock.on("error", reject);
  });
}

describe("web static handler", () => {
  it("serves index.html at / and /dashboard without caching, assets with long immutable caching", async () => {
    for (const p of ["/", "/dashboard"]) {
      const r = await fetch(`${url}${p}`);
      expect(r.status).toBe(200);
      expect(r.headers.get("content-type")).toBe("text/html; charset=utf-8");
      expect(r.headers.get("cache-control")).toBe("no-cache");
      expect(r.headers.get("x-content-type-options")).toBe("nosniff");
      expect(r.headers.get("content-security-policy")).toContain("script-src 'self'");
    }
    const js = await fetch(`${url}/assets/index-AbC123.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("cache-control")).toContain("immutable");
    expect(await js.text()).toBe("console.log(1)");
    expect((await fetch(`${url}/assets/index-AbC123.css`)).headers.get("content-type")).toBe(
      "text/css; charset=utf-8",
    );
  });

  it("never leaves its root: traversal, encoded traversal, unknown types and missing files are 404", async () => {
    for (const p of [
      "/assets/../secret.txt",
      "/assets/..%2fsecret.txt",
      "/assets/%2e%2e%2fsecret.txt",
      "/assets/..%5csecret.txt",
      "/assets/%2e%2e/secret.txt",
      "/assets/.hidden.js",
      "/assets/missing.js",
      "/assets/index-AbC123.exe",
      "/secret.txt",
    ]) {
      const res = await raw(p);
      expect(res, p).not.toContain("SECRET");
      expect(res.split("\r\n")[0], p).toMatch(/ 404 /);
    }
  });

  it("answers 503 with a hint when the web app is not built", async () => {
    const bare = Fastify();
    registerWeb(bare, { root: path.join(root, "nope") });
    const r = await bare.inject({ method: "GET", url: "/" });
    expect(r.statusCode).toBe(503);
    expect(r.body).toContain("npm run build");
    await bare.close();
  });
});
