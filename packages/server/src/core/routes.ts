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
}

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

  list(): Route[] {
    return [...this.routes.values()];
  }
}
