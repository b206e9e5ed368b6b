import { ERROR_CODES, type ErrorCode } from "@sluice/protocol";
import type { StoredRecord } from "../stores/store.js";
import { type Codec, registerCodec, type StreamInfoLite, sseRecord } from "./codec.js";

/**
 * The OpenAI Chat Completions chunk format (`chat.completion.chunk`), as SSE. Each record
 * becomes zero or more `data:` events; the last event of a record carries `id: <offset>` so
 * `Last-Event-ID` resumes after the last whole record a client saw.
 *
 * A pure function of the log (a record and the one before it): the chunk id is derived from
 * the stream id, `created` from the stream's creation time, the role rides on the `start`
 * record, `tool_calls` are numbered by the event's `index` (set by the runner), and the usage
 * chunk is emitted with the `finish` record from the `usage` record just before it (the runner
 * always writes usage right before the terminal event).
 *
 * Two variants: `sse:openai` (no usage) and `sse:openai-usage` (what
 * `stream_options.include_usage: true` asks for: `"usage": null` on every chunk and one
 * usage chunk with `choices: []` before `[DONE]`).
 */

const FINISH: Record<string, string> = {
  stop: "stop",
  length: "length",
  "tool-calls": "tool_calls",
  "content-filter": "content_filter",
};

/** The `{"error": {...}}` body OpenAI clients understand, for a Sluice error code. */
export function openAIErrorBody(code: string, message: string, param: string | null = null) {
  return { error: { message, type: openAIErrorType(code), param, code } };
}

export function openAIErrorType(code: string): string {
  if (code === "capacity_exceeded") return "rate_limit_error";
  if (code === "cancelled") return "cancelled";
  const entry = ERROR_CODES[code as ErrorCode];
  if (entry && entry.status < 500) return "invalid_request_error";
  return "server_error";
}

const heads = new WeakMap<StreamInfoLite, string>();

/** `{"id":…,"object":"chat.completion.chunk","created":…,"model":…` — computed once per stream tail. */
function head(info: StreamInfoLite): string {
  let h = heads.get(info);
  if (h === undefined) {
    const created = Math.floor(Date.parse(info.created_at) / 1000) || 0;
    h = `{"id":${JSON.stringify(`chatcmpl-${info.id}`)},"object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(info.model ?? "unknown")}`;
    heads.set(info, h);
  }
  return h;
}

function makeCodec(key: string, includeUsage: boolean): Codec {
  const usageNull = includeUsage ? `,"usage":null` : "";
  // `top`: more top-level fields (`,"system_fingerprint":…`); `logprobs`: the choice's, as JSON.
  const chunk = (info: StreamInfoLite, delta: string, finish: string | null, logprobs = "null", top = "") =>
    `${head(info)}${top},"choices":[{"index":0,"delta":${delta},"logprobs":${logprobs},"finish_reason":${finish === null ? "null" : `"${finish}"`}}]${usageNull}}`;
  const sse = sseRecord;
  return registerCodec({
    key,
    index: -1,
    needsPrev: true,
    encode(rec: StoredRecord, info: StreamInfoLite, prev?: StoredRecord): string {
      switch (rec.type) {
        case "text-delta": {
          const ev = JSON.parse(rec.data) as { delta: string; refusal?: boolean; logprobs?: unknown[] };
          const key = ev.refusal === true ? "refusal" : "content";
          const logprobs =
            ev.logprobs === undefined
              ? "null"
              : ev.refusal === true
                ? `{"content":null,"refusal":${JSON.stringify(ev.logprobs)}}`
                : `{"content":${JSON.stringify(ev.logprobs)},"refusal":null}`;
          return sse([chunk(info, `{"${key}":${JSON.stringify(ev.delta)}}`, null, logprobs)], rec.offset);
        }
        case "reasoning-delta": {
          const ev = JSON.parse(rec.data) as { delta: string };
          return sse([chunk(info, `{"reasoning_content":${JSON.stringify(ev.delta)}}`, null)], rec.offset);
        }
        case "data": {
          // An OpenAI-compatible upstream's audio piece (providers/openai-compatible.ts): given back as it came.
          const ev = JSON.parse(rec.data) as { name: string; value: unknown };
          if (ev.name !== "openai-audio") return "";
          return sse([chunk(info, `{"audio":${JSON.stringify(ev.value ?? null)}}`, null)], rec.offset);
        }
        case "start":
          return sse([chunk(info, `{"role":"assistant","content":"","refusal":null}`, null)], rec.offset);
        case "tool-call-delta": {
          const ev = JSON.parse(rec.data) as {
            id: string;
            name?: string;
            args_delta: string;
            index?: number;
          };
          const index = ev.index ?? 0;
          const fragment =
            ev.name !== undefined
              ? { index, id: ev.id, type: "function", function: { name: ev.name, arguments: ev.args_delta } }
              : { index, function: { arguments: ev.args_delta } };
          return sse([chunk(info, JSON.stringify({ tool_calls: [fragment] }), null)], rec.offset);
        }
        case "finish": {
          const ev = JSON.parse(rec.data) as {
            reason: string;
            system_fingerprint?: string;
            service_tier?: string;
          };
          // What the upstream said about the run rides on the last chunks (OpenAI sends it on all).
          let top = "";
          if (ev.service_tier !== undefined) top += `,"service_tier":${JSON.stringify(ev.service_tier)}`;
          if (ev.system_fingerprint !== undefined)
            top += `,"system_fingerprint":${JSON.stringify(ev.system_fingerprint)}`;
          const events = [chunk(info, "{}", FINISH[ev.reason] ?? "stop", "null", top)];
          if (includeUsage && prev?.type === "usage") {
            const u = JSON.parse(prev.data) as {
              input_tokens: number;
              output_tokens: number;
              reasoning_tokens?: number;
              total_tokens?: number;
            };
            const usage: Record<string, unknown> = {
              prompt_tokens: u.input_tokens,
              completion_tokens: u.output_tokens,
              total_tokens: u.total_tokens ?? u.input_tokens + u.output_tokens,
            };
            if (u.reasoning_tokens !== undefined) {
              usage.completion_tokens_details = { reasoning_tokens: u.reasoning_tokens };
            }
            events.push(`${head(info)}${top},"choices":[],"usage":${JSON.stringify(usage)}}`);
          }
          events.push("[DONE]");
          return sse(events, rec.offset);
        }
        case "error": {
          // Mid-stream error: an `error` object (the official SDK throws on it), and no [DONE].
          const ev = JSON.parse(rec.data) as { code: string; message: string };
          return sse([JSON.stringify(openAIErrorBody(ev.code, ev.message))], rec.offset);
        }
        case "abort": {
          const ev = JSON.parse(rec.data) as { reason: string; by: string };
          const body = openAIErrorBody("cancelled", `the generation was cancelled (${ev.by}: ${ev.reason})`);
          return sse([JSON.stringify(body)], rec.offset);
        }
        default:
          // tool-call (the complete call has no chunk of its own), usage (sent with finish), media.
          return "";
      }
    },
  });
}

export const sseOpenAI: Codec = makeCodec("sse:openai", false);
export const sseOpenAIUsage: Codec = makeCodec("sse:openai-usage", true);
