import { isSluiceError, SluiceError } from "@sluice/protocol";

/** The only text a client ever sees for an internal failure. */
export const INTERNAL_ERROR_MESSAGE = "internal error";

/**
 * What a client may be told about a failure. A catalogue error keeps its message, except
 * `internal_error`: its text may quote an exception (a store driver's, a library's, a stack
 * overflow's) and is replaced by a fixed one; anything that is not a SluiceError becomes that
 * `internal_error`. The caller logs the original when `isInternalFailure` says so.
 */
export function publicError(err: unknown): SluiceError {
  if (isSluiceError(err) && (err.code !== "internal_error" || err.message === INTERNAL_ERROR_MESSAGE))
    return err;
  return new SluiceError("internal_error", INTERNAL_ERROR_MESSAGE);
}

/** True when `err` is a failure of ours (worth an error log line), not a client's mistake. */
export function isInternalFailure(err: unknown): boolean {
  return !isSluiceError(err) || err.code === "internal_error";
}
