#!/usr/bin/env node
import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import process from "node:process";
import { Command, InvalidArgumentError } from "commander";
import { runPrimary, workerCount } from "../cluster/primary.js";
import { addWorkerHeader, aggregateMetrics, type WorkerParts, workerParts } from "../cluster/worker.js";
import { ConfigError, loadConfig } from "../config.js";
import { createSluice } from "../server.js";
import { readSse } from "./sse-client.js";

function intArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`"${v}" is not a non-negative integer`);
  return n;
}

function fail(message: string, code = 1): never {
  process.stderr.write(`sluice: ${message}\n`);
  process.exit(code);
}

/**
 * `sluice tail … | head`: when the reader of our output goes away, stop quietly, as Unix
 * filters do, instead of dying with an EPIPE stack trace. (For the commands that print a
 * stream; a server whose log reader goes away is a different matter.)
 */
function quietOnClosedPipe(): void {
  for (const out of [process.stdout, process.stderr]) {
    out.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") process.exit(0);
      throw err;
    });
  }
}

/** The server package's version, from its package.json (src/cli and dist/cli are both two levels down). */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/** `--url` for chat and tail: SLUICE_URL when set (and not empty), else the default local server. */
const DEFAULT_URL = process.env.SLUICE_URL || "http://127.0.0.1:8080";

const program = new Command();
program
  .name("sluice")
  .description("Run AI generations and stream them, resumably, token by token.")
  .version(packageVersion(), "-V, --version", "print the version")
  .showHelpAfterError();

program
  .command("serve", { isDefault: true })
  .description("start the Sluice server (memory store and the demo model need no setup)")
  .option("--host <host>", "address to bind (default 127.0.0.1)")
  .option("--port <port>", "port to listen on (default 8080; 0 picks a free one)", intArg)
  .option("-c, --config <file>", "JSON config file (also SLUICE_CONFIG)")
  .option(
    "--upstream <url...>",
    "OpenAI-compatible server(s) whose models to serve, e.g. http://127.0.0.1:11434/v1",
  )
  .option("--log-level <level>", "fatal|error|warn|info|debug|trace|silent")
  .option("--insecure", "allow listening beyond loopback with no API keys configured")
  .option(
    "--store <store>",
    "memory (default), sqlite:./data/sluice.db, or redis://host:port (also SLUICE_STORE)",
  )
  .option("--grpc-port <port>", "also serve gRPC (proto/sluice.proto) on this port; off by default", intArg)
  .option("--tls-cert <file>", "PEM certificate: serve HTTP/2 over TLS (HTTP/1.1 fallback); needs --tls-key")
  .option("--tls-key <file>", "PEM private key for --tls-cert")
  .option(
    "--workers <n>",
    "run N worker processes behind the one port (auto = one per available core); see docs/operations.md",
  )
  .action(
    async (opts: {
      host?: string;
      port?: number;
      config?: string;
      upstream?: string[];
      logLevel?: string;
      insecure?: boolean;
      store?: string;
      grpcPort?: number;
      tlsCert?: string;
      tlsKey?: string;
      workers?: string;
    }) => {
      if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) fail("--tls-cert and --tls-key go together", 2);
      let config: ReturnType<typeof loadConfig>;
      try {
        config = loadConfig({
          ...(opts.config ? { file: opts.config } : {}),
          overrides: {
            ...(opts.host !== undefined ? { host: opts.host } : {}),
            ...(opts.port !== undefined ? { port: opts.port } : {}),
            ...(opts.upstream ? { upstreams: opts.upstream } : {}),
            ...(opts.logLevel ? { log_level: opts.logLevel as "info" } : {}),
            ...(opts.insecure ? { insecure: true } : {}),
            ...(opts.store ? { store: opts.store } : {}),
            ...(opts.grpcPort !== undefined ? { grpc_port: opts.grpcPort } : {}),
            ...(opts.tlsCert && opts.tlsKey ? { tls: { cert: opts.tlsCert, key: opts.tlsKey } } : {}),
          },
        });
      } catch (err) {
        if (err instanceof ConfigError) fail(err.message, 2);
        throw err;
      }
      if (opts.workers !== undefined && cluster.isPrimary) {
        let n: number;
        try {
          n = workerCount(opts.workers);
        } catch (err) {
          fail((err as Error).message, 2);
        }
        try {
          await runPrimary({ workers: n, store: config.store, graceMs: config.shutdown_grace_ms });
        } catch (err) {
          fail(`cannot start: ${(err as Error).message}`, 1);
        }
        return;
      }
      let worker: WorkerParts | undefined;
      let server: Awaited<ReturnType<typeof createSluice>>;
      try {
        worker = cluster.isWorker ? workerParts(config) : undefined;
        server = await createSluice(
          config,
          worker?.store ? { store: worker.store, coordinator: worker.coordinator } : {},
        );
        addWorkerHeader(server.app);
        if (worker) aggregateMetrics(server.metrics, worker.channel);
      } catch (err) {
        if (err instanceof ConfigError) fail(err.message, 2);
        fail(`cannot start: ${(err as Error).message}`, 1);
      }
      let url: string;
      try {
        url = await server.listen();
      } catch (err) {
        fail(`cannot listen on ${config.host}:${config.port}: ${(err as Error).message}`, 1);
      }
      server.logger.info(
        { url, store: server.store.name, models: server.routes.list().map((r) => r.name) },
        "sluice listening",
      );
      if (worker) {
        // The primary prints the listening line once every worker listens.
        worker.channel.send({
          sluice: "listening",
          url,
          ...(server.grpc ? { grpc: server.grpc.address } : {}),
        });
      } else {
        process.stdout.write(`sluice listening on ${url}\n`);
        if (server.grpc) process.stdout.write(`sluice gRPC listening on ${server.grpc.address}\n`);
      }
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        server.logger.info({ signal }, "shutting down");
        try {
          await server.close(config.shutdown_grace_ms);
        } catch (err) {
          server.logger.error({ err }, "error during shutdown");
        }
        process.exit(0);
      };
      process.on("SIGINT", () => void stop("SIGINT"));
      process.on("SIGTERM", () => void stop("SIGTERM"));
      // A worker whose primary is gone stops too (nobody relays its notices or routes cancels).
      if (worker) process.on("disconnect", () => void stop("disconnect"));
    },
  );

program
  .command("chat")
  .description("start a generation and stream it into the terminal (Ctrl-C cancels it)")
  .argument("<prompt>", "what to ask")
  .option("--url <url>", "Sluice server (also SLUICE_URL)", DEFAULT_URL)
  .option("-m, --model <model>", "model route", "demo")
  .option("--max-tokens <n>", "max output tokens", intArg)
  .option("--seed <n>", "demo model seed", intArg)
  .option("--tokens-per-s <n>", "demo model pace", intArg)
  .option("--kind <kind>", "demo model answer kind: markdown|json|tool-call|reasoning")
  .action(
    async (
      prompt: string,
      opts: {
        url: string;
        model: string;
        maxTokens?: number;
        seed?: number;
        tokensPerS?: number;
        kind?: string;
      },
    ) => {
      quietOnClosedPipe();
      const demo: Record<string, unknown> = {};
      if (opts.seed !== undefined) demo.seed = opts.seed;
      if (opts.tokensPerS !== undefined) demo.tokens_per_s = opts.tokensPerS;
      if (opts.kind !== undefined) demo.kind = opts.kind;
      const body: Record<string, unknown> = {
        model: opts.model,
        messages: [{ role: "user", content: prompt }],
      };
      if (opts.maxTokens !== undefined) body.max_tokens = opts.maxTokens;
      if (Object.keys(demo).length > 0 && opts.model === "demo") body.demo = demo;
      const base = opts.url.replace(/\/$/, "");
      let res: Response;
      try {
        res = await fetch(`${base}/v1/streams`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "text/event-stream" },
          body: JSON.stringify(body),
        });
      } catch (err) {
        fail(`cannot reach ${base}: ${(err as Error).message}`);
      }
      if (!res.ok || !res.body) fail(`server answered ${res.status}: ${await res.text()}`);
      const id = res.headers.get("sluice-stream-id") ?? "?";
      let cancelling = false;
      process.on("SIGINT", () => {
        if (cancelling) process.exit(130);
        cancelling = true;
        process.stderr.write("\n[cancelling…]\n");
        void fetch(`${base}/v1/streams/${id}/cancel`, { method: "POST" }).catch(() => process.exit(130));
      });
      const code = await printEvents(res.body, false);
      process.stderr.write(`[stream ${id}]\n`);
      process.exit(cancelling ? 130 : code);
    },
  );

program
  .command("tail")
  .description("follow a stream from an offset until it ends")
  .argument("<id>", "stream id")
  .option("--url <url>", "Sluice server (also SLUICE_URL)", DEFAULT_URL)
  .option("-o, --offset <offset>", "read after this offset (-1 = from the start, now = only new)", "-1")
  .option("--json", "print every event as a JSON line with its offset")
  .action(async (id: string, opts: { url: string; offset: string; json?: boolean }) => {
    quietOnClosedPipe();
    const base = opts.url.replace(/\/$/, "");
    let res: Response;
    try {
      res = await fetch(
        `${base}/v1/streams/${encodeURIComponent(id)}?offset=${encodeURIComponent(opts.offset)}`,
        {
          headers: { accept: "text/event-stream" },
        },
      );
    } catch (err) {
      fail(`cannot reach ${base}: ${(err as Error).message}`);
    }
    if (res.status === 204) process.exit(0);
    if (!res.ok || !res.body) fail(`server answered ${res.status}: ${await res.text()}`);
    process.exit(await printEvents(res.body, Boolean(opts.json)));
  });

/** What `sluice mock-upstream` uses of `@sluice/mock-upstream` (typed here: see loadMockUpstream). */
interface MockUpstreamModule {
  runMockUpstreamCli(args: string[], opts?: { name?: string }): Promise<void>;
}

/**
 * The mock upstream is a test/dev tool in a package of its own, which depends on this one: it is
 * loaded only for this subcommand, through a specifier TypeScript does not follow, so the build
 * has no cycle and the server's runtime never loads mock code.
 */
async function loadMockUpstream(): Promise<MockUpstreamModule> {
  const specifier: string = "@sluice/mock-upstream";
  try {
    return (await import(specifier)) as MockUpstreamModule;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code !== "ERR_MODULE_NOT_FOUND") throw err;
    fail(
      `mock-upstream needs the package @sluice/mock-upstream (a test and benchmark tool, not part of the server), which is not installed or not built (${e.message}). In a clone of the repository: npm ci && npm run build`,
    );
  }
}

program
  .command("mock-upstream")
  .description(
    "serve the demo model as an OpenAI-compatible (and Anthropic Messages) HTTP server, an honest simulator for tests and benchmarks (package @sluice/mock-upstream; `sluice mock-upstream --help` lists its options)",
  )
  // Every argument, --help included, goes to the package's own parser: its options are defined once.
  .helpOption(false)
  .allowUnknownOption()
  .argument("[args...]")
  .action(async (args: string[]) => {
    const mock = await loadMockUpstream();
    await mock.runMockUpstreamCli(args, { name: "sluice mock-upstream" });
  });

/** Prints a Sluice SSE stream; returns the exit code its terminal event implies. */
async function printEvents(body: ReadableStream<Uint8Array>, json: boolean): Promise<number> {
  let code = 1;
  let inReasoning = false;
  for await (const msg of readSse(body)) {
    if (!msg.event) continue;
    let ev: Record<string, unknown>;
    try {
      ev = JSON.parse(msg.data);
    } catch {
      continue;
    }
    if (json) {
      process.stdout.write(`${JSON.stringify({ offset: msg.id, event: ev })}\n`);
    } else if (ev.type === "text-delta") {
      if (inReasoning) {
        process.stdout.write("\n\n");
        inReasoning = false;
      }
      process.stdout.write(String(ev.delta));
    } else if (ev.type === "reasoning-delta") {
      inReasoning = true;
      process.stdout.write(`\x1b[2m${String(ev.delta)}\x1b[0m`);
    } else if (ev.type === "tool-call") {
      process.stdout.write(`\n[tool call ${String(ev.name)}(${JSON.stringify(ev.args)})]\n`);
    }
    if (ev.type === "finish") {
      if (!json) process.stdout.write("\n");
      code = 0;
    } else if (ev.type === "error") {
      if (!json) process.stderr.write(`\n[error ${String(ev.code)}: ${String(ev.message)}]\n`);
      code = 1;
    } else if (ev.type === "abort") {
      if (!json) process.stderr.write(`\n[cancelled: ${String(ev.reason)}]\n`);
      code = 130;
    }
  }
  return code;
}

program.parseAsync(process.argv).catch((err) => fail((err as Error).stack ?? String(err)));
