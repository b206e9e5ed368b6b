export { type MockCliOptions, runMockUpstreamCli } from "./cli.js";
export { type MockOptions, MockOptionsSchema } from "./faults.js";
export {
  type MockRequestRecord,
  type MockRequestStatus,
  type MockUpstream,
  type MockUpstreamOptions,
  startMockUpstream,
} from "./server.js";
