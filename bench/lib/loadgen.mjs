// The load generator: a separate process (pinned to its own core by run.mjs) that opens many
// streaming connections on raw sockets through a reader module per transport, and measures
// delivery delay = receive time - the due time the upstream/demo stamped into each token.
// Driven over IPC by run.mjs: {type:"live"|"resume", ...} -> {type:"result", ...}.
import http from "node:http";
import { dueOf } from "./http-stream.mjs";
import * as ndjson from "./readers/ndjson.mjs";
import * as sse from "./readers/sse.mjs";
import * as ws from "./readers/ws.mjs";

const READERS = { sse, ndjson, ws };
const now = () => performance.timeOrigin + performance.now();
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const send = (m) => process.send?.(m);
let current; // the running job's abort()

function summarize(values) {
  const n = values.length;
  if (!n) return { n: 0 };
  const a = Float64Array.from(values).sort();
  const q = (p) => a[Math.min(n - 1, Math.floor(p * n))];
  let sum = 0;
  for (const v of a) sum += v;
  return { n, mean: sum / n, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: a[n - 1] };
}

function pre(p) {
  return new Promise((resolve, reject) => {
    const r = http.request(
      {
        host: "127.0.0.1",
        port: p.port,
        path: p.path,
        method: p.method ?? "POST",
        agent,
        headers: { "content-type": "application/json" },
      },
      (res) => {
        let text = "";
        if (p.idFromJson) res.setEncoding("utf8").on("data", (d) => (text += d));
        else res.resume();
        res.on("end", () => {
          if (res.statusCode >= 300) return reject(new Error(`pre ${p.path}: HTTP ${res.statusCode}`));
          if (!p.idFromJson) return resolve();
          const m = /"id":"([^"]+)"/.exec(text);
          m ? resolve(m[1]) : reject(new Error(`pre ${p.path}: no id in the answer`));
        });
      },
    );
    r.on("error", reject);
    r.end(p.body ?? "");
  });
}

/** Many readers, each on its own connection, started at spec.at (ms after the job starts). */
function live(job) {
  const reader = READERS[job.transport ?? "sse"];
  const t0 = now();
  const wStart = t0 + job.windowStart;
  const wEnd = t0 + job.windowEnd;
  const delays = [];
  const ttft = [];
  const firstDelay = [];
  const endTimes = [];
  const errors = {};
  let tokensInWindow = 0;
  let eventsTotal = 0;
  let opened = 0;
  let headed = 0;
  let ended = 0;
  let failed = 0;
  const conns = [];
  const timers = [];
  let cpuOpen;
  let finished = false;
  const cpu0 = process.cpuUsage();
  let resolveDone;
  const done = new Promise((r) => (resolveDone = r));
  const noteErr = (e) => {
    const k = String(e?.message ?? e).slice(0, 80);
    errors[k] = (errors[k] ?? 0) + 1;
  };
  const settle = () => {
    if (ended + failed === job.specs.length && !job.hold) finish();
  };

  function start(spec) {
    const st = { tSent: 0, first: true, events: 0 };
    const go = () => {
      if (finished) return;
      st.tSent = now();
      opened++;
      const c = reader.open(spec, {
        onHead(status) {
          if (status === 200) {
            headed++;
            if (job.hold && headed === job.specs.length) send({ type: "held", id: job.id, headed, failed });
          }
        },
        onEvent(_id, _event, data, t) {
          eventsTotal++;
          st.events++;
          const due = dueOf(data);
          if (due < 0) return;
          if (st.first) {
            st.first = false;
            ttft.push(t - st.tSent);
            firstDelay.push(t - due);
          } else if (t >= wStart && t < wEnd) {
            delays.push(t - due);
          }
          if (t >= wStart && t < wEnd) tokensInWindow++;
        },
        onEnd() {
          ended++;
          endTimes.push(now() - st.tSent);
          settle();
        },
        onError(e) {
          failed++;
          noteErr(e);
          if (job.hold && headed + failed === job.specs.length)
            send({ type: "held", id: job.id, headed, failed });
          settle();
        },
      });
      conns.push(c);
    };
    if (spec.pre) {
      pre(spec.pre).then(
        (id) => {
          if (id !== undefined) spec = { ...spec, path: spec.path.replace("{id}", id) };
          go();
        },
        (e) => {
          failed++;
          noteErr(e);
          settle();
        },
      );
    } else go();
  }

  for (const spec of job.specs) timers.push(setTimeout(() => start(spec), spec.at ?? 0));
  send({ type: "started", id: job.id });
  let timerLagMs = 0;
  timers.push(
    setTimeout(() => {
      cpuOpen = process.cpuUsage();
    }, job.windowStart),
  );
  timers.push(
    setTimeout(() => {
      const c = process.cpuUsage(cpuOpen);
      cpuOpen = (c.user + c.system) / 1000;
      timerLagMs = now() - wEnd;
    }, job.windowEnd),
  );
  if (!job.hold) timers.push(setTimeout(() => finish(), job.endAt));

  function finish() {
    if (finished) return;
    finished = true;
    for (const t of timers) clearTimeout(t);
    for (const c of conns) c.close();
    const cpu = process.cpuUsage(cpu0);
    resolveDone({
      type: "result",
      id: job.id,
      n: job.specs.length,
      opened,
      headed,
      ended,
      failed,
      errors,
      eventsTotal,
      tokensInWindow,
      windowMs: job.windowEnd - job.windowStart,
      delay: summarize(delays),
      ttft: summarize(ttft),
      firstDelay: summarize(firstDelay),
      endTime: summarize(endTimes),
      loadgenCpuWindowMs: typeof cpuOpen === "number" ? cpuOpen : undefined,
      // How late the window's closing timer ran: > ~50 ms means the load generator was saturated.
      timerLagMs,
      loadgenCpuMs: (cpu.user + cpu.system) / 1000,
    });
  }
  current = { abort: finish, release: finish };
  return done;
}

/**
 * Readers that drop their connection at random points and resume: "last-event-id" (Sluice: the
 * SSE id of the last event received) or "durable-offset" (the offset of the last `control` event,
 * events after it are uncommitted and dropped). Each stream also has one reference reader that
 * never drops; every other reader's event sequence must equal it exactly (no loss, no dup).
 */
function resume(job) {
  const reader = READERS.sse;
  const seqs = new Map(); // reader index -> committed data
  const conns = new Set();
  let left = job.readers.length;
  let reconnects = 0;
  let errors = 0;
  let resolveDone;
  const done = new Promise((r) => (resolveDone = r));
  const cpu0 = process.cpuUsage();
  const t0 = now();
  let finished = false;

  function run(idx, r) {
    const got = [];
    let pending = [];
    let lastId;
    let lastOffset = "-1";
    const drops = [...(r.dropAt ?? [])];
    let received = 0;
    const open = () => {
      if (finished) return;
      const spec = { ...r.spec, headers: { ...r.spec.headers } };
      if (job.style === "last-event-id" && lastId !== undefined) spec.headers["last-event-id"] = lastId;
      if (job.style === "durable-offset") spec.path = spec.path.replace("offset=-1", `offset=${lastOffset}`);
      let dropped = false;
      const c = reader.open(spec, {
        onEvent(id, event, data) {
          if (dropped) return;
          if (job.style === "durable-offset") {
            if (event === "control") {
              const m = /"streamNextOffset":"([^"]+)"/.exec(data);
              if (m) lastOffset = m[1];
              got.push(...pending);
              pending = [];
            } else pending.push(data);
          } else {
            got.push(data);
            if (id !== undefined) lastId = id;
          }
          received++;
          if (drops.length && received >= drops[0]) {
            drops.shift();
            dropped = true;
            reconnects++;
            c.close();
            conns.delete(c);
            pending = [];
            setTimeout(open, r.pauseMs ?? 20);
          }
        },
        onEnd() {
          if (dropped) return;
          conns.delete(c);
          got.push(...pending);
          seqs.set(idx, got);
          if (--left === 0) finish();
        },
        onError() {
          if (dropped) return;
          errors++;
          conns.delete(c);
          seqs.set(idx, got);
          if (--left === 0) finish();
        },
      });
      conns.add(c);
    };
    setTimeout(open, r.at ?? 0);
  }
  job.readers.forEach((r, i) => {
    run(i, r);
  });
  const timer = setTimeout(() => finish(), job.timeoutMs);

  function finish() {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    for (const c of conns) c.close();
    let ok = 0;
    let lost = 0;
    let dup = 0;
    let incomplete = 0;
    let events = 0;
    job.readers.forEach((r, i) => {
      if (r.reference) return;
      const ref = seqs.get(job.readers.findIndex((x) => x.reference && x.stream === r.stream));
      const got = seqs.get(i);
      if (!ref || !got) {
        incomplete++;
        return;
      }
      events += got.length;
      const want = new Map();
      for (const d of ref) want.set(d, (want.get(d) ?? 0) + 1);
      let l = 0;
      let du = 0;
      const have = new Map();
      for (const d of got) have.set(d, (have.get(d) ?? 0) + 1);
      for (const [d, k] of want) l += Math.max(0, k - (have.get(d) ?? 0));
      for (const [d, k] of have) du += Math.max(0, k - (want.get(d) ?? 0));
      const sameOrder = got.length === ref.length && got.every((d, k) => d === ref[k]);
      lost += l;
      dup += du;
      if (sameOrder) ok++;
    });
    const cpu = process.cpuUsage(cpu0);
    resolveDone({
      type: "result",
      id: job.id,
      readers: job.readers.filter((r) => !r.reference).length,
      exact: ok,
      lost,
      dup,
      incomplete,
      reconnects,
      errors,
      events,
      refEvents: [
        ...new Set(
          job.readers.filter((r) => r.reference).map((r) => seqs.get(job.readers.indexOf(r))?.length),
        ),
      ],
      ms: now() - t0,
      loadgenCpuMs: (cpu.user + cpu.system) / 1000,
    });
  }
  current = { abort: finish };
  return done;
}

process.on("message", async (m) => {
  if (m.type === "abort") return current?.abort();
  if (m.type === "release") return current?.release?.();
  if (m.type === "exit") process.exit(0);
  try {
    const result = m.type === "live" ? await live(m) : await resume(m);
    send(result);
  } catch (err) {
    send({ type: "result", id: m.id, error: String(err?.stack ?? err) });
  }
});
send({ type: "ready" });
