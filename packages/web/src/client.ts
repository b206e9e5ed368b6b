import { SluiceClient } from "@sluice/client";

const KEY = "sluice:api-key";

/** The API key or read token typed into the page (servers with auth need one for /v1). */
export function apiKey(): string | undefined {
  try {
    return sessionStorage.getItem(KEY) || undefined;
  } catch {
    return undefined;
  }
}

export function setApiKey(key: string): void {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export function authHeaders(): Record<string, string> {
  const key = apiKey();
  return key ? { authorization: `Bearer ${key}` } : {};
}

/**
 * Compact catch-up is on unless the page's address says `?compact=false`: a reload or a second
 * tab then replays the answer so far delta by delta, as it was written.
 */
export function compactSetting(search: string): boolean {
  return new URLSearchParams(search).get("compact") !== "false";
}

/** One client for the page: same origin, SSE, short idle timeout (the server sends heartbeats). */
export const client = new SluiceClient({
  baseUrl: "",
  headers: authHeaders(),
  compact: compactSetting(window.location.search),
  idleTimeoutMs: 20_000,
  backoff: { initialMs: 300, maxMs: 5_000 },
});
