import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoBody, type Running, startSluice, startStream } from "./helpers.js";

// `sluice tail ID | head -n 1`: the reader of stdout goes away; the CLI must exit quietly
// (no EPIPE stack trace), like any well-behaved Unix filter.

const CLI = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));
let s: Running;
beforeAll(async () => {
  s = await startSluice();
});
afterAll(async () => {
  await s?.close();
});

describe("sluice tail into a closed pipe", () => {
  for (const json of [false, true]) {
    it(`exits quietly on EPIPE${json ? " (--json)" : ""}`, async () => {
      const { id } = await startStream(s.url, demoBody({ tokens_per_s: 200, length: 100_000 }));
      const child = spawn(process.execPath, [CLI, "tail", id, "--url", s.url, ...(json ? ["--json"] : [])], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      const exit = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
      // Read the first output, then close our end of the pipe, as `head -n 1` does.
      await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
      child.stdout.destroy();
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      const code = await exit;
      clearTimeout(timer);
      expect(stderr).not.toMatch(/EPIPE|Error|at /);
      expect(stderr).toBe("");
      expect(code).toBe(0);
    });
  }
});
