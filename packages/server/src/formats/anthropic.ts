import { ERROR_CODES, type ErrorCode, subOffset } from "@sluice/protocol";
import type { StoredRecord } from "../stores/store.js";
import { type Codec, registerCodec, type StreamInfoLite } from "./codec.js";

/**
 * The Anthropic Messages stream (what `@anthropic-ai/sdk` reads), as SSE: every event has its
 * `event: <type>` line (the SDK ignores data without one) and `data: {"type": <type>, …}`.
 *
 * A pure function of the log (a record and the one before it), so every reader gets the same
 * bytes wherever it starts. Anthropic clients find a delta's block by its `index` (the SDK
 * applies a delta to `content[index]` and reports the last block as the one streaming), and
 * which block a delta belongs to cannot be worked out from one record and the one before it
 * (was there thinking before this text?): the runner numbers the blocks (the events' `block`,
 * absent when 0). A run of text deltas is a text block, a run of reasoning deltas a thinking
 * block (opened by the first delta of the run, closed by the first record after it), each tool
 * call a tool_use block (opened by its first delta, closed by its complete `tool-call`).
 *
 * The last event of each record carries `id: <offset>`, the ones before it `id: <offset>.<k>`
 * (as codec.ts sseRecord), so a resume after a cut between them is exact.
 */

/** The message id the stream announces (`message_start.message.id`). */
export function anthropicMessageId(streamId: string): string {
  return `msg_${streamId}`;
}

const STOP_REASON: Record<string, string> = {
  stop: "end_turn",
  length: "max_tokens",
  "tool-calls": "tool_use",
  "content-filter": "refusal",
};

export function anthropicStopReason(reason: string): string {
  return STOP_REASON[reason] ?? "end_turn";
}

/** Anthropic's error `type` for a Sluice error code (by its HTTP status, as Anthropic's are). */
export function anthropicErrorType(code: string): string {
  const status = ERROR_CODES[code as ErrorCode]?.status ?? 500;
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
    case 410:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
      return "overloaded_error";
    case 504:
      return "timeout_error";
    default:
      return status < 500 ? "invalid_request_error" : "api_error";
  }
}

/** `{"type":"error","error":{"type","message"}}`; `code` is Sluice's stable code, for programs. */
export function anthropicErrorBody(code: string, message: string) {
  return { type: "error", error: { type: anthropicErrorType(code), message, code } };
}

/** The `message` object of `message_start` (and the base of the non-streaming answer). */
export function messageShell(info: StreamInfoLite): Record<string, unknown> {
  return {
    id: anthropicMessageId(info.id),
    type: "message",
    role: "assistant",
    model: info.model ?? "unknown",
    content: [],
    stop_reason: null,
    stop_sequence: null,
    usage: { input_tokens: 0, output_tokens: 0 },
  };
}

type Ev = [name: string, json: string];

const ev = (obj: { type: string } & Record<string, unknown>): Ev => [obj.type, JSON.stringify(obj)];

function usageOf(prev: StoredRecord | undefined): Record<string, number> {
  if (prev?.type !== "usage") return { output_tokens: 0 };
  const u = JSON.parse(prev.data) as { input_tokens: number; output_tokens: number };
  return { input_tokens: u.input_tokens, output_tokens: u.output_tokens };
}

const blockOf = (data: string): number => (JSON.parse(data) as { block?: number }).block ?? 0;

const isRun = (type: string | undefined) => type === "text-delta" || type === "reasoning-delta";

function encodeRecord(rec: StoredRecord, info: StreamInfoLite, prev: StoredRecord | undefined): Ev[] {
  const out: Ev[] = [];
  const type = rec.type;
  // Close the text or thinking block the previous record was part of, unless this one continues it.
  if (prev && isRun(prev.type) && prev.type !== type) {
    out.push(ev({ type: "content_block_stop", index: blockOf(prev.data) }));
  }
  switch (type) {
    case "start":
      out.push(ev({ type: "message_start", message: messageShell(info) }));
      break;
    case "text-delta": {
      const e = JSON.parse(rec.data) as { delta: string; block?: number };
      const index = e.block ?? 0;
      if (prev?.type !== type) {
        out.push(ev({ type: "content_block_start", index, content_block: { type: "text", text: "" } }));
      }
      out.push(ev({ type: "content_block_delta", index, delta: { type: "text_delta", text: e.delta } }));
      break;
    }
    case "reasoning-delta": {
      const e = JSON.parse(rec.data) as { delta: string; block?: number };
      const index = e.block ?? 0;
      if (prev?.type !== type) {
        out.push(
          ev({
            type: "content_block_start",
            index,
            content_block: { type: "thinking", thinking: "", signature: "" },
          }),
        );
      }
      out.push(
        ev({ type: "content_block_delta", index, delta: { type: "thinking_delta", thinking: e.delta } }),
      );
      break;
    }
    case "tool-call-delta": {
      const e = JSON.parse(rec.data) as { id: string; name?: string; args_delta: string; block?: number };
      const index = e.block ?? 0;
      if (e.name !== undefined) {
        out.push(
          ev({
            type: "content_block_start",
            index,
            content_block: { type: "tool_use", id: e.id, name: e.name, input: {} },
          }),
        );
      }
      if (e.args_delta !== "") {
        out.push(
          ev({
            type: "content_block_delta",
            index,
            delta: { type: "input_json_delta", partial_json: e.args_delta },
          }),
        );
      }
      break;
    }
    case "tool-call": {
      const e = JSON.parse(rec.data) as { id: string; name: string; args: unknown; block?: number };
      const index = e.block ?? 0;
      // A streamed call was opened by its deltas (providers write all of a call's deltas before
      // the complete calls); a call that comes whole is opened and filled here.
      const streamed = prev?.type === "tool-call-delta" || prev?.type === "tool-call";
      if (!streamed) {
        out.push(
          ev({
            type: "content_block_start",
            index,
            content_block: { type: "tool_use", id: e.id, name: e.name, input: {} },
          }),
          ev({
            type: "content_block_delta",
            index,
            delta: { type: "input_json_delta", partial_json: JSON.stringify(e.args ?? {}) },
          }),
        );
      }
      out.push(ev({ type: "content_block_stop", index }));
      break;
    }
    case "finish": {
      const e = JSON.parse(rec.data) as { reason: string };
      out.push(
        ev({
          type: "message_delta",
          delta: { stop_reason: anthropicStopReason(e.reason), stop_sequence: null },
          usage: usageOf(prev),
        }),
        ev({ type: "message_stop" }),
      );
      break;
    }
    case "error": {
      const e = JSON.parse(rec.data) as { code: string; message: string };
      out.push(["error", JSON.stringify(anthropicErrorBody(e.code, e.message))]);
      break;
    }
    case "abort": {
      const e = JSON.parse(rec.data) as { reason: string; by: string };
      const body = anthropicErrorBody("cancelled", `the generation was cancelled (${e.by}: ${e.reason})`);
      out.push(["error", JSON.stringify(body)]);
      break;
    }
    default:
      // usage (sent with finish), data, media: nothing in this format.
      break;
  }
  return out;
}

/** Named SSE events; ids as codec.ts sseRecord (`<offset>.<k>` before the last, `<first>.<k>` when folded). */
function sseNamed(events: Ev[], offset: string, first: string = offset): string {
  let s = "";
  const n = events.length;
  for (let i = 0; i < n; i++) {
    const [name, json] = events[i] as Ev;
    s += `id: ${i === n - 1 ? offset : subOffset(first, i + 1)}\nevent: ${name}\ndata: ${json}\n\n`;
  }
  return s;
}

export const sseAnthropic: Codec = registerCodec({
  key: "sse:anthropic",
  index: -1,
  needsPrev: true,
  encode(rec, info, prev) {
    return sseNamed(encodeRecord(rec, info, prev), rec.offset, rec.first);
  },
});

/** Anthropic's heartbeat: a `ping` event (clients ignore it). */
export const ANTHROPIC_PING = 'event: ping\ndata: {"type":"ping"}\n\n';
