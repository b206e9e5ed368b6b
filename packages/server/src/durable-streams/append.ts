import { isSluiceError, SluiceError } from "@sluice/protocol";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { RecordInput } from "../stores/store.js";
import {
  dsConfig,
  dsOffset,
  H,
  isClosed,
  isGeneration,
  META,
  mediaType,
  parseUint,
  producerState,
} from "./protocol.js";

import { type DsState, dsError, flag, header } from "./state.js";

/** POST: append (JSON messages or bytes), with idempotent producers, and/or close (Stream-Closed). */
export async function handleAppend(st: DsState, req: FastifyRequest, reply: FastifyReply) {
  const { store, locked, storeIdFor, allow, load, modeOfInfo, applyExpiry, pathOf, bodyOfReq, recordsFor } =
    st;
  const path = pathOf(req);
  const close = flag(req, H.closed);
  const body = bodyOfReq(req);
  const pid = header(req, H.producerId);
  const pEpochRaw = header(req, H.producerEpoch);
  const pSeqRaw = header(req, H.producerSeq);
  const streamSeq = header(req, H.seq);
  const check = allow(req.principal, "append");
  const id = await storeIdFor(req.principal, path);
  const first = await load(id, path, check);
  if (isGeneration(first)) {
    throw new SluiceError(
      "stream_read_only",
      `${path} is a generation stream: only its generation writes to it`,
    );
  }
  if (body.length === 0 && !close) {
    throw new SluiceError(
      "invalid_request",
      "an append needs a non-empty body (or Stream-Closed: true to close)",
    );
  }
  let records: RecordInput[] = [];
  if (body.length > 0) {
    const ct = header(req, "content-type");
    if (!ct) throw new SluiceError("invalid_request", "an append needs a Content-Type");
    if (mediaType(ct) !== mediaType(first.content_type)) {
      throw new SluiceError(
        "content_type_mismatch",
        `the stream's Content-Type is ${first.content_type}, the append's ${ct}`,
      );
    }
    records = recordsFor(modeOfInfo(first), body, false);
  }
  const anyProducer = pid !== undefined || pEpochRaw !== undefined || pSeqRaw !== undefined;
  let producer: { id: string; epoch: number; seq: number } | undefined;
  if (anyProducer) {
    if (pid === undefined || pEpochRaw === undefined || pSeqRaw === undefined) {
      throw new SluiceError("invalid_request", "Producer-Id, Producer-Epoch and Producer-Seq go together");
    }
    if (pid.trim() === "") throw new SluiceError("invalid_request", "Producer-Id must not be empty");
    producer = {
      id: pid,
      epoch: parseUint(pEpochRaw.trim(), "Producer-Epoch"),
      seq: parseUint(pSeqRaw.trim(), "Producer-Seq"),
    };
  }

  // Decided on a read, applied with compare-and-append: if another node appended in
  // between, the store refuses and the checks run again on the new state.
  const attempt = async (): Promise<FastifyReply> => {
    const info = await load(id, path, check);
    const cfg = dsConfig(info);
    const tail = () => ({
      [H.nextOffset]: dsOffset(info.length),
      ...(isClosed(info) ? { [H.closed]: "true" } : {}),
    });
    const metadata: Record<string, unknown> = {};
    if (producer) {
      const st = producerState(info, producer.id);
      if (st && producer.epoch < st.e) {
        throw dsError("producer_fenced", `producer ${producer.id} is at epoch ${st.e}`, {
          [H.producerEpoch]: String(st.e),
        });
      }
      if (st && producer.epoch === st.e && producer.seq <= st.s) {
        // Already applied: acknowledge without writing again.
        for (const [k, v] of Object.entries(tail())) reply.header(k, v);
        reply.header(H.producerEpoch, String(st.e));
        reply.header(H.producerSeq, String(st.s));
        return reply.code(204).send();
      }
      const expected = st && producer.epoch === st.e ? st.s + 1 : 0;
      if (st && producer.epoch > st.e && producer.seq !== 0) {
        throw new SluiceError("invalid_request", "a new Producer-Epoch starts at Producer-Seq 0");
      }
      if (producer.seq !== expected) {
        throw dsError("sequence_conflict", `expected Producer-Seq ${expected}, got ${producer.seq}`, {
          [H.expectedSeq]: String(expected),
          [H.receivedSeq]: String(producer.seq),
        });
      }
      metadata[META.producer(producer.id)] = { e: producer.epoch, s: producer.seq };
    }
    if (isClosed(info)) {
      if (records.length === 0 && close) {
        for (const [k, v] of Object.entries(tail())) reply.header(k, v);
        return reply.code(204).send();
      }
      throw dsError("stream_closed", `the stream at ${path} is closed`, tail());
    }
    if (streamSeq !== undefined) {
      if (cfg.seq !== undefined && !(streamSeq > cfg.seq)) {
        throw new SluiceError("sequence_conflict", `Stream-Seq ${streamSeq} is not after ${cfg.seq}`);
      }
      metadata[META.config] = { ...cfg, seq: streamSeq };
    }
    const res = await store.append(id, records, {
      ...(close ? { close: "completed" as const } : {}),
      ...(Object.keys(metadata).length > 0 ? { metadata } : {}),
      if_length: info.length,
    });
    if (cfg.ttl_s !== undefined || close) await applyExpiry(id, cfg);
    reply.header(H.nextOffset, dsOffset(res.length));
    if (res.status !== "running") reply.header(H.closed, "true");
    if (producer) {
      reply.header(H.producerEpoch, String(producer.epoch));
      reply.header(H.producerSeq, String(producer.seq));
      return reply.code(records.length > 0 ? 200 : 204).send();
    }
    return reply.code(204).send();
  };
  return locked(id, async () => {
    for (let tries = 1; ; tries++) {
      try {
        return await attempt();
      } catch (err) {
        if (!(isSluiceError(err) && err.code === "append_conflict" && tries < 8)) throw err;
      }
    }
  });
}
