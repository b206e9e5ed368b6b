import { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";

/** True for the one upgrade Sluice serves; `h2c` and any other are plain requests to us. */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  return (req.headers.upgrade ?? "").trim().toLowerCase() === "websocket";
}

/**
 * Serves an `Upgrade` request we do not upgrade (e.g. `Upgrade: h2c`, which curl sends) as the
 * plain HTTP/1.1 request it also is. Node hands every Upgrade request to the `upgrade` event
 * once anyone listens to it, with the socket detached from the HTTP parser, so the request is
 * rebuilt here: the body (Content-Length only) is fed from `head` and the socket, the answer is
 * written by a ServerResponse on the socket, and the connection closes after it.
 * Returns false when it cannot (a chunked body): the caller refuses the request.
 */
export function serveAsPlainRequest(
  emitRequest: (req: IncomingMessage, res: ServerResponse) => void,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  timeoutMs: number,
): boolean {
  const te = req.headers["transfer-encoding"];
  const rawLength = req.headers["content-length"] ?? "0";
  if (te !== undefined || !/^\d{1,15}$/.test(rawLength)) return false;
  let remaining = Number(rawLength);
  const msg = new IncomingMessage(socket as Socket);
  msg.method = req.method as string;
  msg.url = req.url as string;
  msg.httpVersionMajor = req.httpVersionMajor;
  msg.httpVersionMinor = req.httpVersionMinor;
  msg.httpVersion = req.httpVersion;
  msg.headers = req.headers;
  msg.rawHeaders = req.rawHeaders;
  const feed = (chunk: Buffer) => {
    if (remaining === 0) return;
    const take = chunk.subarray(0, remaining);
    remaining -= take.length;
    msg.push(take);
    if (remaining === 0) {
      socket.off("data", feed);
      msg.complete = true;
      msg.push(null);
    }
  };
  if (remaining === 0) {
    msg.complete = true;
    msg.push(null);
  } else {
    if (head.length > 0) feed(head);
    if (remaining > 0) socket.on("data", feed);
  }
  // The server's own request timeout no longer covers a detached socket.
  const s = socket as Socket;
  s.setTimeout?.(timeoutMs, () => socket.destroy());
  const res = new ServerResponse(msg);
  res.shouldKeepAlive = false;
  res.assignSocket(s);
  res.on("finish", () => {
    res.detachSocket(s);
    socket.end();
  });
  emitRequest(msg, res);
  return true;
}
