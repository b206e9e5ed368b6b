#!/usr/bin/env node
// Writes docs/configuration.md from the config schema (packages/server/src/config-docs.ts, built to
// dist). Run through `npm run docs:config`, which builds the server first.
import { writeFileSync } from "node:fs";
import { renderConfigDocs } from "../packages/server/dist/config-docs.js";

const target = new URL("../docs/configuration.md", import.meta.url);
writeFileSync(target, renderConfigDocs());
console.log("wrote docs/configuration.md");
