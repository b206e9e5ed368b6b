/**
 * `@sluice/server/demo`: the demo model as a library — its generator, the request schemas it
 * reads and the clock that paces it — for `@sluice/mock-upstream`, which serves the same
 * generator over HTTP. A subpath of its own so that loading it does not load the server
 * (Fastify, stores, transports), and the mock depends on the server, never the reverse.
 */
export { type Clock, realClock, VirtualClock } from "./core/clock.js";
export {
  type DemoOptions,
  DemoOptionsSchema,
  type GenerationRequest,
  type Message,
  MessageSchema,
  ToolSchema,
} from "./core/request.js";
export { type DemoPlan, planDemo } from "./providers/demo/generator.js";
export { type DemoStep, runDemoPlan } from "./providers/demo/provider.js";
export type { ProviderEvent } from "./providers/provider.js";
