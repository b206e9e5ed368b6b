// Shared by the A/B scripts: start a Sluice build (its CLI) pinned to core 0, read a process's CPU.
import { spawn } from "node:child_process";
import { openSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export function startSluice(root, port, extra = []) {
  const proc = spawn(
    "taskset",
    [
      "-c",
      "0",
      "node",
      ...(process.env.SLUICE_AB_NODE_ARGS ? process.env.SLUICE_AB_NODE_ARGS.split(" ") : []),
      resolve(root, "packages/server/dist/cli/main.js"),
      "serve",
      "--port",
      String(port),
      ...extra,
    ],
    // SLUICE_AB_STDOUT=file: the server's stdout goes there (e.g. with SLUICE_AB_NODE_ARGS=--trace-gc).
    {
      stdio: [
        "ignore",
        process.env.SLUICE_AB_STDOUT ? openSync(process.env.SLUICE_AB_STDOUT, "w") : "ignore",
        "inherit",
      ],
    },
  );
  return proc;
}

/** A throwaway redis-server (nothing saved) on `port`, pinned to `core`; resolves once it can take connections. */
export async function startRedisServer(port, core) {
  const proc = spawn(
    "taskset",
    [
      "-c",
      String(core),
      "redis-server",
      "--port",
      String(port),
      "--save",
      "",
      "--appendonly",
      "no",
      "--bind",
      "127.0.0.1",
    ],
    { stdio: "ignore" },
  );
  await sleep(300);
  return proc;
}

export async function ready(url) {
  for (let i = 0; i < 300; i++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not start`);
}

/** CPU time (user + system) of a process so far, in ms (Linux /proc, 10 ms ticks). */
export function cpuMs(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A Sluice config file (temp dir) on 127.0.0.1:port with route `up` → mock-upstream's openai-compatible API. */
export function upstreamConfig(name, port, upPort) {
  const file = join(tmpdir(), `sluice-ab-${name}-${process.pid}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      host: "127.0.0.1",
      port,
      log_level: "warn",
      routes: {
        up: { provider: "openai-compatible", base_url: `http://127.0.0.1:${upPort}/v1`, model: "demo" },
      },
    }),
  );
  return file;
}
