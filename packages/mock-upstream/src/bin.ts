#!/usr/bin/env node
import { runMockUpstreamCli } from "./cli.js";

runMockUpstreamCli(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`sluice-mock-upstream: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
