// Vercel's `resumable-stream` (the AI SDK's answer to resumable streams) with its own Redis.
// POST /rs/:id            starts a generation (fetch from the mock upstream) as a new resumable
//                          stream and streams it back (the primary reader)
// POST /rs/:id?detach=1   starts it with an in-process primary that drains it (for fan-out);
//                          answers 201
// GET  /rs/:id[?resumeAt=N] follows an existing stream through Redis pub/sub
// usage: node resumable.mjs <port> <upstreamPort> <redisUrl>
import http from "node:http";
import { createClient } from "redis";
import { createResumableStreamContext } from "resumable-stream";

const [portS, upstreamPortS, redisUrl] = process.argv.slice(2);
const port = Number(portS);
const upstreamPort = Number(upstreamPortS);
const publisher = createClient({ url: redisUrl });
const subscriber = createClient({ url: redisUrl });
await publisher.connect();
await subscriber.connect();
const ctx = createResumableStreamContext({ waitUntil: null, publisher, subscriber });
const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });

/** The upstream's SSE body as a ReadableStream<string> (what resumable-stream wraps). */
function upstream(body) {
  return new ReadableStream({
    start(controller) {
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
          ur.setEncoding("utf8");
          // The consumer may have cancelled (its client left): then enqueue/close throw.
          ur.on("data", (c) => {
            try {
              controller.enqueue(c);
            } catch {
              ur.destroy();
            }
          });
          ur.on("end", () => {
            try {
              controller.close();
            } catch {}
          });
          ur.on("error", (e) => controller.error(e));
        },
      );
      up.on("error", (e) => controller.error(e));
      up.end(body);
    },
  });
}

async function pipe(stream, res) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const reader = stream.getReader();
  res.on("close", () => reader.cancel().catch(() => {}));
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    res.write(value);
  }
  res.end();
}

// A bench peer must outlive one broken upstream request (seen once under overload: an
// ECONNRESET from a pooled upstream socket escaped and ended the process mid-run).
process.on("uncaughtException", (err) => {
  console.error(`resumable peer: ${err?.code ?? ""} ${err?.message ?? err}`);
});

const server = http.createServer({ noDelay: true }, (req, res) => {
  const url = new URL(req.url, "http://x");
  const id = url.pathname.split("/")[2];
  const parts = [];
  req.on("data", (c) => parts.push(c));
  req.on("end", async () => {
    try {
      if (req.method === "POST") {
        const body = Buffer.concat(parts);
        const stream = await ctx.createNewResumableStream(id, () => upstream(body));
        if (url.searchParams.get("detach")) {
          const reader = stream.getReader();
          (async () => {
            for (;;) if ((await reader.read()).done) break;
          })().catch(() => {});
          res.writeHead(201).end();
          return;
        }
        await pipe(stream, res);
      } else {
        const resumeAt = url.searchParams.get("resumeAt");
        const stream = await ctx.resumeExistingStream(id, resumeAt ? Number(resumeAt) : undefined);
        if (!stream) {
          res.writeHead(stream === null ? 422 : 404).end("stream is done or unknown");
          return;
        }
        await pipe(stream, res);
      }
    } catch (err) {
      if (!res.headersSent) res.writeHead(500).end(String(err?.message ?? err));
      else res.destroy();
    }
  });
});
server.listen(port, "127.0.0.1", () => process.stdout.write(`resumable-stream peer listening on ${port}\n`));
