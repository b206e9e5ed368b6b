import http from "node:http";
import zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pickEncoding } from "../src/http/sink.js";
import { demoBody, type Running, readAllJson, readSse, startSluice, startStream, textOf } from "./helpers.js";

describe("compression (gzip / brotli, flushed per batch)", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startSluice();
  });
  afterAll(async () => {
    await s.close();
  });

  it("picks an encoding from Accept-Encoding with q-values", () => {
    expect(pickEncoding("gzip, deflate, br", ["gzip", "br"])).toBe("gzip");
    expect(pickEncoding("gzip;q=0.5, br", ["gzip", "br"])).toBe("br");
    expect(pickEncoding("identity", ["gzip", "br"])).toBeUndefined();
    expect(pickEncoding("gzip;q=0", ["gzip", "br"])).toBeUndefined();
    expect(pickEncoding("*", ["br", "gzip"])).toBe("br");
    expect(pickEncoding(undefined, ["gzip"])).toBeUndefined();
  });

  for (const enc of ["gzip", "br"] as const) {
    it(`${enc}: round-trips through fetch (undici decompresses) with every event`, async () => {
      const { id } = await startStream(s.url, demoBody({ length: 80 }));
      const res = await fetch(`${s.url}/v1/streams/${id}`, {
        headers: { accept: "text/event-stream", "accept-encoding": enc },
      });
      expect(res.headers.get("content-encoding")).toBe(enc);
      expect(res.headers.get("vary")).toBe("accept-encoding");
      const msgs = await readSse(res);
      const all = await readAllJson(s.url, id);
      expect(msgs.filter((m) => m.id).map((m) => m.id)).toEqual(all.map((e) => e.offset));
      expect(textOf(msgs.filter((m) => m.id))).toBe(textOf(all));
    });

    it(`${enc}: still arrives incrementally (each batch is flushed through the compressor)`, async () => {
      const { id } = await startStream(s.url, demoBody({ length: 12, tokens_per_s: 20, ttft_ms: 0 }));
      // node:http does not decompress: read the raw compressed bytes and inflate them as they come.
      const arrivals: { at: number; text: string }[] = [];
      const t0 = performance.now();
      let rawBytes = 0;
      await new Promise<void>((resolve, reject) => {
        http
          .get(
            `${s.url}/v1/streams/${id}?format=sluice`,
            { headers: { accept: "application/x-ndjson", "accept-encoding": enc } },
            (res) => {
              expect(res.headers["content-encoding"]).toBe(enc);
              const inflate = enc === "gzip" ? zlib.createGunzip() : zlib.createBrotliDecompress();
              res.on("data", (b: Buffer) => {
                rawBytes += b.length;
              });
              res.pipe(inflate);
              inflate.on("data", (b: Buffer) =>
                arrivals.push({ at: performance.now() - t0, text: b.toString() }),
              );
              inflate.on("end", () => resolve());
              inflate.on("error", reject);
            },
          )
          .on("error", reject);
      });
      const lines = arrivals
        .map((a) => a.text)
        .join("")
        .split("\n")
        .filter(Boolean);
      const all = await readAllJson(s.url, id);
      expect(lines.map((l) => JSON.parse(l).offset)).toEqual(all.map((e) => e.offset));
      // ~12 tokens at 20/s take ~600 ms: the first events were readable long before the end.
      const total = arrivals.at(-1)?.at ?? 0;
      expect(arrivals.length).toBeGreaterThan(5);
      expect((arrivals[0]?.at ?? total) + 300).toBeLessThan(total);
      expect(rawBytes).toBeGreaterThan(0);
    });
  }

  it("sends identity to clients that do not ask", async () => {
    const { id } = await startStream(s.url, demoBody({ length: 10 }));
    const body = await new Promise<string>((resolve, reject) => {
      http
        .get(`${s.url}/v1/streams/${id}`, { headers: { accept: "text/event-stream" } }, (res) => {
          expect(res.headers["content-encoding"]).toBeUndefined();
          let t = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => {
            t += d;
          });
          res.on("end", () => resolve(t));
        })
        .on("error", reject);
    });
    expect(body).toContain("event: finish");
  });

  it("can be turned off", async () => {
    const off = await startSluice({ compression: { enabled: false } });
    try {
      const { id } = await startStream(off.url, demoBody({ length: 5 }));
      const res = await fetch(`${off.url}/v1/streams/${id}`, {
        headers: { accept: "text/event-stream", "accept-encoding": "gzip, br" },
      });
      expect(res.headers.get("content-encoding")).toBeNull();
      expect((await readSse(res)).some((m) => m.event === "finish")).toBe(true);
    } finally {
      await off.close();
    }
  });
});
