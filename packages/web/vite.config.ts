import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// Built into packages/web/dist and served by the Sluice server (`/`, `/dashboard`, `/assets/*`).
export default defineConfig({
  root: import.meta.dirname,
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, assetsDir: "assets", sourcemap: false },
  server: { proxy: { "/v1": "http://127.0.0.1:8080", "/metrics": "http://127.0.0.1:8080" } },
});
