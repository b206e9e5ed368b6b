// Starts `sluice mock-upstream` on a random port pinned to core 1 (for the single-process
// micro-benchmarks: provider-path.mjs, read-floor.mjs) and resolves once it listens.
import { spawn } from "node:child_process";
import { resolve } from "node:path";

export async function startMockUpstream(root) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const proc = spawn(
    "taskset",
    [
      "-c",
      "1",
      process.execPath,
      resolve(root, "packages/server/dist/cli/main.js"),
      "mock-upstream",
      "--port",
      String(port),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise((r) => proc.stdout.once("data", r));
  proc.stdout.resume();
  return { port, proc };
}
