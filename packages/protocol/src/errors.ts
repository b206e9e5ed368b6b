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
  stream_exists: { status: 409, retryable: false, description: "A stream with this id already exists." },
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

export function isSluiceError(err: unknown): err is SluiceError {
  return err instanceof SluiceError;
}
