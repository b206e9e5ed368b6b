/** Time as a parameter, so pacing and deadlines are testable without real sleeps. */
export interface Clock {
  /** Milliseconds, monotonic enough for pacing (Date.now() in the real clock). */
  now(): number;
  /** Resolves after `ms`; rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep(ms, signal) {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      if (ms <= 0) {
        // Still yield to the event loop so a tight generator never starves I/O.
        setImmediate(() => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        });
      }
      const timer =
        ms > 0
          ? setTimeout(() => {
              signal?.removeEventListener("abort", onAbort);
              resolve();
            }, ms)
          : undefined;
      function onAbort() {
        if (timer) clearTimeout(timer);
        reject(signal?.reason);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  },
};

/**
 * A virtual clock for tests: sleep() advances virtual time by exactly `ms` and resolves
 * on the next microtask, so a paced generator runs instantly and its timestamps are exact.
 */
export class VirtualClock implements Clock {
  private t: number;
  constructor(start = 0) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw signal.reason;
    this.t += Math.max(0, ms);
    await Promise.resolve();
    if (signal?.aborted) throw signal.reason;
  }
}
