/**
 * Installing Sluice as people do — slow (several minutes: a full `npm ci` and an `npm install`),
 * so one file does it all once, in order:
 *   1. `git clone` of this repository at its HEAD commit (committed files only, as a user gets
 *      them), `npm ci`, then `npx sluice --version` / `--help` (the bin is linked at install,
 *      before `prepare` builds dist/, so it must be a committed file);
 *   2. `npm pack` of @sluice/protocol, @sluice/client and @sluice/server from that clone, an
 *      `npm install` of the three tarballs into a project outside the repository, `tsc` (this
 *      repository's) over a TypeScript file that uses all three, then `npx sluice serve` from
 *      there and the compiled file run against it.
 * npm runs with --prefer-offline: the local cache answers what it can, the registry the rest.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readAllJson, textOf } from "./helpers.js";

const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const TSC = join(ROOT, "node_modules", "typescript", "bin", "tsc");
const MINUTE = 60_000;

/** The environment of a shell outside npm: `npm test` passes its own config as npm_* variables. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || k === "INIT_CWD" || k === "NODE_OPTIONS") continue;
    env[k] = v;
  }
  return env;
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (killed after timeoutMs, so nothing hangs); never throws. */
function exec(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: `${stderr}\n${err.message}` });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Asserts a command succeeded, showing its output when it did not. */
function ok(r: Ran, what: string): string {
  if (r.code !== 0)
    throw new Error(`${what} exited ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  return r.stdout;
}

let work = "";
let clone = "";
let packs = "";
let consumer = "";
let server: ChildProcess | undefined;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "sluice-install-"));
  clone = join(work, "clone");
  packs = join(work, "packs");
  consumer = join(work, "consumer");
  mkdirSync(packs);
  mkdirSync(consumer);
});

afterAll(() => {
  // The server runs in its own process group (npx → node): end the group.
  if (server?.pid !== undefined && server.exitCode === null) {
    try {
      process.kill(-server.pid, "SIGTERM");
    } catch {}
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("installing Sluice as people do (slow: npm ci of a fresh clone, npm pack, npm install of the tarballs)", () => {
  it(
    "a fresh clone: npm ci, then npx sluice works at once",
    async () => {
      const head = ok(await exec("git", ["rev-parse", "HEAD"], ROOT, MINUTE), "git rev-parse").trim();
      ok(
        await exec("git", ["clone", "--quiet", "--no-checkout", ROOT, clone], work, 2 * MINUTE),
        "git clone",
      );
      ok(await exec("git", ["checkout", "--quiet", "--detach", head], clone, MINUTE), "git checkout");
      const ci = await exec("npm", ["ci", "--prefer-offline", "--no-audit", "--no-fund"], clone, 12 * MINUTE);
      ok(ci, "npm ci");
      // Every dependency supports the Node version the repository says it needs.
      expect.soft(`${ci.stdout}\n${ci.stderr}`).not.toMatch(/EBADENGINE/);
      const pkg = JSON.parse(readFileSync(join(clone, "packages/server/package.json"), "utf8")) as {
        version: string;
      };
      const version = ok(await exec("npx", ["sluice", "--version"], clone, MINUTE), "npx sluice --version");
      expect(version.trim()).toBe(pkg.version);
      const help = ok(await exec("npx", ["sluice", "--help"], clone, MINUTE), "npx sluice --help");
      for (const cmd of ["serve", "chat", "tail", "mock-upstream"])
        expect(help).toMatch(new RegExp(`\\b${cmd}\\b`));
    },
    15 * MINUTE,
  );

  it(
    "npm pack: @sluice/protocol, @sluice/client and @sluice/server hold their built code, types and bin, no sources",
    async () => {
      const out = ok(
        await exec(
          "npm",
          [
            "pack",
            "--json",
            "--pack-destination",
            packs,
            "-w",
            "packages/protocol",
            "-w",
            "packages/client",
            "-w",
            "packages/server",
          ],
          clone,
          3 * MINUTE,
        ),
        "npm pack",
      );
      const packed = JSON.parse(out) as { name: string; filename: string; files: { path: string }[] }[];
      expect(packed.map((p) => p.name).sort()).toEqual([
        "@sluice/client",
        "@sluice/protocol",
        "@sluice/server",
      ]);
      for (const p of packed) {
        const files = p.files.map((f) => f.path);
        expect(files, p.name).toContain("package.json");
        expect(files, p.name).toContain("dist/index.js");
        expect(files, p.name).toContain("dist/index.d.ts");
        expect(
          files.filter((f) => f.startsWith("src/") || f.startsWith("test/")),
          p.name,
        ).toEqual([]);
      }
      const serverFiles = packed.find((p) => p.name === "@sluice/server")?.files.map((f) => f.path) ?? [];
      expect(serverFiles).toContain("bin/sluice.js");
      expect(serverFiles).toContain("dist/cli/main.js");
      expect(serverFiles).toContain("proto/sluice.proto");
      // The playground and dashboard travel inside the server package (prepack copies them).
      expect(serverFiles).toContain("web/index.html");
      expect(serverFiles.some((f) => /^web\/assets\/.+\.js$/.test(f))).toBe(true);
    },
    4 * MINUTE,
  );

  it(
    "the tarballs install into a project outside the repository, type-check, and serve",
    async () => {
      writeFileSync(
        join(consumer, "package.json"),
        `${JSON.stringify({ name: "sluice-consumer", private: true, type: "module" }, null, 2)}\n`,
      );
      const tarballs = ["protocol", "client", "server"].map((n) => join(packs, `sluice-${n}-0.1.0.tgz`));
      ok(
        await exec(
          "npm",
          ["install", "--prefer-offline", "--no-audit", "--no-fund", ...tarballs],
          consumer,
          12 * MINUTE,
        ),
        "npm install of the tarballs",
      );

      // Each package declares every @sluice/* package its code or types import (here all three
      // are installed side by side, so an undeclared one would still resolve: check the manifests).
      for (const name of ["protocol", "client", "server"]) {
        const dir = join(consumer, "node_modules", "@sluice", name);
        const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
          dependencies?: Record<string, string>;
        };
        const imported = new Set<string>();
        for (const file of readdirSync(join(dir, "dist"), { recursive: true, encoding: "utf8" })) {
          if (!/\.(js|d\.ts)$/.test(file)) continue;
          const text = readFileSync(join(dir, "dist", file), "utf8");
          for (const m of text.matchAll(/(?:from |import\()"(@sluice\/[a-z-]+)/g))
            imported.add(m[1] as string);
        }
        imported.delete(`@sluice/${name}`);
        for (const dep of imported)
          expect
            .soft(Object.keys(manifest.dependencies ?? {}), `@sluice/${name} imports ${dep}`)
            .toContain(dep);
      }

      // A program that uses all three packages. Its @ts-expect-error lines are errors only
      // when the types really resolve (an unresolved import would make them `any`, and tsc
      // then fails on the unused directive): the type-check cannot pass vacuously.
      writeFileSync(
        join(consumer, "app.ts"),
        `import { SluiceClient, type SluiceEvent } from "@sluice/client";
import { ERROR_CODES, type ErrorCode } from "@sluice/protocol";
import { type Config, parseConfig } from "@sluice/server";

const config: Config = parseConfig({ port: 0 });
const code: ErrorCode = "invalid_request";
// @ts-expect-error not an error code of @sluice/protocol
const notACode: ErrorCode = "no_such_code";
const client = new SluiceClient({ baseUrl: process.argv[2] ?? "" });
const { id } = await client.start({ model: "demo", messages: [{ role: "user", content: "hi" }] });
let text = "";
for await (const { event } of client.follow(id)) {
  const e: SluiceEvent = event;
  if (e.type === "text-delta") text += e.delta;
  // @ts-expect-error SluiceEvent (from @sluice/protocol, through the client's types) has no such field
  void e.no_such_field;
}
console.log(JSON.stringify({ id, text, port: config.port, status: ERROR_CODES[code].status, notACode }));
`,
      );
      writeFileSync(
        join(consumer, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            target: "ES2022",
            module: "NodeNext",
            moduleResolution: "NodeNext",
            strict: true,
            lib: ["ES2023", "DOM", "DOM.Iterable"],
            types: ["node"],
            typeRoots: [join(ROOT, "node_modules", "@types")],
            skipLibCheck: true,
            outDir: "dist",
          },
          files: ["app.ts"],
        }),
      );
      ok(await exec(process.execPath, [TSC, "-p", consumer], consumer, 3 * MINUTE), "tsc");

      server = spawn("npx", ["sluice", "serve", "--port", "0"], {
        cwd: consumer,
        env: { ...cleanEnv(), SLUICE_LOG_LEVEL: "warn" },
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      });
      let out = "";
      server.stdout?.on("data", (d: Buffer) => {
        out += d.toString();
      });
      server.stderr?.on("data", (d: Buffer) => {
        out += d.toString();
      });
      const started = Date.now();
      while (!/listening on http/.test(out)) {
        if (Date.now() - started > 2 * MINUTE || server.exitCode !== null)
          throw new Error(`npx sluice serve did not start:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const url = (/listening on (http:\/\/\S+)/.exec(out) as RegExpExecArray)[1] as string;
      expect(await (await fetch(`${url}/healthz`)).json()).toEqual({ status: "ok" });
      const page = await fetch(`${url}/`);
      expect(page.status).toBe(200);
      const html = await page.text();
      const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
      expect(script, html).toBeDefined();
      expect((await fetch(`${url}${script}`)).status).toBe(200);

      const app = JSON.parse(
        ok(await exec(process.execPath, [join(consumer, "dist", "app.js"), url], consumer, MINUTE), "app.js"),
      ) as { id: string; text: string; port: number; status: number };
      expect(app.port).toBe(0);
      expect(app.status).toBe(400);
      expect(app.text.length).toBeGreaterThan(0);
      expect(app.text).toBe(textOf(await readAllJson(url, app.id)));
    },
    16 * MINUTE,
  );
});
