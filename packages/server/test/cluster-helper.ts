import { type ChildProcess, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { GenerationRequestSchema } from "../src/core/request.js";
import { planDemo } from "../src/providers/demo/generator.js";
import { freePort } from "./redis-helper.js";

const CLI = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));
const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
/** Debian's nginx, where the cluster test starts it (.ci/run checks this exact path). */
export const NGINX = "/usr/sbin/nginx";
export const NGINX_EXAMPLE = fileURLToPath(new URL("../../../docs/examples/nginx.conf", import.meta.url));

export interface SluiceProc {
  url: string;
  port: number;
  proc: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

/** Spawns `sluice serve` (the built CLI) with a config file; resolves once it listens. */
export async function spawnSluice(args: string[], config: Record<string, unknown> = {}): Promise<SluiceProc> {
  const dir = mkdtempSync(join(tmpdir(), "sluice-node-"));
  const file = join(dir, "config.json");
  writeFileSync(file, JSON.stringify({ log_level: "warn", ...config }));
  const port = await freePort();
  const proc = spawn(process.execPath, [CLI, "serve", "--port", String(port), "-c", file, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, SLUICE_LOG_LEVEL: "warn" },
  });
  let out = "";
  proc.stdout?.on("data", (b: Buffer) => (out += b.toString()));
  proc.stderr?.on("data", (b: Buffer) => (out += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once("exit", (code, signal) => {
      rmSync(dir, { recursive: true, force: true });
      resolve({ code, signal });
    }),
  );
  const start = Date.now();
  while (!/listening on http/.test(out)) {
    if (proc.exitCode !== null || Date.now() - start > 20_000)
      throw new Error(`sluice did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    proc,
    output: () => out,
    exited,
    kill(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    },
  };
}

export interface NginxProc {
  url: string;
  conf: string;
  close(): Promise<void>;
}

/**
 * Starts Debian's nginx with docs/examples/nginx.conf, changing only the upstream servers,
 * the listen port and (test-only) paths for its pid, logs and temp files.
 */
export async function startNginx(upstreamPorts: number[]): Promise<NginxProc> {
  // Not installed: a failure that says so (never a skip; .ci/run installs it at this path).
  if (!existsSync(NGINX)) throw new Error(`no nginx at ${NGINX}: apt-get install nginx`);
  const dir = mkdtempSync(join(tmpdir(), "sluice-nginx-"));
  for (const sub of ["body", "proxy", "fastcgi", "uwsgi", "scgi"]) mkdirSync(join(dir, sub));
  const port = await freePort();
  let conf = readFileSync(NGINX_EXAMPLE, "utf8");
  const servers = /^(\s*)server 127\.0\.0\.1:\d+ (max_fails=\S+ fail_timeout=\S+);\n/gm;
  const first = servers.exec(conf);
  if (!first) throw new Error("the example nginx.conf has no upstream servers");
  const indent = first[1] as string;
  const opts = first[2] as string;
  conf = conf.replace(servers, "");
  conf = conf.replace(
    /upstream sluice \{\n/,
    `upstream sluice {\n${upstreamPorts.map((p) => `${indent}server 127.0.0.1:${p} ${opts};\n`).join("")}`,
  );
  if (!/listen 127\.0\.0\.1:\d+;/.test(conf)) throw new Error("the example nginx.conf has no listen line");
  conf = conf.replace(/listen 127\.0\.0\.1:\d+;/, `listen 127.0.0.1:${port};`);
  conf = conf.replace(
    /^http \{\n/m,
    `http {\n  access_log off;\n  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n  fastcgi_temp_path ${dir}/fastcgi;\n  uwsgi_temp_path ${dir}/uwsgi;\n  scgi_temp_path ${dir}/scgi;\n`,
  );
  const confFile = join(dir, "nginx.conf");
  writeFileSync(confFile, conf);
  const proc = spawn(
    NGINX,
    ["-p", dir, "-c", confFile, "-e", join(dir, "error.log"), "-g", `daemon off; pid ${dir}/nginx.pid;`],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  proc.stdout?.on("data", (b: Buffer) => (out += b.toString()));
  proc.stderr?.on("data", (b: Buffer) => (out += b.toString()));
  const start = Date.now();
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`nginx exited: ${out}`);
    if (await canConnect(port)) break;
    if (Date.now() - start > 10_000) throw new Error(`nginx did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    conf,
    async close() {
      if (proc.exitCode === null) {
        await new Promise<void>((resolve) => {
          proc.once("exit", () => resolve());
          proc.kill("SIGQUIT");
        });
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** The text the demo model writes for this request body (it is deterministic). */
export function demoText(body: unknown): string {
  const plan = planDemo(GenerationRequestSchema.parse(body));
  let s = "";
  for (const ev of plan.events) if (ev.type === "text-delta") s += ev.delta;
  return s;
}

export interface Followed {
  /** Every event by offset, in order, each once. */
  events: { id: string; type: string; data: Record<string, unknown> }[];
  connections: number;
  text: string;
  terminal: Record<string, unknown> | undefined;
  /** The HTTP status of every answer, in order (0: the request itself failed). */
  statuses: number[];
  /** Every reconnect the follower did not choose (failed request, non-200, broken connection). */
  retries: string[];
}

/**
 * Follows a stream over SSE until its terminal event, dropping the connection after a random
 * number of events and resuming with Last-Event-ID (through a load balancer, each resume may
 * land on another node). Checks order and duplicates as it goes. Any reconnect it did not
 * choose (a failed request, a non-200 answer, a connection that broke or ended before the
 * terminal event) throws at once, unless `outages` is set: then it is recorded in `retries`
 * and the follower resumes, for tests that break nodes or Redis on purpose. A 204 (the stream
 * has ended) before the terminal event always throws: the terminal event was lost.
 */
export async function followWithReconnects(
  base: string,
  id: string,
  opts: { maxPerConnection?: number; deadlineMs?: number; rand?: () => number; outages?: boolean } = {},
): Promise<Followed> {
  const rand = opts.rand ?? Math.random;
  const maxPer = opts.maxPerConnection ?? 40;
  const until = Date.now() + (opts.deadlineMs ?? 60_000);
  const out: Followed = {
    events: [],
    connections: 0,
    text: "",
    terminal: undefined,
    statuses: [],
    retries: [],
  };
  const retry = async (why: string) => {
    out.retries.push(why);
    if (!opts.outages)
      throw new Error(`follow ${id}: ${why} (after ${out.events.length} events; statuses ${out.statuses})`);
    await new Promise((r) => setTimeout(r, 100));
  };
  let last: string | undefined;
  while (!out.terminal) {
    if (Date.now() > until)
      throw new Error(
        `follow ${id}: no terminal event in time (${out.events.length} events; retries: ${out.retries.join("; ")})`,
      );
    const ac = new AbortController();
    let res: Response;
    try {
      res = await fetch(`${base}/v1/streams/${id}`, {
        headers: { accept: "text/event-stream", ...(last ? { "last-event-id": last } : {}) },
        signal: ac.signal,
      });
    } catch (err) {
      out.statuses.push(0);
      await retry(`request failed: ${(err as Error).message}`);
      continue;
    }
    out.connections++;
    out.statuses.push(res.status);
    if (res.status === 204)
      throw new Error(`follow ${id}: 204 (stream ended) after ${last ?? "-1"} before any terminal event`);
    if (res.status === 404) throw new Error(`follow ${id}: stream not found`);
    if (res.status !== 200 || !res.body) {
      await res.body?.cancel().catch(() => {});
      await retry(`status ${res.status}`);
      continue;
    }
    const quota = 1 + Math.floor(rand() * maxPer);
    let got = 0;
    let broke: string | undefined;
    try {
      for await (const msg of sseMessages(res.body)) {
        if (!msg.event || msg.id === undefined) continue;
        if (last !== undefined && msg.id <= last)
          throw new Error(`duplicate or reordered offset ${msg.id} after ${last}`);
        last = msg.id;
        const data = JSON.parse(msg.data) as Record<string, unknown>;
        out.events.push({ id: msg.id, type: msg.event, data });
        if (data.type === "text-delta") out.text += String(data.delta);
        if (data.type === "finish" || data.type === "error" || data.type === "abort") {
          out.terminal = data;
          break;
        }
        if (++got >= quota) break;
      }
      if (!out.terminal && got < quota) broke = "the connection ended before the terminal event";
    } catch (err) {
      if ((err as Error).message.startsWith("duplicate")) throw err;
      broke = `the connection broke: ${(err as Error).message}`;
    } finally {
      ac.abort();
    }
    if (broke) await retry(broke);
  }
  return out;
}

async function* sseMessages(body: ReadableStream<Uint8Array>) {
  const decoder = new TextDecoder();
  let buf = "";
  const reader = body.getReader();
  for (;;) {
    const { value: chunk, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(chunk, { stream: true });
    for (;;) {
      const end = buf.indexOf("\n\n");
      if (end < 0) break;
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const m: { id?: string; event?: string; data: string } = { data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith("id: ")) m.id = line.slice(4);
        else if (line.startsWith("event: ")) m.event = line.slice(7);
        else if (line.startsWith("data: ")) m.data += (m.data ? "\n" : "") + line.slice(6);
      }
      yield m;
    }
  }
}

export async function json<T = Record<string, unknown>>(res: Response | Promise<Response>): Promise<T> {
  return (await (await res).json()) as T;
}

/** The pids whose parent is `ppid` (from /proc). */
export function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === ppid) out.push(Number(name));
    } catch {}
  }
  return out;
}

/**
 * Stops a `--workers` server still running as an operator would (SIGTERM: its scratch file is
 * removed on the way out), and SIGKILLs the primary and its workers if it is not gone in 15 s.
 */
export async function stopWorkersServer(srv: SluiceProc | undefined): Promise<void> {
  if (!srv || srv.proc.exitCode !== null || srv.proc.signalCode !== null) return;
  const workers = childrenOf(srv.proc.pid as number);
  srv.kill("SIGTERM");
  const timer = setTimeout(() => {
    for (const pid of [srv.proc.pid as number, ...workers]) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
  }, 15_000);
  await srv.exited;
  clearTimeout(timer);
}
