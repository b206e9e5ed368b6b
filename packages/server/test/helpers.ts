import { EventSourceParserStream } from "eventsource-parser/stream";
import { type ConfigInput, parseConfig } from "../src/config.js";
import { createSluice, type SluiceServer } from "../src/server.js";
import type { Store } from "../src/stores/store.js";

export interface Running {
  url: string;
  server: SluiceServer;
  close(): Promise<void>;
}

/** A real Sluice server on 127.0.0.1, a free port, quiet logs. */
export async function startSluice(
  overrides: Partial<ConfigInput> = {},
  opts: { env?: NodeJS.ProcessEnv; store?: Store } | Store = {},
): Promise<Running> {
  // (A Store as the second argument is the short form of { store }.)
  const o = isStore(opts) ? { store: opts } : opts;
  const config = parseConfig({ host: "127.0.0.1", port: 0, log_level: "silent", ...overrides });
  const server = await createSluice(config, { env: o.env ?? {}, ...(o.store ? { store: o.store } : {}) });
  const url = await server.listen();
  return { url, server, close: () => server.close() };
}

function isStore(x: unknown): x is Store {
  return typeof (x as Store | undefined)?.append === "function";
}

export interface SseMsg {
  id: string | undefined;
  event: string | undefined;
  data: string;
  at: number;
}

/** Reads a whole SSE response with eventsource-parser, stamping each message's arrival time. */
export async function readSse(
  res: Response,
  onMessage?: (m: SseMsg) => "stop" | undefined,
): Promise<SseMsg[]> {
  if (!res.body) throw new Error("no body");
  const out: SseMsg[] = [];
  const stream = res.body
    .pipeThrough(new TextDecoderStream() as unknown as ReadableWritablePair<string, Uint8Array>)
    .pipeThrough(new EventSourceParserStream());
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const m = { id: value.id, event: value.event, data: value.data, at: performance.now() };
      out.push(m);
      if (onMessage?.(m) === "stop") break;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return out;
}

export function demoBody(demo: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return {
    model: "demo",
    messages: [{ role: "user", content: "Explain how a durable stream log works" }],
    demo: { seed: 7, ttft_ms: 5, tokens_per_s: 2000, jitter: 0, length: 40, ...demo },
    ...extra,
  };
}

export async function startStream(url: string, body: unknown): Promise<{ id: string; status: string }> {
  const res = await fetch(`${url}/v1/streams`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (res.status !== 201) throw new Error(`start failed: ${res.status} ${await res.text()}`);
  return (await res.json()) as { id: string; status: string };
}

export async function waitForStatus(
  url: string,
  id: string,
  want: (s: string) => boolean,
  timeoutMs = 10_000,
) {
  const start = Date.now();
  for (;;) {
    const info = (await (await fetch(`${url}/v1/streams/${id}/info`)).json()) as Record<string, unknown>;
    if (want(String(info.status))) return info;
    if (Date.now() - start > timeoutMs) throw new Error(`stream ${id} still ${String(info.status)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Every event of a finished stream, via JSON pages. */
export async function readAllJson(
  url: string,
  id: string,
): Promise<{ offset: string; event: Record<string, unknown> }[]> {
  const out: { offset: string; event: Record<string, unknown> }[] = [];
  let offset = "-1";
  for (;;) {
    const page = (await (await fetch(`${url}/v1/streams/${id}?offset=${offset}&limit=1000`)).json()) as {
      events: { offset: string; event: Record<string, unknown> }[];
      next_offset: string;
      up_to_date: boolean;
    };
    out.push(...page.events);
    offset = page.next_offset;
    if (page.up_to_date) return out;
  }
}

export function textOf(
  events: { event?: string; data: string }[] | { event: Record<string, unknown> }[],
): string {
  let s = "";
  for (const e of events as unknown[]) {
    const ev = (
      typeof (e as { data?: unknown }).data === "string"
        ? JSON.parse((e as { data: string }).data)
        : (e as { event: unknown }).event
    ) as {
      type?: string;
      delta?: string;
    };
    if (ev?.type === "text-delta") s += ev.delta;
  }
  return s;
}
