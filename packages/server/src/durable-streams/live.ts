import { StringDecoder } from "node:string_decoder";
import type { Sink, WriteMark } from "../core/hub.js";
import type { ResponseSink } from "../http/sink.js";
import { jsonArray } from "./codecs.js";
import { dsOffset, type Mode } from "./protocol.js";

/**
 * A long-poll waiting on the Hub: the first batch the reader delivers becomes the response
 * (then the sink reports itself closed, so the reader detaches).
 */
export class LongPollSink implements Sink {
  private done = false;

  constructor(
    private readonly onData: (chunk: string, mark: WriteMark) => void,
    private readonly onEnd: () => void,
  ) {}

  write(chunk: string, mark: WriteMark): void {
    if (this.done) return;
    this.done = true;
    this.onData(chunk, mark);
  }

  readonly buffered = 0;

  onDrain(cb: () => void): void {
    cb();
  }

  end(): void {
    if (this.done) return;
    this.done = true;
    this.onEnd();
  }

  /** A long-poll holds at most one batch, so it is never behind; a cut just ends it. */
  cut(): void {
    this.end();
  }

  /** The response went out some other way (timeout, client gone). */
  cancel(): void {
    this.done = true;
  }

  get closed(): boolean {
    return this.done;
  }
}

export type SseData = "json" | "text" | "base64";

export interface ControlFields {
  streamNextOffset: string;
  streamCursor?: string;
  upToDate?: boolean;
  streamClosed?: boolean;
}

export function controlEvent(c: ControlFields): string {
  return `event: control\ndata:${JSON.stringify(c)}\n\n`;
}

const LINE_BREAK = /\r\n|\r|\n/;

/**
 * One `event: data` for a batch of encoded records. Text goes through the reader's decoder, so a
 * character split across two appends that arrive in different batches still comes out whole.
 */
export function dataEvent(kind: SseData, mode: Mode, chunk: string, text?: StringDecoder): string {
  if (kind === "json" && mode === "json") return `event: data\ndata:${jsonArray(chunk)}\n\n`;
  const bytes = Buffer.from(chunk, "latin1");
  if (kind === "base64") return `event: data\ndata:${bytes.toString("base64")}\n\n`;
  // Text: every line its own data: field, so nothing in the payload can end the event early.
  let out = "event: data\n";
  const decoded = text ? text.write(bytes) : bytes.toString("utf8");
  for (const line of decoded.split(LINE_BREAK)) {
    // A leading space would be eaten by the parser; an extra one keeps it.
    out += line.startsWith(" ") ? `data: ${line}\n` : `data:${line}\n`;
  }
  return `${out}\n`;
}

/**
 * SSE for DS readers: each batch the Hub delivers becomes one `event: data` followed by one
 * `event: control` (offset, cursor, upToDate/streamClosed), so every data event is paired.
 */
export class DsSseSink implements Sink {
  private lastUpToDate = false;
  private closedSent = false;
  private readonly text = new StringDecoder("utf8");

  constructor(
    readonly inner: ResponseSink,
    private readonly kind: SseData,
    private readonly mode: Mode,
    private readonly cursor: () => string,
    private readonly onEnd: (sink: DsSseSink) => void,
  ) {}

  write(chunk: string, mark: WriteMark): void {
    const control: ControlFields = { streamNextOffset: dsOffset(mark.last) };
    if (mark.ended) {
      control.upToDate = true;
      control.streamClosed = true;
      this.closedSent = true;
    } else {
      control.streamCursor = this.cursor();
      if (mark.upToDate) control.upToDate = true;
    }
    this.lastUpToDate = mark.upToDate;
    this.inner.write(dataEvent(this.kind, this.mode, chunk, this.text) + controlEvent(control));
  }

  idle(seq: number): void {
    if (this.lastUpToDate) return;
    this.lastUpToDate = true;
    this.inner.write(
      controlEvent({ streamNextOffset: dsOffset(seq), streamCursor: this.cursor(), upToDate: true }),
    );
  }

  /** The final control event of a closed stream, then the end of the response. */
  sendClosed(seq: number): void {
    if (!this.closedSent) {
      this.closedSent = true;
      this.inner.write(controlEvent({ streamNextOffset: dsOffset(seq), upToDate: true, streamClosed: true }));
    }
    this.inner.end();
  }

  get buffered(): number {
    return this.inner.buffered;
  }

  onDrain(cb: () => void): void {
    this.inner.onDrain(cb);
  }

  /** A slow reader is disconnected; its last control event told it where to resume. */
  cut(offset: string, message: string): void {
    this.inner.cut(offset, message);
  }

  end(): void {
    if (this.closedSent || this.inner.closed) {
      this.inner.end();
      return;
    }
    // Ended without a closing batch (closed while at the tail, or deleted): the route decides.
    this.onEnd(this);
  }

  get closed(): boolean {
    return this.inner.closed;
  }
}
