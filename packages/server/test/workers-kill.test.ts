import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { childrenOf, type SluiceProc, spawnSluice, stopWorkersServer } from "./cluster-helper.js";

/**
 * `sluice serve --workers 2` while notices flow between the workers all the time: a worker
 * killed then must cost only itself. (A notice relayed to a worker that was just killed fails
 * with EPIPE as an 'error' event on the primary's Worker object; unhandled, it ended the
 * primary and every worker with it: seen once in CI, and by hand in 2 runs of 3 of a loop like
 * this one that did not wait for the starts. The race is narrow: this test exercises the path
 * on every run but does not hit the race on every run.)
 */
let srv: SluiceProc;

beforeAll(async () => {
  srv = await spawnSluice(["--workers", "2"], { shutdown_grace_ms: 300 });
}, 60_000);

afterAll(async () => {
  await stopWorkersServer(srv);
}, 30_000);

describe("sluice serve --workers 2: killing workers while notices flow", () => {
  it("the primary outlives every kill, replaces the worker, and keeps serving", async () => {
    const start = () =>
      fetch(`${srv.url}/v1/streams`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "demo",
          messages: [{ role: "user", content: "x" }],
          demo: { tokens_per_s: 2000, length: 3000, ttft_ms: 0 },
        }),
      }).then(
        (r) => r.arrayBuffer(),
        () => undefined,
      );
    for (let round = 0; round < 6; round++) {
      // Fast generations on both workers: each one's commits are relayed to the other.
      await Promise.all(Array.from({ length: 20 }, start));
      const [victim] = childrenOf(srv.proc.pid as number);
      expect(victim).toBeDefined();
      process.kill(victim as number, "SIGKILL");
      // The primary is still there and a worker answers (the replacement starts within seconds).
      let ok = false;
      for (let i = 0; i < 100 && !ok; i++) {
        await new Promise((r) => setTimeout(r, 100));
        expect(srv.proc.exitCode, srv.output()).toBeNull();
        ok = await fetch(`${srv.url}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
          (r) => r.ok,
          () => false,
        );
      }
      expect(ok).toBe(true);
    }
    // Both workers are back.
    for (let i = 0; i < 100 && childrenOf(srv.proc.pid as number).length < 2; i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(childrenOf(srv.proc.pid as number)).toHaveLength(2);
    srv.kill("SIGTERM");
    expect((await srv.exited).code).toBe(0);
  }, 120_000);
});
