/**
 * The AI SDK UI message stream endpoints, driven by the real `ai` package (v6): its
 * DefaultChatTransport and a Chat (AbstractChat with a plain in-memory state, what useChat
 * wraps in React).
 */
import {
  AbstractChat,
  type ChatInit,
  type ChatState,
  type ChatStatus,
  DefaultChatTransport,
  readUIMessageStream,
  type UIMessage,
  type UIMessageChunk,
} from "ai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Running, readAllJson, startSluice, textOf, waitForStatus } from "./helpers.js";

class MemoryChatState implements ChatState<UIMessage> {
  status: ChatStatus = "ready";
  error: Error | undefined = undefined;
  constructor(public messages: UIMessage[] = []) {}
  pushMessage = (m: UIMessage) => {
    this.messages = [...this.messages, m];
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (i: number, m: UIMessage) => {
    this.messages = [...this.messages.slice(0, i), m, ...this.messages.slice(i + 1)];
  };
  snapshot = <T>(thing: T): T => structuredClone(thing);
}

class NodeChat extends AbstractChat<UIMessage> {
  constructor(init: ChatInit<UIMessage>) {
    super({ ...init, state: new MemoryChatState(init.messages) });
  }
}

let s: Running;
beforeAll(async () => {
  s = await startSluice();
});
afterAll(async () => {
  await s.close();
});

const demo = (extra: Record<string, unknown> = {}) => ({
  seed: 5,
  ttft_ms: 5,
  tokens_per_s: 2000,
  jitter: 0,
  length: 40,
  ...extra,
});

/** A transport over the real fetch that remembers the Sluice-Stream-Id of each response. */
function transport(body: Record<string, unknown>, seen: string[] = []) {
  return new DefaultChatTransport<UIMessage>({
    api: `${s.url}/v1/ai-sdk/chat`,
    body,
    fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
      const res = await fetch(input, init);
      const id = res.headers.get("sluice-stream-id");
      if (id) seen.push(id);
      return res;
    }) as typeof fetch,
  });
}

const userMessage = (text: string): UIMessage => ({
  id: `u-${Math.random().toString(36).slice(2)}`,
  role: "user",
  parts: [{ type: "text", text }],
});

function textOfMessage(m: UIMessage | undefined): string {
  return (m?.parts ?? []).map((p) => (p.type === "text" ? p.text : "")).join("");
}

async function lastMessageOf(stream: ReadableStream<UIMessageChunk>): Promise<UIMessage | undefined> {
  let last: UIMessage | undefined;
  for await (const m of readUIMessageStream({ stream })) last = m;
  return last;
}

describe("POST /v1/ai-sdk/chat", () => {
  it("answers with the UI message stream headers and parts ending in [DONE]", async () => {
    const res = await fetch(`${s.url}/v1/ai-sdk/chat`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        id: "chat-h",
        messages: [userMessage("hi")],
        trigger: "submit-message",
        demo: demo({ length: 5 }),
      }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-vercel-ai-ui-message-stream")).toBe("v1");
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    expect(res.headers.get("cache-control")).toBe("no-cache");
    expect(res.headers.get("x-accel-buffering")).toBe("no");
    const id = res.headers.get("sluice-stream-id") as string;
    const text = await res.text();
    const datas = text
      .split("\n")
      .filter((l) => l.startsWith("data: "))
      .map((l) => l.slice(6));
    expect(datas[datas.length - 1]).toBe("[DONE]");
    const types = datas.slice(0, -1).map((d) => JSON.parse(d).type);
    expect(types.slice(0, 3)).toEqual(["start", "start-step", "text-start"]);
    expect(types.slice(-3)).toEqual(["text-end", "finish-step", "finish"]);
    expect(types.filter((t) => t === "text-delta")).toHaveLength(5);
    expect(JSON.parse(datas[0] as string).messageId).toBe(`msg_${id}`);
  });

  it("a Chat assembles the assistant message; its text equals the generated text", async () => {
    const seen: string[] = [];
    const chat = new NodeChat({ id: "chat-1", transport: transport({ model: "demo", demo: demo() }, seen) });
    await chat.sendMessage({ text: "Explain how a durable stream log works" });
    expect(chat.status).toBe("ready");
    const assistant = chat.messages[1];
    expect(assistant?.role).toBe("assistant");
    expect(assistant?.parts.filter((p) => p.type === "text")).toHaveLength(1);
    const id = seen[0] as string;
    expect(textOfMessage(assistant)).toBe(textOf(await readAllJson(s.url, id)));
    expect(textOfMessage(assistant).length).toBeGreaterThan(20);
    // A second turn sends the whole history (UI messages with parts) and works too.
    await chat.sendMessage({ text: "And then?" });
    expect(chat.messages).toHaveLength(4);
    expect(textOfMessage(chat.messages[3])).toBe(textOf(await readAllJson(s.url, seen[1] as string)));
  });

  it("reasoning and tool parts", async () => {
    const chat = new NodeChat({
      id: "chat-r",
      transport: transport({ demo: demo({ kind: "reasoning", length: 30 }) }),
    });
    await chat.sendMessage({ text: "think first" });
    const parts = chat.messages[1]?.parts ?? [];
    expect(parts.map((p) => p.type)).toEqual(["step-start", "reasoning", "text"]);
    const reasoning = parts[1] as { type: "reasoning"; text: string; state?: string };
    expect(reasoning.text.length).toBeGreaterThan(0);
    expect(reasoning.state).toBe("done");

    const toolChat = new NodeChat({
      id: "chat-t",
      transport: transport({
        demo: demo({ kind: "tool-call" }),
        tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
        tool_choice: "required",
      }),
    });
    await toolChat.sendMessage({ text: "weather in Paris?" });
    const tool = toolChat.messages[1]?.parts.find((p) => p.type === "tool-get_weather") as
      | { type: string; state: string; input: unknown; toolCallId: string }
      | undefined;
    expect(tool?.state).toBe("input-available");
    expect(typeof tool?.input).toBe("object");
    expect(tool?.toolCallId).toBeTruthy();
  });

  it("an upstream error mid-stream puts the Chat in error, with the code in the text", async () => {
    const chat = new NodeChat({
      id: "chat-e",
      transport: transport({ demo: demo({ fail_after_tokens: 4 }) }),
    });
    await chat.sendMessage({ text: "fail please" });
    expect(chat.status).toBe("error");
    expect(chat.error?.message).toContain("upstream_error");
  });

  it("bad bodies are 400 with the field named", async () => {
    const res = await fetch(`${s.url}/v1/ai-sdk/chat`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: "x", messages: [] }),
    });
    expect(res.status).toBe(400);
    const b = (await res.json()) as { error: { code: string; message: string } };
    expect(b.error.code).toBe("invalid_request");
    expect(b.error.message).toContain("messages");
    const res2 = await fetch(`${s.url}/v1/ai-sdk/chat`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: "x", messages: [userMessage("hi")], model: "nope" }),
    });
    expect(res2.status).toBe(400);
    expect(((await res2.json()) as { error: { code: string } }).error.code).toBe("unknown_model");
  });
});

describe("resume and stop", () => {
  it("drop mid-stream, then reconnectToStream replays the active generation: no duplicated parts", async () => {
    const seen: string[] = [];
    const t = transport({ demo: demo({ tokens_per_s: 100, length: 60 }) }, seen);
    const controller = new AbortController();
    const stream = await t.sendMessages({
      chatId: "chat-resume",
      messages: [userMessage("a long answer please")],
      abortSignal: controller.signal,
      trigger: "submit-message",
      messageId: undefined,
    });
    const reader = stream.getReader();
    let deltas = 0;
    while (deltas < 5) {
      const { value, done } = await reader.read();
      if (done) break;
      if (value.type === "text-delta") deltas++;
    }
    controller.abort();
    await reader.cancel().catch(() => {});
    const id = seen[0] as string;
    expect((await (await fetch(`${s.url}/v1/streams/${id}/info`)).json()).status).toBe("running");

    const resumed = await t.reconnectToStream({ chatId: "chat-resume" });
    expect(resumed).not.toBeNull();
    const message = await lastMessageOf(resumed as ReadableStream<UIMessageChunk>);
    expect(message?.parts.filter((p) => p.type === "text")).toHaveLength(1);
    await waitForStatus(s.url, id, (st) => st === "completed");
    expect(textOfMessage(message)).toBe(textOf(await readAllJson(s.url, id)));
    // Once it ended, nothing is active: 204, and the transport answers null.
    expect(await t.reconnectToStream({ chatId: "chat-resume" })).toBeNull();
    const res = await fetch(`${s.url}/v1/ai-sdk/chat/never-seen/stream`);
    expect(res.status).toBe(204);
  });

  it("reconnectToStream with ?compact=true (prepareReconnectToStreamRequest) folds the replay: fewer parts, same message", async () => {
    const seen: string[] = [];
    const chatId = "chat-resume-compact";
    const t = new DefaultChatTransport<UIMessage>({
      api: `${s.url}/v1/ai-sdk/chat`,
      body: { demo: demo({ tokens_per_s: 200, length: 400 }) },
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const res = await fetch(input, init);
        const id = res.headers.get("sluice-stream-id");
        if (id) seen.push(id);
        return res;
      }) as typeof fetch,
      prepareReconnectToStreamRequest: ({ api, id }) => ({
        api: `${api}/${encodeURIComponent(id)}/stream?compact=true`,
      }),
    });
    const controller = new AbortController();
    const stream = await t.sendMessages({
      chatId,
      messages: [userMessage("a long answer please")],
      abortSignal: controller.signal,
      trigger: "submit-message",
      messageId: undefined,
    });
    const reader = stream.getReader();
    let deltas = 0;
    while (deltas < 60) {
      const { value, done } = await reader.read();
      if (done) break;
      if (value.type === "text-delta") deltas++;
    }
    controller.abort();
    await reader.cancel().catch(() => {});
    const id = seen[0] as string;
    const resumed = (await t.reconnectToStream({ chatId })) as ReadableStream<UIMessageChunk>;
    expect(resumed).not.toBeNull();
    const [a, b] = resumed.tee();
    const countDeltas = (async () => {
      let n = 0;
      for await (const c of b as unknown as AsyncIterable<UIMessageChunk>) if (c.type === "text-delta") n++;
      return n;
    })();
    const message = await lastMessageOf(a);
    await waitForStatus(s.url, id, (st) => st === "completed");
    const log = await readAllJson(s.url, id);
    expect(message?.parts.filter((p) => p.type === "text")).toHaveLength(1);
    expect(textOfMessage(message)).toBe(textOf(log));
    // The 60+ deltas already written when it resumed came as one part.
    const records = log.filter((e) => (e.event as { type: string }).type === "text-delta").length;
    expect(await countDeltas).toBeLessThan(records - 50);
  });

  it("a new Chat with the same id resumes (resume: true on mount) and rebuilds the message", async () => {
    const seen: string[] = [];
    const t = transport({ demo: demo({ tokens_per_s: 150, length: 150 }) }, seen);
    const first = new NodeChat({ id: "chat-mount", transport: t });
    const sending = first.sendMessage({ text: "go" });
    // Let some tokens arrive, then the tab "closes".
    for (let i = 0; i < 100 && textOfMessage(first.messages[1]).length < 10; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    await first.stop();
    await sending;
    const id = seen[0] as string;
    const second = new NodeChat({
      id: "chat-mount",
      transport: t,
      messages: [first.messages[0] as UIMessage],
    });
    await second.resumeStream();
    expect(second.messages).toHaveLength(2);
    const assistant = second.messages[1];
    expect(assistant?.parts.filter((p) => p.type === "text")).toHaveLength(1);
    await waitForStatus(s.url, id, (st) => st === "completed");
    expect(textOfMessage(assistant)).toBe(textOf(await readAllJson(s.url, id)));
  });

  it("POST /chat/{id}/stop cancels the generation at the upstream; the stream ends with abort", async () => {
    const seen: string[] = [];
    const t = transport({ demo: demo({ tokens_per_s: 50, length: 500 }) }, seen);
    const stream = await t.sendMessages({
      chatId: "chat-stop",
      messages: [userMessage("a very long answer")],
      abortSignal: undefined,
      trigger: "submit-message",
      messageId: undefined,
    });
    const chunks: UIMessageChunk[] = [];
    const reader = stream.getReader();
    let stopped: Promise<Response> | undefined;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      if (value.type === "text-delta" && !stopped) {
        stopped = fetch(`${s.url}/v1/ai-sdk/chat/chat-stop/stop`, { method: "POST" });
      }
    }
    const stopRes = await (stopped as Promise<Response>);
    expect(await stopRes.json()).toMatchObject({ stopped: true, status: "cancelled" });
    expect(chunks[chunks.length - 1]?.type).toBe("abort");
    const id = seen[0] as string;
    const info = (await (await fetch(`${s.url}/v1/streams/${id}/info`)).json()) as Record<string, unknown>;
    expect(info.status).toBe("cancelled");
    expect(info.output_tokens as number).toBeLessThan(500);
    // Stopping again: nothing active.
    const again = await fetch(`${s.url}/v1/ai-sdk/chat/chat-stop/stop`, { method: "POST" });
    expect(await again.json()).toMatchObject({ stopped: false });
  });
});

describe("GET /v1/streams/{id}?format=ai-sdk", () => {
  it("any generation reads as a UI message stream, from the start or resumed with Last-Event-ID", async () => {
    const start = await fetch(`${s.url}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        messages: [{ role: "user", content: "hello" }],
        demo: demo({ kind: "reasoning", length: 40, tokens_per_s: 400 }),
      }),
    });
    const { id } = (await start.json()) as { id: string };
    const res = await fetch(`${s.url}/v1/streams/${id}?format=ai-sdk`, {
      headers: { accept: "text/event-stream" },
    });
    const body = await res.text();
    const { parseJsonEventStream, uiMessageChunkSchema } = await import("ai");
    const chunks = parseJsonEventStream({
      stream: new Response(body).body as ReadableStream<Uint8Array>,
      schema: uiMessageChunkSchema,
    });
    const parsed: UIMessageChunk[] = [];
    for await (const c of chunks as unknown as AsyncIterable<{ success: boolean; value: UIMessageChunk }>) {
      expect(c.success).toBe(true);
      parsed.push(c.value);
    }
    const message = await lastMessageOf(
      new ReadableStream({
        start(c) {
          for (const p of parsed) c.enqueue(p);
          c.close();
        },
      }),
    );
    await waitForStatus(s.url, id, (st) => st === "completed");
    expect(textOfMessage(message)).toBe(textOf(await readAllJson(s.url, id)));
    // Resume after a record in the middle of the text: the rest continues the open text part.
    const ids = body
      .split("\n")
      .filter((l) => l.startsWith("id: "))
      .map((l) => l.slice(4));
    const mid = ids[Math.floor(ids.length * 0.7)] as string;
    const rest = await (
      await fetch(`${s.url}/v1/streams/${id}?format=ai-sdk`, {
        headers: { accept: "text/event-stream", "last-event-id": mid },
      })
    ).text();
    const events = (text: string) =>
      text.split("\n\n").filter((e) => e.startsWith("data: ") || e.startsWith("id: "));
    expect(events(rest).length).toBeGreaterThan(3);
    expect(events(body).slice(-events(rest).length)).toEqual(events(rest));
  });
});
