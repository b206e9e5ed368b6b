import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { childrenOf, spawnSluice, stopWorkersServer } from "./cluster-helper.js";
import { startSluice } from "./helpers.js";

/**
 * The listening socket as the kernel sees it (`ss` from iproute2, which .ci/run installs): for a
 * listening socket `ss` shows its accept backlog as Send-Q, and with -p the processes that hold it.
 */
function listening(port: number): { backlog: number; pids: number[] }[] {
  const out = execFileSync("ss", ["-Hltnp", `sport = :${port}`], { encoding: "utf8" });
  return out
    .trim()
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => {
      const cols = l.trim().split(/\s+/);
      return { backlog: Number(cols[2]), pids: [...l.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])) };
    });
}

/** The kernel caps a backlog at net.core.somaxconn. */
const expected = Math.min(4096, Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8")));

describe("the listening socket", () => {
  it("takes a backlog of 4096 connections (Node's default is 511), so a burst of readers is queued, not dropped", async () => {
    const s = await startSluice();
    try {
      const socks = listening(Number(new URL(s.url).port));
      expect(socks.length).toBe(1);
      expect(socks[0]?.backlog).toBe(expected);
      expect(socks[0]?.pids).toContain(process.pid);
    } finally {
      await s.close();
    }
  });

  it("--workers: each worker holds the listening socket and accepts its own connections; the primary hands none over", async () => {
    const srv = await spawnSluice(["--workers", "2"]);
    try {
      const primary = srv.proc.pid as number;
      let workers: number[] = [];
      for (let i = 0; i < 100 && workers.length < 2; i++) {
        workers = childrenOf(primary);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(workers.length).toBe(2);
      const socks = listening(srv.port);
      expect(socks.length).toBeGreaterThan(0);
      for (const s of socks) expect(s.backlog).toBe(expected);
      const holders = new Set(socks.flatMap((s) => s.pids));
      // Round-robin (node:cluster's default) keeps the socket in the primary alone.
      for (const w of workers) expect(holders.has(w)).toBe(true);
      // A request is answered (by a worker that accepted it).
      expect((await fetch(`${srv.url}/healthz`)).status).toBe(200);
    } finally {
      await stopWorkersServer(srv);
    }
  }, 60_000);
});
