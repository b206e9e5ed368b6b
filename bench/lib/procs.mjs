// Child processes for the bench: each pinned to a core with taskset, the soft fd limit raised to the
// hard one, stdout/stderr to a log file; CPU (utime+stime) and RSS read from /proc.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import { openSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";

const TICK_MS = 10; // CLK_TCK = 100 on Linux

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

export function waitPort(port, timeoutMs = 20_000) {
  const until = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tryOnce = () => {
      const s = net.connect(port, "127.0.0.1");
      s.on("connect", () => {
        s.destroy();
        resolve();
      });
      s.on("error", () => {
        s.destroy();
        if (Date.now() > until) reject(new Error(`port ${port} not listening after ${timeoutMs} ms`));
        else setTimeout(tryOnce, 100);
      });
    };
    tryOnce();
  });
}

export const procs = new Map(); // name -> {child, pid, exited}

let niceLevel = 0;
/** Every process started after this runs at `nice -n level` (negative needs root). */
export function setNice(level) {
  niceLevel = level;
}

export function spawnPinned(name, core, cmd, args, { cwd, env, logDir, ipc = false } = {}) {
  const log = openSync(join(logDir, `${name}.log`), "w");
  const nice = niceLevel ? `nice -n ${niceLevel} ` : "";
  const child = spawn(
    "sh",
    ["-c", `ulimit -n $(ulimit -Hn) 2>/dev/null; exec ${nice}taskset -c ${core} "$@"`, "sh", cmd, ...args],
    { cwd, env: { ...process.env, ...env }, stdio: ipc ? ["ignore", log, log, "ipc"] : ["ignore", log, log] },
  );
  const p = { name, child, pid: child.pid, core, exited: false, code: undefined };
  child.on("exit", (code, signal) => {
    p.exited = true;
    p.code = code ?? signal;
  });
  procs.set(name, p);
  return p;
}

export function cpuMs(pid) {
  try {
    const { readFileSync } = fs;
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * TICK_MS; // utime, stime (fields 14, 15)
  } catch {
    return Number.NaN;
  }
}

/** A process and all its descendants now alive (a --workers primary and its workers). */
export function treePids(pid) {
  if (pid === undefined) return [];
  const { readdirSync, readFileSync } = fs;
  const parent = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {}
  }
  const tree = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [child, ppid] of parent) {
      if (tree.has(ppid) && !tree.has(child)) {
        tree.add(child);
        grew = true;
      }
    }
  }
  return [...tree];
}

/** f(pid) + f(each descendant); a descendant that exits while it is read counts 0. */
function treeSum(pid, f) {
  let total = f(pid);
  for (const p of treePids(pid)) if (p !== pid) total += f(p) || 0;
  return total;
}

/** CPU of a process and all its descendants now alive (a --workers primary and its workers). */
export function treeCpuMs(pid) {
  if (pid === undefined) return Number.NaN;
  return treeSum(pid, cpuMs);
}

/** RSS summed over a process and its descendants (a --workers primary and its workers). */
export function treeRssKb(pid) {
  if (pid === undefined) return Number.NaN;
  return treeSum(pid, rssKb);
}

export function rssKb(pid) {
  try {
    const { readFileSync } = fs;
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Busy fraction of each core over `ms` (from /proc/stat), to note how loaded the machine was. */
export async function coreBusy(ms = 500) {
  const read = () =>
    fs
      .readFileSync("/proc/stat", "utf8")
      .split("\n")
      .filter((l) => /^cpu\d/.test(l))
      .map((l) => {
        const v = l.split(/\s+/).slice(1).map(Number);
        const idle = v[3] + v[4];
        return { idle, total: v.reduce((a, b) => a + b, 0) };
      });
  const a = read();
  await new Promise((r) => setTimeout(r, ms));
  const b = read();
  return b.map((x, i) => Math.round((1 - (x.idle - a[i].idle) / (x.total - a[i].total || 1)) * 100));
}

export async function stopAll() {
  for (const p of procs.values()) {
    if (!p.exited) {
      try {
        process.kill(p.pid, "SIGTERM");
      } catch {}
    }
  }
  const until = Date.now() + 4000;
  while ([...procs.values()].some((p) => !p.exited) && Date.now() < until)
    await new Promise((r) => setTimeout(r, 50));
  for (const p of procs.values()) {
    if (!p.exited) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {}
    }
  }
}
