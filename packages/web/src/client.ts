import { SluiceClient } from "@sluice/client";

/** One client for the page: same origin, SSE, short idle timeout (the server sends heartbeats). */
export const client = new SluiceClient({
  baseUrl: "",
  idleTimeoutMs: 20_000,
  backoff: { initialMs: 300, maxMs: 5_000 },
});
