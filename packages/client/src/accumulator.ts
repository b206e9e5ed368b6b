import type { SluiceEvent, StreamEvent } from "@sluice/protocol";

export type MessageStatus = "pending" | "streaming" | "completed" | "failed" | "cancelled";

export interface ToolCallState {
  id: string;
  name: string;
  /** The arguments' JSON text as streamed so far. */
  argsText: string;
  /** The parsed arguments, once the complete `tool-call` event arrived. */
  args?: unknown;
  complete: boolean;
}

export interface Usage {
  input_tokens: number;
  output_tokens: number;
  reasoning_tokens?: number;
  total_tokens?: number;
}

/** The message a stream builds, as of the last event applied. */
export interface Message {
  streamId?: string;
  model?: string;
  text: string;
  reasoning: string;
  toolCalls: ToolCallState[];
  data: { name: string; value: unknown }[];
  usage?: Usage;
  status: MessageStatus;
  finishReason?: string;
  error?: { code: string; message: string; retryable: boolean };
  abort?: { reason: string; by: string };
  /** Offset of the last event applied: resume from here. */
  offset: string;
  /** Content deltas seen (text, reasoning and tool-argument pieces). */
  deltas: number;
}

export function emptyMessage(): Message {
  return { text: "", reasoning: "", toolCalls: [], data: [], status: "pending", offset: "-1", deltas: 0 };
}

/**
 * Folds stream events into a Message. Each `apply` returns a new object (cheap shallow
 * copies, so React sees a change); an event at or before the last applied offset is
 * ignored, so replays after a reconnect never duplicate text.
 */
export class MessageAccumulator {
  private m: Message;

  constructor(initial: Message = emptyMessage()) {
    this.m = initial;
  }

  get message(): Message {
    return this.m;
  }

  apply(se: StreamEvent): Message {
    if (/^\d/.test(this.m.offset) && se.offset <= this.m.offset) return this.m;
    this.m = reduce({ ...this.m, offset: se.offset }, se.event);
    return this.m;
  }

  reset(): void {
    this.m = emptyMessage();
  }
}

function reduce(m: Message, ev: SluiceEvent): Message {
  switch (ev.type) {
    case "start": {
      const sid = ev.metadata?.stream_id;
      return {
        ...m,
        model: ev.model,
        status: "streaming",
        ...(typeof sid === "string" ? { streamId: sid } : {}),
      };
    }
    case "text-delta":
      return { ...m, status: "streaming", text: m.text + ev.delta, deltas: m.deltas + 1 };
    case "reasoning-delta":
      return { ...m, status: "streaming", reasoning: m.reasoning + ev.delta, deltas: m.deltas + 1 };
    case "tool-call-delta": {
      const calls = m.toolCalls.slice();
      const i = calls.findIndex((c) => c.id === ev.id);
      if (i === -1) {
        calls.push({ id: ev.id, name: ev.name ?? "", argsText: ev.args_delta, complete: false });
      } else {
        const c = calls[i] as ToolCallState;
        calls[i] = { ...c, name: c.name || ev.name || "", argsText: c.argsText + ev.args_delta };
      }
      return { ...m, status: "streaming", toolCalls: calls, deltas: m.deltas + 1 };
    }
    case "tool-call": {
      const calls = m.toolCalls.slice();
      const i = calls.findIndex((c) => c.id === ev.id);
      const done: ToolCallState = {
        id: ev.id,
        name: ev.name,
        argsText: i === -1 ? JSON.stringify(ev.args) : (calls[i] as ToolCallState).argsText,
        args: ev.args,
        complete: true,
      };
      if (i === -1) calls.push(done);
      else calls[i] = done;
      return { ...m, toolCalls: calls };
    }
    case "data":
      return { ...m, data: [...m.data, { name: ev.name, value: ev.value }] };
    case "media":
      return m;
    case "usage": {
      const usage: Usage = { input_tokens: ev.input_tokens, output_tokens: ev.output_tokens };
      if (ev.reasoning_tokens !== undefined) usage.reasoning_tokens = ev.reasoning_tokens;
      if (ev.total_tokens !== undefined) usage.total_tokens = ev.total_tokens;
      return { ...m, usage };
    }
    case "finish":
      return { ...m, status: "completed", finishReason: ev.reason };
    case "error":
      return {
        ...m,
        status: "failed",
        error: { code: ev.code, message: ev.message, retryable: ev.retryable },
      };
    case "abort":
      return { ...m, status: "cancelled", abort: { reason: ev.reason, by: ev.by } };
    default:
      return m;
  }
}
