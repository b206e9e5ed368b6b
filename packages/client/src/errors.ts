/** An error the client reports: a stable `code` (the server's catalogue, or a client code), retryable or not. */
export class SluiceClientError extends Error {
  override name = "SluiceClientError";
  constructor(
    readonly code: string,
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** Thrown by a transport when the server says nothing more will come from this offset. */
export class StreamExhausted extends Error {
  override name = "StreamExhausted";
}

/** HTTP statuses worth retrying: the server or a proxy is momentarily unable. */
export function retryableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

/** Reads a Sluice JSON error body (`{error: {code, message}}`) into a SluiceClientError. */
export async function errorFromResponse(res: Response): Promise<SluiceClientError> {
  let code = `http_${res.status}`;
  let message = `HTTP ${res.status}`;
  try {
    const body = (await res.json()) as { error?: { code?: string; message?: string } };
    if (body?.error?.code) code = body.error.code;
    if (body?.error?.message) message = body.error.message;
  } catch {
    // not JSON: keep the status
  }
  return new SluiceClientError(code, message, retryableStatus(res.status), res.status);
}
