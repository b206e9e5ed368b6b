/**
 * The Vercel AI SDK `useChat` endpoints, over the UI message stream (`sse:ai-sdk`):
 *
 * - `POST /v1/ai-sdk/chat` takes what `DefaultChatTransport` sends (`{id, messages, trigger,
 *   messageId, …body}`), starts a generation and streams it.
 * - `GET /v1/ai-sdk/chat/{chatId}/stream` replays the chat's active generation from its start
 *   and follows it live (`resume: true`); 204 when none is running.
 * - `POST /v1/ai-sdk/chat/{chatId}/stop` cancels the active generation at the upstream.
 *
 * The chat → active stream map lives in the store (Store.setChat/getChat): on Redis every node
 * sees it, so resume and stop work on any node; it is kept no longer than the stream's retention.
 */
import { SluiceError } from "@sluice/protocol";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import { requireAction, requireStreamAccess } from "../auth/principal.js";
import { type GenerationRequest, GenerationRequestSchema, type Message } from "../core/request.js";
import { sseAiSdk } from "../formats/ai-sdk.js";
import { type DoorDeps, describeIssues, parseCompact, SSE_HEARTBEAT, STREAM_ID_HEADER } from "./context.js";
import { startFor } from "./start.js";

export const UI_MESSAGE_STREAM_HEADERS = {
  "content-type": "text/event-stream",
  "cache-control": "no-cache",
  "x-vercel-ai-ui-message-stream": "v1",
  "x-accel-buffering": "no",
};

const CHAT_ID_RE = /^[A-Za-z0-9_.:-]{1,256}$/;

const UIPartSchema = z.object({ type: z.string() }).passthrough();
const UIMessageSchema = z
  .object({
    id: z.string().optional(),
    role: z.enum(["system", "user", "assistant"]),
    parts: z.array(UIPartSchema).max(10_000),
  })
  .passthrough();

const ChatBodySchema = z
  .object({
    id: z.string().regex(CHAT_ID_RE, "a chat id of letters, digits and _.:- (at most 256)").optional(),
    messages: z.array(UIMessageSchema).min(1).max(10_000),
    trigger: z.string().optional(),
    messageId: z.string().nullish(),
    model: z.string().optional(),
  })
  .passthrough();

/** Body fields passed through to the generation request as on `/v1/streams`. */
const PASS_THROUGH = [
  "max_tokens",
  "temperature",
  "top_p",
  "stop",
  "tools",
  "tool_choice",
  "timeout_ms",
  "on_disconnect",
  "metadata",
  "demo",
] as const;

/** UI messages (parts) → Chat Completions-style messages the providers take. */
export function uiToMessages(messages: z.infer<typeof UIMessageSchema>[]): Message[] {
  const out: Message[] = [];
  for (const m of messages) {
    let text = "";
    const toolCalls: { id: string; type: "function"; function: { name: string; arguments: string } }[] = [];
    const results: Message[] = [];
    for (const p of m.parts) {
      const part = p as Record<string, unknown>;
      if (part.type === "text" && typeof part.text === "string") text += part.text;
      else if (
        (typeof part.type === "string" && part.type.startsWith("tool-")) ||
        part.type === "dynamic-tool"
      ) {
        const name =
          part.type === "dynamic-tool" ? String(part.toolName ?? "tool") : String(part.type).slice(5);
        const id = String(part.toolCallId ?? "");
        if (id === "") continue;
        toolCalls.push({
          id,
          type: "function",
          function: { name, arguments: JSON.stringify(part.input ?? {}) },
        });
        if (part.state === "output-available") {
          results.push({ role: "tool", tool_call_id: id, content: JSON.stringify(part.output ?? null) });
        }
      }
    }
    if (m.role === "assistant" && toolCalls.length > 0) {
      out.push({ role: "assistant", content: text === "" ? null : text, tool_calls: toolCalls });
      out.push(...results);
    } else {
      out.push({ role: m.role, content: text });
    }
  }
  return out;
}

/** The active-chat map key: the caller's tenant, then the client's chat id (unambiguous as JSON). */
function chatKey(req: FastifyRequest, chatId: string): string {
  return JSON.stringify([req.principal.tenant ?? "", chatId]);
}

export function registerAiSdk(app: FastifyInstance, deps: DoorDeps): void {
  const { runner, store, config, live } = deps;

  app.post("/v1/ai-sdk/chat", async (req, reply) => {
    const body = req.body;
    if (body === undefined || body === null || typeof body !== "object" || Array.isArray(body)) {
      throw new SluiceError("invalid_request", "the body must be a JSON object");
    }
    const parsed = ChatBodySchema.safeParse(body);
    if (!parsed.success) throw new SluiceError("invalid_request", describeIssues(parsed.error.issues));
    const b = parsed.data;
    const candidate: Record<string, unknown> = {
      model: b.model ?? config.default_model,
      messages: uiToMessages(b.messages),
    };
    for (const k of PASS_THROUGH) {
      const v = (b as Record<string, unknown>)[k];
      if (v !== undefined && v !== null) candidate[k] = v;
    }
    const g = GenerationRequestSchema.safeParse(candidate);
    if (!g.success) throw new SluiceError("invalid_request", describeIssues(g.error.issues));
    const request: GenerationRequest = g.data;
    const hold = await live.hold(req, reply, "sse");
    const info = await startFor(req, deps, request).catch((err) => {
      hold.release();
      throw err;
    });
    // Chat ids are the client's: they are namespaced per tenant so tenants cannot collide.
    if (b.id !== undefined) {
      // A chat that could not be recorded would not resume: its generation is stopped, not orphaned.
      await store.setChat(chatKey(req, b.id), info.id).catch(async (err) => {
        hold.release();
        await runner.cancel(info.id, "server", "the chat could not be recorded").catch(() => {});
        throw err;
      });
    }
    reply.header(STREAM_ID_HEADER, info.id);
    await live.stream(
      req,
      reply,
      {
        streamId: info.id,
        after: 0,
        codec: sseAiSdk,
        transport: "sse",
        headers: UI_MESSAGE_STREAM_HEADERS,
        heartbeat: SSE_HEARTBEAT,
        cancelOnDisconnect:
          (request.on_disconnect ?? deps.routes.resolve(request.model).on_disconnect) === "cancel",
      },
      hold,
    );
    return reply;
  });

  app.get("/v1/ai-sdk/chat/:chatId/stream", async (req, reply) => {
    const { chatId } = req.params as { chatId: string };
    const compact = parseCompact((req.query as Record<string, string | undefined>).compact);
    requireAction(req.principal, "read");
    const streamId = CHAT_ID_RE.test(chatId) ? await store.getChat(chatKey(req, chatId)) : undefined;
    const info = streamId ? await store.info(streamId) : undefined;
    if (!streamId || !info || info.status !== "running") return reply.code(204).send();
    requireStreamAccess(req.principal, "read", info);
    reply.header(STREAM_ID_HEADER, streamId);
    // A full replay from the start: the client rebuilds the message when `start` arrives
    // (`?compact=true`: with the history folded, fewer parts for the same message).
    await live.stream(req, reply, {
      streamId,
      after: 0,
      compact,
      codec: sseAiSdk,
      transport: "sse",
      headers: UI_MESSAGE_STREAM_HEADERS,
      heartbeat: SSE_HEARTBEAT,
      cancelOnDisconnect: false,
    });
    return reply;
  });

  app.post("/v1/ai-sdk/chat/:chatId/stop", async (req, reply) => {
    const { chatId } = req.params as { chatId: string };
    requireAction(req.principal, "cancel");
    const streamId = CHAT_ID_RE.test(chatId) ? await store.getChat(chatKey(req, chatId)) : undefined;
    // Running on any node: the runner passes the cancel to its owner.
    const current = streamId ? await store.info(streamId) : undefined;
    if (!streamId || !current || current.status !== "running") return { chat_id: chatId, stopped: false };
    requireStreamAccess(req.principal, "cancel", current);
    reply.header(STREAM_ID_HEADER, streamId);
    const info = await runner.cancel(streamId, "client", "stopped by request");
    return { chat_id: chatId, stopped: true, stream_id: streamId, status: info.status };
  });
}
