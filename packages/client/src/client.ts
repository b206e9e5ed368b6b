import type { StreamEvent, StreamStatus } from "@sluice/protocol";
import { type ClientClock, realClock } from "./clock.js";
import { errorFromResponse, SluiceClientError } from "./errors.js";
import { Follow, type FollowOptions } from "./follow.js";
import { type BackoffOptions, DEFAULT_BACKOFF } from "./machine.js";
import { SseTransport, type Transport, type WebSocketFactory, WsTransport } from "./transport.js";

export interface ClientOptions {
  /** Server base URL, e.g. `http://127.0.0.1:8080`; empty (default) = same origin in a browser. */
  baseUrl?: string;
  /** `sse` (default): one HTTP response per followed stream. `ws`: one WebSocket for all streams. */
  transport?: "sse" | "ws";
  headers?: Record<string, string>;
  fetch?: typeof fetch;
  /** Creates WebSockets (default: the global WebSocket; in Node 20 pass `(u) => new WebSocket(u)` from `ws`). */
  webSocket?: WebSocketFactory;
  backoff?: Partial<BackoffOptions>;
  /** Injected for tests: time and randomness of the reconnect logic. */
  clock?: ClientClock;
  random?: () => number;
  /** A connection silent for this long (no event, no heartbeat) is dropped and resumed. Default 45 s. */
  idleTimeoutMs?: number;
  /**
   * Compact catch-up (default true): what a follow reads from history (joining late, a reload, a
   * resume) arrives with runs of deltas folded into one event each, so a long answer catches up in
   * a few events; the live tail is unchanged. `false` reads every delta as it was written.
   */
  compact?: boolean;
}

/** What the server answers to a start (and to `info`). */
export interface StreamInfo {
  id: string;
  status: StreamStatus;
  model?: string;
  created_at: string;
  ended_at?: string;
  length?: number;
  readers?: number;
  [k: string]: unknown;
}

export interface ModelInfo {
  id: string;
  owned_by: string;
}

/** A generation request (see docs/http-api.md); `messages` as in OpenAI chat. */
export interface GenerationRequest {
  model: string;
  messages: { role: string; content: unknown; [k: string]: unknown }[];
  max_tokens?: number;
  [k: string]: unknown;
}

/** The Sluice client: start generations, follow streams (resuming by itself), cancel. */
export class SluiceClient {
  readonly baseUrl: string;
  private readonly fetchImpl: typeof fetch;
  private readonly headers: Record<string, string>;
  private readonly transport: Transport;
  private readonly clock: ClientClock;
  private readonly random: () => number;
  private readonly backoff: BackoffOptions;

  constructor(opts: ClientOptions = {}) {
    this.baseUrl = (opts.baseUrl ?? "").replace(/\/+$/, "");
    this.fetchImpl = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.headers = opts.headers ?? {};
    this.clock = opts.clock ?? realClock;
    this.random = opts.random ?? Math.random;
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    if (opts.transport === "ws") {
      const factory =
        opts.webSocket ??
        ((url: string) => {
          const WS = (globalThis as { WebSocket?: new (u: string) => unknown }).WebSocket;
          if (!WS) throw new Error("no global WebSocket: pass `webSocket` in the client options");
          return new WS(url) as ReturnType<WebSocketFactory>;
        });
      this.transport = new WsTransport(wsUrl(this.baseUrl), factory, opts.compact ?? true);
    } else {
      this.transport = new SseTransport({
        baseUrl: this.baseUrl,
        fetch: this.fetchImpl,
        headers: this.headers,
        clock: this.clock,
        idleTimeoutMs: opts.idleTimeoutMs ?? 45_000,
        compact: opts.compact ?? true,
      });
    }
  }

  private async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    let res: Response;
    try {
      res = await this.fetchImpl(`${this.baseUrl}${path}`, {
        method,
        headers: {
          ...this.headers,
          accept: "application/json",
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      throw new SluiceClientError(
        "network_error",
        `cannot reach the server: ${(err as Error).message}`,
        true,
      );
    }
    if (!res.ok) throw await errorFromResponse(res);
    return (await res.json()) as T;
  }

  /** Starts a generation; resolves with the new stream's info (its id) without waiting for tokens. */
  start(request: GenerationRequest, opts: { signal?: AbortSignal } = {}): Promise<StreamInfo> {
    return this.request<StreamInfo>("POST", "/v1/streams", request, opts.signal);
  }

  /** Follows a stream from an offset: an async iterable of its events that survives disconnects. */
  follow(id: string, opts: FollowOptions = {}): Follow {
    return new Follow(
      id,
      { transport: this.transport, clock: this.clock, random: this.random, backoff: this.backoff },
      opts,
    );
  }

  /** Starts a generation and follows it from the beginning. */
  async stream(request: GenerationRequest, opts: Omit<FollowOptions, "offset"> = {}): Promise<Follow> {
    const info = await this.start(request, opts.signal ? { signal: opts.signal } : {});
    return this.follow(info.id, opts);
  }

  /** Cancels a generation (its upstream call is aborted); resolves with the final info. */
  cancel(id: string): Promise<StreamInfo> {
    return this.request<StreamInfo>("POST", `/v1/streams/${encodeURIComponent(id)}/cancel`);
  }

  info(id: string): Promise<StreamInfo> {
    return this.request<StreamInfo>("GET", `/v1/streams/${encodeURIComponent(id)}/info`);
  }

  async models(): Promise<ModelInfo[]> {
    const r = await this.request<{ data: ModelInfo[] }>("GET", "/v1/models");
    return r.data;
  }

  /** Closes the shared WebSocket (SSE has nothing to close). */
  close(): void {
    this.transport.close?.();
  }
}

function wsUrl(base: string): string {
  if (base === "") {
    const loc = (globalThis as { location?: { protocol: string; host: string } }).location;
    if (!loc) throw new Error("a WebSocket client needs a baseUrl outside the browser");
    return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/v1/ws`;
  }
  return `${base.replace(/^http/, "ws")}/v1/ws`;
}

export type { StreamEvent };
