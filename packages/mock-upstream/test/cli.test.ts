/**
 * The mock's two command lines, as built (dist): its own bin `sluice-mock-upstream`, and the
 * server CLI's `sluice mock-upstream`, which loads this package only for that subcommand and
 * says so plainly when the package is not there.
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const BIN = join(ROOT, "packages/mock-upstream/bin/sluice-mock-upstream.js");
const SERVER_CLI = join(ROOT, "packages/server/dist/cli/main.js");
const children: ChildProcess[] = [];
const tmpDirs: string[] = [];

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

function run(args: string[]) {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, SLUICE_LOG_LEVEL: "warn" },
  });
  children.push(child);
  const r = { child, stdout: "", stderr: "" };
  child.stdout?.on("data", (d: Buffer) => {
    r.stdout += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    r.stderr += d.toString();
  });
  // Resolves with the exit code, or "listening" as soon as the mock says it listens.
  const outcome = new Promise<number | "listening">((resolve) => {
    child.stdout?.on("data", () => {
      if (/listening on http/.test(r.stdout)) resolve("listening");
    });
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 : -1)));
  });
  return { out: r, outcome };
}

describe("sluice-mock-upstream (the package's own bin)", () => {
  it("serves both APIs with the same options as `sluice mock-upstream`", async () => {
    const mock = run([BIN, "--port", "0", "--api-key", "k1"]);
    expect(await mock.outcome).toBe("listening");
    const base = (/listening on (http:\/\/\S+)/.exec(mock.out.stdout) as RegExpExecArray)[1] as string;
    expect((await fetch(`${base}/models`)).status).toBe(401);
    const models = (await (
      await fetch(`${base}/models`, { headers: { authorization: "Bearer k1" } })
    ).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).toContain("demo");
    const messages = await fetch(`${base.replace(/\/v1$/, "")}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": "k1", "anthropic-version": "2023-06-01" },
      body: JSON.stringify({ model: "demo", max_tokens: 5, messages: [{ role: "user", content: "hi" }] }),
    });
    expect(messages.status).toBe(200);
    expect(((await messages.json()) as { type: string }).type).toBe("message");
  });

  it("rejects a bad option with an error naming it, and exits non-zero", async () => {
    const bad = run([BIN, "--port", "0", "--fault", '{"stall_after":2}']);
    expect(await bad.outcome).not.toBe("listening");
    expect(bad.out.stderr).toMatch(/--fault/);
    expect(bad.out.stderr).toMatch(/stall_after/);
  });
});

describe("`sluice mock-upstream` without the @sluice/mock-upstream package", () => {
  it("exits with a message naming the package, where the server itself is installed alone", async () => {
    // The server as a deployment would have it: its dist and proto, and every dependency of the
    // workspace except the @sluice packages other than @sluice/protocol.
    const dir = mkdtempSync(join(tmpdir(), "sluice-no-mock-"));
    tmpDirs.push(dir);
    const server = join(dir, "packages/server");
    for (const p of ["dist", "proto", "package.json"])
      cpSync(join(ROOT, "packages/server", p), join(server, p), { recursive: true });
    const nm = join(dir, "node_modules");
    mkdirSync(join(nm, "@sluice"), { recursive: true });
    for (const entry of readdirSync(join(ROOT, "node_modules"))) {
      if (entry === "@sluice" || entry.startsWith(".")) continue;
      symlinkSync(join(ROOT, "node_modules", entry), join(nm, entry));
    }
    symlinkSync(join(ROOT, "packages/protocol"), join(nm, "@sluice/protocol"));

    const cli = join(server, "dist/cli/main.js");
    const missing = run([cli, "mock-upstream", "--port", "0"]);
    expect(await missing.outcome).toBe(1);
    expect(missing.out.stderr).toMatch(/@sluice\/mock-upstream/);
    expect(missing.out.stderr).toMatch(/not installed/);
    // The rest of the CLI does not need the package: `serve` starts from the same layout.
    const serve = run([cli, "serve", "--port", "0"]);
    expect(await serve.outcome).toBe("listening");
  });

  it("loads the package when it is there (the workspace's layout)", async () => {
    const mock = run([SERVER_CLI, "mock-upstream", "--port", "0"]);
    expect(await mock.outcome).toBe("listening");
  });
});

describe("the workspace's bins (`npx sluice`, `npx sluice-mock-upstream`)", () => {
  it("are committed files outside dist/, so npm links them in a clean clone before `prepare` builds", () => {
    const bins: string[] = [];
    for (const pkg of readdirSync(join(ROOT, "packages"))) {
      const file = join(ROOT, "packages", pkg, "package.json");
      if (!existsSync(file)) continue;
      const bin = (JSON.parse(readFileSync(file, "utf8")) as { bin?: Record<string, string> }).bin ?? {};
      for (const [name, path] of Object.entries(bin)) {
        bins.push(name);
        expect(path, `${name}: ${path}`).not.toMatch(/(^|\/)dist\//);
        expect(existsSync(join(ROOT, "packages", pkg, path)), `${name}: ${path}`).toBe(true);
      }
    }
    expect(bins.sort()).toEqual(["sluice", "sluice-mock-upstream"]);
  });

  it("`sluice` through its bin file runs the CLI", async () => {
    const mock = run([join(ROOT, "packages/server/bin/sluice.js"), "mock-upstream", "--port", "0"]);
    expect(await mock.outcome).toBe("listening");
  });
});
