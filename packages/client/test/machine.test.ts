import {
  backoffDelay,
  type ConnectionState,
  DEFAULT_BACKOFF,
  Follow,
  initialState,
  ManualClock,
  SluiceClientError,
  type StreamEvent,
  StreamExhausted,
  type Transport,
  transition,
} from "@sluice/client";
import { describe, expect, it } from "vitest";

const opts = { initialMs: 100, maxMs: 1000, factor: 2, maxAttempts: 5 };
const off = (n: number) => String(n).padStart(16, "0");

describe("reconnect state machine (pure)", () => {
  it("connect → live → events → terminal ends it, keeping the last offset", () => {
    let s: ConnectionState = initialState();
    s = transition(s, { type: "connect" }, opts, () => 0.5);
    expect(s).toEqual({ status: "connecting", offset: "-1", attempt: 0 });
    s = transition(s, { type: "opened" }, opts);
    expect(s.status).toBe("live");
    s = transition(s, { type: "event", offset: off(1), terminal: false }, opts);
    s = transition(s, { type: "event", offset: off(2), terminal: false }, opts);
    expect(s).toEqual({ status: "live", offset: off(2), attempt: 0 });
    s = transition(s, { type: "event", offset: off(3), terminal: true }, opts);
    expect(s).toEqual({ status: "ended", offset: off(3), reason: "terminal" });
    // Final states absorb everything.
    expect(transition(s, { type: "dropped", reason: "x" }, opts)).toBe(s);
    expect(transition(s, { type: "connect" }, opts)).toBe(s);
  });

  it("drops back off exponentially with full jitter from the injected random, and progress resets the attempt", () => {
    let s: ConnectionState = transition(initialState(off(4)), { type: "connect" }, opts);
    const delays: number[] = [];
    for (let i = 0; i < 4; i++) {
      s = transition(s, { type: "dropped", reason: "reset" }, opts, () => 0.999);
      expect(s.status).toBe("reconnecting");
      if (s.status === "reconnecting") delays.push(s.delayMs);
      s = transition(s, { type: "retry" }, opts);
      expect(s.status).toBe("connecting");
    }
    // caps: 100, 200, 400, 800 (× 0.999)
    expect(delays).toEqual([99, 199, 399, 799]);
    expect(s.offset).toBe(off(4));
    s = transition(s, { type: "opened" }, opts);
    s = transition(s, { type: "event", offset: off(5), terminal: false }, opts);
    expect(s).toEqual({ status: "live", offset: off(5), attempt: 0 });
    s = transition(s, { type: "dropped", reason: "reset" }, opts, () => 0.5);
    expect(s).toMatchObject({ status: "reconnecting", attempt: 1, delayMs: 50 });
  });

  it("full jitter: delays spread over [0, cap) and the cap stops growing at maxMs", () => {
    expect(backoffDelay(0, opts, () => 0)).toBe(0);
    expect(backoffDelay(10, opts, () => 0.5)).toBe(500);
    expect(backoffDelay(3, DEFAULT_BACKOFF, () => 0.25)).toBe(500);
  });

  it("gives up after maxAttempts drops without progress", () => {
    let s: ConnectionState = transition(initialState(), { type: "connect" }, opts);
    for (let i = 0; i < 5; i++) {
      s = transition(s, { type: "dropped", reason: "refused" }, opts, () => 0);
      s = transition(s, { type: "retry" }, opts);
    }
    s = transition(s, { type: "dropped", reason: "refused" }, opts, () => 0);
    expect(s.status).toBe("failed");
    if (s.status === "failed") expect(s.error.code).toBe("reconnect_exhausted");
  });

  it("never moves the offset backwards on a replayed event; fatal and close are final", () => {
    let s: ConnectionState = { status: "live", offset: off(9), attempt: 0 };
    s = transition(s, { type: "event", offset: off(3), terminal: false }, opts);
    expect(s.offset).toBe(off(9));
    expect(
      transition(
        s,
        { type: "fatal", error: { code: "stream_not_found", message: "x", retryable: false } },
        opts,
      ).status,
    ).toBe("failed");
    expect(transition(s, { type: "close" }, opts).status).toBe("closed");
    expect(transition(s, { type: "exhausted" }, opts)).toEqual({
      status: "ended",
      offset: off(9),
      reason: "no-more-events",
    });
  });
});

/** A scripted transport: each open() takes the next script step. */
function scripted(
  steps: (StreamEvent[] | "refuse" | "fatal" | "exhausted" | { events: StreamEvent[]; after: "drop" })[],
) {
  const opens: string[] = [];
  const t: Transport = {
    name: "scripted",
    async open(_id, offset) {
      opens.push(offset);
      const step = steps.shift();
      if (step === undefined) throw new Error("script exhausted");
      if (step === "refuse") throw new SluiceClientError("network_error", "refused", true);
      if (step === "fatal") throw new SluiceClientError("stream_not_found", "no such stream", false);
      if (step === "exhausted") throw new StreamExhausted("done");
      const events = Array.isArray(step) ? step : step.events;
      const drop = !Array.isArray(step);
      return (async function* () {
        for (const e of events) yield e;
        if (drop) throw new SluiceClientError("connection_lost", "reset", true);
      })();
    },
  };
  return { t, opens };
}

const ev = (n: number, type = "text-delta"): StreamEvent =>
  ({
    offset: off(n),
    event: type === "text-delta" ? { type, delta: `t${n} ` } : { type, reason: "stop" },
  }) as StreamEvent;

async function until(cond: () => boolean) {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setImmediate(r));
  if (!cond()) throw new Error("condition never held");
}

describe("Follow driver with an injected clock", () => {
  it("resumes from the last offset after each drop, waiting the backoff on the clock, no duplicates", async () => {
    const clock = new ManualClock();
    const { t, opens } = scripted([
      { events: [ev(1), ev(2)], after: "drop" },
      "refuse",
      // The server replays from the offset asked; an overlapping replay is skipped anyway.
      { events: [ev(2), ev(3)], after: "drop" },
      [ev(4), ev(5, "finish")],
    ]);
    const states: string[] = [];
    const f = new Follow(
      "st_x",
      { transport: t, clock, random: () => 0.5, backoff: opts },
      {
        onState: (s) => {
          if (states.at(-1) !== s.status) states.push(s.status);
        },
      },
    );
    const got: string[] = [];
    const done = (async () => {
      for await (const e of f) got.push(e.offset);
    })();
    await until(() => clock.pending === 1);
    expect(clock.sleeps).toEqual([50]); // attempt 1: 0.5 × 100
    clock.advance(49);
    await new Promise((r) => setImmediate(r));
    expect(opens.length).toBe(1); // not before the delay
    clock.advance(1);
    await until(() => clock.pending === 1 && opens.length === 2);
    expect(clock.sleeps).toEqual([50, 100]); // attempt 2 without progress: 0.5 × 200
    clock.advance(100);
    await until(() => clock.pending === 1 && opens.length === 3);
    clock.advance(1000);
    await done;
    expect(opens).toEqual(["-1", off(2), off(2), off(3)]);
    expect(got).toEqual([off(1), off(2), off(3), off(4), off(5)]);
    expect(f.state).toEqual({ status: "ended", offset: off(5), reason: "terminal" });
    expect(states).toEqual([
      "connecting",
      "live",
      "reconnecting",
      "connecting",
      "reconnecting",
      "connecting",
      "live",
      "reconnecting",
      "connecting",
      "live",
      "ended",
    ]);
  });

  it("a non-retryable error ends iteration with that error, without retrying", async () => {
    const clock = new ManualClock();
    const { t, opens } = scripted(["fatal"]);
    const f = new Follow("st_x", { transport: t, clock, random: () => 0.5, backoff: opts });
    await expect(
      (async () => {
        for await (const _ of f) {
        }
      })(),
    ).rejects.toMatchObject({ code: "stream_not_found" });
    expect(opens.length).toBe(1);
    expect(clock.sleeps).toEqual([]);
  });

  it("a 204 (nothing more will come) ends cleanly; close() stops a reconnect wait", async () => {
    const clock = new ManualClock();
    const a = scripted(["exhausted"]);
    const f = new Follow("st_x", { transport: a.t, clock, random: () => 0.5, backoff: opts });
    for await (const _ of f) {
    }
    expect(f.state.status).toBe("ended");

    const b = scripted(["refuse"]);
    const g = new Follow("st_y", { transport: b.t, clock, random: () => 0.5, backoff: opts });
    const run = (async () => {
      for await (const _ of g) {
      }
    })();
    await until(() => g.state.status === "reconnecting");
    g.close();
    await run;
    expect(g.state.status).toBe("closed");
  });
});
