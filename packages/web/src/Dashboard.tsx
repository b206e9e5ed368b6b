import { useEffect, useState } from "react";
import { authHeaders } from "./client.js";

interface Hist {
  buckets: { le: string; count: number }[];
  count: number;
  sum: number;
}
interface Stats {
  now: number;
  uptime_s: number;
  live: {
    id: string;
    model: string;
    route: string;
    age_ms: number;
    tokens: number;
    readers: number;
    status: string;
    ttft_ms?: number;
  }[];
  recent: {
    id: string;
    model: string;
    status: string;
    tokens: number;
    duration_ms: number;
    ttft_ms?: number;
  }[];
  errors: { at: number; stream: string; route: string; code: string; message: string }[];
  rates: { tokens_per_s: number; bytes_per_s: number; streams_per_s: number };
  series: { t: number; tokens_per_s: number }[];
  totals: {
    streams_started: number;
    streams_ended: Record<string, number>;
    tokens: number;
    readers: number;
    connections: Record<string, number>;
  };
  histograms: { ttft_seconds: Hist; inter_token_seconds: Hist };
}

function HistogramBars({ title, h }: { title: string; h: Hist }) {
  // Cumulative buckets → per-bucket counts.
  let prev = 0;
  const bars = h.buckets.map((b) => {
    const n = b.count - prev;
    prev = b.count;
    return { le: b.le, n };
  });
  const max = Math.max(1, ...bars.map((b) => b.n));
  const mean = h.count > 0 ? (h.sum / h.count) * 1000 : 0;
  return (
    <div className="hist" data-testid={`hist-${title}`}>
      <h3>
        {title}{" "}
        <small>
          n={h.count} · mean {mean.toFixed(1)} ms
        </small>
      </h3>
      <div className="bars">
        {bars.map((b) => (
          <div key={b.le} className="bar" title={`≤ ${b.le} s: ${b.n}`}>
            <div className="fill" style={{ height: `${(b.n / max) * 100}%` }} />
            <span>{b.le === "+Inf" ? "∞" : Number(b.le) < 1 ? `${Number(b.le) * 1000}ms` : `${b.le}s`}</span>
          </div>
        ))}
      </div>
    </div>
  );
}

function Sparkline({ series }: { series: { tokens_per_s: number }[] }) {
  const w = 300;
  const hgt = 50;
  const max = Math.max(1, ...series.map((p) => p.tokens_per_s));
  const pts = series
    .map((p, i) => `${(i / Math.max(1, series.length - 1)) * w},${hgt - (p.tokens_per_s / max) * hgt}`)
    .join(" ");
  return (
    <svg width={w} height={hgt} className="spark" role="img" aria-label="tokens per second">
      <polyline points={pts} fill="none" stroke="currentColor" strokeWidth="1.5" />
    </svg>
  );
}

export function Dashboard() {
  const [stats, setStats] = useState<Stats | undefined>();
  const [error, setError] = useState<string | undefined>();
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const res = await fetch("/v1/stats", { cache: "no-store", headers: authHeaders() });
        if (res.status === 401 || res.status === 403) {
          throw new Error(`HTTP ${res.status}: enter an API key allowed to see server stats (top right)`);
        }
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const s = (await res.json()) as Stats;
        if (!stop) {
          setStats(s);
          setError(undefined);
        }
      } catch (err) {
        if (!stop) setError((err as Error).message);
      }
      if (!stop) timer = setTimeout(tick, 1000);
    };
    void tick();
    return () => {
      stop = true;
      if (timer) clearTimeout(timer);
    };
  }, []);

  if (!stats) return <div className="dashboard">{error ? `stats unavailable: ${error}` : "loading…"}</div>;
  const ended = stats.totals.streams_ended;
  return (
    <div className="dashboard">
      {error && <div className="err">stats stale: {error}</div>}
      <section className="cards">
        <div className="card">
          <b data-testid="rate-tokens">{stats.rates.tokens_per_s.toFixed(1)}</b>
          <span>tokens/s</span>
          <Sparkline series={stats.series} />
        </div>
        <div className="card">
          <b>{(stats.rates.bytes_per_s / 1024).toFixed(1)}</b>
          <span>KiB/s out</span>
        </div>
        <div className="card">
          <b data-testid="live-count">{stats.live.length}</b>
          <span>live streams</span>
        </div>
        <div className="card">
          <b>{stats.totals.readers}</b>
          <span>readers</span>
        </div>
        <div className="card">
          <b>{stats.totals.streams_started}</b>
          <span>
            started · {ended.completed ?? 0} ok · {ended.failed ?? 0} failed · {ended.cancelled ?? 0}{" "}
            cancelled
          </span>
        </div>
        <div className="card">
          <b>{Object.values(stats.totals.connections).reduce((a, b) => a + b, 0)}</b>
          <span>
            connections{" "}
            {Object.entries(stats.totals.connections)
              .map(([k, v]) => `${k}:${v}`)
              .join(" ")}
          </span>
        </div>
      </section>
      <section className="hists">
        <HistogramBars title="TTFT" h={stats.histograms.ttft_seconds} />
        <HistogramBars title="inter-token" h={stats.histograms.inter_token_seconds} />
      </section>
      <h2>Live streams</h2>
      <table data-testid="live-streams">
        <thead>
          <tr>
            <th>stream</th>
            <th>model</th>
            <th>age</th>
            <th>tokens</th>
            <th>readers</th>
            <th>TTFT</th>
            <th>status</th>
          </tr>
        </thead>
        <tbody>
          {stats.live.length === 0 && (
            <tr>
              <td colSpan={7} className="muted">
                no generation running
              </td>
            </tr>
          )}
          {stats.live.map((l) => (
            <tr key={l.id} data-stream={l.id}>
              <td>
                <a href={`/#s=${l.id}`}>{l.id}</a>
              </td>
              <td>{l.model}</td>
              <td>{(l.age_ms / 1000).toFixed(1)} s</td>
              <td>{l.tokens}</td>
              <td>{l.readers}</td>
              <td>{l.ttft_ms !== undefined ? `${l.ttft_ms} ms` : "—"}</td>
              <td>{l.status}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Recently ended</h2>
      <table data-testid="recent-streams">
        <thead>
          <tr>
            <th>stream</th>
            <th>model</th>
            <th>tokens</th>
            <th>duration</th>
            <th>status</th>
          </tr>
        </thead>
        <tbody>
          {stats.recent.map((r) => (
            <tr key={r.id} data-stream={r.id}>
              <td>
                <a href={`/#s=${r.id}`}>{r.id}</a>
              </td>
              <td>{r.model}</td>
              <td>{r.tokens}</td>
              <td>{(r.duration_ms / 1000).toFixed(1)} s</td>
              <td className={`status-${r.status}`}>{r.status}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Recent errors</h2>
      {stats.errors.length === 0 ? (
        <p className="muted">none</p>
      ) : (
        <table data-testid="errors">
          <tbody>
            {stats.errors.map((e) => (
              <tr key={`${e.stream}-${e.at}`}>
                <td>{new Date(e.at).toLocaleTimeString()}</td>
                <td>
                  <a href={`/#s=${e.stream}`}>{e.stream}</a>
                </td>
                <td>{e.route}</td>
                <td>
                  <code>{e.code}</code>
                </td>
                <td>{e.message}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <p className="muted">
        Updated every second from <a href="/v1/stats">/v1/stats</a> · Prometheus:{" "}
        <a href="/metrics">/metrics</a>
      </p>
    </div>
  );
}
