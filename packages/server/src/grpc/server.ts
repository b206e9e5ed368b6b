import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { retryAfterSeconds, SluiceError } from "@sluice/protocol";
import type { Logger } from "pino";
import { OPEN_PRINCIPAL } from "../auth/principal.js";
import { credentialFrom, type Identity, resolveCredential, type Security } from "../auth/security.js";
import type { Config } from "../config.js";
import type { Hub, Reader, Sink } from "../core/hub.js";
import type { ConnectionGate } from "../core/limits.js";
import { isInternalFailure, publicError } from "../core/public-error.js";
import { GenerationRequestSchema } from "../core/request.js";
import type { Runner } from "../core/runner.js";
import { type Codec, registerCodec } from "../formats/codec.js";
import { checkJsonDepth } from "../http/json-body.js";
import { holdConnectionAs, startAs } from "../http/start.js";
import { readPosition, StreamAccess } from "../http/stream-access.js";
import type { Store, StreamInfo } from "../stores/store.js";

/** The .proto shipped with the server package (packages/server/proto/sluice.proto). */
export const PROTO_PATH = fileURLToPath(new URL("../../proto/sluice.proto", import.meta.url));

export const PROTO_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

// ── protobuf bytes for StreamEvent, built once per record and shared by every follower ──

function varint(n: number, out: number[]): void {
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
}

function field(num: number, value: string, parts: Buffer[]): void {
  const bytes = Buffer.from(value, "utf8");
  const head: number[] = [(num << 3) | 2];
  varint(bytes.length, head);
  parts.push(Buffer.from(head), bytes);
}

/**
 * `grpc:sluice`: a record as the protobuf bytes of `StreamEvent` (held as a latin1 string
 * so the Hub's shared encode cache can keep it); the Follow serializer sends them as is.
 */
export const grpcSluice: Codec = registerCodec({
  key: "grpc:sluice",
  index: -1,
  encode(rec, info) {
    const parts: Buffer[] = [];
    field(1, info.id, parts);
    field(2, rec.offset, parts);
    if (rec.type) field(3, rec.type, parts);
    field(4, rec.data, parts);
    return Buffer.concat(parts).toString("latin1");
  },
});

const STATUS_BY_HTTP: Record<number, grpc.status> = {
  400: grpc.status.INVALID_ARGUMENT,
  401: grpc.status.UNAUTHENTICATED,
  403: grpc.status.PERMISSION_DENIED,
  404: grpc.status.NOT_FOUND,
  408: grpc.status.RESOURCE_EXHAUSTED,
  409: grpc.status.FAILED_PRECONDITION,
  413: grpc.status.RESOURCE_EXHAUSTED,
  415: grpc.status.INVALID_ARGUMENT,
  429: grpc.status.RESOURCE_EXHAUSTED,
  502: grpc.status.UNAVAILABLE,
  503: grpc.status.UNAVAILABLE,
  504: grpc.status.DEADLINE_EXCEEDED,
};

/** A SluiceError as a gRPC status; the catalogue code rides in `sluice-error-code` metadata. */
export function toGrpcError(err: unknown, extra: Record<string, string> = {}): Partial<grpc.StatusObject> {
  const e = publicError(err);
  const metadata = new grpc.Metadata();
  metadata.set("sluice-error-code", e.code);
  for (const [k, v] of Object.entries(extra)) metadata.set(k, v);
  if (e.code === "rate_limited" && typeof e.details?.limit === "string") {
    metadata.set("sluice-limit", e.details.limit);
  }
  const retry = retryAfterSeconds(e);
  if (retry !== undefined) metadata.set("retry-after", String(retry));
  let code = STATUS_BY_HTTP[e.status] ?? grpc.status.INTERNAL;
  if (e.code === "offset_out_of_range") code = grpc.status.OUT_OF_RANGE;
  if (e.code === "stream_exists") code = grpc.status.ALREADY_EXISTS;
  if (e.code === "too_many_connections" || e.code === "too_many_readers")
    code = grpc.status.RESOURCE_EXHAUSTED;
  return { code, details: `${e.code}: ${e.message}`, metadata };
}

function infoMessage(info: StreamInfo) {
  return {
    id: info.id,
    status: info.status,
    model: info.model ?? "",
    created_at: info.created_at,
    next_offset: info.next_offset,
    length: info.length,
  };
}

interface StartRequestMsg {
  model: string;
  messages: { role: string; content: string }[];
  max_tokens: number;
  timeout_ms: number;
  metadata: Record<string, string>;
  request_json: string;
}

function toGenerationRequest(req: StartRequestMsg, jsonMaxDepth: number) {
  let body: unknown;
  if (req.request_json) {
    checkJsonDepth(req.request_json, jsonMaxDepth, "request_json");
    try {
      body = JSON.parse(req.request_json);
    } catch (err) {
      throw new SluiceError("invalid_json", `request_json is not valid JSON: ${(err as Error).message}`);
    }
  } else {
    const b: Record<string, unknown> = { model: req.model, messages: req.messages };
    if (req.max_tokens) b.max_tokens = req.max_tokens;
    if (req.timeout_ms) b.timeout_ms = req.timeout_ms;
    if (req.metadata && Object.keys(req.metadata).length > 0) b.metadata = req.metadata;
    body = b;
  }
  const r = GenerationRequestSchema.safeParse(body);
  if (!r.success) {
    throw new SluiceError(
      "invalid_request",
      r.error.issues
        .slice(0, 5)
        .map((i) => `${i.path.join(".") || "request"}: ${i.message}`)
        .join("; "),
    );
  }
  return r.data;
}

type FollowCall = grpc.ServerWritableStream<{ stream: string; offset: string; compact?: boolean }, unknown>;

/** A follower's sink: each record is one StreamEvent message on the call. */
class CallSink implements Sink {
  readonly group = undefined;
  readonly flushMs = undefined;
  reader: Reader | undefined;
  private done = false;

  constructor(
    private readonly call: FollowCall,
    /** Releases the call's resources (reader, connection slot); idempotent. */
    private readonly finished: () => void,
  ) {}

  write(chunk: string): void {
    if (!this.closed) this.call.write(chunk);
  }

  writeFrames(frames: string[]): void {
    if (this.closed) return;
    for (const f of frames) this.call.write(f);
  }

  get buffered(): number {
    return this.call.writableLength;
  }

  onDrain(cb: () => void): void {
    let fired = false;
    const fire = () => {
      if (fired) return;
      fired = true;
      this.call.off("drain", fire);
      this.call.off("close", fire);
      cb();
    };
    this.call.once("drain", fire);
    this.call.once("close", fire);
  }

  end(): void {
    if (this.done) return;
    this.done = true;
    const md = new grpc.Metadata();
    if (this.reader) md.set("sluice-status", this.reader.status);
    this.call.end(md);
    this.finished();
  }

  cut(offset: string, message: string): void {
    if (this.done) return;
    this.done = true;
    this.call.emit(
      "error",
      toGrpcError(new SluiceError("slow_reader", message), { "sluice-offset": offset }) as grpc.ServiceError,
    );
    this.finished();
  }

  get closed(): boolean {
    return this.done || this.call.cancelled || this.call.writableEnded || this.call.destroyed;
  }
}

export interface GrpcDeps {
  config: Config;
  store: Store;
  hub: Hub;
  runner: Runner;
  connections: ConnectionGate;
  security: Security;
  logger?: Logger;
}

/**
 * Who makes a call: `authorization: Bearer <key or read token>` or `x-api-key` metadata.
 * Open mode (no keys configured) lets every call through as before.
 */
async function identify(security: Security, md: grpc.Metadata): Promise<Identity> {
  if (!security.enabled) return { principal: OPEN_PRINCIPAL, apiKey: undefined };
  const cred = credentialFrom(md.get("authorization")[0], md.get("x-api-key")[0], undefined);
  if (!cred) {
    throw new SluiceError(
      "unauthorized",
      "this call needs an API key (metadata authorization: Bearer … or x-api-key) or a read token",
    );
  }
  return resolveCredential(security, cred);
}

export interface GrpcServer {
  server: grpc.Server;
  port: number;
  /** host:port to dial. */
  address: string;
  close(): Promise<void>;
}

/** Starts the gRPC server on config.grpc_port (0 = a free port). */
export async function startGrpc(deps: GrpcDeps): Promise<GrpcServer> {
  const { config, hub, runner, connections, security, store } = deps;
  const access = new StreamAccess({ store, runner });
  // An internal failure's text stays in the log; the client gets the generic status.
  const fail = (err: unknown) => {
    if (isInternalFailure(err)) deps.logger?.error({ err }, "grpc call failed");
    return toGrpcError(err);
  };
  const def = protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    sluice: { v1: { Sluice: grpc.ServiceClientConstructor } };
  };
  const service = { ...pkg.sluice.v1.Sluice.service };
  const follow = service.Follow as grpc.MethodDefinition<unknown, unknown>;
  const serialize = follow.responseSerialize;
  // Follow's messages are pre-encoded StreamEvent bytes (grpc:sluice); others go through protobuf.
  service.Follow = {
    ...follow,
    responseSerialize: (v: unknown) => (typeof v === "string" ? Buffer.from(v, "latin1") : serialize(v)),
  };

  const server = new grpc.Server({ "grpc.max_receive_message_length": config.limits.body_bytes });
  server.addService(service, {
    Start: (call: grpc.ServerUnaryCall<StartRequestMsg, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      Promise.resolve()
        .then(async () => {
          const id = await identify(security, call.metadata);
          return startAs(
            id.principal,
            id.apiKey,
            { runner, security },
            toGenerationRequest(call.request, config.limits.json_max_depth),
          );
        })
        .then((info) => cb(null, infoMessage(info)))
        .catch((err) => cb(fail(err)));
    },
    Cancel: (call: grpc.ServerUnaryCall<{ stream: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      Promise.resolve()
        .then(async () => {
          const id = await identify(security, call.metadata);
          return access.cancel(id.principal, call.request.stream);
        })
        .then((info) => cb(null, infoMessage(info)))
        .catch((err) => cb(fail(err)));
    },
    Follow: (call: FollowCall) => {
      void (async () => {
        let release: (() => void) | undefined;
        let releaseKey: (() => void) | undefined;
        const detach = () => {
          sink.reader?.detach();
          release?.();
          releaseKey?.();
        };
        const sink = new CallSink(call, detach);
        // A client cancel or its deadline only detaches this reader.
        call.on("cancelled", detach);
        call.on("close", detach);
        try {
          const { stream, offset, compact } = call.request;
          const id = await identify(security, call.metadata);
          const pos = readPosition(offset);
          await access.generation(id.principal, "read", stream);
          // The client left during the checks: take nothing.
          if (sink.closed) return;
          // One streaming connection for the key's quota and for the server's limit.
          release = connections.acquire();
          // (The key's quota may wait for Redis: a client gone meanwhile gets it back at once.)
          releaseKey = await holdConnectionAs(id.apiKey, security);
          if (sink.closed) {
            detach();
            return;
          }
          sink.reader = await hub.attach(stream, pos.kind === "now" ? "now" : pos.seq, grpcSluice, sink, {
            compact: compact === true,
          });
          if (sink.closed) detach();
        } catch (err) {
          release?.();
          releaseKey?.();
          if (!call.cancelled) call.emit("error", fail(err) as grpc.ServiceError);
        }
      })();
    },
  } as grpc.UntypedServiceImplementation);

  const creds = config.tls
    ? grpc.ServerCredentials.createSsl(
        null,
        [{ private_key: readFileSync(config.tls.key), cert_chain: readFileSync(config.tls.cert) }],
        false,
      )
    : grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${config.host}:${config.grpc_port ?? 0}`, creds, (err, p) =>
      err ? reject(err) : resolve(p),
    );
  });
  deps.logger?.info({ port }, "grpc listening");
  return {
    server,
    port,
    address: `${config.host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        t.unref();
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      }),
  };
}
