/** Time as a parameter: the follower's backoff waits go through this, so tests drive time. */
export interface ClientClock {
  now(): number;
  /** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: ClientClock = {
  now: () => Date.now(),
  sleep(ms, signal) {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  },
};

/**
 * A manual clock for tests: sleeps resolve only when `advance()` moves time past them.
 * `sleeps` records every requested delay, in order.
 */
export class ManualClock implements ClientClock {
  private t = 0;
  readonly sleeps: number[] = [];
  private waiters: { at: number; resolve: () => void }[] = [];

  now(): number {
    return this.t;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const w = { at: this.t + ms, resolve };
      this.waiters.push(w);
      signal?.addEventListener(
        "abort",
        () => {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(signal.reason);
        },
        { once: true },
      );
    });
  }

  /** Number of sleeps still waiting. */
  get pending(): number {
    return this.waiters.length;
  }

  advance(ms: number): void {
    this.t += ms;
    const due = this.waiters.filter((w) => w.at <= this.t);
    this.waiters = this.waiters.filter((w) => w.at > this.t);
    for (const w of due) w.resolve();
  }
}
