import type { SluiceEvent, StreamEvent } from "@sluice/protocol";
import type { ClientClock } from "./clock.js";
import { errorFromResponse, SluiceClientError, StreamExhausted } from "./errors.js";
import { type SseMessage, SseParser } from "./sse.js";

/**
 * One way to read a stream from an offset. `open` resolves once the read is established
 * (or rejects: SluiceClientError with `retryable`, or StreamExhausted when nothing more
 * will ever come); the events then arrive through the iterable, which throws when the
 * connection drops and returns when the server closes the response.
 */
export interface Transport {
  readonly name: string;
  open(id: string, offset: string, signal: AbortSignal): Promise<AsyncIterable<StreamEvent>>;
  /** Releases shared resources (the WebSocket). */
  close?(): void;
}

export interface SseTransportOptions {
  baseUrl: string;
  fetch: typeof fetch;
  headers: Record<string, string>;
  clock: ClientClock;
  /** No byte (not even a heartbeat) for this long = the connection is dead. 0 disables. */
  idleTimeoutMs: number;
  /** Ask for compact catch-up (`&compact=true`); absent = true. */
  compact?: boolean;
}

export class SseTransport implements Transport {
  readonly name = "sse";
  constructor(private readonly opts: SseTransportOptions) {}

  async open(id: string, offset: string, signal: AbortSignal): Promise<AsyncIterable<StreamEvent>> {
    const compact = this.opts.compact === false ? "" : "&compact=true";
    const url = `${this.opts.baseUrl}/v1/streams/${encodeURIComponent(id)}?offset=${encodeURIComponent(offset)}${compact}`;
    let res: Response;
    try {
      res = await this.opts.fetch(url, {
        headers: { ...this.opts.headers, accept: "text/event-stream" },
        signal,
        cache: "no-store",
      });
    } catch (err) {
      if (signal.aborted) throw err;
      throw new SluiceClientError("network_error", `cannot reach the server: ${describe(err)}`, true);
    }
    if (res.status === 204) throw new StreamExhausted("the stream has ended");
    if (!res.ok) throw await errorFromResponse(res);
    if (!res.body) throw new SluiceClientError("network_error", "the response has no body", true);
    return readSse(res.body, signal, this.opts.clock, this.opts.idleTimeoutMs);
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: { message?: string; code?: string } }).cause;
    return cause?.code ?? cause?.message ?? err.message;
  }
  return String(err);
}

async function* readSse(
  body: ReadableStream<Uint8Array>,
  signal: AbortSignal,
  clock: ClientClock,
  idleTimeoutMs: number,
): AsyncGenerator<StreamEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const queue: SseMessage[] = [];
  const parser = new SseParser((m) => queue.push(m));
  try {
    for (;;) {
      const r = await readWithIdle(reader, clock, idleTimeoutMs, signal);
      if (r.done) {
        parser.feed(`${decoder.decode()}\n\n`);
      } else {
        parser.feed(decoder.decode(r.value, { stream: true }));
      }
      while (queue.length > 0) {
        const m = queue.shift() as SseMessage;
        if (m.id === undefined || m.data === "") continue;
        let event: SluiceEvent;
        try {
          event = JSON.parse(m.data) as SluiceEvent;
        } catch {
          throw new SluiceClientError("protocol_error", `event ${m.id} is not JSON`, false);
        }
        yield { offset: m.id, event };
      }
      if (r.done) return;
    }
  } catch (err) {
    if (err instanceof SluiceClientError || signal.aborted) throw err;
    throw new SluiceClientError("connection_lost", `the connection dropped: ${describe(err)}`, true);
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function readWithIdle(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  clock: ClientClock,
  idleTimeoutMs: number,
  signal: AbortSignal,
): Promise<ReadableStreamReadResult<Uint8Array>> {
  if (idleTimeoutMs <= 0) return reader.read();
  const timer = new AbortController();
  const onAbort = () => timer.abort();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    return await Promise.race([
      reader.read(),
      clock.sleep(idleTimeoutMs, timer.signal).then(() => {
        throw new SluiceClientError(
          "connection_idle",
          `no data or heartbeat for ${idleTimeoutMs} ms; reconnecting`,
          true,
        );
      }),
    ]);
  } finally {
    signal.removeEventListener("abort", onAbort);
    timer.abort();
  }
}

// ── WebSocket: one socket, many streams ─────────────────────────────────────

/**
 * An event handler property. Written as a method type, whose parameter TypeScript checks
 * bivariantly: the browser's WebSocket and the `ws` package's (whose handlers take their own
 * event classes) are then both a WebSocketLike without a cast — `webSocket: (url) => new
 * WebSocket(url)` type-checks as docs/client.md shows it.
 */
type Handler<E> = { bivarianceHack(ev: E): void }["bivarianceHack"];

/** The subset of the WebSocket API the transport uses (browser WebSocket, or `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ data: unknown }> | null;
  onclose: Handler<unknown> | null;
  onerror: Handler<unknown> | null;
}
export type WebSocketFactory = (url: string) => WebSocketLike;

/**
 * Error codes after which a subscription is worth retrying from its offset (the server's
 * catalogue marks them retryable): `slow_reader` is the server cutting a reader that fell
 * too far behind; resubscribing catches it up from the store.
 */
const RETRYABLE_WS_CODES = new Set([
  "slow_reader",
  "capacity_exceeded",
  "internal_error",
  "interrupted",
  "rate_limited",
  "too_many_connections",
  "too_many_readers",
  "upstream_unreachable",
]);

/** An async queue of events for one subscription. */
class Subscription implements AsyncIterable<StreamEvent> {
  private items: StreamEvent[] = [];
  private error: unknown;
  private done = false;
  private wake: (() => void) | undefined;

  push(e: StreamEvent): void {
    this.items.push(e);
    this.notify();
  }
  fail(err: unknown): void {
    if (this.done) return;
    this.error = err;
    this.done = true;
    this.notify();
  }
  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
  async *[Symbol.asyncIterator](): AsyncGenerator<StreamEvent> {
    for (;;) {
      if (this.items.length > 0) {
        yield this.items.shift() as StreamEvent;
        continue;
      }
      if (this.done) {
        if (this.error) throw this.error;
        return;
      }
      await new Promise<void>((r) => {
        this.wake = r;
      });
    }
  }
}

/**
 * Reads streams over one WebSocket at `/v1/ws`. Client messages: `{type:"subscribe", stream,
 * offset, compact?}`, `{type:"unsubscribe", stream}`. Server messages: `{stream, offset, event}` per
 * event; `{type:"error", stream?, code, message}` on errors (a retryable code such as
 * `slow_reader` resubscribes from the offset reached); `{type:"end", stream}` when a
 * subscription has nothing more to deliver; acks (`subscribed`, `unsubscribed`) are ignored. A socket close fails every subscription with
 * a retryable error, so each follower resumes from its own offset on the next socket.
 */
export class WsTransport implements Transport {
  readonly name = "ws";
  private socket: WebSocketLike | undefined;
  private opening: Promise<WebSocketLike> | undefined;
  private readonly subs = new Map<string, Subscription>();

  constructor(
    private readonly url: string,
    private readonly factory: WebSocketFactory,
    /** Subscribe with compact catch-up (`compact: true`). */
    private readonly compact = true,
  ) {}

  private connect(): Promise<WebSocketLike> {
    if (this.socket && this.socket.readyState === 1) return Promise.resolve(this.socket);
    if (this.opening) return this.opening;
    this.opening = new Promise<WebSocketLike>((resolve, reject) => {
      const ws = this.factory(this.url);
      ws.onopen = () => {
        this.socket = ws;
        this.opening = undefined;
        resolve(ws);
      };
      ws.onerror = () => {};
      ws.onclose = () => {
        if (this.opening) {
          this.opening = undefined;
          reject(new SluiceClientError("network_error", "the WebSocket could not open", true));
        }
        if (this.socket === ws) this.socket = undefined;
        const err = new SluiceClientError("connection_lost", "the WebSocket closed", true);
        for (const sub of this.subs.values()) sub.fail(err);
        this.subs.clear();
      };
      ws.onmessage = (ev) => this.onMessage(ev.data);
    });
    return this.opening;
  }

  private onMessage(data: unknown): void {
    let msg: {
      type?: string;
      stream?: string;
      offset?: string;
      event?: SluiceEvent;
      code?: string;
      message?: string;
      error?: { code?: string; message?: string };
    };
    try {
      msg = JSON.parse(typeof data === "string" ? data : String(data));
    } catch {
      return;
    }
    const sub = msg.stream ? this.subs.get(msg.stream) : undefined;
    if (msg.type === "error" || msg.error) {
      const code = msg.code ?? msg.error?.code ?? "ws_error";
      const message = msg.message ?? msg.error?.message ?? code;
      const retryable = RETRYABLE_WS_CODES.has(code);
      if (sub && msg.stream) {
        this.subs.delete(msg.stream);
        sub.fail(new SluiceClientError(code, message, retryable));
      }
      return;
    }
    if (!sub || !msg.stream) return;
    if (msg.type === "end") {
      this.subs.delete(msg.stream);
      sub.fail(new StreamExhausted("the stream has ended"));
      return;
    }
    if (msg.offset !== undefined && msg.event) sub.push({ offset: msg.offset, event: msg.event });
  }

  async open(id: string, offset: string, signal: AbortSignal): Promise<AsyncIterable<StreamEvent>> {
    const ws = await this.connect();
    this.subs
      .get(id)
      ?.fail(new SluiceClientError("superseded", "a newer subscription replaced this one", false));
    const sub = new Subscription();
    this.subs.set(id, sub);
    ws.send(
      JSON.stringify({ type: "subscribe", stream: id, offset, ...(this.compact ? { compact: true } : {}) }),
    );
    signal.addEventListener(
      "abort",
      () => {
        if (this.subs.get(id) === sub) {
          this.subs.delete(id);
          if (ws.readyState === 1) ws.send(JSON.stringify({ type: "unsubscribe", stream: id }));
        }
        sub.fail(signal.reason);
      },
      { once: true },
    );
    return sub;
  }

  close(): void {
    this.socket?.close(1000, "client closed");
    this.socket = undefined;
  }
}
