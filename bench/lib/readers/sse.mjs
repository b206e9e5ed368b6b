// Reader module for SSE (text/event-stream) over HTTP/1.1: parses just enough SSE (id, event, data)
// and reports each event. Every transport has a module with the same shape:
//   open(spec, {onEvent(id, event, data, t), onHead(status), onEnd(), onError(err)}) -> {close()}
import { openHttp } from "../http-stream.mjs";

export const name = "sse";
export const accept = "text/event-stream";

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
        const end = buf.indexOf("\n\n", start);
        if (end < 0) break;
        let id;
        let event;
        let data = "";
        let p = start;
        while (p < end) {
          let nl = buf.indexOf("\n", p);
          if (nl < 0 || nl > end) nl = end;
          const c = buf.charCodeAt(p);
          if (c === 100 /* d */ && buf.startsWith("data:", p)) {
            const v = buf.slice(buf.charCodeAt(p + 5) === 32 ? p + 6 : p + 5, nl);
            data = data ? `${data}\n${v}` : v;
          } else if (c === 105 /* i */ && buf.startsWith("id:", p)) {
            id = buf.slice(buf.charCodeAt(p + 3) === 32 ? p + 4 : p + 3, nl);
          } else if (c === 101 /* e */ && buf.startsWith("event:", p)) {
            event = buf.slice(buf.charCodeAt(p + 6) === 32 ? p + 7 : p + 6, nl);
          }
          p = nl + 1;
        }
        if (data || event) on.onEvent(id, event, data, t);
        start = end + 2;
      }
      buf = start ? buf.slice(start) : buf;
    },
  });
}
