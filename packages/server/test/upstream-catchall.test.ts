import pino from "pino";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../src/config.js";
import { buildRoutes } from "../src/server.js";

describe("--upstream catch-all", () => {
  it("sends model names no route serves to the first upstream listed", async () => {
    // Nothing listens on these ports: listing their models fails at once, the routes stay.
    const first = "http://127.0.0.1:9/v1";
    const second = "http://127.0.0.1:7/v1";
    const config = parseConfig({ upstreams: [first, second], log_level: "silent" });
    const routes = await buildRoutes(config, {}, pino({ level: "silent" }));
    expect(routes.resolve("some-model-nobody-serves").owned_by).toBe(first);
  });
});
