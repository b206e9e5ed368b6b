/**
 * The mock's command line, shared by its own bin (`sluice-mock-upstream`) and the server CLI's
 * `sluice mock-upstream`, which hands its arguments here: the options are defined once.
 */
import { Command, InvalidArgumentError } from "commander";
import { type MockOptions, MockOptionsSchema } from "./faults.js";
import { startMockUpstream } from "./server.js";

export interface MockCliOptions {
  /** The command's name in help and error messages. */
  name?: string;
  /** Where "listening on" and the request log go; stdout by default. */
  out?: (line: string) => void;
}

function intArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`"${v}" is not a non-negative integer`);
  return n;
}

/** `--fault JSON`: the faults of faults.ts, validated. */
function faultArg(v: string): MockOptions {
  let json: unknown;
  try {
    json = JSON.parse(v);
  } catch {
    throw new InvalidArgumentError("--fault must be a JSON object");
  }
  const r = MockOptionsSchema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new InvalidArgumentError(`--fault: ${i?.path.join(".") || "(root)"}: ${i?.message ?? "invalid"}`);
  }
  return r.data;
}

interface Flags {
  host: string;
  port: number;
  apiKey?: string;
  failStatus?: number;
  failTimes?: number;
  retryAfter?: number;
  fault?: MockOptions;
}

/**
 * Parses `args` (the arguments after the command name), starts the mock and stops it on
 * SIGINT/SIGTERM. Bad arguments and `--help` exit the process, as a CLI does.
 */
export async function runMockUpstreamCli(args: string[], opts: MockCliOptions = {}): Promise<void> {
  const out = opts.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const program = new Command(opts.name ?? "sluice-mock-upstream")
    .description(
      "serve the demo model as an OpenAI-compatible (and Anthropic Messages) HTTP server (an honest simulator, for tests and benchmarks)",
    )
    .showHelpAfterError()
    .option("--host <host>", "address to bind", "127.0.0.1")
    .option("--port <port>", "port (0 picks a free one)", intArg, 8081)
    .option("--api-key <key>", "require this key (Authorization: Bearer, or x-api-key)")
    .option(
      "--fail-status <status>",
      "fault injection: answer this HTTP status instead of a completion",
      intArg,
    )
    .option("--fail-times <n>", "only the first N requests fail (default: all)", intArg)
    .option("--retry-after <seconds>", "with --fail-status: send Retry-After", intArg)
    .option(
      "--fault <json>",
      "other faults as JSON, e.g. '{\"stall_after_tokens\":3}' (docs/providers.md lists them)",
      faultArg,
    );
  program.parse(args, { from: "user" });
  const flags = program.opts<Flags>();
  const fault = {
    ...flags.fault,
    ...(flags.failStatus ? { status: flags.failStatus } : {}),
    ...(flags.retryAfter !== undefined ? { retry_after: flags.retryAfter } : {}),
  };
  const mock = await startMockUpstream({
    host: flags.host,
    port: flags.port,
    ...(flags.apiKey ? { apiKey: flags.apiKey } : {}),
    ...(Object.keys(fault).length > 0
      ? { fault: { ...fault, ...(flags.failTimes !== undefined ? { times: flags.failTimes } : {}) } }
      : {}),
    log: (line) => out(line),
  });
  out(`mock-upstream listening on ${mock.url}`);
  const stop = async () => {
    await mock.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop());
  process.on("SIGTERM", () => void stop());
}
