import type { Server } from "node:http";
import type { Http2SecureServer, ServerHttp2Session } from "node:http2";
import type { Socket } from "node:net";

/** What shutdown needs from the listening server's connections, whatever the protocol. */
export interface ConnectionTracker {
  /** HTTP/2: GOAWAY on every session (no new streams; open ones run to their end). */
  goAway(): void;
  /** Ends every connection now: HTTP/1.1, HTTP/2 sessions, upgraded sockets alike. */
  destroyAll(): void;
}

/**
 * Tracks every socket and HTTP/2 session of a server. Node's `closeAllConnections` exists only
 * on HTTP/1 servers and skips upgraded sockets, and an HTTP/2 server's `close()` waits for
 * every session to end by itself, so shutdown keeps its own list.
 */
export function trackConnections(server: Server | Http2SecureServer): ConnectionTracker {
  const sockets = new Set<Socket>();
  const sessions = new Set<ServerHttp2Session>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  server.on("session", (session: ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  return {
    goAway() {
      for (const s of sessions) if (!s.closed && !s.destroyed) s.close();
    },
    destroyAll() {
      for (const s of sessions) s.destroy();
      for (const s of sockets) s.destroy();
    },
  };
}
