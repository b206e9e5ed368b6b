import { type MockUpstream, startMockUpstream } from "@sluice/mock-upstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoBody, type Running, readAllJson, startSluice, startStream, waitForStatus } from "./helpers.js";

// `demo.stamp` is the benchmark aid: delta events carry `due` (epoch ms the token was due), both
// from the in-process demo model and through mock-upstream (its `sluice_due`); off, nothing changes.
describe("demo.stamp", () => {
  let mock: MockUpstream;
  let sluice: Running;
  beforeAll(async () => {
    mock = await startMockUpstream({ port: 0 });
    sluice = await startSluice({
      routes: { up: { provider: "openai-compatible", base_url: mock.url, model: "demo" } },
    });
  });
  afterAll(async () => {
    await sluice?.close();
    await mock?.close();
  });

  for (const model of ["demo", "up"]) {
    it(`stamps every delta with its due time (${model})`, async () => {
      const before = Date.now();
      const { id } = await startStream(sluice.url, { ...demoBody({ stamp: true }), model });
      await waitForStatus(sluice.url, id, (s) => s === "completed");
      const events = await readAllJson(sluice.url, id);
      const deltas = events.filter((e) => String(e.event.type).endsWith("-delta"));
      expect(deltas.length).toBe(40);
      const dues = deltas.map((e) => e.event.due as number);
      for (const d of dues) {
        expect(typeof d).toBe("number");
        expect(d).toBeGreaterThanOrEqual(before);
        expect(d).toBeLessThanOrEqual(Date.now());
      }
      expect([...dues].sort((a, b) => a - b)).toEqual(dues);
      for (const e of events.filter((e) => !String(e.event.type).endsWith("-delta")))
        expect(e.event.due).toBeUndefined();
    });

    it(`adds nothing without stamp (${model})`, async () => {
      const { id } = await startStream(sluice.url, { ...demoBody(), model });
      await waitForStatus(sluice.url, id, (s) => s === "completed");
      const events = await readAllJson(sluice.url, id);
      expect(events.some((e) => "due" in e.event)).toBe(false);
    });
  }
});
