// The client libraries a page on another origin uses, bundled for the browser by
// cors-browser.test.ts (vite, from node_modules) and put on `window.sdk`.
export { DurableStream, stream as dsStream } from "@durable-streams/client";
export { DefaultChatTransport } from "ai";
export { default as OpenAI } from "openai";
