// The runtime's ceiling: a plain node:http SSE relay of the mock upstream. Each client POST is
// forwarded upstream and the upstream's SSE bytes are written to the client as they arrive.
// Closing the client connection aborts the upstream request. No framework, no parsing.
// usage: node relay.mjs <port> <upstreamPort>
import http from "node:http";

const [port, upstreamPort] = process.argv.slice(2).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });

const server = http.createServer({ noDelay: true }, (req, res) => {
  const parts = [];
  req.on("data", (c) => parts.push(c));
  req.on("end", () => {
    const up = http.request(
      {
        host: "127.0.0.1",
        port: upstreamPort,
        path: "/v1/chat/completions",
        method: "POST",
        headers: { "content-type": "application/json" },
        agent,
      },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, {
          "content-type": ur.headers["content-type"] ?? "text/event-stream",
          "cache-control": "no-cache",
        });
        res.flushHeaders();
        ur.on("data", (c) => res.write(c));
        ur.on("end", () => res.end());
        ur.on("error", () => res.destroy());
      },
    );
    up.on("error", () => res.destroy());
    res.on("close", () => {
      if (!res.writableEnded) up.destroy();
    });
    up.end(Buffer.concat(parts));
  });
});
server.listen(port, "127.0.0.1", () => process.stdout.write(`relay listening on ${port}\n`));
