import type { ServerResponse } from "node:http";
import type { Sink } from "../core/hub.js";

/**
 * A Sink over an HTTP response. Headers go out lazily, on the first write or end, so a
 * reader can be attached (and fail with a clean JSON error) before anything is sent.
 */
export class ResponseSink implements Sink {
  private opened = false;
  /** Set on every write; the heartbeat clears it each tick and pings sinks that stayed quiet. */
  wrote = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly head: () => void,
  ) {}

  open(): void {
    if (this.opened) return;
    this.opened = true;
    this.head();
  }

  write(chunk: string): void {
    if (!this.opened) this.open();
    if (this.closed) return;
    this.wrote = true;
    this.res.write(chunk);
  }

  get buffered(): number {
    return this.res.writableLength;
  }

  onDrain(cb: () => void): void {
    const onClose = () => {
      this.res.off("drain", onDrain);
      cb();
    };
    const onDrain = () => {
      this.res.off("close", onClose);
      cb();
    };
    this.res.once("drain", onDrain);
    this.res.once("close", onClose);
  }

  end(): void {
    if (!this.opened) this.open();
    if (!this.res.writableEnded) this.res.end();
  }

  get closed(): boolean {
    return this.res.destroyed || this.res.writableEnded;
  }
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
