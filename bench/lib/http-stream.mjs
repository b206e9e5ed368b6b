// A lean HTTP/1.1 client on a raw `net` socket: writes one request, parses the status line and
// headers, de-chunks the body and hands body text (latin1: byte = char, cheap, exact for the ASCII
// the readers look for) to a transport parser. Far cheaper per event than node's http client.
import net from "node:net";

const now = () => performance.timeOrigin + performance.now();

/**
 * spec: {port, host?, localAddress?, method, path, headers?, body?}
 * on: {onHead(status, headers), onBody(text, t), onEnd(), onError(err)}
 * Returns {close(), socket}.
 */
export function openHttp(spec, on) {
  const host = spec.host ?? "127.0.0.1";
  const body = spec.body ?? "";
  let req = `${spec.method ?? "GET"} ${spec.path} HTTP/1.1\r\nHost: ${host}:${spec.port}\r\n`;
  for (const [k, v] of Object.entries(spec.headers ?? {})) req += `${k}: ${v}\r\n`;
  if (body || spec.method === "POST") req += `Content-Length: ${Buffer.byteLength(body)}\r\n`;
  req += "\r\n";
  req += body;
  const socket = net.connect({
    port: spec.port,
    host,
    ...(spec.localAddress ? { localAddress: spec.localAddress } : {}),
  });
  socket.setNoDelay(true);
  socket.setEncoding("latin1");
  let done = false;
  let head = true;
  let buf = "";
  let chunked = false;
  let remaining = -1; // bytes left in the current chunk (chunked) or body (content-length)
  const finish = (err) => {
    if (done) return;
    done = true;
    socket.destroy();
    if (err) on.onError?.(err);
    else on.onEnd?.();
  };
  socket.on("connect", () => socket.write(req, "latin1"));
  socket.on("error", (e) => finish(e));
  socket.on("close", () => finish(head ? new Error("closed before response") : undefined));
  socket.on("data", (data) => {
    const t = now();
    if (head) {
      buf += data;
      const i = buf.indexOf("\r\n\r\n");
      if (i < 0) return;
      const lines = buf.slice(0, i).split("\r\n");
      const status = Number(lines[0].split(" ")[1]);
      const headers = {};
      for (let k = 1; k < lines.length; k++) {
        const c = lines[k].indexOf(":");
        headers[lines[k].slice(0, c).toLowerCase()] = lines[k].slice(c + 1).trim();
      }
      head = false;
      chunked = /chunked/i.test(headers["transfer-encoding"] ?? "");
      if (!chunked && headers["content-length"] !== undefined) remaining = Number(headers["content-length"]);
      data = buf.slice(i + 4);
      buf = "";
      on.onHead?.(status, headers);
      if (status !== 200) {
        finish(new Error(`HTTP ${status}`));
        return;
      }
      if (remaining === 0) return finish();
      if (!data) return;
    }
    if (!chunked) {
      on.onBody(data, t);
      if (remaining >= 0) {
        remaining -= data.length;
        if (remaining <= 0) finish();
      }
      return;
    }
    // De-chunk: <hex size>\r\n<bytes>\r\n ... 0\r\n\r\n
    buf += data;
    let out = "";
    for (;;) {
      if (remaining > 0) {
        const take = Math.min(remaining, buf.length);
        out += buf.slice(0, take);
        buf = buf.slice(take);
        remaining -= take;
        if (remaining > 0) break;
        remaining = -2; // expect the CRLF after the chunk
      }
      if (remaining === -2) {
        if (buf.length < 2) break;
        buf = buf.slice(2);
        remaining = -1;
      }
      const nl = buf.indexOf("\r\n");
      if (nl < 0) break;
      const size = Number.parseInt(buf.slice(0, nl), 16);
      buf = buf.slice(nl + 2);
      if (size === 0) {
        if (out) on.onBody(out, t);
        return finish();
      }
      remaining = size;
    }
    if (out) on.onBody(out, t);
  });
  return {
    socket,
    close() {
      done = true;
      socket.destroy();
    },
  };
}

/** The number after `due":` in an event's data (Sluice's `due`, mock-upstream's `sluice_due`). */
export function dueOf(data) {
  const i = data.indexOf('due":');
  if (i < 0) return -1;
  let n = 0;
  for (let k = i + 5; k < data.length; k++) {
    const c = data.charCodeAt(k) - 48;
    if (c < 0 || c > 9) break;
    n = n * 10 + c;
  }
  return n;
}
