// What each system under test is, and how a reader talks to it. Requests are plain data (they cross
// the IPC boundary to the load generator). A target that cannot do something says why (`na`).
export const MESSAGES = [{ role: "user", content: "Explain how a durable stream log works" }];

export const TARGETS = {
  upstream: {
    label: "mock-upstream direct",
    kind: "reference",
    note: "a client reading `sluice mock-upstream` directly: the zero of the overhead scenario",
  },
  relay: {
    label: "node:http relay",
    kind: "peer",
    note: "plain node:http SSE relay of the mock upstream (~50 lines)",
  },
  "sluice-up": {
    label: "Sluice (via mock-upstream)",
    kind: "sluice",
    note: "Sluice with an openai-compatible route to mock-upstream: upstream fetch + log + delivery",
  },
  "sluice-demo": {
    label: "Sluice (demo in-process)",
    kind: "sluice",
    note: "Sluice's built-in demo model (no upstream hop): log + delivery only",
  },
  "sluice-ws": {
    label: "Sluice WebSocket (demo)",
    kind: "sluice",
    transport: "ws",
    note: "Sluice's demo model read over GET /v1/ws (one socket per stream here)",
  },
  "sluice-redis": {
    label: "Sluice on Redis, 1 node (demo)",
    kind: "sluice",
    note: "one Sluice node with store redis:// (its own redis-server): generation and readers on that node",
  },
  "sluice-redis-x": {
    label: "Sluice on Redis, 2 nodes: start on A, read on B",
    kind: "sluice",
    note: "two Sluice nodes on one redis-server: each generation started on node A, its reader on node B",
  },
  "sluice-redis-2": {
    label: "Sluice on Redis, 2 nodes: half the generations on each",
    kind: "sluice",
    note: "two Sluice nodes on one redis-server, node A on core 0 (with redis-server), node B on core 1 (with the load generator): even readers start and read their generation on A, odd ones on B",
  },
  "sluice-w1": {
    label: "Sluice --workers 1 (demo)",
    kind: "sluice",
    note: "sluice serve --workers 1: one worker behind the primary, its streams in the shared SQLite file (what --workers uses for the default memory store)",
  },
  "sluice-w2": {
    label: "Sluice --workers 2 (demo)",
    kind: "sluice",
    note: "sluice serve --workers 2: two workers on one port (node:cluster round-robin), one shared SQLite file; each generation read on the connection that started it (its owner)",
  },
  "sluice-w2-x": {
    label: "Sluice --workers 2: start, then read on a new connection",
    kind: "sluice",
    note: "as sluice-w2, but each generation is started by one request and read by another connection: about half the readers are on the other worker (notices relayed by the primary)",
  },
  resumable: {
    label: "resumable-stream + Redis",
    kind: "peer",
    note: "Vercel resumable-stream 2.2.13 over its own redis-server",
  },
  "resumable-r": {
    label: "resumable-stream, read via Redis",
    kind: "peer",
    note: "the same, each stream started detached and read back with resumeExistingStream (through Redis pub/sub), as a reader after a reload or a second tab is",
  },
  durable: {
    label: "durable-streams server",
    kind: "peer",
    note: "@durable-streams/server 0.3.7 (in-memory) + an in-process producer appending each chunk",
  },
  portkey: {
    label: "Portkey gateway",
    kind: "peer",
    note: "@portkey-ai/gateway 1.15.2 (node, @hono/node-server 1.14.1), provider openai + custom host",
  },
};

export function demoOpts(o) {
  return { jitter: 0, stamp: true, ...o };
}

function chatBody(demo) {
  return JSON.stringify({ model: "demo", messages: MESSAGES, stream: true, demo });
}

function sluiceBody(model, demo, extra = {}) {
  return JSON.stringify({ model, messages: MESSAGES, demo, ...extra });
}

const SSE = { accept: "text/event-stream" };

/** A reader that starts its own generation and reads it live; `i` = the reader's index in its run. */
export function liveSpec(target, ports, id, demo, i = 0) {
  switch (target) {
    case "upstream":
      return {
        port: ports.upstream,
        method: "POST",
        path: "/v1/chat/completions",
        headers: { "content-type": "application/json", ...SSE },
        body: chatBody(demo),
      };
    case "relay":
      return {
        port: ports.relay,
        method: "POST",
        path: "/",
        headers: { "content-type": "application/json" },
        body: chatBody(demo),
      };
    case "sluice-up":
    case "sluice-demo":
      return {
        port: ports.sluice,
        method: "POST",
        path: "/v1/streams",
        headers: { "content-type": "application/json", ...SSE },
        body: sluiceBody(target === "sluice-up" ? "up" : "demo", demo, { on_disconnect: "cancel" }),
      };
    case "sluice-redis":
      return {
        port: ports.sluiceA,
        method: "POST",
        path: "/v1/streams",
        headers: { "content-type": "application/json", ...SSE },
        body: sluiceBody("demo", demo, { on_disconnect: "cancel" }),
      };
    case "sluice-redis-2":
      // Half the generations on each node, each read on the node that runs it.
      return {
        port: i % 2 === 0 ? ports.sluiceA : ports.sluiceB,
        method: "POST",
        path: "/v1/streams",
        headers: { "content-type": "application/json", ...SSE },
        body: sluiceBody("demo", demo, { on_disconnect: "cancel" }),
      };
    case "sluice-w1":
    case "sluice-w2":
      return {
        port: target === "sluice-w1" ? ports.sluiceW1 : ports.sluiceW2,
        method: "POST",
        path: "/v1/streams",
        headers: { "content-type": "application/json", ...SSE },
        body: sluiceBody("demo", demo, { on_disconnect: "cancel" }),
      };
    case "sluice-w2-x":
      return {
        pre: {
          port: ports.sluiceW2,
          method: "POST",
          path: "/v1/streams",
          body: sluiceBody("demo", demo),
          idFromJson: true,
        },
        port: ports.sluiceW2,
        method: "GET",
        path: "/v1/streams/{id}?offset=-1",
        headers: SSE,
      };
    case "sluice-redis-x":
      // The loadgen POSTs the generation to node A (JSON answer: its id), then reads it from node B.
      return {
        pre: {
          port: ports.sluiceA,
          method: "POST",
          path: "/v1/streams",
          body: sluiceBody("demo", demo),
          idFromJson: true,
        },
        port: ports.sluiceB,
        method: "GET",
        path: "/v1/streams/{id}?offset=-1",
        headers: SSE,
      };
    case "sluice-ws":
      return {
        port: ports.sluice,
        path: "/v1/ws",
        start: { model: "demo", messages: MESSAGES, demo, on_disconnect: "cancel" },
      };
    case "resumable":
      return {
        port: ports.resumable,
        method: "POST",
        path: `/rs/${id}`,
        headers: { "content-type": "application/json" },
        body: chatBody(demo),
      };
    case "resumable-r":
      // Started detached (an in-process primary drains it), then read through Redis.
      return {
        pre: {
          port: ports.resumable,
          method: "POST",
          path: `/rs/${id}?detach=1`,
          headers: { "content-type": "application/json" },
          body: chatBody(demo),
        },
        port: ports.resumable,
        method: "GET",
        path: `/rs/${id}`,
        headers: {},
      };
    case "durable":
      return {
        pre: { port: ports.durableControl, method: "POST", path: `/start?id=${id}`, body: chatBody(demo) },
        port: ports.durable,
        method: "GET",
        path: `/s/${id}?offset=-1&live=sse`,
        headers: {},
      };
    case "portkey":
      return {
        port: ports.portkey,
        method: "POST",
        path: "/v1/chat/completions",
        headers: {
          "content-type": "application/json",
          authorization: "Bearer bench",
          "x-portkey-provider": "openai",
          "x-portkey-custom-host": `http://127.0.0.1:${ports.upstream}/v1`,
        },
        body: chatBody(demo),
      };
  }
  throw new Error(`unknown target ${target}`);
}

/**
 * One generation read by many: `start` is a request the orchestrator makes once (with fetch);
 * `reader(streamId)` is each reader's request. Returns {na} where the target has no shared stream.
 */
export function sharedStream(target, ports, id, demo) {
  switch (target) {
    case "sluice-up":
    case "sluice-demo":
      return {
        start: {
          url: `http://127.0.0.1:${ports.sluice}/v1/streams`,
          body: sluiceBody(target === "sluice-up" ? "up" : "demo", demo),
          idFrom: "json",
        },
        reader: (sid, offset = "-1") => ({
          port: ports.sluice,
          method: "GET",
          path: `/v1/streams/${sid}?offset=${offset}`,
          headers: SSE,
        }),
        resume: "last-event-id",
      };
    case "sluice-redis":
    case "sluice-redis-x":
      return {
        start: {
          url: `http://127.0.0.1:${ports.sluiceA}/v1/streams`,
          body: sluiceBody("demo", demo),
          idFrom: "json",
        },
        reader: (sid, offset = "-1") => ({
          port: target === "sluice-redis" ? ports.sluiceA : ports.sluiceB,
          method: "GET",
          path: `/v1/streams/${sid}?offset=${offset}`,
          headers: SSE,
        }),
        resume: "last-event-id",
      };
    case "sluice-w1":
    case "sluice-w2": {
      // Started by one request (on whichever worker takes it); readers connect to the primary's
      // port and land on any worker (node:cluster round-robin): on 2 workers about half follow
      // a generation another worker owns.
      const port = target === "sluice-w1" ? ports.sluiceW1 : ports.sluiceW2;
      return {
        start: { url: `http://127.0.0.1:${port}/v1/streams`, body: sluiceBody("demo", demo), idFrom: "json" },
        reader: (sid, offset = "-1") => ({
          port,
          method: "GET",
          path: `/v1/streams/${sid}?offset=${offset}`,
          headers: SSE,
        }),
        resume: "last-event-id",
      };
    }
    case "durable":
      return {
        start: {
          url: `http://127.0.0.1:${ports.durableControl}/start?id=${id}`,
          body: chatBody(demo),
          idFrom: id,
        },
        reader: (sid, offset = "-1") => ({
          port: ports.durable,
          method: "GET",
          path: `/s/${sid}?offset=${offset}&live=sse`,
          headers: {},
        }),
        resume: "durable-offset",
      };
    case "resumable":
      return {
        start: {
          url: `http://127.0.0.1:${ports.resumable}/rs/${id}?detach=1`,
          body: chatBody(demo),
          idFrom: id,
        },
        reader: (sid) => ({ port: ports.resumable, method: "GET", path: `/rs/${sid}`, headers: {} }),
        resume: "none",
      };
    case "relay":
      return { na: "a relay has no shared stream: every reader is its own upstream request" };
    case "portkey":
      return { na: "a gateway has no shared stream: every reader is its own upstream request" };
    case "upstream":
      return { na: "reference only" };
    case "sluice-ws":
      // One generation started over HTTP; each reader is its own socket with one `subscribe`.
      return {
        start: {
          url: `http://127.0.0.1:${ports.sluice}/v1/streams`,
          body: sluiceBody("demo", demo),
          idFrom: "json",
        },
        reader: (sid, offset = "-1") => ({
          port: ports.sluice,
          path: "/v1/ws",
          subscribe: { stream: sid, offset },
        }),
        resume: "none",
      };
  }
  throw new Error(`unknown target ${target}`);
}
