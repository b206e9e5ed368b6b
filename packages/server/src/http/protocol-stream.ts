import { isSluiceError, SluiceError } from "@sluice/protocol";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Reader } from "../core/hub.js";
import { publicError } from "../core/public-error.js";
import type { Codec } from "../formats/codec.js";
import type { AppDeps } from "./app.js";
import { Heartbeats, ResponseSink } from "./sink.js";
import { holdConnection } from "./start.js";

export const STREAM_ID_HEADER = "sluice-stream-id";

export interface PipeOptions {
  streamId: string;
  /** Deliver records after this seq (0 = from the start). */
  after: number;
  codec: Codec;
  headers: Record<string, string>;
  /** Cancel the generation when this client goes away (`on_disconnect: cancel`). */
  cancelOnDisconnect: boolean;
}

/**
 * Streams a generation's records to one HTTP response in a protocol's codec (OpenAI chunks, AI
 * SDK UI message stream): the same hub readers, shared encodings and heartbeat timer as
 * `/v1/streams`. A client leaving detaches its reader; the generation goes on unless asked.
 */
export class ProtocolStreams {
  readonly heartbeats: Heartbeats;

  constructor(
    app: FastifyInstance,
    private readonly deps: AppDeps,
  ) {
    this.heartbeats = new Heartbeats(deps.config.sse.heartbeat_ms);
    app.addHook("onClose", async () => this.heartbeats.stop());
  }

  async pipe(req: FastifyRequest, reply: FastifyReply, opts: PipeOptions): Promise<void> {
    const { hub, runner } = this.deps;
    const res = reply.raw;
    const headers: Record<string, string> = { ...opts.headers, [STREAM_ID_HEADER]: opts.streamId };
    if (req.raw.httpVersionMajor === 1) headers.connection = "keep-alive";
    const sink = new ResponseSink(res, () => {
      reply.hijack();
      res.writeHead(200, headers);
    });
    let reader: Reader | undefined;
    const releaseConn = holdConnection(req, this.deps.security);
    res.on("close", () => {
      releaseConn();
      this.heartbeats.delete(sink);
      reader?.detach();
      if (opts.cancelOnDisconnect && !res.writableFinished && runner.isRunning(opts.streamId)) {
        req.log.info({ stream: opts.streamId }, "client disconnected; cancelling (on_disconnect: cancel)");
        void runner.cancel(opts.streamId, "client-disconnect", "client disconnected");
      }
    });
    try {
      reader = await hub.attach(opts.streamId, opts.after, opts.codec, sink);
    } catch (err) {
      releaseConn();
      throw err;
    }
    sink.open();
    if (!sink.closed) this.heartbeats.add(sink, ": keep-alive\n\n");
  }
}

/** Turns whatever a handler threw (zod, Fastify body parsing, SluiceError) into a SluiceError. */
export function toSluiceError(err: unknown, bodyLimit: number): SluiceError {
  if (isSluiceError(err)) return publicError(err);
  const e = err as { code?: string; statusCode?: number; message?: string; name?: string };
  if (e.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
    return new SluiceError("body_too_large", `the body is larger than ${bodyLimit} bytes`);
  }
  if (e.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
    return new SluiceError("unsupported_media_type", "send the body as application/json");
  }
  if (
    e.code === "FST_ERR_CTP_EMPTY_JSON_BODY" ||
    e.code === "FST_ERR_CTP_INVALID_JSON_BODY" ||
    e.name === "SyntaxError"
  ) {
    return new SluiceError("invalid_json", `the body is not valid JSON: ${e.message ?? ""}`);
  }
  if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
    return new SluiceError("invalid_request", e.message ?? "bad request");
  }
  return new SluiceError("internal_error", "internal error");
}

/** Zod issues → one message naming each bad field. */
export function describeIssues(issues: { path: PropertyKey[]; message: string }[]): string {
  return issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.map(String).join(".") : "body"}: ${i.message}`)
    .join("; ");
}
