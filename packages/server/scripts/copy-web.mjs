// `npm pack` / `npm publish` of @sluice/server: carry the built web app (packages/web/dist) in
// the package as web/, since an installed package has no packages/web next to it.
import { cpSync, existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const from = fileURLToPath(new URL("../../web/dist/", import.meta.url));
const to = fileURLToPath(new URL("../web/", import.meta.url));
if (!existsSync(join(from, "index.html"))) {
  console.error(`copy-web: ${from}index.html is missing; run \`npm run build\` at the repository root first`);
  process.exit(1);
}
rmSync(to, { recursive: true, force: true });
cpSync(from, to, { recursive: true });
