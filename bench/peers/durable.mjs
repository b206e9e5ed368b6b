// The Durable Streams reference server (@durable-streams/server, in-memory), fed by a producer in
// the same process (as Sluice runs its generations in-process): POST /start?id=X on the control
// port creates stream /s/X (application/json), answers 201, then reads the mock upstream and appends
// every chunk with its own HTTP POST, closing the stream at the end (Stream-Closed: true).
// Readers use the protocol directly: GET /s/X?offset=-1&live=sse on the server port.
// usage: node durable.mjs <port> <controlPort> <upstreamPort>
import http from "node:http";
import { DurableStreamTestServer } from "@durable-streams/server";

const [port, controlPort, upstreamPort] = process.argv.slice(2).map(Number);
const server = new DurableStreamTestServer({ port, host: "127.0.0.1", compression: false });
await server.start();
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function request(method, path, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: "127.0.0.1", port, path, method, headers, agent }, (res) => {
      res.resume();
      res.on("end", () =>
        res.statusCode < 300
          ? resolve(res.statusCode)
          : reject(new Error(`${method} ${path}: ${res.statusCode}`)),
      );
    });
    r.on("error", reject);
    r.end(body);
  });
}

async function produce(id, body) {
  const path = `/s/${id}`;
  const up = await new Promise((resolve, reject) => {
    const r = http.request(
      {
        host: "127.0.0.1",
        port: upstreamPort,
        path: "/v1/chat/completions",
        method: "POST",
        headers: { "content-type": "application/json" },
      },
      resolve,
    );
    r.on("error", reject);
    r.end(body);
  });
  up.setEncoding("utf8");
  let buf = "";
  let chain = Promise.resolve();
  for await (const chunk of up) {
    buf += chunk;
    let i = buf.indexOf("\n\n");
    while (i >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      i = buf.indexOf("\n\n");
      if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
      const data = ev.slice(6);
      // Appends in order, one POST per token (what a per-token producer does).
      chain = chain.then(() => request("POST", path, data, { "content-type": "application/json" }));
    }
  }
  await chain;
  await request("POST", path, undefined, { "content-type": "application/json", "stream-closed": "true" });
}

const control = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  const parts = [];
  req.on("data", (c) => parts.push(c));
  req.on("end", async () => {
    const id = url.searchParams.get("id");
    try {
      await request("PUT", `/s/${id}`, undefined, { "content-type": "application/json" });
      res.writeHead(201).end();
      produce(id, Buffer.concat(parts)).catch((e) => process.stderr.write(`producer ${id}: ${e.message}\n`));
    } catch (e) {
      res.writeHead(500).end(String(e.message));
    }
  });
});
control.listen(controlPort, "127.0.0.1", () =>
  process.stdout.write(`durable-streams listening on ${port} (control ${controlPort})\n`),
);
