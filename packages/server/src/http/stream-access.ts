/**
 * One access layer for every door that reads or stops a generation (HTTP, WebSocket, gRPC): the
 * read position and its `invalid_offset` error, who may do what to which stream (a stream of
 * another tenant, one a read token does not name, or a Durable Streams stream all answer like a
 * missing one), and cancel. Identification (key or token → principal) is auth/security.ts's.
 */
import {
  parseReadPosition,
  parseResumePosition,
  quoteInput,
  type ReadPosition,
  SluiceError,
} from "@sluice/protocol";
import { type Action, type Principal, requireStreamAccess } from "../auth/principal.js";
import { STREAM_ID_RE } from "../core/ids.js";
import type { Runner } from "../core/runner.js";
import type { Store, StreamInfo } from "../stores/store.js";

/**
 * Where a reader starts: `-1`/absent = the beginning, `now` = only what comes next, an offset
 * = everything after it. Throws `invalid_offset` for anything else.
 */
export function readPosition(raw: string | undefined): ReadPosition {
  const pos = parseReadPosition(raw);
  if (!pos) {
    throw new SluiceError(
      "invalid_offset",
      `offset ${quoteInput(String(raw))} is not -1, now, or an offset of this stream`,
    );
  }
  return pos;
}

/**
 * The read position of an HTTP reader: a reconnecting EventSource's Last-Event-ID wins over
 * `?offset=`. It may also be an SSE event id inside a record (`<offset>.<k>`, see
 * formats/codec.ts sseRecord): `skipEvents` is then set, and only SSE reads accept it.
 */
export function httpReadPosition(
  lastEventId: unknown,
  offset: string | undefined,
): ReadPosition & { skipEvents?: number } {
  const raw = typeof lastEventId === "string" && lastEventId !== "" ? lastEventId : offset;
  const pos = parseResumePosition(raw);
  if (!pos) return readPosition(raw);
  return pos;
}

export class StreamAccess {
  constructor(private readonly deps: { store: Store; runner: Runner }) {}

  /**
   * The generation stream `id` if `principal` may `action` it. An id that is malformed,
   * unknown, another tenant's, not the token's, or a Durable Streams stream answers
   * `stream_not_found` alike (no existence oracle).
   */
  async generation(principal: Principal, action: Action, id: string): Promise<StreamInfo> {
    const info = await this.stream(principal, action, id);
    if (info.kind !== "generation") {
      throw new SluiceError(
        "stream_not_found",
        `${id} is a Durable Streams stream, not a generation: read it at /ds/v1/stream/${id}`,
      );
    }
    return info;
  }

  /** Any stream (a generation or a Durable Streams stream) `principal` may `action`. */
  async stream(principal: Principal, action: Action, id: string): Promise<StreamInfo> {
    if (!STREAM_ID_RE.test(id)) throw new SluiceError("stream_not_found", "no stream with that id");
    const info = await this.deps.store.info(id);
    requireStreamAccess(principal, action, info);
    if (!info) throw new SluiceError("stream_not_found", "no stream with that id");
    return info;
  }

  /** Stops a generation (here or on the node that runs it) on behalf of `principal`. */
  async cancel(principal: Principal, id: string, reason = "cancelled by request"): Promise<StreamInfo> {
    await this.stream(principal, "cancel", id);
    const by = principal.kind === "token" ? "token" : "client";
    return this.deps.runner.cancel(id, by, reason);
  }
}
