import { createHash } from "node:crypto";
import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoBody, type Running, startSluice } from "./helpers.js";

// The auth gate must judge a request by the route the router matches, not by the raw URL: the
// router decodes percent-escapes, so `/%761/models` is `/v1/models`. Requests are sent with
// node:http so the path reaches the server exactly as written (fetch would normalize it).

const sha = (s: string) => createHash("sha256").update(s).digest("hex");
const ADMIN = "sk-paths-admin-0001";

let s: Running;
let streamId: string;
const DS_NAME = "paths-doc";

function raw(
  path: string,
  opts: { method?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: string }> {
  const u = new URL(s.url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, path, method: opts.method ?? "GET", headers: opts.headers ?? {} },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const admin = { authorization: `Bearer ${ADMIN}`, accept: "application/json" };

beforeAll(async () => {
  s = await startSluice({
    auth: { keys: [{ id: "admin", key_sha256: sha(ADMIN), role: "admin", tenant: "a" }] },
  } as never);
  const res = await fetch(`${s.url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN}` },
    body: JSON.stringify(demoBody({ length: 5 })),
  });
  expect(res.status).toBe(201);
  streamId = ((await res.json()) as { id: string }).id;
  for (let i = 0; i < 500; i++) {
    const info = await fetch(`${s.url}/v1/streams/${streamId}/info`, { headers: admin });
    if (((await info.json()) as { status: string }).status === "completed") break;
    await new Promise((r) => setTimeout(r, 10));
  }
  const ds = await fetch(`${s.url}/ds/v1/stream/${DS_NAME}`, {
    method: "PUT",
    headers: { "content-type": "text/plain", authorization: `Bearer ${ADMIN}` },
  });
  expect(ds.status).toBeLessThan(300);
});
afterAll(async () => {
  await s?.close();
});

/** Every protected GET route, as a concrete path. */
function protectedPaths(): string[] {
  return [
    "/v1/models",
    "/v1/streams",
    `/v1/streams/${streamId}`,
    `/v1/streams/${streamId}/info`,
    "/v1/stats",
    "/metrics",
    `/ds/v1/stream/${DS_NAME}`,
    "/v1/ai-sdk/chat/some-chat/stream",
  ];
}

const pct = (c: string, lower: boolean) => {
  const h = c.charCodeAt(0).toString(16).padStart(2, "0");
  return `%${lower ? h : h.toUpperCase()}`;
};

/** Spellings of one path that a router or a proxy may treat as the same route. */
function spellings(path: string): string[] {
  const out = new Set<string>();
  const segs = path.split("/");
  for (let i = 0; i < path.length; i++) {
    const c = path[i] as string;
    if (/[A-Za-z0-9]/.test(c)) {
      // One escaped character at a time, upper- and lower-case hex.
      out.add(path.slice(0, i) + pct(c, false) + path.slice(i + 1));
      out.add(path.slice(0, i) + pct(c, true) + path.slice(i + 1));
    } else if (c === "/") {
      out.add(`${path.slice(0, i)}//${path.slice(i + 1)}`);
      if (i > 0) out.add(`${path.slice(0, i)}%2F${path.slice(i + 1)}`);
      if (i > 0) out.add(`${path.slice(0, i)}%2f${path.slice(i + 1)}`);
    }
  }
  // Every character escaped; the first segment escaped.
  out.add([...path].map((c) => (c === "/" ? c : pct(c, false))).join(""));
  out.add(`/${[...(segs[1] ?? "")].map((c) => pct(c, false)).join("")}/${segs.slice(2).join("/")}`);
  // Dot segments, trailing slash, case.
  out.add(`${path}/.`);
  out.add(`${path}/`);
  out.add(`/.${path}`);
  out.add(`/x/..${path}`);
  out.add(`${path}/x/..`);
  out.add(path.toUpperCase());
  out.add(`/${(segs[1] ?? "").toUpperCase()}/${segs.slice(2).join("/")}`);
  out.add(`${path}?x=1`);
  out.add(`${path};x`);
  return [...out].filter((p) => p !== path);
}

describe("the auth gate decides on the routed path", () => {
  it("answers 401 without credentials to every spelling of every protected route (GET and HEAD)", async () => {
    let routedVariants = 0;
    const leaks: string[] = [];
    for (const path of protectedPaths()) {
      for (const method of ["GET", "HEAD"]) {
        const plain = await raw(path, { method });
        expect(plain.status, `${method} ${path}`).toBe(401);
        for (const p of spellings(path)) {
          const anon = await raw(p, { method, headers: { accept: "application/json" } });
          // Spellings the router serves (200 with a key) must answer 401 without one; the others
          // may be 404, but nothing may succeed without credentials.
          const authed = await raw(p, { method, headers: admin });
          if (authed.status === 200) routedVariants++;
          if (anon.status < 400 || (authed.status === 200 && anon.status !== 401)) {
            leaks.push(`${method} ${p} → ${anon.status} ${anon.body.slice(0, 60)}`);
          }
        }
      }
    }
    expect(leaks).toEqual([]);
    expect(routedVariants).toBeGreaterThan(100);
  });

  it("the issue's examples: /%761/models and /%76%31/streams need credentials", async () => {
    for (const p of ["/%761/models", "/%76%31/streams", "/%76%31/streams?limit=5"]) {
      const r = await raw(p);
      expect(r.status, p).toBe(401);
      expect(r.body).toContain('"unauthorized"');
      expect(r.body).not.toContain("demo");
    }
    // With a key the same spelling is served: it is the route, not a 404.
    expect((await raw("/%761/models", { headers: admin })).status).toBe(200);
  });

  it("a path that cannot be decoded is not public", async () => {
    expect((await raw("/v1/%E0%A4%A/models")).status).not.toBe(200);
    expect((await raw("/%ZZ")).status).not.toBe(200);
  });

  it("public routes stay public in any spelling", async () => {
    for (const p of ["/healthz", "/%68ealthz", "/readyz", "/", "/dashboard", "/%64ashboard"]) {
      expect((await raw(p)).status, p).toBe(200);
    }
  });
});
