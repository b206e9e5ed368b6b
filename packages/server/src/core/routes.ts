import { SluiceError } from "@sluice/protocol";
import type { Provider } from "../providers/provider.js";

/** A model name clients use, mapped to a provider and the model name sent upstream. */
export interface Route {
  name: string;
  provider: Provider;
  upstream_model: string;
  /** Other route names to try when this one fails before its first token (used by later routing work). */
  fallbacks: string[];
  owned_by: string;
  /** What a disconnect of the starting client does on the protocol routes (default continue). */
  on_disconnect?: "continue" | "cancel";
  /** Retries before the first token (default DEFAULT_RETRY). */
  retry?: RetryPolicy;
}

/**
 * How a route retries a failure that happened before the first token (connect error, 429,
 * 5xx): up to `max_attempts` tries in all, waiting `Retry-After` when the upstream sends one,
 * else `base_delay_ms` doubling each time; a wait longer than `max_wait_ms` is not taken
 * (the next fallback route is tried at once instead).
 */
export interface RetryPolicy {
  max_attempts: number;
  base_delay_ms: number;
  max_wait_ms: number;
}

export const DEFAULT_RETRY: RetryPolicy = { max_attempts: 2, base_delay_ms: 200, max_wait_ms: 10_000 };

export class RouteTable {
  private readonly routes = new Map<string, Route>();
  /** Where a model name nobody registered goes (an `--upstream` server that may grow models). */
  private catchAll: Omit<Route, "name" | "upstream_model"> | undefined;

  add(route: Route): void {
    this.routes.set(route.name, route);
  }

  setCatchAll(route: Omit<Route, "name" | "upstream_model"> | undefined): void {
    this.catchAll = route;
  }

  /** Every provider a route (or the catch-all) uses, each once. */
  providers(): Set<Route["provider"]> {
    const out = new Set<Route["provider"]>();
    for (const r of this.routes.values()) out.add(r.provider);
    if (this.catchAll) out.add(this.catchAll.provider);
    return out;
  }

  has(name: string): boolean {
    return this.routes.has(name);
  }

  resolve(model: string): Route {
    const r = this.routes.get(model);
    if (r) return r;
    if (this.catchAll) return { ...this.catchAll, name: model, upstream_model: model };
    throw new SluiceError(
      "unknown_model",
      `no route serves model "${model}"; known models: ${[...this.routes.keys()].join(", ")}`,
    );
  }

  /** The route then its own fallbacks (not theirs), each once; unknown names skipped. */
  chain(first: Route): Route[] {
    const out = [first];
    const seen = new Set([first.name]);
    const queue = [...first.fallbacks];
    while (queue.length > 0 && out.length < 16) {
      const name = queue.shift() as string;
      if (seen.has(name)) continue;
      seen.add(name);
      const r = this.routes.get(name);
      if (!r) continue;
      out.push(r);
    }
    return out;
  }

  list(): Route[] {
    return [...this.routes.values()];
  }
}
