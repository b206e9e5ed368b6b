#!/usr/bin/env node
// A committed file rather than dist/: npm links bins at install time, before `prepare` builds dist.
import { runMockUpstreamCli } from "../dist/index.js";

runMockUpstreamCli(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`sluice-mock-upstream: ${err?.stack ?? String(err)}\n`);
  process.exit(1);
});
