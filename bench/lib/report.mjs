// The HTML report: a few inline-SVG bar charts plus the raw JSON (no dependencies).
const esc = (s) =>
  String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

function bars(title, unit, rows) {
  const data = rows.filter((r) => Number.isFinite(r.value));
  if (!data.length) return "";
  const max = Math.max(...data.map((r) => r.value)) || 1;
  const h = 26;
  const w = 760;
  const left = 260;
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${data.length * h + 10}" font-family="sans-serif" font-size="13">`;
  data.forEach((r, i) => {
    const bw = Math.max(1, ((w - left - 120) * r.value) / max);
    const y = i * h + 4;
    const color = r.label.startsWith("Sluice") ? "#2b6cb0" : "#a0aec0";
    svg += `<text x="${left - 8}" y="${y + 16}" text-anchor="end">${esc(r.label)}</text>`;
    svg += `<rect x="${left}" y="${y}" width="${bw}" height="${h - 8}" fill="${color}"/>`;
    svg += `<text x="${left + bw + 6}" y="${y + 16}">${esc(r.text ?? r.value.toFixed(1))} ${esc(unit)}</text>`;
  });
  return `<h3>${esc(title)}</h3>${svg}</svg>`;
}

export function renderHtml(res) {
  const label = (t) => res.meta.targets?.[t]?.label ?? t;
  let body = `<h1>Sluice benchmark (${esc(res.meta.mode)})</h1><p>${esc(res.meta.started)} — node ${esc(res.meta.node)}, ${res.meta.cpus} cores (${esc(res.meta.cpuModel)}), servers on ${esc(res.meta.pinning?.servers)}, load generator + mock-upstream on ${esc(res.meta.pinning?.loadgen_and_mock_upstream)}. Blue: Sluice.</p>`;
  for (const [key, tps] of [
    ["capacity", 30],
    ["capacity100", 100],
  ]) {
    body += bars(
      `Capacity at ${tps} tok/s (streams with p99 ≤ 50 ms)`,
      "streams",
      res[key]
        .filter((r) => !r.na || r.probes)
        .map((r) => ({ label: label(r.target), value: r.capacity, text: `${r.capacity} (${r.bounded})` })),
    );
    body += bars(
      `Server CPU per delivered event at capacity, ${tps} tok/s`,
      "µs",
      res[key]
        .filter((r) => r.cpuPerEventUs)
        .map((r) => ({ label: label(r.target), value: r.cpuPerEventUs })),
    );
  }
  for (const n of [...new Set(res.overhead.map((r) => r.n))]) {
    body += bars(
      `Overhead at ${n} streams: delivery delay p99`,
      "ms",
      res.overhead
        .filter((r) => r.n === n && !r.na)
        .map((r) => ({ label: label(r.target), value: r.delay_p99 })),
    );
    body += bars(
      `Overhead at ${n} streams: TTFT p50`,
      "ms",
      res.overhead
        .filter((r) => r.n === n && !r.na)
        .map((r) => ({ label: label(r.target), value: r.ttft_p50 })),
    );
  }
  for (const n of [...new Set(res.fanout.map((r) => r.n))]) {
    body += bars(
      `Fan-out to ${n} readers: delivery p99`,
      "ms",
      res.fanout.filter((r) => r.n === n && !r.na).map((r) => ({ label: label(r.target), value: r.p99 })),
    );
  }
  body += bars(
    "RSS per idle SSE connection",
    "KB",
    res.memory.filter((r) => !r.na).map((r) => ({ label: label(r.target), value: r.kbPerConn })),
  );
  body += bars(
    "Catch-up from -1 on a finished 10k-token stream",
    "ms",
    res.resume
      .filter((r) => r.kind === "catch-up" && !r.na)
      .map((r) => ({ label: label(r.target), value: r.ms })),
  );
  body += bars(
    "Cancel → upstream aborted (p50)",
    "ms",
    res.cancel.filter((r) => !r.na).map((r) => ({ label: label(r.target), value: r.p50 })),
  );
  const scale = res.scale ?? [];
  body += bars(
    "Scale: one generation to N readers, --workers 1 vs 2 — delivery p99",
    "ms",
    scale
      .filter((r) => r.kind === "fanout" && !r.na)
      .map((r) => ({ label: `${label(r.target)} (${r.n})`, value: r.p99 })),
  );
  body += bars(
    "Scale: idle readers, each on its own generation, --workers 1 vs 2 — RSS per connection (primary + workers)",
    "KB",
    scale
      .filter((r) => r.kind === "idle" && !r.na)
      .map((r) => ({ label: `${label(r.target)} (${r.n})`, value: r.kbPerConn })),
  );
  if (res.targets?.length)
    body += `<h3>Targets (issues 3, 13, 15)</h3><table border="1" cellpadding="3" style="border-collapse:collapse;font-size:12px"><tr><th>issue</th><th>target</th><th>measured</th><th>status</th></tr>${res.targets
      .map(
        (t) =>
          `<tr><td>${esc(t.issue ?? "")}</td><td>${esc(t.target)}</td><td>${esc(t.value)}</td><td>${esc(t.status)}</td></tr>`,
      )
      .join("")}</table>`;
  const na = [];
  for (const k of ["overhead", "capacity", "capacity100", "fanout", "memory", "resume", "cancel", "scale"])
    for (const r of res[k] ?? [])
      if (r.na && !r.probes) na.push(`<li>${esc(k)} — ${esc(label(r.target))}: ${esc(r.na)}</li>`);
  if (na.length) body += `<h3>Not measured (and why)</h3><ul>${na.join("")}</ul>`;
  body += `<h3>Raw results</h3><pre>${esc(JSON.stringify(res, null, 2))}</pre>`;
  return `<!doctype html><meta charset="utf-8"><title>Sluice benchmark</title><style>body{font-family:sans-serif;max-width:900px;margin:2em auto}pre{font-size:11px;max-height:30em;overflow:auto;background:#f7f7f7}</style>${body}`;
}
