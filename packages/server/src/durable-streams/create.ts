import { isSluiceError, SluiceError } from "@sluice/protocol";
import type { FastifyReply, FastifyRequest } from "fastify";
import { requireAction, requireStreamAccess } from "../auth/principal.js";
import type { RecordInput, StreamInfo } from "../stores/store.js";
import { bytesRecord, recordBytes, recordMessages } from "./codecs.js";
import {
  type DsConfig,
  dsConfig,
  H,
  isGeneration,
  isSoftDeleted,
  META,
  MOUNT,
  mediaType,
  modeOf,
  parseDsOffset,
  parseForkSource,
  parseUint,
  publicContentType,
} from "./protocol.js";

import { COPY_PAGE, DEFAULT_CONTENT_TYPE, type DsState, flag, header } from "./state.js";

/** PUT: create a stream, or fork one (Stream-Forked-From), or confirm an identical one (idempotent). */
export async function handleCreate(st: DsState, req: FastifyRequest, reply: FastifyReply) {
  const {
    store,
    locked,
    liveRefs,
    hardDelete,
    storeIdFor,
    applyExpiry,
    infoHeaders,
    pathOf,
    bodyOfReq,
    recordsFor,
    parseTtlHeaders,
  } = st;
  const path = pathOf(req);
  const principal = req.principal;
  requireAction(principal, "create");
  const ctHeader = header(req, "content-type")?.trim() || undefined;
  const ttl = parseTtlHeaders(req);
  const closed = flag(req, H.closed);
  const forkFromRaw = header(req, H.forkedFrom);
  const forkOffsetRaw = header(req, H.forkOffset);
  const subRaw = header(req, H.forkSubOffset);
  if (forkFromRaw === undefined && (forkOffsetRaw !== undefined || subRaw !== undefined)) {
    throw new SluiceError(
      "invalid_request",
      "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
    );
  }
  const sub = subRaw === undefined ? 0 : parseUint(subRaw.trim(), "Stream-Fork-Sub-Offset");
  if (sub > 0 && forkOffsetRaw === undefined) {
    throw new SluiceError("invalid_request", "Stream-Fork-Sub-Offset needs Stream-Fork-Offset");
  }
  let forkSeqAsked: number | undefined;
  if (forkOffsetRaw !== undefined) {
    forkSeqAsked = parseDsOffset(forkOffsetRaw.trim());
    if (forkSeqAsked === undefined)
      throw new SluiceError("invalid_offset", "Stream-Fork-Offset is not an offset");
  }
  const forkPath = forkFromRaw === undefined ? undefined : parseForkSource(forkFromRaw);
  // The source is looked up like any path the caller names: in its own tenant only.
  const forkFrom = forkPath === undefined ? undefined : await storeIdFor(principal, forkPath);
  const id = await storeIdFor(principal, path);
  const body = bodyOfReq(req);

  /** PUT on a stream that exists: 200 for the same configuration, 409 otherwise. */
  const answerExisting = (existing: StreamInfo): FastifyReply => {
    if (isGeneration(existing)) {
      throw new SluiceError("stream_exists", `${path} is a generation stream (read-only here)`);
    }
    if (isSoftDeleted(existing)) {
      throw new SluiceError("stream_exists", `${path} was deleted but forks still inherit from it`);
    }
    const cfg = dsConfig(existing);
    // A fork without TTL headers inherited its source's: any inherited value matches.
    const ttlSame =
      forkFrom !== undefined && ttl.ttl_s === undefined && ttl.expires_at === undefined
        ? true
        : cfg.ttl_s === ttl.ttl_s && cfg.expires_at === ttl.expires_at;
    const same =
      (ctHeader === undefined
        ? forkFrom !== undefined || mediaType(existing.content_type) === DEFAULT_CONTENT_TYPE
        : mediaType(ctHeader) === mediaType(existing.content_type)) &&
      ttlSame &&
      (cfg.fork?.from ?? undefined) === forkFrom &&
      (forkSeqAsked === undefined || cfg.fork?.seq === forkSeqAsked) &&
      (cfg.fork?.sub ?? 0) === sub;
    if (!same) {
      throw new SluiceError("stream_exists", `a stream with a different configuration exists at ${path}`);
    }
    infoHeaders(reply, existing);
    return reply.code(200).send();
  };

  return locked(id, async () => {
    let existing = await store.info(id);
    if (existing && isSoftDeleted(existing) && (await liveRefs(existing)).length === 0) {
      await hardDelete(existing);
      existing = undefined;
    }
    if (existing) return answerExisting(existing);

    let cfg: DsConfig = { ...ttl };
    let contentType = ctHeader ?? DEFAULT_CONTENT_TYPE;
    let src: StreamInfo | undefined;
    let forkSeq = 0;
    if (forkFrom !== undefined) {
      src = await store.info(forkFrom);
      if (!src) throw new SluiceError("stream_not_found", `no stream at ${forkPath} to fork from`);
      requireStreamAccess(principal, "read", src);
      if (isSoftDeleted(src))
        throw new SluiceError("stream_exists", `${forkPath} was deleted; it cannot be forked`);
      const srcType = publicContentType(src);
      if (ctHeader !== undefined && mediaType(ctHeader) !== mediaType(srcType)) {
        throw new SluiceError(
          "content_type_mismatch",
          `the fork's Content-Type must be the source's (${srcType})`,
        );
      }
      contentType = ctHeader ?? srcType;
      forkSeq = forkSeqAsked ?? src.length;
      if (forkSeq > src.length) {
        throw new SluiceError("offset_out_of_range", "Stream-Fork-Offset is past the end of the source");
      }
      if (ttl.ttl_s === undefined && ttl.expires_at === undefined) {
        const s = dsConfig(src);
        if (s.ttl_s !== undefined) cfg.ttl_s = s.ttl_s;
        else if (s.expires_at !== undefined) cfg.expires_at = s.expires_at;
      }
      cfg = { ...cfg, fork: { from: forkFrom, seq: forkSeq, sub } };
    }
    const mode = modeOf(contentType);
    const initial = recordsFor(mode, body, true);

    // Sub-offset: the first `sub` bytes (bytes mode) or messages (JSON mode) of the record after forkSeq.
    let partial: RecordInput | undefined;
    if (src && sub > 0) {
      const next = (await store.read(src.id, forkSeq, 1)).records[0];
      if (!next)
        throw new SluiceError("offset_out_of_range", "Stream-Fork-Sub-Offset is past the end of the source");
      if (mode === "json") {
        const msgs = recordMessages(next);
        if (sub > msgs.length) {
          throw new SluiceError(
            "offset_out_of_range",
            `Stream-Fork-Sub-Offset ${sub} > ${msgs.length} messages`,
          );
        }
        partial = { data: msgs.slice(0, sub).join(",") };
      } else {
        const bytes = recordBytes(next);
        if (sub > bytes.length) {
          throw new SluiceError(
            "offset_out_of_range",
            `Stream-Fork-Sub-Offset ${sub} > ${bytes.length} bytes`,
          );
        }
        partial = bytesRecord(bytes.subarray(0, sub));
      }
    }

    try {
      await store.create({
        id,
        kind: "log",
        ...(principal.tenant !== undefined ? { tenant: principal.tenant } : {}),
        content_type: contentType,
        metadata: { [META.config]: cfg },
      });
    } catch (err) {
      // Created meanwhile by another node: answer as for any existing stream.
      const now = isSluiceError(err) && err.code === "stream_exists" ? await store.info(id) : undefined;
      if (now) return answerExisting(now);
      throw err;
    }
    try {
      if (src) {
        // A fork copies what it inherits (same offsets as the source), then lives on its own.
        let after = 0;
        while (after < forkSeq) {
          const page = await store.read(src.id, after, Math.min(COPY_PAGE, forkSeq - after));
          if (page.records.length === 0) break;
          await store.append(
            id,
            page.records.map((r) => {
              const rec: RecordInput = { data: r.data };
              if (r.encoding !== undefined) rec.encoding = r.encoding;
              return rec;
            }),
          );
          after = (page.records[page.records.length - 1] as { seq: number }).seq;
        }
        if (partial) await store.append(id, [partial]);
        await store.update(src.id, { metadata: { [META.ref(id)]: true } });
      }
      if (initial.length > 0 || closed) {
        await store.append(id, initial, closed ? { close: "completed" } : {});
      }
      await applyExpiry(id, cfg);
    } catch (err) {
      await store.delete(id).catch(() => {});
      throw err;
    }
    const info = (await store.info(id)) as StreamInfo;
    infoHeaders(reply, info);
    reply.header(
      "location",
      `${req.protocol}://${req.headers.host ?? "localhost"}${MOUNT}/v1/stream/${path}`,
    );
    return reply.code(201).send();
  });
}
