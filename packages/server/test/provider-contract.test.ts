import { AnthropicProvider } from "../src/providers/anthropic.js";
import { OpenAICompatibleProvider } from "../src/providers/openai-compatible.js";
import { runProviderContract } from "./provider-contract.js";

runProviderContract({
  name: "openai-compatible",
  make: ({ mockUrl, ...opts }) => new OpenAICompatibleProvider({ baseUrl: mockUrl, ...opts }),
});

runProviderContract({
  name: "anthropic",
  // The mock serves the Messages API at /v1/messages on the same origin.
  make: ({ mockUrl, ...opts }) => new AnthropicProvider({ baseUrl: mockUrl, ...opts }),
});
