import {
  Follow,
  MessageAccumulator,
  SluiceClientError,
  type StreamEvent,
  type Transport,
} from "@sluice/client";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

/**
 * Property: whatever the drop points, refusals and overlapping replays, a follower delivers
 * every event exactly once, in order, and the accumulated text is the stream's text.
 */
const off = (n: number) => String(n).padStart(16, "0");

function stream(n: number): StreamEvent[] {
  const evs: StreamEvent[] = [{ offset: off(1), event: { type: "start", model: "m", created_at: "t" } }];
  for (let i = 2; i < n; i++) evs.push({ offset: off(i), event: { type: "text-delta", delta: `w${i} ` } });
  evs.push({ offset: off(n), event: { type: "finish", reason: "stop" } });
  return evs;
}

/** A server that replays from the asked offset, minus `rewind` events (overlap), and drops after `take`. */
function flakyServer(all: StreamEvent[], script: { refuse: boolean; take: number; rewind: number }[]) {
  let i = 0;
  const t: Transport = {
    name: "flaky",
    async open(_id, offset) {
      const step = script[i++] ?? { refuse: false, take: Number.POSITIVE_INFINITY, rewind: 0 };
      if (step.refuse) throw new SluiceClientError("network_error", "refused", true);
      const after = offset === "-1" ? 0 : Number(offset);
      const from = Math.max(0, after - step.rewind);
      const slice = all.slice(from, from + step.take);
      const complete = from + step.take >= all.length;
      return (async function* () {
        for (const e of slice) yield e;
        if (!complete) throw new SluiceClientError("connection_lost", "reset", true);
      })();
    },
  };
  return t;
}

const instant = { now: () => 0, sleep: async () => {} };

describe("Follow (property)", () => {
  it("delivers every event exactly once, in order, under any drops, refusals and replays", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 60 }),
        fc.array(
          fc.record({
            refuse: fc.boolean(),
            take: fc.integer({ min: 0, max: 20 }),
            rewind: fc.integer({ min: 0, max: 5 }),
          }),
          { maxLength: 40 },
        ),
        async (n, script) => {
          const all = stream(n);
          const f = new Follow("st", {
            transport: flakyServer(all, script),
            clock: instant,
            random: () => 0.5,
            backoff: { initialMs: 1, maxMs: 1, factor: 2, maxAttempts: Number.POSITIVE_INFINITY },
          });
          const acc = new MessageAccumulator();
          const got: string[] = [];
          for await (const se of f) {
            got.push(se.offset);
            acc.apply(se);
          }
          expect(got).toEqual(all.map((e) => e.offset));
          let text = "";
          for (let i = 2; i < n; i++) text += `w${i} `;
          expect(acc.message.text).toBe(text);
          expect(f.state.status).toBe("ended");
        },
      ),
      { numRuns: 300 },
    );
  });
});
