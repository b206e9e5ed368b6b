import { describe, expect, it } from "vitest";
import * as wsModule from "ws";
import { textFrames } from "../src/http/ws.js";

/** ws's frame parser (exported by the package, not described by @types/ws). */
interface FrameParser {
  on(event: "message", cb: (data: Buffer, isBinary: boolean) => void): void;
  on(event: "error", cb: (e: Error) => void): void;
  write(chunk: Buffer): void;
}
const Receiver = (wsModule as unknown as { Receiver: new (o: object) => FrameParser }).Receiver;

/** Feeds bytes to ws's own frame parser (client side: frames from a server are unmasked). */
function parse(bytes: Buffer, chunkSize = bytes.length): { messages: string[]; error?: Error } {
  const r = new Receiver({ isServer: false, maxPayload: 0 });
  const messages: string[] = [];
  let error: Error | undefined;
  r.on("message", (data, isBinary) => {
    expect(isBinary).toBe(false);
    messages.push(data.toString("utf8"));
  });
  r.on("error", (e) => {
    error = e;
  });
  for (let at = 0; at < bytes.length; at += chunkSize) r.write(bytes.subarray(at, at + chunkSize));
  return { messages, ...(error ? { error } : {}) };
}

describe("WebSocket text frames written directly (textFrames)", () => {
  it("frames messages of every length class so ws's parser reads them back exactly", () => {
    const messages = [
      "",
      "a",
      "x".repeat(125), // largest 7-bit length
      "y".repeat(126), // smallest 16-bit length
      `{"t":"${"é".repeat(40)}"}`, // multi-byte UTF-8: the length is in bytes, not characters
      "z".repeat(65_535), // largest 16-bit length
      "w".repeat(65_536), // smallest 64-bit length
      `{"emoji":"${"🌊".repeat(20_000)}"}`, // 80,000+ bytes of 4-byte characters
    ];
    const bytes = textFrames(messages);
    const { messages: got, error } = parse(bytes);
    expect(error).toBeUndefined();
    expect(got).toEqual(messages);
    // Split across reads at an awkward size: still the same messages.
    expect(parse(bytes, 7).messages).toEqual(messages);
  });

  it("produces one frame per message, unmasked, FIN + text opcode", () => {
    const bytes = textFrames(["hi", "there"]);
    expect([...bytes]).toEqual([0x81, 2, ...Buffer.from("hi"), 0x81, 5, ...Buffer.from("there")]);
  });
});
