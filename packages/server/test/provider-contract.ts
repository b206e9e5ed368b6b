/**
 * The provider contract: one suite run against every HTTP provider (openai-compatible,
 * anthropic) over `sluice mock-upstream`, with the mock's fault injection (faults.ts) playing the
 * misbehaving upstream. Each provider's test file is a few lines calling runProviderContract.
 */
import { type AddressInfo, createServer, type Socket } from "node:net";
import {
  type MockOptions,
  type MockRequestRecord,
  type MockUpstream,
  startMockUpstream,
} from "@sluice/mock-upstream";
import { isSluiceError, type SluiceError } from "@sluice/protocol";
import { afterEach, describe, expect, it } from "vitest";
import { realClock } from "../src/core/clock.js";
import type { Provider, ProviderEvent, ProviderRequest } from "../src/providers/provider.js";
import type { UpstreamTimeouts } from "../src/providers/upstream-http.js";

export interface ProviderFactoryOptions {
  /** The mock's OpenAI base URL (`http://127.0.0.1:PORT/v1`). */
  mockUrl: string;
  apiKey?: string;
  headers?: Record<string, string>;
  timeouts?: Partial<UpstreamTimeouts>;
  maxEventChars?: number;
}

export interface ProviderContractOptions {
  name: string;
  make(opts: ProviderFactoryOptions): Provider;
}

/** Generous bound for "does not hang" (never a speed assertion). */
const NO_HANG_MS = 10_000;

export function runProviderContract(o: ProviderContractOptions): void {
  describe(`provider contract: ${o.name}`, () => {
    const mocks: MockUpstream[] = [];
    afterEach(async () => {
      await Promise.all(mocks.splice(0).map((m) => m.close()));
    });

    async function mock(fault?: MockOptions & { times?: number }): Promise<MockUpstream> {
      const m = await startMockUpstream(fault ? { fault } : {});
      mocks.push(m);
      return m;
    }

    function request(demo: Record<string, unknown> = {}): ProviderRequest {
      return {
        model: "demo",
        upstream_model: "demo",
        messages: [{ role: "user", content: "Say something about connection pools." }],
        demo: { seed: 7, ttft_ms: 1, tokens_per_s: 5000, jitter: 0, length: 12, ...demo },
      };
    }

    async function collect(
      provider: Provider,
      req = request(),
      signal = new AbortController().signal,
    ): Promise<{ events: ProviderEvent[]; error: unknown }> {
      const events: ProviderEvent[] = [];
      let error: unknown;
      try {
        for await (const ev of provider.stream(req, { signal, clock: realClock })) events.push(ev);
      } catch (err) {
        error = err;
      }
      return { events, error };
    }

    function sluiceError(err: unknown, code: string): SluiceError {
      expect(isSluiceError(err), `expected a SluiceError ${code}, got ${String(err)}`).toBe(true);
      const e = err as SluiceError;
      expect(e.code).toBe(code);
      return e;
    }

    /** Resolves with the mock's record when its client closed the connection before the end. */
    function aborted(m: MockUpstream): Promise<MockRequestRecord> {
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("the upstream never saw its socket closed")), NO_HANG_MS);
        m.events.once("abort", (r: MockRequestRecord) => {
          clearTimeout(t);
          resolve(r);
        });
      });
    }

    const deltas = (events: ProviderEvent[]) => events.filter((e) => e.type === "text-delta");

    it("streams text deltas, then usage and finish", async () => {
      const m = await mock();
      const { events, error } = await collect(o.make({ mockUrl: m.url }));
      expect(error).toBeUndefined();
      const d = deltas(events);
      expect(d.length).toBe(m.requests[0]?.tokens);
      expect(d.length).toBeGreaterThan(0);
      const usage = events.find((e) => e.type === "usage");
      expect(usage).toMatchObject({ type: "usage", output_tokens: d.length });
      expect((usage as { input_tokens: number }).input_tokens).toBeGreaterThan(0);
      expect(events.at(-1)).toEqual({ type: "finish", reason: "stop" });
    });

    it("connection refused → upstream_unreachable (retryable), no events", async () => {
      const m = await mock();
      const url = m.url;
      await m.close();
      mocks.splice(mocks.indexOf(m), 1);
      const { events, error } = await collect(o.make({ mockUrl: url }));
      expect(events).toEqual([]);
      expect(sluiceError(error, "upstream_unreachable").retryable).toBe(true);
    });

    it("a connect (TCP + TLS) that does not complete → upstream_timeout (connect)", async () => {
      // A TCP server that accepts and never speaks: the TLS handshake of an https URL hangs.
      const silent = createServer(() => {});
      const sockets = new Set<Socket>();
      silent.on("connection", (sock) => sockets.add(sock));
      await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
      try {
        const { port } = silent.address() as AddressInfo;
        const { events, error } = await collect(
          o.make({
            mockUrl: `https://127.0.0.1:${port}/v1`,
            timeouts: { connect_ms: 200, first_byte_ms: 60_000 },
          }),
        );
        expect(events).toEqual([]);
        const e = sluiceError(error, "upstream_timeout");
        expect(e.details).toEqual({ timeout: "connect" });
        expect(e.message).toMatch(/did not accept a connection within 200 ms/);
      } finally {
        for (const sock of sockets) sock.destroy();
        await new Promise<void>((r) => silent.close(() => r()));
      }
    });

    it("4xx before the first token → upstream_error with upstream_status, no events", async () => {
      const m = await mock({ status: 400, message: "bad thing" });
      const { events, error } = await collect(o.make({ mockUrl: m.url }));
      expect(events).toEqual([]);
      const e = sluiceError(error, "upstream_error");
      expect(e.details).toMatchObject({ upstream_status: 400 });
      expect(e.message).toContain("bad thing");
    });

    it("5xx with Retry-After before the first token → upstream_error with retry_after_ms", async () => {
      const m = await mock({ status: 503, retry_after: 2 });
      const { events, error } = await collect(o.make({ mockUrl: m.url }));
      expect(events).toEqual([]);
      expect(sluiceError(error, "upstream_error").details).toEqual({
        upstream_status: 503,
        retry_after_ms: 2000,
      });
    });

    it("a connection cut mid-stream → upstream_error 'cut off' after the tokens sent", async () => {
      const m = await mock({ cut_after_tokens: 3 });
      const { events, error } = await collect(o.make({ mockUrl: m.url }));
      expect(deltas(events)).toHaveLength(3);
      expect(sluiceError(error, "upstream_error").message).toMatch(/cut off/);
    });

    it("a malformed chunk → upstream_error naming it", async () => {
      const m = await mock({ malformed_after_tokens: 2 });
      const { events, error } = await collect(o.make({ mockUrl: m.url }));
      expect(deltas(events)).toHaveLength(2);
      expect(sluiceError(error, "upstream_error").message).toMatch(/not valid JSON/);
    });

    it("a stall after some tokens → upstream_timeout (idle), and the upstream socket is closed", async () => {
      const m = await mock({ stall_after_tokens: 2 });
      const closed = aborted(m);
      const { events, error } = await collect(o.make({ mockUrl: m.url, timeouts: { idle_ms: 200 } }));
      expect(deltas(events)).toHaveLength(2);
      const e = sluiceError(error, "upstream_timeout");
      expect(e.details).toEqual({ timeout: "idle" });
      expect(e.retryable).toBe(true);
      expect(e.message).toMatch(/stalled: nothing for 200 ms/);
      expect((await closed).tokens).toBe(2);
    });

    it("no answer at all → upstream_timeout (first_byte), and the upstream socket is closed", async () => {
      const m = await mock({ stall: "headers" });
      const closed = aborted(m);
      const { events, error } = await collect(
        o.make({ mockUrl: m.url, timeouts: { first_byte_ms: 200, idle_ms: 60_000 } }),
      );
      expect(events).toEqual([]);
      expect(sluiceError(error, "upstream_timeout").details).toEqual({ timeout: "first_byte" });
      await closed;
    });

    it("a huge SSE line is not buffered whole: upstream_error once past max_event_chars", async () => {
      const total = 64 * 1024 * 1024;
      const m = await mock({ huge_line_chars: total, huge_line_after_tokens: 1 });
      const closed = aborted(m);
      const { events, error } = await collect(o.make({ mockUrl: m.url, maxEventChars: 64 * 1024 }));
      expect(deltas(events)).toHaveLength(1);
      const e = sluiceError(error, "upstream_error");
      expect(e.message).toMatch(/larger than 65536 characters/);
      expect(e.details).toEqual({ event_too_large: true });
      // The reader stopped early and closed the connection: most of the line was never sent.
      const record = await closed;
      expect(record.huge_line_chars_sent ?? 0).toBeLessThan(total / 4);
    });

    it("cancel aborts the request: the iterator rejects with the reason and the upstream socket closes", async () => {
      const m = await mock({ stall_after_tokens: 1 });
      const closed = aborted(m);
      const controller = new AbortController();
      const it = o
        .make({ mockUrl: m.url })
        .stream(request(), { signal: controller.signal, clock: realClock })
        [Symbol.asyncIterator]();
      expect((await it.next()).value).toMatchObject({ type: "text-delta" });
      const pending = it.next();
      const reason = new Error("cancelled by the contract");
      controller.abort(reason);
      await expect(pending).rejects.toBe(reason);
      expect((await closed).status).toBe("aborted");
    });

    it("never lets the API key or header secrets through, even when the upstream quotes them", async () => {
      const apiKey = "contract-key-0123456789abcdef";
      const headerSecret = "hdr-secret-9876543210";
      const m = await mock({ status: 401, echo_credentials: true, message: "Invalid credentials." });
      const { error } = await collect(
        o.make({ mockUrl: m.url, apiKey, headers: { "x-extra-credential": headerSecret } }),
      );
      const e = sluiceError(error, "upstream_error");
      // The mock really quoted them (else this test would prove nothing)…
      expect(e.message).toMatch(/Received Authorization: .*x-api-key: /);
      expect(e.message).toContain("[REDACTED]");
      // …and none of it remains.
      expect(e.message).not.toContain(apiKey);
      expect(e.message).not.toContain(apiKey.slice(4, 20));
      expect(
        o.make({ mockUrl: m.url, headers: { "x-extra-credential": headerSecret } }).redact?.(headerSecret),
      ).toBe("[REDACTED]");
    });
  });
}
