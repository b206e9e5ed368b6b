/**
 * Fault injection shared by both mock APIs: a request body's `mock` field (or the server's
 * `fault` option) makes the mock misbehave as real upstreams do, so the provider contract suite
 * can test each failure against real HTTP:
 *
 * - `status` (+ `retry_after`, `message`): answer that HTTP error instead of a completion;
 *   `echo_credentials: true` makes its message quote the `Authorization` / `x-api-key` headers
 *   it received, as some providers do in a 401.
 * - `stall: "headers"`: accept the request and never answer (no headers, no body).
 * - `stall_after_tokens: n`: stream n tokens, then hold the connection open and send nothing.
 * - `cut_after_tokens: n`: stream n tokens, then drop the connection (no terminal chunk).
 * - `malformed_after_tokens: n`: after n tokens, send an SSE event whose data is not JSON.
 * - `huge_line_chars: n` (`huge_line_after_tokens`, default 1): after that many tokens, send one
 *   `data:` line of n characters that never ends, written in 64 KiB pieces with backpressure
 *   (so the mock holds no more than one piece; `huge_line_chars_sent` records how much went out).
 */
import { once } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { z } from "zod";
import type { MockRequestRecord } from "./server.js";

export const MockOptionsSchema = z
  .object({
    /** Answer this HTTP error instead of a completion. */
    status: z.number().int().min(400).max(599).optional(),
    /** Seconds, sent as `Retry-After`. */
    retry_after: z.number().min(0).optional(),
    message: z.string().optional(),
    /** With `status`: quote the received credentials in the error message. */
    echo_credentials: z.boolean().optional(),
    stall: z.literal("headers").optional(),
    stall_after_tokens: z.number().int().min(0).optional(),
    cut_after_tokens: z.number().int().min(0).optional(),
    malformed_after_tokens: z.number().int().min(0).optional(),
    huge_line_chars: z
      .number()
      .int()
      .min(1)
      .max(2 ** 31)
      .optional(),
    huge_line_after_tokens: z.number().int().min(0).optional(),
  })
  .strict();

export type MockOptions = z.infer<typeof MockOptionsSchema>;

/** The error message of a `status` fault. */
export function faultMessage(req: IncomingMessage, fault: MockOptions, fallback: string): string {
  const base = fault.message ?? fallback;
  if (!fault.echo_credentials) return base;
  const auth = req.headers.authorization ?? "(none)";
  const key = req.headers["x-api-key"] ?? "(none)";
  return `${base} Received Authorization: ${auth}; x-api-key: ${Array.isArray(key) ? key.join(",") : key}`;
}

/** Resolves when the client closes the connection (or the mock closes). */
export function untilClosed(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

const PIECE = 64 * 1024;

/**
 * Called after each token was written (with the count so far): applies a mid-stream fault.
 * Returns true when the response was ended or abandoned by the fault (the caller stops).
 */
export async function afterToken(
  res: ServerResponse,
  record: MockRequestRecord & { huge_line_chars_sent?: number },
  fault: MockOptions | undefined,
  tokens: number,
  signal: AbortSignal,
): Promise<boolean> {
  if (!fault) return false;
  if (fault.malformed_after_tokens === tokens) {
    record.chunks_sent++;
    res.write('data: {"choices": [ this is not JSON\n\n');
  }
  if (fault.cut_after_tokens === tokens) {
    record.status = "failed"; // not a client abort
    record.ended_at = Date.now();
    // FIN after what was written (destroy could drop the last token): a body without its end.
    res.socket?.end();
    return true;
  }
  if (fault.stall_after_tokens === tokens) {
    await untilClosed(signal);
    return true;
  }
  if (fault.huge_line_chars !== undefined && (fault.huge_line_after_tokens ?? 1) === tokens) {
    let left = fault.huge_line_chars;
    const piece = "x".repeat(PIECE);
    record.huge_line_chars_sent = 0;
    res.write('data: {"x": "');
    while (left > 0 && !signal.aborted) {
      const n = Math.min(left, PIECE);
      const ok = res.write(n === PIECE ? piece : piece.slice(0, n));
      left -= n;
      record.huge_line_chars_sent += n;
      if (!ok) await once(res, "drain", { signal }).catch(() => {});
    }
    if (!signal.aborted) {
      record.status = "failed";
      record.ended_at = Date.now();
      res.end();
    }
    return true;
  }
  return false;
}
