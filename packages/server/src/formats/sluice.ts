import { type Codec, registerCodec } from "./codec.js";

/**
 * The native `sluice` format. Record data is already the event's JSON, so encoding is
 * string concatenation: no parse, no stringify on the hot path.
 *
 * SSE:    id: <offset>\nevent: <type>\ndata: <event json>\n\n
 * NDJSON: {"offset":"<offset>","event":<event json>}\n
 */
export const sseSluice: Codec = registerCodec({
  key: "sse:sluice",
  index: -1,
  encode(rec) {
    return `id: ${rec.offset}\nevent: ${rec.type ?? "data"}\ndata: ${rec.data}\n\n`;
  },
});

export const ndjsonSluice: Codec = registerCodec({
  key: "ndjson:sluice",
  index: -1,
  encode(rec) {
    return `{"offset":"${rec.offset}","event":${rec.data}}\n`;
  },
});

/**
 * WebSocket: one message per record, `{"stream":"<id>","offset":"<offset>","event":<event json>}`
 * — the stream id is part of the bytes, so one encoding serves every socket following it.
 */
export const wsSluice: Codec = registerCodec({
  key: "ws:sluice",
  index: -1,
  encode(rec, info) {
    return `{"stream":"${info.id}","offset":"${rec.offset}","event":${rec.data}}`;
  },
});
