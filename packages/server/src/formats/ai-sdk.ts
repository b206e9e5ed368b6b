import type { StoredRecord } from "../stores/store.js";
import { type Codec, registerCodec, type StreamInfoLite, sseRecord } from "./codec.js";

/**
 * The Vercel AI SDK UI message stream (what `useChat` reads), as SSE: `data: <part json>`
 * events ended by `data: [DONE]`. Every part matches the `ai` package's `uiMessageChunkSchema`.
 *
 * A pure function of the log (a record and the one before it), so every reader gets the same
 * bytes: a run of text (or reasoning) deltas is one part, opened by the first delta of the run
 * (the previous record is of another type) and closed by the first record after it. Part ids are
 * fixed (`text`, `reasoning`): the SDK frees an id when its part ends. The message id is derived
 * from the stream id. The last event of each record carries `id: <offset>`, the ones before it
 * `id: <offset>.<k>` (see sseRecord), so a resume after a cut between them is exact.
 */

export const TEXT_PART_ID = "text";
export const REASONING_PART_ID = "reasoning";

/** The assistant message id the stream announces (`start.messageId`). */
export function messageIdOf(streamId: string): string {
  return `msg_${streamId}`;
}

function part(obj: Record<string, unknown>): string {
  return JSON.stringify(obj);
}

function encodeRecord(rec: StoredRecord, info: StreamInfoLite, prev: StoredRecord | undefined): string[] {
  const out: string[] = [];
  const type = rec.type;
  // Close the run the previous record was part of, when this record does not continue it.
  if (prev?.type === "text-delta" && type !== "text-delta") out.push(`{"type":"text-end","id":"text"}`);
  if (prev?.type === "reasoning-delta" && type !== "reasoning-delta") {
    out.push(`{"type":"reasoning-end","id":"reasoning"}`);
  }
  switch (type) {
    case "start":
      out.push(part({ type: "start", messageId: messageIdOf(info.id) }), `{"type":"start-step"}`);
      break;
    case "text-delta": {
      const ev = JSON.parse(rec.data) as { delta: string };
      if (prev?.type !== "text-delta") out.push(`{"type":"text-start","id":"text"}`);
      out.push(`{"type":"text-delta","id":"text","delta":${JSON.stringify(ev.delta)}}`);
      break;
    }
    case "reasoning-delta": {
      const ev = JSON.parse(rec.data) as { delta: string };
      if (prev?.type !== "reasoning-delta") out.push(`{"type":"reasoning-start","id":"reasoning"}`);
      out.push(`{"type":"reasoning-delta","id":"reasoning","delta":${JSON.stringify(ev.delta)}}`);
      break;
    }
    case "tool-call-delta": {
      const ev = JSON.parse(rec.data) as { id: string; name?: string; args_delta: string };
      if (ev.name !== undefined)
        out.push(part({ type: "tool-input-start", toolCallId: ev.id, toolName: ev.name }));
      if (ev.args_delta !== "") {
        out.push(part({ type: "tool-input-delta", toolCallId: ev.id, inputTextDelta: ev.args_delta }));
      }
      break;
    }
    case "tool-call": {
      const ev = JSON.parse(rec.data) as { id: string; name: string; args: unknown };
      out.push(
        part({ type: "tool-input-available", toolCallId: ev.id, toolName: ev.name, input: ev.args ?? {} }),
      );
      break;
    }
    case "data": {
      const ev = JSON.parse(rec.data) as { name: string; value: unknown };
      out.push(part({ type: `data-${ev.name}`, data: ev.value ?? null }));
      break;
    }
    case "media": {
      const ev = JSON.parse(rec.data) as { mime: string; data?: string; url?: string };
      const url = ev.url ?? `data:${ev.mime};base64,${ev.data ?? ""}`;
      out.push(part({ type: "file", url, mediaType: ev.mime }));
      break;
    }
    case "finish": {
      const ev = JSON.parse(rec.data) as { reason: string };
      out.push(`{"type":"finish-step"}`, part({ type: "finish", finishReason: ev.reason }), "[DONE]");
      break;
    }
    case "error": {
      const ev = JSON.parse(rec.data) as { code: string; message: string };
      out.push(part({ type: "error", errorText: `${ev.code}: ${ev.message}` }), "[DONE]");
      break;
    }
    case "abort": {
      const ev = JSON.parse(rec.data) as { reason: string };
      out.push(part({ type: "abort", reason: ev.reason }), "[DONE]");
      break;
    }
    default:
      // usage: nothing to say in this format.
      break;
  }
  return out;
}

export const sseAiSdk: Codec = registerCodec({
  key: "sse:ai-sdk",
  index: -1,
  needsPrev: true,
  encode(rec, info, prev) {
    return sseRecord(encodeRecord(rec, info, prev), rec.offset, rec.first);
  },
});
