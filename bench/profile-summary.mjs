#!/usr/bin/env node
// Summarizes a V8 .cpuprofile (from `npm run bench -- --profile`, written under
// bench/results/profile/): self time by function and by file/package, top N.
// usage: node bench/profile-summary.mjs [file.cpuprofile] [--top=25] [--inclusive=40] [--last=S | --from=S --to=S]
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const args = process.argv.slice(2);
const top = Number(args.find((a) => a.startsWith("--top="))?.slice(6) ?? 25);
let file = args.find((a) => !a.startsWith("--"));
if (!file) {
  const dir = join(import.meta.dirname, "results/profile");
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".cpuprofile"))
    .map((f) => join(dir, f));
  file = files.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
}
const prof = JSON.parse(readFileSync(file, "utf8"));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map();
const dt = new Map();
// A window of the profile (a steady state, without start-up, set-up or shutdown): --last=S, its
// last S seconds; --from=S and --to=S, seconds after it started.
const num = (k) => Number(args.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3) ?? Number.NaN);
const from = num("last") > 0 ? prof.endTime - num("last") * 1e6 : prof.startTime + (num("from") || 0) * 1e6;
const to = num("to") > 0 ? prof.startTime + num("to") * 1e6 : Number.POSITIVE_INFINITY;
for (let i = 0, t = prof.startTime; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  t += prof.timeDeltas[i] ?? 0;
  if (t < from || t > to) continue;
  dt.set(id, (dt.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
let total = 0;
let idle = 0;
const byFile = new Map();
for (const [id, us] of dt) {
  const n = byId.get(id);
  const f = n.callFrame;
  total += us;
  if (f.functionName === "(idle)") {
    idle += us;
    continue;
  }
  const where = f.url
    ? f.url
        .replace(/^file:\/\//, "")
        .replace(/.*node_modules\//, "npm:")
        .replace(/.*packages\//, "")
    : f.functionName.startsWith("(")
      ? f.functionName
      : "(native)";
  const key = `${f.functionName || "(anonymous)"}  ${where}${f.url ? `:${f.lineNumber + 1}` : ""}`;
  self.set(key, (self.get(key) ?? 0) + us);
  const fk = where.replace(/:\d+$/, "");
  byFile.set(fk, (byFile.get(fk) ?? 0) + us);
}
const busy = total - idle;
const pct = (us) => `${((us / busy) * 100).toFixed(1)}%`.padStart(6);
console.log(
  `${file}\nsampled ${(total / 1e6).toFixed(1)} s, busy ${(busy / 1e6).toFixed(1)} s (idle ${(idle / 1e6).toFixed(1)} s); shares of busy time\n`,
);
console.log("top functions by self time:");
for (const [k, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${k}`);
console.log("\nby file / package:");
for (const [k, us] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`${pct(us)}  ${k}`);

// Inclusive time (a function and everything it called), each frame counted once per sample:
// where the busy time goes by call path (`--inclusive=40` for the top 40; off by default).
const inclusiveTop = Number(args.find((a) => a.startsWith("--inclusive="))?.slice(12) ?? 0);
if (inclusiveTop > 0) {
  const parent = new Map();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map();
  for (const [id, us] of dt) {
    if (byId.get(id).callFrame.functionName === "(idle)") continue;
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur).callFrame;
      if (f.functionName === "(root)") continue;
      const where = f.url ? f.url.replace(/.*(dist|node_modules)\//, "").replace(/^file:\/\//, "") : "";
      const key = `${f.functionName || "(anonymous)"}  ${where}${f.url ? `:${f.lineNumber + 1}` : ""}`;
      if (seen.has(key)) continue;
      seen.add(key);
      incl.set(key, (incl.get(key) ?? 0) + us);
    }
  }
  console.log("\ntop functions by inclusive time:");
  for (const [k, us] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, inclusiveTop))
    console.log(`${pct(us)}  ${k}`);
}
