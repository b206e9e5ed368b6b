/**
 * Every fenced code block of README.md and docs/*.md is run or checked here, so the docs cannot
 * drift from the code: shell blocks run with bash (curl, `npx sluice …`) against a Sluice server
 * started for the file, TypeScript/JavaScript blocks run with node, JSON blocks are parsed (and
 * validated as Sluice configs), the nginx block must be docs/examples/nginx.conf. A block the test
 * cannot check fails unless annotated. Annotations: docs/contributing-docs.md.
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { afterAll, describe, expect, it } from "vitest";
import { loadConfig, parseConfig } from "../src/config.js";
import { NGINX } from "./cluster-helper.js";
import {
  type BlockKind,
  classify,
  type DocBlock,
  directive,
  directives,
  extractBlocks,
  parseDirectives,
} from "./doc-blocks.js";
import { freePort, type RedisProc, startRedis } from "./redis-helper.js";

const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const CLI = join(ROOT, "packages/server/dist/cli/main.js");
/** Work dirs live inside the repository (gitignored), so `npx sluice` and package imports resolve. */
const WORK = join(ROOT, ".doc-test");
const DOCS = [
  "README.md",
  ...readdirSync(join(ROOT, "docs"))
    .filter((f) => f.endsWith(".md"))
    .sort()
    .map((f) => `docs/${f}`),
];
/** Output kept per process (the rest is dropped), so a runaway example cannot fill memory. */
const MAX_OUTPUT = 256 * 1024;
const DEFAULT_TIMEOUT_MS = 60_000;

const started: ChildProcess[] = [];
const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of started) killGroup(c, "SIGKILL");
  for (const f of cleanups.reverse()) await f();
});
// The examples run in process groups of their own (so a block's whole tree can be stopped):
// if this worker goes away without afterAll, they go with it.
process.once("exit", () => {
  for (const c of started) killGroup(c, "SIGKILL");
});

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal); // the group of a process this test started (detached)
  } catch {}
}

interface Proc {
  child: ChildProcess;
  out: { stdout: string; stderr: string };
  exit: Promise<number>;
}

function spawnProc(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Proc {
  const child = spawn(cmd, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  started.push(child);
  const out = { stdout: "", stderr: "" };
  const keep = (k: "stdout" | "stderr") => (d: Buffer) => {
    if (out[k].length < MAX_OUTPUT) out[k] += d.toString().slice(0, MAX_OUTPUT - out[k].length);
  };
  child.stdout?.on("data", keep("stdout"));
  child.stderr?.on("data", keep("stderr"));
  const exit = new Promise<number>((resolve) =>
    child.on("close", (code, signal) => resolve(code ?? (signal ? 128 : -1))),
  );
  return { child, out, exit };
}

async function until(cond: () => boolean, proc: Proc, what: string, ms = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null)
      throw new Error(`${what}: exited before it was ready\n${proc.out.stdout}\n${proc.out.stderr}`);
    if (Date.now() - t0 > ms)
      throw new Error(`${what}: not ready after ${ms} ms\n${proc.out.stdout}\n${proc.out.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Stops a process group this test started: SIGTERM, then SIGKILL if it lingers. */
async function stop(proc: Proc): Promise<number> {
  killGroup(proc.child, "SIGTERM");
  const timer = setTimeout(() => killGroup(proc.child, "SIGKILL"), 10_000);
  const code = await proc.exit;
  clearTimeout(timer);
  return code;
}

/** A Sluice server (the built CLI) on a free loopback port, for the blocks of one file. */
async function startServer(
  cwd: string,
  args: string[],
  env: NodeJS.ProcessEnv = baseEnv(),
): Promise<{ url: string; port: number; proc: Proc }> {
  if (!existsSync(CLI)) throw new Error(`no ${CLI}: the docs' examples use the built CLI (npm run build)`);
  const port = await freePort();
  const proc = spawnProc(process.execPath, [CLI, "serve", "--port", String(port), ...args], cwd, {
    ...env,
    SLUICE_LOG_LEVEL: "warn",
  });
  await until(() => /listening on http/.test(proc.out.stdout), proc, `sluice serve ${args.join(" ")}`);
  return { url: `http://127.0.0.1:${port}`, port, proc };
}

function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // The examples must not reach a real provider, nor inherit this run's settings.
  for (const k of Object.keys(env))
    if (
      /^(SLUICE_|OPENAI_|ANTHROPIC_)/.test(k) ||
      k === "CI" ||
      k.startsWith("VITEST") ||
      k === "NODE_OPTIONS"
    )
      delete env[k];
  return env;
}

/**
 * Per file: its work dir, its server (started on first use), the chain of script blocks, and the
 * free port that stands for each documented 808x port other than 8080 (one per file, so a mock
 * upstream a block starts on "8081" is the one a config file names as "127.0.0.1:8081").
 */
interface FileState {
  dir: string;
  server?: { url: string; port: number; proc: Proc };
  script: string;
  redis?: RedisProc;
  ports: Map<string, number>;
}

async function fileServer(state: FileState) {
  if (!state.server) state.server = await startServer(state.dir, []);
  return state.server;
}

/** The server a block talks to: its own with `server-args` (and the block's env), else the file's. */
async function serverFor(block: DocBlock, state: FileState) {
  const serverArgs = directive(block, "server-args");
  if (!serverArgs) return fileServer(state);
  const args = (serverArgs.args[0] as string).split(/\s+/).filter(Boolean);
  const own = await startServer(state.dir, args, blockEnv(block, {}));
  cleanups.push(async () => void (await stop(own.proc)));
  return own;
}

const PORT_RE = /((?:localhost|127\.0\.0\.1):|--port )(80[89]\d)\b/g;

/**
 * Rewrites documented ports: 8080 (the documented server) to `port8080` when given, other 808x
 * ports (mock upstreams, nodes) to the file's free port for each.
 */
async function rewritePorts(code: string, state: FileState, port8080: number | undefined): Promise<string> {
  for (const m of code.matchAll(PORT_RE)) {
    const p = m[2] as string;
    if (p !== "8080" && !state.ports.has(p)) state.ports.set(p, await freePort());
  }
  return code.replace(PORT_RE, (_m, pre: string, p: string) => {
    const to = p === "8080" ? port8080 : state.ports.get(p);
    return `${pre}${to ?? p}`;
  });
}

/**
 * The block's text as it runs: `omit-line` and `replace` applied, then ports rewritten — 8080 to
 * `port8080` (the server the block talks to, or the one it starts), the others per file.
 */
async function prepare(block: DocBlock, state: FileState, port8080: number | undefined): Promise<string> {
  let code = block.code;
  for (const d of directives(block, "omit-line")) {
    const line = d.args[0] as string;
    const lines = code.split("\n");
    if (!lines.some((l) => l.trim() === line)) throw new Error(`omit-line: no line "${line}" in the block`);
    code = lines.filter((l) => l.trim() !== line).join("\n");
  }
  for (const d of directives(block, "replace")) {
    const [from, to] = d.args as [string, string];
    if (!code.includes(from)) throw new Error(`replace: "${from}" is not in the block`);
    code = code.split(from).join(to);
  }
  return rewritePorts(code, state, port8080);
}

/**
 * `background "cmd"`: a server the block needs running (a mock upstream, say), as a reader would
 * run it in another terminal: started before the block (ports rewritten as the block's), ready
 * once it prints "listening on", stopped after.
 */
async function withBackground(block: DocBlock, state: FileState, run: () => Promise<void>): Promise<void> {
  const procs: Proc[] = [];
  try {
    for (const d of directives(block, "background")) {
      const cmd = await rewritePorts(d.args[0] as string, state, undefined);
      const proc = spawnProc("bash", ["-c", cmd], state.dir, blockEnv(block, {}));
      procs.push(proc);
      await until(() => /listening on/.test(proc.out.stdout), proc, `${block.file}:${block.line}: ${cmd}`);
    }
    await run();
  } finally {
    for (const p of procs) await stop(p);
  }
}

function blockEnv(block: DocBlock, extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env = { ...baseEnv(), ...extra };
  for (const d of directives(block, "env"))
    for (const a of d.args) {
      const eq = a.indexOf("=");
      if (eq < 1) throw new Error(`env: "${a}" is not NAME=value`);
      env[a.slice(0, eq)] = a.slice(eq + 1);
    }
  return env;
}

function timeoutOf(block: DocBlock): number {
  const t = directive(block, "timeout");
  return t ? Number(t.args[0]) : DEFAULT_TIMEOUT_MS;
}

/** Runs to the end (bounded by the block's timeout), then checks the block's expectations. */
async function runToEnd(block: DocBlock, proc: Proc): Promise<void> {
  const ms = timeoutOf(block);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(proc.child, "SIGKILL");
  }, ms);
  const code = await proc.exit;
  clearTimeout(timer);
  const shown = `\n--- stdout ---\n${proc.out.stdout.slice(-4000)}\n--- stderr ---\n${proc.out.stderr.slice(-4000)}`;
  if (timedOut) throw new Error(`${block.file}:${block.line}: still running after ${ms} ms${shown}`);
  const wantExit = Number(directive(block, "expect-exit")?.args[0] ?? 0);
  expect(code, `${block.file}:${block.line}: exit status${shown}`).toBe(wantExit);
  checkOutput(block, proc.out);
}

function checkOutput(block: DocBlock, out: { stdout: string; stderr: string }): void {
  const shown = `\n--- stdout ---\n${out.stdout.slice(-4000)}\n--- stderr ---\n${out.stderr.slice(-4000)}`;
  for (const d of directives(block, "expect-stdout-contains"))
    for (const s of d.args)
      expect(out.stdout.includes(s), `${block.file}:${block.line}: stdout lacks "${s}"${shown}`).toBe(true);
  for (const d of directives(block, "expect-stderr-contains"))
    for (const s of d.args)
      expect(out.stderr.includes(s), `${block.file}:${block.line}: stderr lacks "${s}"${shown}`).toBe(true);
}

const BASH_PRELUDE = "set -eo pipefail\n";

async function runShell(block: DocBlock, state: FileState): Promise<void> {
  if (directive(block, "redis") && !state.redis) {
    state.redis = await startRedis();
    const r = state.redis;
    cleanups.push(() => r.close());
  }
  const serve = directive(block, "serve");
  const server = serve ? undefined : await serverFor(block, state);
  // A server the doc starts listens where the doc says (8080, rewritten) or on SLUICE_PORT.
  const servePort = serve ? await freePort() : undefined;
  let code = await prepare(block, state, server?.port ?? servePort);
  if (state.redis) code = code.replace(/redis:\/\/[\w.-]+:6379/g, state.redis.url);
  // A console transcript: `$ ` lines are the commands, the other lines the output they print
  // (each must appear, in order; `…` stands for anything).
  let transcript: string[] = [];
  if (block.lang === "console") {
    const lines = code.split("\n");
    transcript = lines.filter((l) => !l.startsWith("$ ") && l.trim() !== "");
    code = lines
      .filter((l) => l.startsWith("$ "))
      .map((l) => l.slice(2))
      .join("\n");
  }
  const env = blockEnv(block, {
    ...(server ? { SLUICE_URL: server.url } : {}),
    ...(servePort !== undefined ? { SLUICE_PORT: String(servePort) } : {}),
  });
  if (!serve) {
    const proc = spawnProc("bash", ["-c", BASH_PRELUDE + code], state.dir, env);
    await runToEnd(block, proc);
    let from = 0;
    for (const line of transcript) {
      for (const part of line.trim().split("…").filter(Boolean)) {
        const at = proc.out.stdout.indexOf(part, from);
        expect(
          at,
          `${block.file}:${block.line}: the output lacks "${part}" (after what came before)\n${proc.out.stdout}`,
        ).toBeGreaterThanOrEqual(0);
        from = at + part.length;
      }
    }
    return;
  }
  // A server the doc starts: each command (or the whole block) is started, must become ready
  // (print `ready`, by default "listening on"), then is stopped by its process group.
  const ready = new RegExp(serve.opts.ready ?? "listening on");
  const commands = directive(block, "each-line")
    ? code.split("\n").filter((l) => l.trim() !== "" && !l.trim().startsWith("#"))
    : [code];
  for (const cmd of commands) {
    const proc = spawnProc("bash", ["-c", BASH_PRELUDE + cmd], state.dir, env);
    await until(() => ready.test(proc.out.stdout), proc, `${block.file}:${block.line}: ${cmd.trim()}`);
    if (serve.opts.probe) {
      const res = await fetch(`http://127.0.0.1:${servePort}${serve.opts.probe}`);
      expect(res.status, `${block.file}:${block.line}: GET ${serve.opts.probe}`).toBe(200);
    }
    checkOutput(block, proc.out);
    await stop(proc);
  }
}

function transpile(code: string, file: string): string {
  const r = ts.transpileModule(code, {
    fileName: file,
    reportDiagnostics: true,
    compilerOptions: {
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2022,
      jsx: ts.JsxEmit.ReactJSX,
    },
  });
  const errors = (r.diagnostics ?? []).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
  if (errors.length > 0) throw new Error(`${file}: does not compile: ${errors.join("; ")}`);
  return r.outputText;
}

async function runScript(block: DocBlock, state: FileState): Promise<void> {
  const server = await serverFor(block, state);
  const code = await prepare(block, state, server.port);
  const full = directive(block, "continues") ? `${state.script}\n${code}` : code;
  state.script = full;
  const name = `block-${block.line}.mjs`;
  writeFileSync(join(state.dir, name), transpile(full, `${block.file}:${block.line}.ts`));
  const env = blockEnv(block, { SLUICE_URL: server.url });
  const proc = spawnProc(process.execPath, [name], state.dir, env);
  await runToEnd(block, proc);
}

async function checkJson(block: DocBlock, state: FileState): Promise<void> {
  const value = JSON.parse(block.code) as unknown;
  const shape = directive(block, "shape-of");
  if (shape) {
    // A documented response: its top-level fields are the ones a real response has. `{id}` is a
    // demo generation that ran to its end.
    const server = await fileServer(state);
    let path = shape.args[0] as string;
    if (path.includes("{id}")) {
      const start = await fetch(`${server.url}/v1/streams`, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "text/event-stream" },
        body: JSON.stringify({
          model: "demo",
          messages: [{ role: "user", content: "hi" }],
          demo: { length: 5 },
        }),
      });
      await start.text(); // the whole stream: it has ended
      path = path.replace("{id}", start.headers.get("sluice-stream-id") as string);
    }
    const res = await fetch(`${server.url}${path}`);
    expect(res.status, `${block.file}:${block.line}: GET ${path}`).toBe(200);
    const real = (await res.json()) as Record<string, unknown>;
    expect(
      Object.keys(value as object).sort(),
      `${block.file}:${block.line}: the fields of GET ${path}`,
    ).toEqual(Object.keys(real).sort());
    return;
  }
  if (directive(block, "json-only")) return;
  // A Sluice config: the real loader accepts it (what `sluice serve --config` does first).
  const file = join(state.dir, `config-${block.line}.json`);
  writeFileSync(file, block.code);
  loadConfig({ file, env: {} });
  const defaults = directive(block, "defaults");
  if (defaults) {
    // A block that shows the defaults: every value in it is the schema's default.
    const except = (defaults.opts.except ?? "").split(/\s+/).filter(Boolean);
    const real = parseConfig({}) as unknown as Record<string, unknown>;
    for (const [path, shown] of leaves(value)) {
      if (except.some((e) => path === e || path.startsWith(`${e}.`))) continue;
      const actual = path
        .split(".")
        .reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], real);
      expect(actual, `${block.file}:${block.line}: ${path} is shown as a default`).toEqual(shown);
    }
  }
}

/** Every leaf of a JSON value (arrays are leaves) with its dotted path. */
function leaves(value: unknown, prefix = ""): [string, unknown][] {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [[prefix, value]];
  return Object.entries(value).flatMap(([k, v]) => leaves(v, prefix ? `${prefix}.${k}` : k));
}

/** The nginx block is docs/examples/nginx.conf (less its header comment), which nginx -t accepts. */
function checkNginx(block: DocBlock): void {
  const example = readFileSync(join(ROOT, "docs/examples/nginx.conf"), "utf8").replace(/^(#.*\n)+\n?/, "");
  expect(block.code, `${block.file}:${block.line} differs from docs/examples/nginx.conf`).toBe(example);
}

mkdirSync(WORK, { recursive: true });

describe("the doc-block extractor", () => {
  it("reads fences, their language and the annotations just before them", () => {
    const md = [
      "# t",
      "",
      '<!-- doc-test: expect-stdout-contains "a b"; expect-exit 1 -->',
      "",
      "```sh",
      "echo a b",
      "```",
      "",
      '<!-- doc-test: skip reason="needs a key" -->',
      "```ts",
      "x()",
      "```",
      "```",
      "plain",
      "```",
    ].join("\n");
    const blocks = extractBlocks(md, "t.md");
    expect(blocks.map((b) => [b.line, b.lang, b.code])).toEqual([
      [5, "sh", "echo a b\n"],
      [10, "ts", "x()\n"],
      [13, "", "plain\n"],
    ]);
    expect(blocks[0]?.directives).toEqual([
      { name: "expect-stdout-contains", args: ["a b"], opts: {} },
      { name: "expect-exit", args: ["1"], opts: {} },
    ]);
    expect(classify(blocks[0] as DocBlock)).toBe("shell");
    expect(classify(blocks[1] as DocBlock)).toBe("skip");
    // A block with no language (or one nothing runs) fails: it must say what it is.
    expect(() => classify(blocks[2] as DocBlock)).toThrow(/cannot be checked/);
    expect(() => classify({ ...(blocks[0] as DocBlock), lang: "python" })).toThrow(/python/);
  });

  it("refuses annotations it cannot honour", () => {
    expect(() => parseDirectives("skipp", "x")).toThrow(/unknown doc-test directive/);
    expect(() => parseDirectives("skip", "x")).toThrow(/reason/);
    expect(() => parseDirectives("expect-exit", "x")).toThrow(/needs a value/);
    expect(() => parseDirectives('replace "a', "x")).toThrow(/unclosed quote/);
    expect(() => extractBlocks("<!-- doc-test: json-only -->\nprose\n```json\n{}\n```\n", "x")).toThrow(
      /right before a code block/,
    );
    expect(() => extractBlocks("```sh\necho\n", "x")).toThrow(/never closed/);
  });
});

describe("docs/examples", () => {
  it("every file there is checked: nginx.conf passes nginx -t", async () => {
    const files = readdirSync(join(ROOT, "docs/examples"));
    for (const f of files)
      expect(["nginx.conf"], `docs/examples/${f} is not checked by any test`).toContain(f);
    // Not installed: a failure that says so (.ci/run installs it at this path).
    expect(existsSync(NGINX), `no nginx at ${NGINX}: apt-get install nginx`).toBe(true);
    const dir = mkdtempSync(join(WORK, "nginx-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const proc = spawnProc(
      NGINX,
      [
        "-t",
        "-p",
        dir,
        "-c",
        join(ROOT, "docs/examples/nginx.conf"),
        "-e",
        join(dir, "error.log"),
        "-g",
        `pid ${dir}/nginx.pid;`,
      ],
      dir,
      process.env,
    );
    const code = await proc.exit;
    expect(proc.out.stderr).toContain("syntax is ok");
    expect(code, proc.out.stderr).toBe(0);
  });
});

/** GitHub's anchor for a heading: lower case, punctuation dropped, each space a hyphen. */
function slug(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

function anchorsOf(markdown: string): Set<string> {
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const h = !fenced && /^#{1,6}\s+(.*)$/.exec(line);
    if (h) out.add(slug(h[1] as string));
  }
  return out;
}

describe("links", () => {
  it("every relative link of README.md and docs/*.md names a file that exists, and a heading it has", () => {
    const broken: string[] = [];
    for (const file of DOCS) {
      // Links in prose: code blocks and inline code spans are not links.
      const text = readFileSync(join(ROOT, file), "utf8")
        .replace(/^(```|~~~)[\s\S]*?^\1/gm, "")
        .replace(/`[^`\n]*`/g, "");
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1] as string;
        if (/^[a-z]+:/.test(target)) continue; // http:, mailto:
        const [path, anchor] = target.split("#") as [string, string | undefined];
        const resolved = path ? join(ROOT, file, "..", path) : join(ROOT, file);
        if (!existsSync(resolved)) {
          broken.push(`${file}: ${target} (no such file)`);
          continue;
        }
        if (anchor && resolved.endsWith(".md") && !anchorsOf(readFileSync(resolved, "utf8")).has(anchor))
          broken.push(`${file}: ${target} (no such heading)`);
      }
    }
    expect(broken).toEqual([]);
  });
});

// Runs beside the files' blocks (concurrent): the compiler works in a process of its own.
describe("TypeScript blocks", { concurrent: true }, () => {
  it("type-check with the repository's compiler settings, so an example cannot use an API that changed", async () => {
    const dir = mkdtempSync(join(WORK, "typecheck-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // One module per block, as it runs (a `continues` block after the blocks it continues).
    const where = new Map<string, string>();
    for (const file of DOCS) {
      let chain = "";
      for (const block of extractBlocks(readFileSync(join(ROOT, file), "utf8"), file)) {
        if (!["ts", "tsx"].includes(block.lang) || directive(block, "skip")) continue;
        if (block.lang === "tsx" && !directive(block, "typecheck-only")) continue; // classify() reports it
        chain = directive(block, "continues") ? `${chain}\n${block.code}` : block.code;
        const name = `${file.replace(/[^\w]+/g, "-")}-${block.line}.${block.lang === "tsx" ? "tsx" : "mts"}`;
        writeFileSync(join(dir, name), chain);
        where.set(name, `${block.file}:${block.line}`);
      }
    }
    expect(where.size).toBeGreaterThan(5);
    const config = {
      extends: join(ROOT, "tsconfig.base.json"),
      compilerOptions: {
        composite: false,
        declaration: false,
        sourceMap: false,
        noEmit: true,
        jsx: "react-jsx",
      },
      include: ["*.mts", "*.tsx"],
    };
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(config));
    const tsc = join(ROOT, "node_modules/typescript/bin/tsc");
    const proc = spawnProc(process.execPath, [tsc, "-p", dir, "--pretty", "false"], dir, process.env);
    const code = await proc.exit;
    // "file.mts(3,7): error TS…" → "docs/x.md:12 (line 3 of the block): error TS…"
    const report = proc.out.stdout.replace(/^(\S+?)\((\d+),\d+\)/gm, (m, f: string, line: string) => {
      const at = where.get(f.split("/").pop() as string);
      return at ? `${at} (line ${line} of the block)` : m;
    });
    expect(report.trim(), "the TypeScript blocks do not type-check").toBe("");
    expect(code).toBe(0);
  }, 180_000);
});

for (const file of DOCS) {
  const blocks = extractBlocks(readFileSync(join(ROOT, file), "utf8"), file);
  // Files run side by side (each with its own server and directory); a file's blocks in order.
  describe(file, { concurrent: true }, () => {
    const state: FileState = { dir: "", script: "", ports: new Map() };
    const workDir = async () => {
      if (!state.dir) {
        state.dir = mkdtempSync(join(WORK, `${file.replace(/[^\w]+/g, "-")}-`));
        const dir = state.dir;
        cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
        // Commands run where a clone's root would be: the example config is there.
        copyFileSync(join(ROOT, "sluice.example.json"), join(dir, "sluice.example.json"));
        // Blocks annotated `file NAME` are files other blocks use (a config, say): written first.
        for (const b of blocks)
          for (const d of directives(b, "file"))
            writeFileSync(join(dir, d.args[0] as string), await rewritePorts(b.code, state, undefined));
      }
      return state.dir;
    };
    afterAll(async () => {
      if (state.server) await stop(state.server.proc);
    });
    if (blocks.length === 0) {
      it.sequential("has no code blocks", () => expect(blocks).toEqual([]));
      return;
    }
    for (const block of blocks) {
      const title = `${block.lang || "?"} block at line ${block.line}`;
      let kind: BlockKind;
      try {
        kind = classify(block);
      } catch (err) {
        // A block nothing checks fails, so a new example cannot go in untested.
        it.sequential(title, () => {
          throw err;
        });
        continue;
      }
      if (kind === "skip") {
        it.skip(`${title} (${directive(block, "skip")?.opts.reason})`, () => {});
        continue;
      }
      if (kind === "typecheck") {
        const why = directive(block, "typecheck-only")?.opts.reason;
        it.sequential(`${title}: type-checked above, not run (${why})`, () =>
          expect(block.code.length).toBeGreaterThan(0));
        continue;
      }
      if (kind === "text") {
        it.sequential(`${title}: output, not run`, () => expect(block.code.length).toBeGreaterThan(0));
        continue;
      }
      it.sequential(
        `${title} (${kind})`,
        async () => {
          await workDir();
          if (kind === "shell") await withBackground(block, state, () => runShell(block, state));
          else if (kind === "script") await withBackground(block, state, () => runScript(block, state));
          else if (kind === "json") await checkJson(block, state);
          else if (kind === "nginx") checkNginx(block);
        },
        timeoutOf(block) + 40_000,
      );
    }
  });
}
