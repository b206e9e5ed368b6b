/**
 * The one catalogue of error codes. Every error Sluice returns, in an HTTP body
 * (`{"error": {"code", "message"}}`) or as a terminal `error` event, uses a code
 * from here. docs/errors.md lists them all (a test checks it).
 */
export const ERROR_CODES = {
  invalid_json: { status: 400, retryable: false, description: "The request body is not valid JSON." },
  invalid_request: {
    status: 400,
    retryable: false,
    description: "The request body or parameters failed validation; the message says which field.",
  },
  invalid_offset: {
    status: 400,
    retryable: false,
    description: "The offset is not `-1`, `now` or an offset this server minted.",
  },
  offset_out_of_range: {
    status: 400,
    retryable: false,
    description: "The offset is past the end of the stream.",
  },
  unknown_model: { status: 400, retryable: false, description: "No route serves the requested model." },
  model_not_found: {
    status: 404,
    retryable: false,
    description: "`GET /v1/models/{id}`: no route has this model id.",
  },
  unsupported_format: {
    status: 400,
    retryable: false,
    description: "The `format` is not one Sluice speaks.",
  },
  unsupported_media_type: {
    status: 415,
    retryable: false,
    description: "The request's Content-Type is not accepted on this route.",
  },
  unauthorized: {
    status: 401,
    retryable: false,
    description:
      "No credentials, or credentials that are wrong, expired or tampered with (API key in `Authorization: Bearer`, `x-api-key`, or a read token in `?token=`).",
  },
  forbidden: {
    status: 403,
    retryable: false,
    description: "The credentials are valid but their role or token scope does not allow this action.",
  },
  rate_limited: {
    status: 429,
    retryable: true,
    description:
      "A per-key limit was reached (`limit` names it: concurrent_generations, generations_per_minute, output_tokens_per_minute, connections); `Retry-After` says when to try again.",
  },
  not_found: { status: 404, retryable: false, description: "No such route." },
  method_not_allowed: {
    status: 405,
    retryable: false,
    description: "The route exists but not with this method.",
  },
  stream_not_found: { status: 404, retryable: false, description: "No stream with this id (or it expired)." },
  stream_closed: {
    status: 409,
    retryable: false,
    description: "The stream has ended; nothing more can be appended.",
  },
  append_conflict: {
    status: 409,
    retryable: true,
    description:
      "The stream changed between the read an append was decided on and the append itself; read again and retry.",
  },
  stream_exists: { status: 409, retryable: false, description: "A stream with this id already exists." },
  cancelled: {
    status: 409,
    retryable: false,
    description:
      "The generation was cancelled (by a `cancel`, a `DELETE` or its client leaving with `on_disconnect: cancel`) before it finished; what was generated is kept in its stream.",
  },
  stream_read_only: {
    status: 403,
    retryable: false,
    description:
      "The stream is a generation stream: it is written by its generation only, and is read-only through the Durable Streams API.",
  },
  stream_lost: {
    status: 410,
    retryable: false,
    description:
      "Sent as a reader's terminal `error` event when its stream vanished while it read (deleted, or lost with its store, e.g. a Redis restarted without persistence) before the reader got the stream's own terminal event.",
  },
  stream_gone: {
    status: 410,
    retryable: false,
    description:
      "The stream was deleted but forks still inherit from it; its name stays reserved until they are gone.",
  },
  content_type_mismatch: {
    status: 409,
    retryable: false,
    description: "The append's Content-Type differs from the stream's.",
  },
  sequence_conflict: {
    status: 409,
    retryable: false,
    description:
      "A `Stream-Seq` or `Producer-Seq` is out of order (not after the last one accepted); the response says what was expected.",
  },
  producer_fenced: {
    status: 403,
    retryable: false,
    description:
      "The `Producer-Epoch` is older than one already seen for this producer (a newer instance took over).",
  },
  stream_too_large: {
    status: 413,
    retryable: false,
    description: "The stream reached its bound on events or bytes.",
  },
  body_too_large: {
    status: 413,
    retryable: false,
    description: "The request body is larger than the server accepts.",
  },
  capacity_exceeded: {
    status: 503,
    retryable: true,
    description: "The server holds as many streams as it is configured to; try again later.",
  },
  too_many_connections: {
    status: 503,
    retryable: true,
    description:
      "The server holds its maximum of long-lived connections (`limits.max_connections`); try again later.",
  },
  too_many_readers: {
    status: 503,
    retryable: true,
    description: "The stream has its maximum of readers on this node (`limits.max_readers_per_stream`).",
  },
  too_many_subscriptions: {
    status: 429,
    retryable: false,
    description: "The WebSocket holds its maximum of subscriptions (`ws.max_subscriptions`).",
  },
  slow_reader: {
    status: 408,
    retryable: true,
    description:
      "The reader fell too far behind (or its connection stopped draining) and was disconnected; resume from the offset it names.",
  },
  upstream_error: {
    status: 502,
    retryable: true,
    description: "The model provider answered with an error, or its stream broke off.",
  },
  upstream_unreachable: {
    status: 502,
    retryable: true,
    description: "The model provider could not be reached.",
  },
  upstream_timeout: {
    status: 504,
    retryable: true,
    description:
      "The model provider did not connect, answer, or send its next chunk within the route's timeouts (`timeout` says which: connect, first_byte, idle).",
  },
  deadline_exceeded: {
    status: 504,
    retryable: true,
    description: "The generation ran past its `timeout_ms` and was stopped; what was generated is kept.",
  },
  interrupted: {
    status: 500,
    retryable: true,
    description: "The generation was cut off by a server shutdown or crash; what was generated is kept.",
  },
  store_unavailable: {
    status: 503,
    retryable: true,
    description: "The stream store (e.g. Redis) cannot be reached right now; try again shortly.",
  },
  internal_error: {
    status: 500,
    retryable: true,
    description: "A bug or an unexpected failure inside Sluice.",
  },
} as const satisfies Record<string, { status: number; retryable: boolean; description: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorBody {
  error: { code: ErrorCode; message: string; [extra: string]: unknown };
}

/** The one error class: a stable code, an HTTP status and whether a retry may help. */
export class SluiceError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = "SluiceError";
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.retryable = ERROR_CODES[code].retryable;
    this.details = details;
  }

  toBody(): ErrorBody {
    return { error: { code: this.code, message: this.message, ...(this.details ?? {}) } };
  }
}

/**
 * Seconds for an error's `Retry-After`: its own `retry_after_s` when it has one, else 1 for every
 * retryable 429/503 (errors.md calls them retryable; the header says when), else undefined.
 * Every door that sends an error (HTTP, the OpenAI façade, the WebSocket upgrade, gRPC) uses this.
 */
export function retryAfterSeconds(err: SluiceError): number | undefined {
  const own = err.details?.retry_after_s;
  if (typeof own === "number" && Number.isFinite(own) && own >= 0) return Math.max(1, Math.ceil(own));
  if (err.retryable && (err.status === 429 || err.status === 503)) return 1;
  return undefined;
}

/**
 * A client's input as an error message may quote it: JSON-quoted (so control characters stay
 * visible and harmless) and cut to `max` characters with its length named, so an error never
 * echoes a long value back.
 */
export function quoteInput(value: unknown, max = 40): string {
  const s = typeof value === "string" ? value : String(value);
  if (s.length <= max) return JSON.stringify(s);
  return `${JSON.stringify(s.slice(0, max)).slice(0, -1)}…" (${s.length} characters)`;
}

export function isSluiceError(err: unknown): err is SluiceError {
  return err instanceof SluiceError;
}
