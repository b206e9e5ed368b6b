import { Writable } from "node:stream";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../src/config.js";
import { createSluice } from "../src/server.js";
import { demoBody, startStream, waitForStatus } from "./helpers.js";

describe("structured logs", () => {
  it("carry the request id, and the stream id on every line about a stream", async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split("\n")) if (l.trim()) lines.push(JSON.parse(l));
        cb();
      },
    });
    const logger = pino({ level: "debug" }, sink);
    const config = parseConfig({ host: "127.0.0.1", port: 0, log_level: "debug" });
    const server = await createSluice(config, { env: {}, logger });
    const url = await server.listen();
    try {
      const { id } = await startStream(url, demoBody({ length: 10 }));
      await waitForStatus(url, id, (s) => s === "completed");
      await fetch(`${url}/v1/streams/${id}/info`);
      await fetch(`${url}/v1/streams/${id}?offset=-1`);
      await new Promise((r) => setTimeout(r, 50));
      const requests = lines.filter((l) => l.msg === "request");
      expect(requests.length).toBeGreaterThanOrEqual(3);
      for (const r of requests) expect(typeof r.reqId).toBe("string");
      const about = requests.filter((r) => String(r.url).startsWith("/v1/streams"));
      const urls = new Set(about.map((r) => String(r.url)));
      expect(urls.size).toBeGreaterThanOrEqual(3);
      for (const u of urls) expect(about.some((r) => r.url === u && r.stream === id)).toBe(true);
      // Lines logged through a request's logger about one stream all carry its id.
      for (const r of about.filter((r) => String(r.url).startsWith(`/v1/streams/${id}`))) {
        expect(r.stream).toBe(id);
      }
      expect(lines.find((l) => l.msg === "generation started")?.stream).toBe(id);
      const ended = lines.find((l) => l.msg === "generation ended");
      expect(ended).toMatchObject({ stream: id, status: "completed", tokens: 10 });
    } finally {
      await server.close();
    }
  });
});
