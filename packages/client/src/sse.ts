/**
 * A small incremental Server-Sent Events parser (WHATWG "event stream interpretation"):
 * feed it text chunks as they arrive, it calls back once per complete event. Handles
 * CR, LF and CRLF line ends (also split across chunks), multi-line `data:`, comments,
 * `id:` and `event:`; a chunk boundary anywhere is fine. Bounded: a line longer than
 * `maxLineChars` is an error, so a broken server cannot grow memory without end.
 */
export interface SseMessage {
  id: string | undefined;
  event: string | undefined;
  data: string;
}

export class SseParser {
  private buf = "";
  private pendingCR = false;
  private data: string[] = [];
  private event: string | undefined;
  private id: string | undefined;
  private hasField = false;

  constructor(
    private readonly onMessage: (m: SseMessage) => void,
    private readonly maxLineChars = 4 * 1024 * 1024,
  ) {}

  feed(chunk: string): void {
    let start = 0;
    let i = 0;
    const text = chunk;
    if (this.pendingCR && text.charCodeAt(0) === 10) {
      start = 1;
      i = 1;
    }
    this.pendingCR = false;
    for (; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.buf + text.slice(start, i);
      this.buf = "";
      this.line(line);
      if (c === 13) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 10) i++;
        } else {
          this.pendingCR = true;
        }
      }
      start = i + 1;
    }
    if (start < text.length) {
      this.buf += text.slice(start);
      if (this.buf.length > this.maxLineChars) {
        this.buf = "";
        throw new Error(`SSE line longer than ${this.maxLineChars} characters`);
      }
    }
  }

  private line(line: string): void {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ":" comment (heartbeat)
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case "data":
        this.data.push(value);
        this.hasField = true;
        break;
      case "event":
        this.event = value;
        this.hasField = true;
        break;
      case "id":
        if (!value.includes("\0")) this.id = value;
        this.hasField = true;
        break;
      default:
        // `retry:` and unknown fields: the client schedules its own reconnects.
        break;
    }
  }

  private dispatch(): void {
    if (!this.hasField) return;
    const m: SseMessage = { id: this.id, event: this.event, data: this.data.join("\n") };
    this.data = [];
    this.event = undefined;
    this.hasField = false;
    if (m.data === "" && m.event === undefined) return;
    this.onMessage(m);
  }
}
