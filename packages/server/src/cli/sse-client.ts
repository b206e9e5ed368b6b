import { EventSourceParserStream } from "eventsource-parser/stream";

export interface SseMessage {
  id: string | undefined;
  event: string | undefined;
  data: string;
}

/** Reads an SSE response body as messages (parsed by eventsource-parser). */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const stream = body
    .pipeThrough(new TextDecoderStream() as unknown as ReadableWritablePair<string, Uint8Array>)
    .pipeThrough(new EventSourceParserStream());
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield { id: value.id, event: value.event, data: value.data };
    }
  } finally {
    reader.releaseLock();
    await body.cancel().catch(() => {});
  }
}
