// Reader module for Sluice's WebSocket transport (`GET /v1/ws`, docs/transports.md) on a raw `net`
// socket — a lean client, like http-stream.mjs for SSE: it writes the upgrade request, sends one
// masked text frame (`spec.start` as {"type":"start", …} or `spec.subscribe` as {"type":"subscribe",
// …}), then parses unmasked server frames (7/16/64-bit lengths; fragments joined; ping → pong) and
// reports each `{stream, offset, event}` message: on.onEvent(offset, event.type, messageText, t).
// `due` is found in the message text exactly as in SSE data. `{"type":"end"}` (sent after the
// terminal event) ends the reader; an `{"type":"error"}` message fails it.
// Cost matters here (one process reads 10,000 sockets in the fan-out scenario): the socket decodes
// to latin1 strings (byte = char, done in C++ as for the SSE reader; exact for the ASCII the reader
// looks for), frames are parsed with charCodeAt and each message is one slice — no Buffer objects
// per message. Client frames are masked with one key per connection (RFC 6455 wants the server to
// unmask, not to check randomness; a load generator needs no unpredictability).
// Same contract as sse.mjs: open(spec, {onEvent, onHead, onEnd, onError}) -> {close()}.
import { randomBytes } from "node:crypto";
import net from "node:net";

export const name = "ws";
export const available = true;

const now = () => performance.timeOrigin + performance.now();
/** Sec-WebSocket-Key: any 16 bytes, base64; one for the process is enough for a load generator. */
const KEY = randomBytes(16).toString("base64");

/** One masked client frame (FIN set); `payload` is latin1 (bytes as chars). */
function frame(opcode, payload, mask) {
  const len = payload.length;
  const head = len < 126 ? 2 : 4;
  const out = Buffer.allocUnsafe(head + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) out[1] = 0x80 | len;
  else {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  }
  out.writeUInt32BE(mask, head);
  for (let i = 0; i < len; i++) out[head + 4 + i] = payload.charCodeAt(i) ^ out[head + (i & 3)];
  return out;
}

export function open(spec, on) {
  const host = spec.host ?? "127.0.0.1";
  const req =
    `GET ${spec.path ?? "/v1/ws"} HTTP/1.1\r\nHost: ${host}:${spec.port}\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
  const first = Buffer.from(
    spec.start
      ? JSON.stringify({ type: "start", ...spec.start })
      : JSON.stringify({ type: "subscribe", ...spec.subscribe }),
  ).toString("latin1");
  const mask = (Math.random() * 0x100000000) >>> 0;
  const socket = net.connect({
    port: spec.port,
    host,
    ...(spec.localAddress ? { localAddress: spec.localAddress } : {}),
  });
  socket.setNoDelay(true);
  socket.setEncoding("latin1");
  let done = false;
  let head = true;
  let buf = ""; // unparsed bytes (latin1)
  let frag = ""; // payload of a fragmented message so far
  const finish = (err) => {
    if (done) return;
    done = true;
    socket.destroy();
    if (err) on.onError?.(err);
    else on.onEnd?.();
  };
  const message = (text, t) => {
    // Event messages start with {"stream": (the server's framing); control messages with {"type":
    if (text.charCodeAt(2) === 115 /* s */) {
      const o = text.indexOf('"offset":"');
      const offset = o >= 0 ? text.slice(o + 10, text.indexOf('"', o + 10)) : undefined;
      const e = text.indexOf('"type":"', o);
      const type = e >= 0 ? text.slice(e + 8, text.indexOf('"', e + 8)) : undefined;
      on.onEvent(offset, type, text, t);
      return;
    }
    if (text.startsWith('{"type":"end"')) finish();
    else if (text.startsWith('{"type":"error"')) {
      const c = /"code":"([^"]+)"/.exec(text);
      finish(new Error(`ws error ${c ? c[1] : text.slice(0, 60)}`));
    }
  };
  socket.on("connect", () => socket.write(req, "latin1"));
  socket.on("error", (e) => finish(e));
  socket.on("close", () => finish(head ? new Error("closed before upgrade") : new Error("ws closed")));
  socket.on("data", (data) => {
    const t = now();
    buf = buf ? buf + data : data;
    if (head) {
      const i = buf.indexOf("\r\n\r\n");
      if (i < 0) return;
      const status = Number(buf.slice(0, 16).split(" ")[1]);
      head = false;
      on.onHead?.(status === 101 ? 200 : status);
      if (status !== 101) return finish(new Error(`HTTP ${status}`));
      buf = buf.slice(i + 4);
      socket.write(frame(1, first, mask));
    }
    const n = buf.length;
    let p = 0;
    while (n - p >= 2) {
      const b0 = buf.charCodeAt(p);
      let len = buf.charCodeAt(p + 1) & 0x7f;
      let h = 2;
      if (len === 126) {
        if (n - p < 4) break;
        len = (buf.charCodeAt(p + 2) << 8) | buf.charCodeAt(p + 3);
        h = 4;
      } else if (len === 127) {
        if (n - p < 10) break;
        len = 0;
        for (let k = 2; k < 10; k++) len = len * 256 + buf.charCodeAt(p + k);
        h = 10;
      }
      if (n - p < h + len) break;
      const payload = buf.slice(p + h, p + h + len);
      p += h + len;
      const op = b0 & 0x0f;
      if (op === 1 && b0 & 0x80) {
        message(payload, t);
        if (done) return;
        continue;
      }
      if (op === 9) {
        socket.write(frame(10, payload, mask));
        continue;
      }
      if (op === 8) return finish(new Error("ws close frame"));
      if (op === 10) continue;
      frag += payload;
      if (!(b0 & 0x80)) continue;
      const whole = frag;
      frag = "";
      message(whole, t);
      if (done) return;
    }
    buf = p === n ? "" : buf.slice(p);
  });
  return {
    socket,
    close() {
      done = true;
      socket.destroy();
    },
  };
}
