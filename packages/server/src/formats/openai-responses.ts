import { formatOffset, subOffset } from "@sluice/protocol";
import type { Sink, WriteMark } from "../core/hub.js";
import type { StoredRecord, StreamInfo } from "../stores/store.js";
import { type Codec, registerCodec } from "./codec.js";

/**
 * The OpenAI Responses stream (what `openai.responses.create({stream: true})` and
 * `@ai-sdk/openai`'s default model read), as SSE: `event: <type>` and
 * `data: {"type": <type>, "sequence_number": n, …}`.
 *
 * Unlike the other formats, this one is not a function of a record and the one before it: every
 * event carries a `sequence_number` counted from 0 over the whole response, and the `*.done`
 * events and `response.completed` carry everything streamed so far (the item's whole text, the
 * response's whole output). So it is a fold over the log from its first record: ResponsesEncoder
 * turns records into events in order, keeping the response built so far. Every reader runs the
 * fold from record 1 (a resume reads the log from the start and sends only what comes after its
 * position), so the numbers and the bytes are the same for every reader, on any node, after a
 * restart: they depend only on the log (and the stream's creation metadata). The cost is one
 * JSON parse per record per reader (not the encode-once sharing of the other formats) and the
 * response's output held per reader — bounded by the stream's size limit.
 *
 * Records → events:
 * - `start` → `response.created`, `response.in_progress`
 * - a run of `text-delta` → a `message` item: `output_item.added`, `content_part.added`,
 *   `output_text.delta`…, and when the run ends `output_text.done`, `content_part.done`,
 *   `output_item.done`
 * - a run of `reasoning-delta` → a `reasoning` item with one summary part
 *   (`reasoning_summary_part.added`, `reasoning_summary_text.delta`…, `…text.done`, `…part.done`)
 * - a tool call → a `function_call` item (`output_item.added` at its first delta,
 *   `function_call_arguments.delta`…, `function_call_arguments.done` and `output_item.done` at the
 *   complete `tool-call`)
 * - `finish` → `response.completed` (stop, tool-calls) or `response.incomplete` (length →
 *   `max_output_tokens`, content-filter → `content_filter`), with `usage` from the record before
 * - `error` → `response.failed` (status `failed`, `error: {code, message}`)
 * - `abort` → `response.failed` with status `cancelled` (the Responses API has no cancelled
 *   event; the status is what `responses.retrieve` reports)
 *
 * SSE ids: the last event of a record carries `id: <offset>`, the ones before it
 * `id: <offset>.<k>` (as every Sluice SSE format), so `?format=openai-responses` resumes with
 * Last-Event-ID like the others; `/v1/responses/{id}?stream=true&starting_after=N` resumes by
 * sequence number.
 */

/** The response id of a generation stream (`resp_<stream id>`). */
export function responseId(streamId: string): string {
  return `resp_${streamId}`;
}

/** The stream id of a response id (`resp_<stream id>`, or the bare stream id). */
export function streamIdOfResponse(id: string): string {
  return id.startsWith("resp_") ? id.slice(5) : id;
}

/** What a stream started by POST /v1/responses keeps in its metadata (`responses`). */
export interface ResponsesMeta {
  /** The conversation the generation was given (input items turned into messages), without instructions. */
  messages?: unknown[];
  instructions?: string | null;
  tools?: unknown[];
  tool_choice?: unknown;
  temperature?: number | null;
  top_p?: number | null;
  max_output_tokens?: number | null;
  parallel_tool_calls?: boolean;
  previous_response_id?: string | null;
  background?: boolean;
  store?: boolean;
  metadata?: Record<string, unknown>;
  reasoning?: unknown;
  text?: unknown;
}

export function responsesMeta(info: Pick<StreamInfo, "metadata">): ResponsesMeta {
  const m = info.metadata?.responses;
  return typeof m === "object" && m !== null ? (m as ResponsesMeta) : {};
}

type Json = Record<string, unknown>;

interface Item {
  /** The output item as the response object shows it. */
  item: Json;
  kind: "message" | "reasoning" | "function_call";
  index: number;
  text: string;
  done: boolean;
}

export interface ResponsesEvent {
  type: string;
  json: string;
}

/**
 * The fold: feed it the records of one generation stream in order, from the first; it returns
 * each record's events (with their sequence numbers) and keeps the response built so far.
 */
export class ResponsesEncoder {
  /** The sequence number the next event gets. */
  next = 0;
  /** Seq of the last record folded. */
  lastSeq = 0;
  private readonly items: Item[] = [];
  private open: Item | undefined;
  private readonly calls = new Map<string, Item>();
  private usage: Json | undefined;
  private status = "in_progress";
  private error: Json | null = null;
  private incomplete: Json | null = null;
  private readonly sid: string;
  private readonly meta: ResponsesMeta;

  constructor(private readonly info: Pick<StreamInfo, "id" | "model" | "created_at" | "metadata">) {
    this.sid = info.id;
    this.meta = responsesMeta(info);
  }

  /** The response object as it stands after the records folded so far. */
  response(): Json {
    const m = this.meta;
    const output = this.items.map((i) => (i.done ? i.item : this.snapshot(i)));
    let outputText = "";
    for (const i of this.items) if (i.kind === "message") outputText += i.text;
    const r: Json = {
      id: responseId(this.sid),
      object: "response",
      created_at: Math.floor(Date.parse(this.info.created_at) / 1000) || 0,
      status: this.status,
      background: m.background ?? false,
      // The log has no time of its end that every reader sees alike (the numbers and bytes of
      // each event are a function of the log), so this stays null.
      completed_at: null,
      error: this.error,
      incomplete_details: this.incomplete,
      instructions: m.instructions ?? null,
      max_output_tokens: m.max_output_tokens ?? null,
      metadata: m.metadata ?? {},
      model: this.info.model ?? "unknown",
      output,
      output_text: outputText,
      parallel_tool_calls: m.parallel_tool_calls ?? true,
      previous_response_id: m.previous_response_id ?? null,
      reasoning: m.reasoning ?? null,
      store: m.store ?? true,
      temperature: m.temperature ?? null,
      text: m.text ?? { format: { type: "text" } },
      tool_choice: m.tool_choice ?? "auto",
      tools: m.tools ?? [],
      top_p: m.top_p ?? null,
      truncation: "disabled",
      usage: this.usage ?? null,
    };
    return r;
  }

  /** Status of the response after the records folded so far. */
  get currentStatus(): string {
    return this.status;
  }

  private ev(out: ResponsesEvent[], type: string, body: Json): void {
    out.push({ type, json: JSON.stringify({ type, sequence_number: this.next++, ...body }) });
  }

  private openItem(out: ResponsesEvent[], kind: Item["kind"], item: Json): Item {
    const it: Item = { item, kind, index: this.items.length, text: "", done: false };
    this.items.push(it);
    this.ev(out, "response.output_item.added", { output_index: it.index, item: { ...item } });
    return it;
  }

  /** Opens the function_call item of a tool call first seen in `ev` (after closing the open item). */
  private openCall(out: ResponsesEvent[], callId: string, ev: Json): Item {
    this.closeOpen(out);
    const it = this.openItem(out, "function_call", {
      id: this.itemId("fc", this.items.length),
      type: "function_call",
      status: "in_progress",
      call_id: callId,
      name: String(ev.name ?? ""),
      arguments: "",
    });
    this.calls.set(callId, it);
    return it;
  }

  /** Ends the open message or reasoning item (its done events). */
  private closeOpen(out: ResponsesEvent[], status = "completed"): void {
    const it = this.open;
    if (!it) return;
    this.open = undefined;
    it.done = true;
    const id = it.item.id as string;
    if (it.kind === "message") {
      const part = { type: "output_text", annotations: [], logprobs: [], text: it.text };
      const base = { item_id: id, output_index: it.index, content_index: 0 };
      this.ev(out, "response.output_text.done", { ...base, text: it.text, logprobs: [] });
      this.ev(out, "response.content_part.done", { ...base, part });
      it.item.content = [part];
    } else {
      const part = { type: "summary_text", text: it.text };
      const base = { item_id: id, output_index: it.index, summary_index: 0 };
      this.ev(out, "response.reasoning_summary_text.done", { ...base, text: it.text });
      this.ev(out, "response.reasoning_summary_part.done", { ...base, part });
      it.item.summary = [part];
    }
    it.item.status = status;
    this.ev(out, "response.output_item.done", { output_index: it.index, item: it.item });
  }

  /** An item still streaming, as the response shows it: what it holds so far. */
  private snapshot(it: Item): Json {
    if (it.kind === "message") {
      return { ...it.item, content: [{ type: "output_text", annotations: [], logprobs: [], text: it.text }] };
    }
    if (it.kind === "reasoning") return { ...it.item, summary: [{ type: "summary_text", text: it.text }] };
    return { ...it.item, arguments: it.text };
  }

  /** A response that stopped early: items still streaming are left `incomplete`. */
  private abandon(): void {
    for (const it of this.items) {
      if (it.done) continue;
      it.done = true;
      it.item = { ...this.snapshot(it), status: "incomplete" };
    }
    this.open = undefined;
  }

  private itemId(prefix: string, index: number): string {
    return `${prefix}_${this.sid}_${index}`;
  }

  /** The events of one record (the next in the log). */
  step(rec: Pick<StoredRecord, "seq" | "type" | "data">): ResponsesEvent[] {
    const out: ResponsesEvent[] = [];
    this.lastSeq = rec.seq;
    let ev: Json;
    try {
      ev = JSON.parse(rec.data) as Json;
    } catch {
      return out;
    }
    const type = (ev.type as string | undefined) ?? rec.type;
    switch (type) {
      case "start":
        this.ev(out, "response.created", { response: this.response() });
        this.ev(out, "response.in_progress", { response: this.response() });
        break;
      case "text-delta": {
        const delta = String(ev.delta ?? "");
        if (this.open?.kind !== "message") {
          this.closeOpen(out);
          const index = this.items.length;
          const it = this.openItem(out, "message", {
            id: this.itemId("msg", index),
            type: "message",
            status: "in_progress",
            role: "assistant",
            content: [],
          });
          this.open = it;
          const part = { type: "output_text", annotations: [], logprobs: [], text: "" };
          this.ev(out, "response.content_part.added", {
            item_id: it.item.id,
            output_index: it.index,
            content_index: 0,
            part,
          });
        }
        const it = this.open as Item;
        it.text += delta;
        this.ev(out, "response.output_text.delta", {
          item_id: it.item.id,
          output_index: it.index,
          content_index: 0,
          delta,
          logprobs: [],
        });
        break;
      }
      case "reasoning-delta": {
        const delta = String(ev.delta ?? "");
        if (this.open?.kind !== "reasoning") {
          this.closeOpen(out);
          const index = this.items.length;
          const it = this.openItem(out, "reasoning", {
            id: this.itemId("rs", index),
            type: "reasoning",
            summary: [],
          });
          this.open = it;
          this.ev(out, "response.reasoning_summary_part.added", {
            item_id: it.item.id,
            output_index: it.index,
            summary_index: 0,
            part: { type: "summary_text", text: "" },
          });
        }
        const it = this.open as Item;
        it.text += delta;
        this.ev(out, "response.reasoning_summary_text.delta", {
          item_id: it.item.id,
          output_index: it.index,
          summary_index: 0,
          delta,
        });
        break;
      }
      case "tool-call-delta": {
        const callId = String(ev.id ?? "");
        const it = this.calls.get(callId) ?? this.openCall(out, callId, ev);
        const delta = String(ev.args_delta ?? "");
        if (delta !== "") {
          it.text += delta;
          this.ev(out, "response.function_call_arguments.delta", {
            item_id: it.item.id,
            output_index: it.index,
            delta,
          });
        }
        break;
      }
      case "tool-call": {
        const callId = String(ev.id ?? "");
        let it = this.calls.get(callId);
        const whole = JSON.stringify(ev.args ?? {});
        if (!it) {
          it = this.openCall(out, callId, ev);
          it.text = whole;
          this.ev(out, "response.function_call_arguments.delta", {
            item_id: it.item.id,
            output_index: it.index,
            delta: whole,
          });
        }
        if (it.done) break;
        // The streamed text is what the client joined; a call whose deltas were empty gets the whole.
        const args = it.text !== "" ? it.text : whole;
        it.done = true;
        it.item.arguments = args;
        it.item.name = String(ev.name ?? it.item.name);
        it.item.status = "completed";
        this.ev(out, "response.function_call_arguments.done", {
          item_id: it.item.id,
          output_index: it.index,
          name: it.item.name,
          arguments: args,
        });
        this.ev(out, "response.output_item.done", { output_index: it.index, item: it.item });
        break;
      }
      case "usage": {
        const input = Number(ev.input_tokens ?? 0);
        const output = Number(ev.output_tokens ?? 0);
        this.usage = {
          input_tokens: input,
          input_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
          output_tokens: output,
          output_tokens_details: { reasoning_tokens: Number(ev.reasoning_tokens ?? 0) },
          total_tokens: Number(ev.total_tokens ?? input + output),
        };
        break;
      }
      case "finish": {
        const reason = String(ev.reason ?? "stop");
        const cut = reason === "length" || reason === "content-filter";
        // An answer cut by max_output_tokens or a filter ends its item as incomplete (as OpenAI's).
        this.closeOpen(out, cut ? "incomplete" : "completed");
        if (cut) {
          this.abandon();
          this.status = "incomplete";
          this.incomplete = { reason: reason === "length" ? "max_output_tokens" : "content_filter" };
          this.ev(out, "response.incomplete", { response: this.response() });
        } else {
          this.status = "completed";
          this.ev(out, "response.completed", { response: this.response() });
        }
        break;
      }
      case "error": {
        this.abandon();
        this.status = "failed";
        // Sluice's stable code (docs/errors.md), as every door reports it.
        this.error = { code: String(ev.code ?? "upstream_error"), message: String(ev.message ?? "") };
        this.ev(out, "response.failed", { response: this.response() });
        break;
      }
      case "abort": {
        this.abandon();
        this.status = "cancelled";
        this.error = {
          code: "cancelled",
          message: `the generation was cancelled (${String(ev.by)}: ${String(ev.reason)})`,
        };
        this.ev(out, "response.failed", { response: this.response() });
        break;
      }
      default:
        // data, media: nothing in this format.
        break;
    }
    return out;
  }
}

/** `id:` per event as every Sluice SSE format: `<offset>.<k>` before the record's last, `<offset>` on it. */
export function sseResponsesEvents(events: ResponsesEvent[], offset: string, from = 0): string {
  let s = "";
  const n = events.length;
  for (let i = from; i < n; i++) {
    const e = events[i] as ResponsesEvent;
    s += `id: ${i === n - 1 ? offset : subOffset(offset, i + 1)}\nevent: ${e.type}\ndata: ${e.json}\n\n`;
  }
  return s;
}

/**
 * What the hub hands to a Responses reader: the records themselves (`<seq> <event json>\n`),
 * encoded once and shared; each reader's ResponsesSink folds them into its events.
 */
export const recordLines: Codec = registerCodec({
  key: "lines:records",
  index: -1,
  encode(rec) {
    // Event JSON has no raw line breaks (JSON.stringify escapes them); a record written by hand
    // with whitespace line breaks between tokens is the same JSON with spaces.
    const data =
      rec.data.includes("\n") || rec.data.includes("\r") ? rec.data.replace(/[\r\n]/g, " ") : rec.data;
    return `${rec.seq} ${rec.type ?? ""} ${data}\n`;
  },
});

function parseLine(line: string): Pick<StoredRecord, "seq" | "type" | "data"> | undefined {
  const a = line.indexOf(" ");
  const b = line.indexOf(" ", a + 1);
  if (a < 0 || b < 0) return undefined;
  const seq = Number(line.slice(0, a));
  const type = line.slice(a + 1, b);
  return { seq, type: type === "" ? undefined : type, data: line.slice(b + 1) } as Pick<
    StoredRecord,
    "seq" | "type" | "data"
  >;
}

/** Where a Responses reader starts sending: after a sequence number, or after a record (and k of its events). */
export type ResponsesStart =
  | { afterSequence: number }
  | { afterRecord: number; skipEvents?: number | undefined };

/**
 * A reader's sink for the Responses format: folds every record from the first (the reader is
 * attached at the start of the log) and writes only the events after the reader's position.
 */
export class ResponsesSink implements Sink {
  private readonly enc: ResponsesEncoder;
  /** Sequence number of the last event written (-1: none yet). */
  private lastSent = -1;

  constructor(
    private readonly inner: Sink,
    info: Pick<StreamInfo, "id" | "model" | "created_at" | "metadata">,
    private readonly start: ResponsesStart,
  ) {
    this.enc = new ResponsesEncoder(info);
  }

  write(chunk: string, mark: WriteMark): void {
    let text = "";
    let at = 0;
    while (at < chunk.length) {
      const end = chunk.indexOf("\n", at);
      const line = chunk.slice(at, end < 0 ? chunk.length : end);
      at = end < 0 ? chunk.length : end + 1;
      const rec = parseLine(line);
      if (!rec) continue;
      const first = this.enc.next;
      const events = this.enc.step(rec);
      if (events.length === 0) continue;
      const offset = formatOffset(rec.seq);
      let from = 0;
      if ("afterSequence" in this.start) {
        from = Math.max(0, this.start.afterSequence + 1 - first);
      } else if (rec.seq <= this.start.afterRecord) {
        from = events.length;
      } else if (rec.seq === this.start.afterRecord + 1) {
        from = this.start.skipEvents ?? 0;
      }
      if (from < events.length) {
        text += sseResponsesEvents(events, offset, from);
        this.lastSent = first + events.length - 1;
      }
    }
    if (text !== "") this.inner.write(text, mark);
  }

  idle(seq: number): void {
    this.inner.idle?.(seq);
  }

  get buffered(): number {
    return this.inner.buffered;
  }

  onDrain(cb: () => void): void {
    this.inner.onDrain(cb);
  }

  end(): void {
    this.inner.end();
  }

  get closed(): boolean {
    return this.inner.closed;
  }

  /**
   * A reader that resumes by sequence number is told the last sequence number it was sent (the
   * position it resumes after); one that resumes by SSE id, the record offset.
   */
  cut(offset: string, message: string): void {
    this.inner.cut(
      "afterSequence" in this.start ? String(Math.max(this.lastSent, this.start.afterSequence)) : offset,
      message,
    );
  }

  get flushMs(): number | undefined {
    return this.inner.flushMs;
  }
}
