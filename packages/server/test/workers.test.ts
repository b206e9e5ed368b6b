import { readdirSync, readFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { type MockUpstream, startMockUpstream } from "@sluice/mock-upstream";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { childrenOf, type SluiceProc, spawnSluice, stopWorkersServer } from "./cluster-helper.js";
import { demoBody, readAllJson, readSse, type SseMsg } from "./helpers.js";

/**
 * `sluice serve --workers 2` (the built CLI): two worker processes behind one port, the
 * default (memory) store becoming one SQLite file they share. SLUICE_WORKER_HEADER=1 makes
 * every HTTP response name the pid of the worker that served it. Each request below goes on
 * a connection of its own; the workers accept for themselves, so a test that needs a given
 * worker opens connections until one reaches it (`on`, `connectionTo`, `wsTo`).
 */
let srv: SluiceProc;
let mock: MockUpstream;

/** The primaries' scratch directories (the memory store's stand-in) now present. */
function scratchDirs(): string[] {
  const out: string[] = [];
  for (const root of ["/dev/shm", tmpdir()]) {
    try {
      for (const d of readdirSync(root)) if (d.startsWith("sluice-workers-")) out.push(`${root}/${d}`);
    } catch {}
  }
  return out;
}

beforeAll(async () => {
  process.env.SLUICE_WORKER_HEADER = "1";
  mock = await startMockUpstream({ port: 0 });
  srv = await spawnSluice(["--workers", "2"], {
    shutdown_grace_ms: 500,
    routes: { "mock-model": { provider: "openai-compatible", base_url: mock.url } },
  });
}, 60_000);

afterAll(async () => {
  // Normally stopped by the last test; if not, stop it as an operator would (its scratch file is
  // removed on the way out), and kill what is left after a bound.
  await stopWorkersServer(srv);
  await mock?.close();
}, 30_000);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * fetch on a new connection of its own (a keep-alive one: with `Connection: close` undici can
 * trip on a server closing while a body is not read yet).
 */
async function fresh(
  path: string,
  init: RequestInit = {},
): Promise<{ res: Response; worker: number; dispatcher: Agent }> {
  const dispatcher = new Agent({ connections: 1 });
  const res = await fetch(`${srv.url}${path}`, { ...init, dispatcher } as RequestInit);
  const worker = Number(res.headers.get("sluice-worker"));
  return { res, worker, dispatcher };
}

/**
 * Sends a request on two new connections at once until a worker matching `want` answers one of
 * them (two at once often reach both); the other responses are dropped.
 */
async function on(
  want: (pid: number) => boolean,
  path: string,
  init: RequestInit = {},
): Promise<{ res: Response; worker: number }> {
  const seen: string[] = [];
  for (let i = 0; i < 30; i++) {
    const both = await Promise.all([fresh(path, init), fresh(path, init)]);
    const hit = both.find((r) => want(r.worker));
    for (const r of both) {
      if (r === hit) continue;
      seen.push(`${r.worker}:${r.res.status}`);
      await r.res.body?.cancel();
      await r.dispatcher.destroy();
    }
    if (hit) return hit;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`no worker as wanted answered ${path} (answers: ${seen.join(" ")})`);
}

/** A keep-alive connection held open to a worker matching `want` (requests on it reach that worker). */
async function connectionTo(want: (pid: number) => boolean): Promise<Agent> {
  for (let i = 0; i < 30; i++) {
    const agents = [new Agent({ connections: 1 }), new Agent({ connections: 1 })];
    const answers = await Promise.all(
      agents.map(async (dispatcher) => {
        const res = await fetch(`${srv.url}/healthz`, { dispatcher } as RequestInit);
        await res.text();
        return Number(res.headers.get("sluice-worker"));
      }),
    );
    const k = answers.findIndex(want);
    for (let j = 0; j < agents.length; j++) if (j !== k) await agents[j]?.close();
    if (k >= 0) return agents[k] as Agent;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error("no connection to the wanted worker");
}

/** An open WebSocket to a worker matching `want` (opened two at a time until one is; the rest closed). */
async function wsTo(want: (pid: number) => boolean): Promise<{ ws: WebSocket; worker: number }> {
  for (let i = 0; i < 30; i++) {
    const opened = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<{ ws: WebSocket; worker: number }>((resolve, reject) => {
            const ws = new WebSocket(`${srv.url.replace(/^http/, "ws")}/v1/ws`);
            let worker = 0;
            ws.once("upgrade", (res) => {
              worker = Number(res.headers["sluice-worker"]);
            });
            ws.once("open", () => resolve({ ws, worker }));
            ws.once("error", reject);
          }),
      ),
    );
    const k = opened.findIndex((o) => want(o.worker));
    for (let j = 0; j < opened.length; j++) if (j !== k) opened[j]?.ws.close();
    if (k >= 0) return opened[k] as { ws: WebSocket; worker: number };
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error("no WebSocket to the wanted worker");
}

async function start(body: unknown): Promise<{ id: string; owner: number }> {
  const { res, worker } = await fresh("/v1/streams", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(201);
  return { id: ((await res.json()) as { id: string }).id, owner: worker };
}

/**
 * The stream's info, on a new connection. Retried: a connection node:cluster hands to a worker at
 * the moment it is killed is never answered (the primary waits for the dead worker's ack).
 */
async function info(id: string): Promise<{ status: string; length: number }> {
  for (let attempt = 0; ; attempt++) {
    try {
      const { res } = await fresh(`/v1/streams/${id}/info`, { signal: AbortSignal.timeout(3000) });
      return (await res.json()) as { status: string; length: number };
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
}

async function ended(id: string): Promise<string> {
  for (let k = 0; k < 500; k++) {
    const i = await info(id);
    if (i.status !== "running") return i.status;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`stream ${id} did not end`);
}

const offsets = (msgs: SseMsg[]) => msgs.filter((m) => m.event).map((m) => m.id as string);

describe("docs/operations.md", () => {
  it("runs its --workers command: one worker per available core behind the one port", async () => {
    const doc = readFileSync(new URL("../../../docs/operations.md", import.meta.url), "utf8");
    const line = /^npx sluice serve --workers auto --port 8080$/m.exec(doc)?.[0];
    expect(line).toBeDefined();
    // The same arguments, on a free port instead of 8080 (spawnSluice adds --port and a config).
    const args = (line as string).split(" ").slice(2);
    expect(args).toEqual(["serve", "--workers", "auto", "--port", "8080"]);
    const s = await spawnSluice(args.slice(1, 3));
    try {
      const n = availableParallelism();
      expect(s.output()).toContain(`(${n} worker${n === 1 ? "" : "s"})`);
      expect(childrenOf(s.proc.pid as number).length).toBe(n);
      expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    } finally {
      s.kill("SIGTERM");
      expect((await s.exited).code).toBe(0);
    }
  }, 60_000);
});

describe("sluice serve --workers 2", () => {
  it("runs two worker processes, children of the one it started, both answering on the one port", async () => {
    const seen = new Set<number>();
    for (let i = 0; i < 8 && seen.size < 2; i++) seen.add((await fresh("/healthz")).worker);
    expect(seen.size).toBe(2);
    const children = childrenOf(srv.proc.pid as number);
    for (const pid of seen) expect(children).toContain(pid);
    expect(srv.output()).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+ \(2 workers\)/);
  });

  it("an SSE reader on the other worker follows a generation live: every record once, in order", async () => {
    const { id, owner } = await start(demoBody({ length: 200, tokens_per_s: 100 }));
    // From `now`: whatever this reader gets came live, through the owner's notices.
    const live = await on((w) => w !== owner, `/v1/streams/${id}?offset=now`, {
      headers: { accept: "text/event-stream" },
    });
    const fromStart = await on((w) => w !== owner, `/v1/streams/${id}?offset=-1`, {
      headers: { accept: "text/event-stream" },
    });
    const [liveMsgs, allMsgs] = await Promise.all([readSse(live.res), readSse(fromStart.res)]);
    const stored = (await readAllJson(srv.url, id)).map((e) => e.offset);
    expect(stored.length).toBeGreaterThan(200);
    expect(offsets(allMsgs)).toEqual(stored);
    const got = offsets(liveMsgs);
    expect(got.length).toBeGreaterThan(0);
    // A suffix of the log, nothing missing or repeated, ending with the terminal event.
    expect(got).toEqual(stored.slice(stored.length - got.length));
    expect(JSON.parse(liveMsgs.filter((m) => m.event).at(-1)?.data ?? "{}")).toEqual({
      type: "finish",
      reason: "stop",
    });
    // The stream was still being written when the live reader joined.
    expect(got.length).toBeLessThan(stored.length);
  });

  it("a WebSocket subscriber on either worker gets every record once", async () => {
    const { id, owner } = await start(demoBody({ length: 150, tokens_per_s: 150 }));
    const workers = new Set<number>();
    const results: Promise<string[]>[] = [];
    // Two sockets on the owner and two on the other worker (workers accept for themselves, so
    // which one a new connection reaches is the kernel's choice: open until each has two).
    const sockets = [
      await wsTo((w) => w === owner),
      await wsTo((w) => w === owner),
      await wsTo((w) => w !== owner),
      await wsTo((w) => w !== owner),
    ];
    for (const { ws, worker } of sockets) {
      workers.add(worker);
      results.push(
        new Promise<string[]>((resolve, reject) => {
          const got: string[] = [];
          ws.on("message", (data) => {
            const m = JSON.parse(String(data)) as { type?: string; offset?: string; event?: unknown };
            if (m.event !== undefined) got.push(m.offset as string);
            if (m.type === "end") {
              ws.close();
              resolve(got);
            }
          });
          ws.once("error", reject);
          ws.send(JSON.stringify({ type: "subscribe", stream: id, offset: "-1" }));
        }),
      );
    }
    const all = await Promise.all(results);
    const stored = (await readAllJson(srv.url, id)).map((e) => e.offset);
    for (const got of all) expect(got).toEqual(stored);
    expect(workers.size).toBe(2);
    expect(workers.has(owner)).toBe(true);
  });

  it("resumes by offset on the other worker with nothing lost or repeated", async () => {
    const { id, owner } = await start(demoBody({ length: 200, tokens_per_s: 200 }));
    const first = await on((w) => w === owner, `/v1/streams/${id}?offset=-1`, {
      headers: { accept: "text/event-stream" },
    });
    let n = 0;
    const part1 = await readSse(first.res, (m) => (m.event && ++n === 30 ? "stop" : undefined));
    const last = offsets(part1).at(-1) as string;
    const second = await on((w) => w !== owner, `/v1/streams/${id}`, {
      headers: { accept: "text/event-stream", "last-event-id": last },
    });
    const part2 = await readSse(second.res);
    const stored = (await readAllJson(srv.url, id)).map((e) => e.offset);
    expect([...offsets(part1), ...offsets(part2)]).toEqual(stored);
  });

  it("a reader on the other worker that attaches mid-stream, detaches and reattaches (interest routing) gets every record once", async () => {
    const { id, owner } = await start(demoBody({ length: 400, tokens_per_s: 150 }));
    while ((await info(id)).length < 40) await new Promise((r) => setTimeout(r, 20));
    // Three readers in turn on the other worker, each one alone there: the first one's arrival
    // makes that worker follow the stream, each one's departure unfollow it, the next follow again.
    const parts: string[][] = [];
    let last: string | undefined;
    for (let k = 0; k < 3; k++) {
      const headers: Record<string, string> = { accept: "text/event-stream" };
      if (last) headers["last-event-id"] = last;
      const r = await on((w) => w !== owner, last ? `/v1/streams/${id}` : `/v1/streams/${id}?offset=-1`, {
        headers,
      });
      let n = 0;
      // The first two stop after 60 events each (past the 40 stored when the first came: live).
      const msgs = await readSse(r.res, (m) => (k < 2 && m.event && ++n === 60 ? "stop" : undefined));
      parts.push(offsets(msgs));
      last = offsets(msgs).at(-1);
    }
    const stored = (await readAllJson(srv.url, id)).map((e) => e.offset);
    expect(stored.length).toBeGreaterThan(400);
    expect(parts.flat()).toEqual(stored);
  });

  it("a cancel on the other worker reaches the owner, which aborts its upstream request", async () => {
    const before = mock.requests.length;
    const { id, owner } = await start({
      ...demoBody({ length: 5000, tokens_per_s: 50 }),
      model: "mock-model",
    });
    // Wait until the owner streams from the upstream.
    while (!(mock.requests.length > before && (await info(id)).length > 2))
      await new Promise((r) => setTimeout(r, 20));
    // Exactly one cancel, sent on a connection to the other worker.
    const other = await connectionTo((w) => w !== owner);
    const cancel = await fetch(`${srv.url}/v1/streams/${id}/cancel`, {
      method: "POST",
      dispatcher: other,
    } as RequestInit);
    expect(Number(cancel.headers.get("sluice-worker"))).not.toBe(owner);
    expect(cancel.status).toBe(200);
    expect(((await cancel.json()) as { status: string }).status).toBe("cancelled");
    await other.close();
    const events = await readAllJson(srv.url, id);
    expect(events.at(-1)?.event).toMatchObject({ type: "abort", by: "client" });
    while (mock.requests[before]?.status === "streaming") await new Promise((r) => setTimeout(r, 20));
    expect(mock.requests[before]?.status).toBe("aborted");
  });

  it("GET /metrics on either worker answers for both (aggregated by the primary)", async () => {
    const started = (text: string) =>
      Number(/^sluice_streams_started_total\{route="demo"\} (\d+)/m.exec(text)?.[1] ?? Number.NaN);
    // Two more generations, one on each worker (requests alternate between them).
    const owners = new Set<number>();
    while (owners.size < 2) {
      const s = await start(demoBody({ length: 5 }));
      owners.add(s.owner);
      await ended(s.id);
    }
    const a = await on(() => true, "/metrics");
    const ta = await a.res.text();
    const b = await on((w) => w !== a.worker, "/metrics");
    const tb = await b.res.text();
    expect(started(ta)).toBeGreaterThanOrEqual(5);
    expect(started(tb)).toBe(started(ta));
    // (Per-worker registries would differ: each counts only the generations it ran.)
  });

  it("a killed worker is replaced; its generation ends as interrupted; the other keeps serving", async () => {
    const victim = await start(demoBody({ length: 5000, tokens_per_s: 50 }));
    const other = await on((w) => w !== victim.owner, "/healthz");
    // A generation on the surviving worker, read there while the other one dies.
    const keep = await (async () => {
      for (;;) {
        const s = await start(demoBody({ length: 300, tokens_per_s: 200 }));
        if (s.owner === other.worker) return s;
      }
    })();
    const reader = await on((w) => w === keep.owner, `/v1/streams/${keep.id}?offset=-1`, {
      headers: { accept: "text/event-stream" },
    });
    const reading = readSse(reader.res);
    process.kill(victim.owner, "SIGKILL");
    expect(await ended(victim.id)).toBe("failed");
    const events = await readAllJson(srv.url, victim.id);
    expect(events.at(-1)?.event).toMatchObject({ type: "error", code: "interrupted" });
    // (readAllJson's pooled connections are to whichever worker: both the survivor and the
    // replacement answer them.)
    // The reader on the survivor got its whole stream.
    const got = offsets(await reading);
    expect(got).toEqual((await readAllJson(srv.url, keep.id)).map((e) => e.offset));
    // A new worker takes the dead one's place.
    let replaced: number[] = [];
    for (let k = 0; k < 200 && replaced.length === 0; k++) {
      replaced = childrenOf(srv.proc.pid as number).filter((p) => p !== victim.owner && p !== other.worker);
      await new Promise((r) => setTimeout(r, 50));
    }
    const seen = new Set<number>();
    // (It serves once it has started: a few seconds on a busy machine.)
    for (let i = 0; i < 300 && !seen.has(replaced[0] as number); i++) {
      const r = await fresh("/healthz", { signal: AbortSignal.timeout(3000) }).catch(() => undefined);
      if (r) seen.add(r.worker);
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(seen).toContain(replaced[0]);
    expect(alive(victim.owner)).toBe(false);
  }, 60_000);

  it("SIGTERM to the primary stops every worker, removes its scratch file and exits 0", async () => {
    const workers = childrenOf(srv.proc.pid as number);
    expect(workers.length).toBe(2);
    // This primary's (it holds the lock; other servers on the machine have theirs).
    const scratch = scratchDirs().filter((d) => {
      try {
        return readFileSync(`${d}/streams.db.lock`, "utf8").trim() === String(srv.proc.pid);
      } catch {
        return false;
      }
    });
    expect(scratch.length).toBe(1);
    srv.kill("SIGTERM");
    expect((await srv.exited).code).toBe(0);
    for (const pid of workers) expect(alive(pid)).toBe(false);
    expect(scratchDirs().filter((d) => scratch.includes(d))).toEqual([]);
  });
});
