// Reader module for Sluice's WebSocket transport (`GET /v1/ws`, issue 3) — not on this branch yet.
// To add it: implement open(spec, on) with the same contract as sse.mjs on a raw `net` socket:
//   1. write the upgrade request (GET spec.path, Upgrade: websocket, Sec-WebSocket-Key, version 13);
//   2. after the 101, send one masked text frame: {"type":"start", ...spec.start} (targets.mjs puts
//      the generation request in spec.start) — or {"type":"subscribe","stream":…,"offset":"-1"} for a
//      reader of a shared stream (add that to sharedStream("sluice-ws") in targets.mjs);
//   3. parse unmasked server frames (opcode 1; 7/16/64-bit lengths), and for each message
//      {stream, offset, event} call on.onEvent(offset, event.type, JSON-of-event, t) — `due` is
//      found in the event JSON exactly as for SSE; a terminal event type ends the stream (on.onEnd).
// Then set `available = true`: the `sluice-ws` target (targets.mjs) is already in the capacity lists
// of run.mjs and is reported as n/a until then.
export const name = "ws";
export const available = false;

export function open() {
  throw new Error(
    "the WebSocket reader needs Sluice's /v1/ws (issue 3, delivery branch); see bench/lib/readers/ws.mjs",
  );
}
