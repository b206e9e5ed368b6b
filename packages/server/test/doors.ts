/**
 * Every door onto the log, as a client of it sees it: one small adapter per door over its real
 * client (fetch + eventsource-parser for SSE, NDJSON lines, JSON long-poll pages, the Durable
 * Streams SSE and long-poll framing, `ws`, @grpc/grpc-js). The transport contract
 * (transport-contract.ts) runs the same checks through each.
 *
 * An item is what the door delivers for the log: one SSE event, one NDJSON line, one record of
 * a page, one WebSocket message, one gRPC message. `pos` is where a client resumes after it
 * (its SSE id / offset / next offset), when the door says.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createParser } from "eventsource-parser";
import WebSocket from "ws";
import { PROTO_OPTIONS, PROTO_PATH } from "../src/grpc/server.js";

export interface Item {
  pos: string | undefined;
  data: string;
}

/** A refusal, as the door reports it. */
export class Refused extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(`refused: ${status} ${code}`);
  }
}

export interface Session {
  /** Resolves once the door accepted the read (headers, subscription ack); rejects with Refused. */
  ready: Promise<void>;
  /** The next item; undefined once the door ended the read cleanly. */
  next(): Promise<Item | undefined>;
  /** Leaves (disconnects) without ending anything else. */
  close(): void;
  /** Response headers (HTTP doors), lower-case names. */
  headers: Record<string, string>;
  /** Everything received so far, raw (heartbeats included). */
  raw(): string;
  /** Stops reading (the transport's own backpressure then reaches the server); resume() reads on. */
  pause?(): void;
  resume?(): void;
  /** The offset the server named when it cut this reader as too slow (doors that name one). */
  cutAt?(): string | undefined;
}

export interface OpenOptions {
  /** Extra request headers (HTTP doors and the WebSocket upgrade). */
  headers?: Record<string, string>;
  /** Ask for compact catch-up (doors whose `compact` is set). */
  compact?: boolean;
}

export interface Door {
  name: string;
  /** The codec's position for "from the start". */
  start: string;
  /** True when the door sends something on an idle connection (SSE comments, WS pings). */
  heartbeats: boolean;
  /** True for HTTP doors (CORS applies). */
  http: boolean;
  /** True when a reader can stop reading a long response (slow-reader cut). */
  pausable: boolean;
  /**
   * How the door asks for compact catch-up, if it can: `stream` (one read follows live: only the
   * history at the start is folded), `page` (each poll folds what is there when it is read).
   */
  compact?: "stream" | "page";
  /** Opens a live read of stream `id` after `from`. */
  open(base: Base, id: string, from: string, o?: OpenOptions): Session;
  /** The items of the log as this door encodes them, for comparison: the whole stream read from the start. */
}

export interface Base {
  url: string;
  grpcAddress?: string | undefined;
}

/** A queue of items filled by a producer, drained by next(). */
class Queue {
  private items: (Item | undefined)[] = [];
  private waiting: ((v: Item | undefined) => void) | undefined;
  private failed: Error | undefined;
  private failWaiting: ((e: Error) => void) | undefined;
  ended = false;

  push(item: Item): void {
    if (this.ended) return;
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      w(item);
    } else this.items.push(item);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    const w = this.waiting;
    this.waiting = undefined;
    w?.(undefined);
  }

  fail(err: Error): void {
    if (this.ended) return;
    this.failed = err;
    this.ended = true;
    const f = this.failWaiting;
    this.waiting = undefined;
    f?.(err);
  }

  next(): Promise<Item | undefined> {
    if (this.items.length > 0) return Promise.resolve(this.items.shift());
    if (this.failed) return Promise.reject(this.failed);
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      this.failWaiting = reject;
    });
  }
}

function headersOf(h: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  h.forEach((v, k) => {
    out[k] = v;
  });
  return out;
}

async function refusal(res: Response): Promise<Refused> {
  const text = await res.text().catch(() => "");
  let code = "";
  try {
    const j = JSON.parse(text) as { error?: { code?: string } };
    code = j.error?.code ?? "";
  } catch {
    // not JSON
  }
  return new Refused(res.status, code, headersOf(res.headers));
}

/** Reads a streaming HTTP response's body as text chunks. */
function httpSession(
  url: string,
  headers: Record<string, string>,
  onText: (text: string, q: Queue) => void,
  onEnd?: (q: Queue) => void,
  init: RequestInit = {},
): Session {
  const ac = new AbortController();
  const q = new Queue();
  let raw = "";
  let paused: Promise<void> | undefined;
  let unpause: () => void = () => {};
  const session: Session = {
    ready: Promise.resolve(),
    next: () => q.next(),
    close: () => {
      q.end();
      unpause();
      ac.abort();
    },
    headers: {},
    raw: () => raw,
    pause: () => {
      paused ??= new Promise((r) => {
        unpause = () => {
          paused = undefined;
          r();
        };
      });
    },
    resume: () => unpause(),
  };
  session.ready = (async () => {
    const res = await fetch(url, { ...init, headers, signal: ac.signal });
    session.headers = headersOf(res.headers);
    if (res.status !== 200) {
      const r = res.status === 204 ? new Refused(204, "") : await refusal(res);
      if (res.status === 204) q.end();
      else q.fail(r);
      if (res.status !== 204) throw r;
      return;
    }
    void (async () => {
      const dec = new TextDecoder();
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          if (paused) await paused;
          const t = dec.decode(chunk, { stream: true });
          raw += t;
          onText(t, q);
        }
        onEnd?.(q);
        q.end();
      } catch (err) {
        if (!q.ended) q.fail(err as Error);
      }
    })();
  })();
  session.ready.catch(() => {});
  return session;
}

function sseDoor(name: string, format: string | undefined): Door {
  return {
    name,
    start: "-1",
    heartbeats: true,
    http: true,
    pausable: true,
    // openai-responses refuses compact (its sequence numbers count every record).
    ...(format === "openai-responses" ? {} : { compact: "stream" as const }),
    open(base, id, from, o = {}) {
      let cut: string | undefined;
      const parser = (q: Queue) =>
        createParser({
          onEvent: (e) => q.push({ pos: e.id, data: `${e.event ?? ""}|${e.data}` }),
          // A slow reader's last line: `: slow_reader <offset> <message>`.
          onComment: (c) => {
            const m = /^\s*slow_reader (\S+)/.exec(c);
            if (m) cut = m[1];
          },
        });
      let p: ReturnType<typeof parser> | undefined;
      const qs = `?${new URLSearchParams({ ...(format ? { format } : {}), ...(o.compact ? { compact: "true" } : {}) })}`;
      const session = httpSession(
        `${base.url}/v1/streams/${id}${qs}`,
        {
          accept: "text/event-stream",
          ...(from !== "-1" ? { "last-event-id": from } : {}),
          ...o.headers,
        },
        (t, q) => {
          if (!p) p = parser(q);
          p.feed(t);
        },
      );
      session.cutAt = () => cut;
      return session;
    },
  };
}

const ndjsonDoor: Door = {
  name: "ndjson",
  start: "-1",
  heartbeats: true,
  http: true,
  pausable: true,
  compact: "stream",
  open(base, id, from, o = {}) {
    let buf = "";
    let cut: string | undefined;
    const session = httpSession(
      `${base.url}/v1/streams/${id}?offset=${from}${o.compact ? "&compact=true" : ""}`,
      { accept: "application/x-ndjson", ...o.headers },
      (t, q) => {
        buf += t;
        for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.trim() === "") continue; // a heartbeat
          const j = JSON.parse(line) as {
            offset?: string;
            event?: unknown;
            error?: { code: string; offset?: string };
          };
          if (j.error?.code === "slow_reader") {
            cut = j.error.offset;
            continue;
          }
          q.push({ pos: j.offset, data: JSON.stringify(j.event ?? j) });
        }
      },
    );
    session.cutAt = () => cut;
    return session;
  },
};

/**
 * A door a client polls: `url` is the request for a position; `page` turns an answer into items
 * and says where to ask next (undefined once the stream has ended).
 */
function pollingDoor(
  name: string,
  url: (base: Base, id: string, offset: string, compact: boolean) => string,
  headers: Record<string, string>,
  page: (res: Response, body: string, q: Queue) => string | undefined,
  compact?: "page",
): Door {
  return {
    name,
    start: "-1",
    heartbeats: false,
    http: true,
    pausable: false,
    ...(compact ? { compact } : {}),
    open(base, id, from, o = {}) {
      const q = new Queue();
      let closed = false;
      let current: AbortController | undefined;
      let raw = "";
      let resolveReady: () => void = () => {};
      let rejectReady: (e: Error) => void = () => {};
      const session: Session = {
        ready: new Promise<void>((res, rej) => {
          resolveReady = res;
          rejectReady = rej;
        }),
        next: () => q.next(),
        close: () => {
          closed = true;
          current?.abort();
          q.end();
        },
        headers: {},
        raw: () => raw,
      };
      session.ready.catch(() => {});
      void (async () => {
        let offset: string | undefined = from;
        let first = true;
        try {
          while (offset !== undefined && !closed) {
            current = new AbortController();
            const res = await fetch(url(base, id, offset, o.compact === true), {
              headers: { ...headers, ...o.headers },
              signal: current.signal,
            });
            if (first) session.headers = headersOf(res.headers);
            if (res.status !== 200 && res.status !== 204) {
              const r = await refusal(res);
              if (first) rejectReady(r);
              q.fail(r);
              return;
            }
            if (first) resolveReady();
            first = false;
            const body = res.status === 204 ? "" : await res.text();
            raw += body;
            offset = page(res, body, q);
          }
          q.end();
        } catch (err) {
          if (first) rejectReady(err as Error);
          if (!closed) q.fail(err as Error);
        }
      })();
      return session;
    },
  };
}

const longPollDoor = pollingDoor(
  "long-poll",
  (base, id, offset, compact) =>
    `${base.url}/v1/streams/${id}?offset=${offset}&live=long-poll&timeout_ms=2000${compact ? "&compact=true" : ""}`,
  { accept: "application/json" },
  (_res, body, q) => {
    const page = JSON.parse(body) as {
      events: { offset: string; event: unknown }[];
      next_offset: string;
      status: string;
      up_to_date: boolean;
    };
    for (const e of page.events) q.push({ pos: e.offset, data: JSON.stringify(e.event) });
    return page.status !== "running" && page.up_to_date ? undefined : page.next_offset;
  },
  "page",
);

/** Durable Streams offsets of generation streams: `<sluice offset>_<16 zeros>`. */
const dsPos = (from: string) => (from === "-1" ? "-1" : `${from}_${"0".repeat(16)}`);
const sluicePos = (ds: string) => ds.split("_")[0] as string;

const dsSseDoor: Door = {
  name: "ds-sse",
  start: "-1",
  heartbeats: true,
  http: true,
  pausable: true,
  open(base, id, from, o = {}) {
    let p: ReturnType<typeof createParser> | undefined;
    let pending: unknown[] = [];
    return httpSession(
      `${base.url}/ds/v1/stream/${id}?offset=${dsPos(from)}&live=sse`,
      { ...o.headers },
      (t, q) => {
        if (!p)
          p = createParser({
            onEvent: (e) => {
              if (e.event === "data") pending = JSON.parse(e.data) as unknown[];
              else if (e.event === "control") {
                const c = JSON.parse(e.data) as { streamNextOffset: string; streamClosed?: boolean };
                // The records of a batch; only the last one carries the position the control event gives.
                pending.forEach((rec, i) => {
                  q.push({
                    pos: i === pending.length - 1 ? sluicePos(c.streamNextOffset) : undefined,
                    data: JSON.stringify(rec),
                  });
                });
                pending = [];
              }
            },
          });
        p.feed(t);
      },
    );
  },
};

const dsLongPollDoor = pollingDoor(
  "ds-long-poll",
  (base, id, offset) => `${base.url}/ds/v1/stream/${id}?offset=${dsPos(offset)}&live=long-poll`,
  {},
  (res, body, q) => {
    const next = sluicePos(res.headers.get("stream-next-offset") as string);
    if (res.status === 200) {
      const recs = JSON.parse(body) as unknown[];
      recs.forEach((rec, i) => {
        q.push({ pos: i === recs.length - 1 ? next : undefined, data: JSON.stringify(rec) });
      });
    }
    return res.headers.get("stream-closed") === "true" ? undefined : next;
  },
);

const wsDoor: Door = {
  name: "ws",
  start: "-1",
  heartbeats: true,
  http: false,
  pausable: true,
  compact: "stream",
  open(base, id, from, o = {}) {
    const q = new Queue();
    let raw = "";
    let cut: string | undefined;
    const ws = new WebSocket(`${base.url.replace(/^http/, "ws")}/v1/ws`, { headers: o.headers ?? {} });
    ws.on("ping", () => {
      raw += "[ping]";
    });
    const session: Session = {
      ready: new Promise<void>((resolve, reject) => {
        ws.on("unexpected-response", (_req, res) => {
          let body = "";
          res.on("data", (c: Buffer) => {
            body += c.toString();
          });
          res.on("end", () => {
            let code = "";
            try {
              code = (JSON.parse(body) as { error: { code: string } }).error.code;
            } catch {
              // not JSON
            }
            const r = new Refused(res.statusCode ?? 0, code);
            q.fail(r);
            reject(r);
          });
        });
        ws.on("open", () =>
          ws.send(
            JSON.stringify({
              type: "subscribe",
              stream: id,
              offset: from,
              id: "c",
              ...(o.compact ? { compact: true } : {}),
            }),
          ),
        );
        ws.on("message", (data) => {
          const text = data.toString();
          raw += text;
          const m = JSON.parse(text) as {
            type?: string;
            id?: string;
            offset?: string;
            event?: unknown;
            code?: string;
          };
          if (m.type === "subscribed") resolve();
          else if (m.type === "end") {
            q.end();
            ws.close();
          } else if (m.type === "error" && m.code === "slow_reader") {
            // The subscription was cut (the socket lives on): it names where to resume.
            cut = m.offset;
            q.end();
            ws.close();
          } else if (m.type === "error") {
            const r = new Refused(0, m.code ?? "");
            reject(r);
            q.fail(r);
            ws.close();
          } else if (m.event !== undefined) q.push({ pos: m.offset, data: JSON.stringify(m.event) });
        });
        ws.on("close", () => q.end());
        ws.on("error", (e) => {
          reject(e);
          q.fail(e);
        });
      }),
      next: () => q.next(),
      close: () => {
        q.end();
        ws.terminate();
      },
      headers: {},
      raw: () => raw,
      pause: () => ws.pause(),
      resume: () => ws.resume(),
      cutAt: () => cut,
    };
    session.ready.catch(() => {});
    return session;
  },
};

let grpcCtor: grpc.ServiceClientConstructor | undefined;
const grpcClients = new Map<string, grpc.Client>();

function grpcClient(address: string): grpc.Client & Record<string, unknown> {
  if (!grpcCtor) {
    const def = protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS);
    grpcCtor = (
      grpc.loadPackageDefinition(def) as unknown as {
        sluice: { v1: { Sluice: grpc.ServiceClientConstructor } };
      }
    ).sluice.v1.Sluice;
  }
  let c = grpcClients.get(address);
  if (!c) {
    c = new grpcCtor(address, grpc.credentials.createInsecure());
    grpcClients.set(address, c);
  }
  return c as grpc.Client & Record<string, unknown>;
}

export function closeGrpcClients(): void {
  for (const c of grpcClients.values()) c.close();
  grpcClients.clear();
}

const GRPC_CODES: Record<number, string> = {};

const grpcDoor: Door = {
  name: "grpc",
  start: "-1",
  heartbeats: false,
  http: false,
  pausable: true,
  compact: "stream",
  open(base, id, from, o = {}) {
    const q = new Queue();
    let cut: string | undefined;
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(o.headers ?? {})) md.set(k, v);
    const client = grpcClient(base.grpcAddress as string);
    const call = (client.Follow as (r: unknown, m: grpc.Metadata) => grpc.ClientReadableStream<unknown>)(
      { stream: id, offset: from, compact: o.compact === true },
      md,
    );
    let raw = "";
    let gotFirst = false;
    const session: Session = {
      ready: new Promise<void>((resolve, reject) => {
        call.on("metadata", () => resolve());
        call.on("data", (m: { offset: string; type: string; event_json: string }) => {
          gotFirst = true;
          resolve();
          raw += m.event_json;
          q.push({ pos: m.offset, data: m.event_json });
        });
        call.on("error", (e: grpc.ServiceError) => {
          if (e.code === grpc.status.CANCELLED) return;
          const named = e.metadata?.get("sluice-offset")[0];
          if (named !== undefined) {
            // Cut as a slow reader: the status names where to resume.
            cut = String(named);
            q.end();
            return;
          }
          const r = new Refused(
            e.code,
            String(e.metadata?.get("sluice-error-code")[0] ?? GRPC_CODES[e.code] ?? ""),
          );
          if (!gotFirst) reject(r);
          q.fail(r);
        });
        call.on("end", () => {
          resolve();
          q.end();
        });
      }),
      next: () => q.next(),
      close: () => {
        q.end();
        call.cancel();
      },
      headers: {},
      raw: () => raw,
      pause: () => call.pause(),
      resume: () => call.resume(),
      cutAt: () => cut,
    };
    session.ready.catch(() => {});
    return session;
  },
};

/**
 * The OpenAI Responses API's own resumable read: `GET /v1/responses/resp_<id>?stream=true
 * &starting_after=N`, positioned by the events' `sequence_number` (not SSE ids).
 */
const responsesDoor: Door = {
  name: "responses-api",
  start: "-1",
  heartbeats: true,
  http: true,
  pausable: true,
  open(base, id, from, o = {}) {
    let cut: string | undefined;
    let p: ReturnType<typeof createParser> | undefined;
    const qs = from === "-1" ? "?stream=true" : `?stream=true&starting_after=${from}`;
    const session = httpSession(
      `${base.url}/v1/responses/resp_${id}${qs}`,
      // As the openai SDK's responses.retrieve sends it: SSE is chosen by ?stream=true.
      { accept: "application/json", ...o.headers },
      (t, q) => {
        p ??= createParser({
          onEvent: (e) => {
            const seq = (JSON.parse(e.data) as { sequence_number?: number }).sequence_number;
            q.push({ pos: seq === undefined ? undefined : String(seq), data: `${e.event ?? ""}|${e.data}` });
          },
          onComment: (c) => {
            const m = /^\s*slow_reader (\S+)/.exec(c);
            if (m) cut = m[1];
          },
        });
        p.feed(t);
      },
    );
    session.cutAt = () => cut;
    return session;
  },
};

/** Every door a reader can follow a generation through. */
export const DOORS: Door[] = [
  sseDoor("sse", undefined),
  ndjsonDoor,
  longPollDoor,
  sseDoor("sse-openai", "openai"),
  sseDoor("sse-ai-sdk", "ai-sdk"),
  sseDoor("sse-anthropic", "anthropic"),
  sseDoor("sse-openai-responses", "openai-responses"),
  responsesDoor,
  dsSseDoor,
  dsLongPollDoor,
  wsDoor,
  grpcDoor,
];
