/**
 * The `demo` provider: plays a planned demo answer (see generator.ts, an LLM *simulator*) on a
 * clock, one token at a time, honouring `max_tokens`, the simulated failure point and the abort
 * signal. Needs no network and no key.
 */
import { SluiceError } from "@sluice/protocol";
import type { Provider, ProviderContext, ProviderEvent, ProviderRequest } from "../provider.js";
import { DEMO_DEFAULTS, type DemoPlan, isDemoDelta, planDemo } from "./generator.js";

/** Heap a planned answer takes per token: ~75 bytes measured once built, more while it is built. */
const PLAN_BYTES_PER_TOKEN = 128;

/** One event of a demo run and the clock time (`clock.now()` scale) it was due. */
export interface DemoStep {
  event: ProviderEvent;
  due: number;
}

/**
 * Plays a plan: sleeps until each token is due (relative to the start, so timer drift does not
 * accumulate), then yields it. Ends with `usage` then `finish` (stop, length or tool-calls).
 * Throws SluiceError `upstream_error` at the simulated failure point, and rejects with the
 * signal's reason as soon as it aborts.
 */
export async function* runDemoPlan(
  plan: DemoPlan,
  { signal, clock }: ProviderContext,
): AsyncGenerator<DemoStep> {
  signal.throwIfAborted();
  const start = clock.now();
  const limit = plan.max_tokens ?? Number.POSITIVE_INFINITY;
  const failAfter = plan.fail_after_tokens;
  const sleepUntil = (due: number) => clock.sleep(start + due - clock.now(), signal);
  const fail = () =>
    new SluiceError("upstream_error", `demo model failed after ${failAfter} tokens (simulated failure)`);

  let emitted = 0;
  let reasoning = 0;
  let cut = false;
  let lastDue = plan.pacing.ttft_ms;
  for (let i = 0; i < plan.events.length; i++) {
    const event = plan.events[i] as DemoPlan["events"][number];
    const due = plan.due_ms[i] as number;
    if (isDemoDelta(event)) {
      if (emitted === failAfter) {
        // The token that would have come next never does: the stream breaks when it was due.
        await sleepUntil(due);
        throw fail();
      }
      if (emitted >= limit) {
        cut = true;
        break;
      }
      await sleepUntil(due);
      emitted++;
      if (event.type === "reasoning-delta") reasoning++;
    } else {
      signal.throwIfAborted();
    }
    lastDue = due;
    yield { event, due: start + due };
  }
  if (!cut && emitted === failAfter) {
    // The failure point is the very end: break where the finish would have come.
    await sleepUntil(lastDue + 1000 / plan.pacing.tokens_per_s);
    throw fail();
  }
  signal.throwIfAborted();
  const now = clock.now();
  yield {
    event: {
      type: "usage",
      input_tokens: plan.input_tokens,
      output_tokens: emitted,
      ...(reasoning ? { reasoning_tokens: reasoning } : {}),
      total_tokens: plan.input_tokens + emitted,
    },
    due: now,
  };
  yield { event: { type: "finish", reason: cut ? "length" : plan.finish_reason }, due: now };
}

/** The built-in `demo` model, a simulator: deterministic for a seed, paced by the context's clock. */
export class DemoProvider implements Provider {
  readonly name = "demo";

  /** The whole answer is planned before the first token (see generator.ts). */
  plannedBytes(request: ProviderRequest): number {
    // Without demo.length: at most max_length, or about twice that with reasoning on top.
    const tokens = request.demo?.length ?? 2 * DEMO_DEFAULTS.max_length;
    return tokens * PLAN_BYTES_PER_TOKEN;
  }

  async *stream(request: ProviderRequest, ctx: ProviderContext): AsyncGenerator<ProviderEvent> {
    const plan = planDemo(request);
    const stamp = request.demo?.stamp === true;
    for await (const step of runDemoPlan(plan, ctx)) {
      // `demo.stamp` (benchmarks): the due time rides on each delta event as `due`.
      const ev = step.event;
      yield stamp && ev.type.endsWith("-delta") ? Object.assign({}, ev, { due: Math.round(step.due) }) : ev;
    }
  }
}
