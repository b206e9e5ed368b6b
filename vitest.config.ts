import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    alias: {
      "@sluice/protocol": fileURLToPath(new URL("./packages/protocol/src/index.ts", import.meta.url)),
      "@sluice/client/react": fileURLToPath(new URL("./packages/client/src/react.ts", import.meta.url)),
      "@sluice/client": fileURLToPath(new URL("./packages/client/src/index.ts", import.meta.url)),
      "@sluice/server/demo": fileURLToPath(new URL("./packages/server/src/demo.ts", import.meta.url)),
      "@sluice/mock-upstream": fileURLToPath(
        new URL("./packages/mock-upstream/src/index.ts", import.meta.url),
      ),
    },
  },
  test: {
    include: ["packages/*/test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
  },
});
