import type { ServerResponse } from "node:http";
import type { Http2ServerResponse } from "node:http2";
import type { Socket } from "node:net";
import zlib from "node:zlib";
import type { SharedChunk, Sink, WriteMark } from "../core/hub.js";

export type ContentEncoding = "gzip" | "br";
type Res = ServerResponse | Http2ServerResponse;

/** Parses Accept-Encoding and picks an encoding the server offers (server order breaks ties). */
export function pickEncoding(
  header: string | string[] | undefined,
  offered: readonly ContentEncoding[],
): ContentEncoding | undefined {
  if (!header || offered.length === 0) return undefined;
  const text = Array.isArray(header) ? header.join(",") : header;
  const q = new Map<string, number>();
  for (const part of text.split(",")) {
    const [name, ...params] = part.trim().toLowerCase().split(";");
    if (!name) continue;
    let weight = 1;
    for (const p of params) {
      const m = /^\s*q=([0-9.]+)\s*$/.exec(p);
      if (m) weight = Number(m[1]);
    }
    q.set(name, Number.isFinite(weight) ? weight : 0);
  }
  let best: ContentEncoding | undefined;
  let bestQ = 0;
  for (const enc of offered) {
    const w = q.get(enc) ?? q.get("*") ?? 0;
    if (w > bestQ) {
      best = enc;
      bestQ = w;
    }
  }
  return best;
}

/**
 * A streaming compressor flushed after every batch (Z_SYNC_FLUSH / BROTLI_OPERATION_FLUSH),
 * so a compressed stream is as incremental as a plain one. Small windows keep the memory
 * per connection modest.
 */
function compressor(enc: ContentEncoding): zlib.Gzip | zlib.BrotliCompress {
  if (enc === "gzip") return zlib.createGzip({ level: 6, windowBits: 13, memLevel: 6 });
  return zlib.createBrotliCompress({
    params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: 4,
      [zlib.constants.BROTLI_PARAM_LGWIN]: 16,
      [zlib.constants.BROTLI_PARAM_MODE]: zlib.constants.BROTLI_MODE_TEXT,
    },
  });
}

export interface ResponseSinkOptions {
  /** Compress the body with this encoding (the client asked for it). */
  encoding?: ContentEncoding | undefined;
  /** The reader's own flush cadence (ms). */
  flushMs?: number | undefined;
  /** Bytes written as the final message when a slow reader is cut (offset, message) → text. */
  cutMessage?: (offset: string, message: string) => string;
}

/**
 * A Sink over an HTTP response (HTTP/1.1 or HTTP/2). Headers go out lazily, on the first
 * write or end, so a reader can be attached (and fail with a clean JSON error) before
 * anything is sent. Each write is one batch from the flow scheduler; with compression the
 * compressor is flushed after each batch.
 */
export class ResponseSink implements Sink {
  private opened = false;
  /**
   * HTTP/1.1 without compression: once the headers are out, batches go straight to the
   * socket, already framed (chunked encoding), in one write each — no cork/uncork tick and
   * no header/CRLF buffers per write as `res.write` would add, and the framed bytes of a
   * batch are made once and shared by every reader at the same place (see SharedChunk).
   */
  private direct: Socket | undefined;
  private chunked = false;
  /** Set on every write; the heartbeat clears it each tick and pings sinks that stayed quiet. */
  wrote = false;
  readonly flushMs: number | undefined;
  private readonly z: zlib.Gzip | zlib.BrotliCompress | undefined;
  private readonly flushKind: number;
  private readonly cutMessage: ((offset: string, message: string) => string) | undefined;

  constructor(
    private readonly res: Res,
    private readonly head: () => void,
    opts: ResponseSinkOptions = {},
  ) {
    this.flushMs = opts.flushMs;
    this.cutMessage = opts.cutMessage;
    if (opts.encoding) {
      const z = compressor(opts.encoding);
      this.z = z;
      this.flushKind =
        opts.encoding === "gzip" ? zlib.constants.Z_SYNC_FLUSH : zlib.constants.BROTLI_OPERATION_FLUSH;
      z.on("data", (buf: Buffer) => {
        if (!this.resClosed) (this.res as ServerResponse).write(buf);
      });
      z.on("end", () => {
        if (!this.resClosed) this.res.end();
      });
      z.on("error", () => this.destroy());
      res.once("close", () => z.destroy());
    } else {
      this.flushKind = 0;
    }
  }

  open(): void {
    if (this.opened) return;
    this.opened = true;
    this.head();
    if (this.z) return;
    const r = this.res as ServerResponse & { stream?: unknown };
    const socket = r.stream ? undefined : r.socket;
    // Only when this response owns the socket now (not queued behind a pipelined one).
    if (!socket || socket.destroyed || (socket as Socket & { _httpMessage?: unknown })._httpMessage !== r)
      return;
    r.flushHeaders(); // writeHead only renders the head; send it before any direct write
    this.direct = socket;
    this.chunked = r.chunkedEncoding;
  }

  write(chunk: string, _mark?: WriteMark, shared?: SharedChunk): void {
    if (!this.opened) this.open();
    const direct = this.direct;
    if (direct) {
      if (direct.destroyed || this.res.writableEnded) return;
      this.wrote = true;
      if (!this.chunked) direct.write(chunk);
      else if (!shared) direct.write(frameChunk(chunk));
      else {
        if (shared.framed === undefined) shared.framed = frameChunk(chunk);
        direct.write(shared.framed);
      }
      return;
    }
    if (this.closed) return;
    this.wrote = true;
    const z = this.z;
    if (z) {
      z.write(chunk);
      z.flush(this.flushKind);
    } else {
      (this.res as ServerResponse).write(chunk);
    }
  }

  get buffered(): number {
    if (this.direct) return this.direct.writableLength;
    return this.res.writableLength + (this.z ? this.z.writableLength : 0);
  }

  onDrain(cb: () => void): void {
    const res = this.res;
    // What to wait on: the socket itself (direct writes), else the response, else the
    // compressor when only it is full. Nothing full: call back on the next turn.
    let target: NodeJS.EventEmitter | undefined;
    const direct = this.direct;
    if (direct) target = direct.writableNeedDrain ? direct : undefined;
    else if (res.writableLength >= res.writableHighWaterMark) target = res;
    else if (this.z?.writableNeedDrain) target = this.z;
    let done = false;
    const fire = () => {
      if (done) return;
      done = true;
      target?.off("drain", fire);
      res.off("close", fire);
      cb();
    };
    if (!target) {
      setImmediate(fire);
      return;
    }
    target.once("drain", fire);
    res.once("close", fire);
  }

  end(): void {
    if (!this.opened) this.open();
    if (this.res.writableEnded) return;
    if (this.z) {
      if (!this.z.writableEnded) this.z.end();
    } else {
      this.res.end();
    }
  }

  /** Slow reader: a final message naming its last offset, then close (and destroy if it never drains). */
  cut(offset: string, message: string): void {
    if (!this.closed && this.cutMessage) this.write(this.cutMessage(offset, message));
    this.end();
    const r = this.res as ServerResponse & { stream?: unknown };
    // A reader that does not read will never take the final bytes: free the socket soon.
    const socket = r.stream ? undefined : r.socket;
    const t = setTimeout(() => this.destroy(), 1000);
    t.unref();
    r.once("finish", () => {
      clearTimeout(t);
      // HTTP/1.1 would keep the connection alive: close it so the client reconnects afresh.
      socket?.end();
    });
  }

  destroy(): void {
    this.z?.destroy();
    const r = this.res as ServerResponse & { stream?: { destroy(): void } };
    if (r.stream) r.stream.destroy();
    else r.destroy();
  }

  private get resClosed(): boolean {
    const r = this.res as ServerResponse & { stream?: { destroyed: boolean } };
    return (r.stream ? r.stream.destroyed : r.destroyed) || r.writableEnded;
  }

  get closed(): boolean {
    return this.resClosed || this.z?.writableEnded === true;
  }
}

/** One HTTP/1.1 chunk: size line, data, CRLF — as one buffer, for one write. */
function frameChunk(chunk: string): Buffer {
  const len = Buffer.byteLength(chunk);
  const head = `${len.toString(16)}\r\n`;
  const buf = Buffer.allocUnsafe(head.length + len + 2);
  buf.write(head, 0, "latin1");
  buf.write(chunk, head.length, "utf8");
  buf[buf.length - 2] = 13;
  buf[buf.length - 1] = 10;
  return buf;
}

/**
 * One timer for every open streaming response: each tick, responses that wrote nothing
 * since the last tick get a heartbeat (an SSE comment, or a blank NDJSON line), so
 * proxies and clients see a live connection. No per-connection timers.
 */
export class Heartbeats {
  private readonly sinks = new Map<ResponseSink, string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly intervalMs: number) {}

  add(sink: ResponseSink, beat: string): void {
    this.sinks.set(sink, beat);
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.intervalMs);
      this.timer.unref();
    }
  }

  delete(sink: ResponseSink): void {
    this.sinks.delete(sink);
    if (this.sinks.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private tick(): void {
    for (const [sink, beat] of this.sinks) {
      if (sink.closed) {
        this.sinks.delete(sink);
        continue;
      }
      if (!sink.wrote) sink.write(beat);
      sink.wrote = false;
    }
  }

  get size(): number {
    return this.sinks.size;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sinks.clear();
  }
}
