// Reader module for NDJSON (application/x-ndjson) over HTTP/1.1: one JSON object a line; the
// offset is taken from `"offset":"…"` without parsing the JSON. Same shape as sse.mjs.
import { openHttp } from "../http-stream.mjs";

export const name = "ndjson";
export const accept = "application/x-ndjson";

export function open(spec, on) {
  let buf = "";
  return openHttp(spec, {
    onHead: on.onHead,
    onEnd: on.onEnd,
    onError: on.onError,
    onBody(text, t) {
      buf += text;
      let start = 0;
      for (;;) {
        const nl = buf.indexOf("\n", start);
        if (nl < 0) break;
        const line = buf.slice(start, nl);
        start = nl + 1;
        if (!line) continue; // heartbeat
        const o = line.indexOf('"offset":"');
        const id = o >= 0 ? line.slice(o + 10, line.indexOf('"', o + 10)) : undefined;
        on.onEvent(id, undefined, line, t);
      }
      buf = start ? buf.slice(start) : buf;
    },
  });
}
