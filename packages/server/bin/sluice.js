#!/usr/bin/env node
// A committed file rather than dist/: npm links bins at install time, before `prepare` builds dist
// (a bin under dist/ is not linked in a clean clone, and `npx sluice` then fails).
import "../dist/cli/main.js";
