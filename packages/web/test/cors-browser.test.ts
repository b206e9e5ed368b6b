import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";
import { build } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CuttingProxy, startCuttingProxy } from "../../client/test/proxy.js";
import {
  type Running,
  readAllJson,
  startSluice,
  startStream,
  textOf,
  waitForStatus,
} from "../../server/test/helpers.js";

/**
 * Browsers on another origin, in Debian's chromium (playwright-core, never a downloaded
 * browser): the page is served by a second HTTP server (another port, so another origin) and
 * calls Sluice with what apps use — EventSource (resumed after a cut), fetch streaming, the
 * `openai` SDK, the AI SDK's DefaultChatTransport and the Durable Streams client (bundled for the
 * page by vite from node_modules). A third origin, not in `cors.origins`, stays blocked.
 */
const CHROMIUM = "/usr/bin/chromium";
const SDK_ENTRY = fileURLToPath(new URL("./cors-page/sdk.ts", import.meta.url));
const missing = existsSync(CHROMIUM) ? [] : [`${CHROMIUM} (apt-get install chromium)`];
// Without the browser a developer skips these; under CI (.ci/run sets CI) they fail instead.
const inCI = !!process.env.CI && process.env.CI !== "false" && process.env.CI !== "0";
const ready = missing.length === 0;
const EVENT_TYPES = [
  "start",
  "text-delta",
  "reasoning-delta",
  "tool-call",
  "data",
  "usage",
  "finish",
  "error",
  "abort",
];
const DEMO = { seed: 11, ttft_ms: 5, tokens_per_s: 400, jitter: 0, length: 60 };

let s: Running;
let proxy: CuttingProxy;
let browser: Browser;
let outDir: string;
let allowedPage: PageServer;
let otherPage: PageServer;

interface PageServer {
  origin: string;
  close(): Promise<void>;
}

/** A tiny static server: the test page and the bundled SDKs, on its own port (its own origin). */
async function startPageServer(sdkJs: string): Promise<PageServer> {
  const html =
    '<!doctype html><meta charset="utf-8"><title>second origin</title>' +
    '<script type="module">import * as sdk from "/sdk.js"; window.sdk = sdk; window.sdkReady = true;</script>';
  const server = http.createServer((req, res) => {
    if (req.url === "/sdk.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(sdkJs);
    } else if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end(html);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

beforeAll(async () => {
  if (!ready && inCI) throw new Error(`the browser tests need ${missing.join(" and ")}`);
  if (!ready) return;
  outDir = mkdtempSync(path.join(os.tmpdir(), "sluice-cors-page-"));
  await build({
    configFile: false,
    logLevel: "warn",
    publicDir: false,
    define: { "process.env.NODE_ENV": '"production"' },
    build: {
      outDir,
      emptyOutDir: true,
      minify: false,
      lib: { entry: SDK_ENTRY, formats: ["es"], fileName: () => "sdk.js" },
    },
  });
  const sdkJs = readFileSync(path.join(outDir, "sdk.js"), "utf8");
  allowedPage = await startPageServer(sdkJs);
  otherPage = await startPageServer(sdkJs);
  s = await startSluice({
    cors: { origins: [allowedPage.origin] },
    sse: { heartbeat_ms: 500, retry_ms: 100 },
  } as never);
  proxy = await startCuttingProxy(s.url);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-sync",
    ],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await proxy?.close();
  await s?.close();
  await allowedPage?.close();
  await otherPage?.close();
  if (outDir) rmSync(outDir, { recursive: true, force: true });
});

/** A page on `origin` with the bundled SDKs loaded; console errors are collected. */
async function pageOn(origin: string): Promise<{ page: Page; logs: string[] }> {
  const page = await (await browser.newContext()).newPage();
  const logs: string[] = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(`${origin}/`);
  await page.waitForFunction(() => (window as unknown as { sdkReady?: boolean }).sdkReady === true);
  return { page, logs };
}

async function serverText(id: string): Promise<string> {
  await waitForStatus(s.url, id, (st) => st !== "running", 60_000);
  return textOf(await readAllJson(s.url, id));
}

// In the page, `window.sdk` holds the bundled modules (see cors-page/sdk.ts).
// biome-ignore lint/suspicious/noExplicitAny: the page's globals are untyped on purpose
type W = any;

describe.skipIf(!ready && !inCI)("browsers on another origin (chromium)", () => {
  it("EventSource reads a stream cross-origin and, cut mid-stream, resumes with Last-Event-ID exactly", async () => {
    const { id } = await startStream(s.url, {
      model: "demo",
      messages: [{ role: "user", content: "a long answer" }],
      demo: { ...DEMO, length: 600, tokens_per_s: 150 },
    });
    const { page, logs } = await pageOn(allowedPage.origin);
    await page.evaluate(
      ({ url, types }) => {
        const w = window as W;
        w.got = [];
        w.opens = 0;
        w.done = false;
        const es = new EventSource(url);
        w.errs = 0;
        es.onopen = () => {
          w.opens++;
        };
        es.onerror = () => {
          w.errs++;
        };
        for (const t of types) {
          es.addEventListener(t, (e) => {
            // A dropped connection is an `error` event too (not a MessageEvent): not Sluice's.
            if (!(e instanceof MessageEvent)) return;
            const m = e;
            w.got.push({ id: m.lastEventId, type: t, data: m.data });
            if (t === "finish" || t === "error" || t === "abort") {
              w.done = true;
              es.close();
            }
          });
        }
      },
      { url: `${proxy.url}/v1/streams/${id}`, types: EVENT_TYPES },
    );
    await page.waitForFunction(() => (window as W).got.length >= 20, undefined, { timeout: 20_000 });
    const atCut = await page.evaluate(() => (window as W).got.length);
    expect(proxy.cutAll()).toBeGreaterThan(0);
    await page.waitForFunction(() => (window as W).done === true, undefined, { timeout: 30_000 });
    const { got, opens, errs } = (await page.evaluate(() => {
      const w = window as W;
      return { got: w.got, opens: w.opens, errs: w.errs };
    })) as { got: { id: string; type: string; data: string }[]; opens: number; errs: number };
    // The cut was seen and the browser reconnected (with Last-Event-ID) before the end.
    expect(errs).toBeGreaterThanOrEqual(1);
    expect(opens).toBeGreaterThanOrEqual(2);
    expect(got.length).toBeGreaterThan(atCut);
    // Exact resume: no event twice, none missing, in order.
    const ids = got.map((g) => g.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
    expect(textOf(got.map((g) => ({ event: g.type, data: g.data })))).toBe(await serverText(id));
    expect(got.at(-1)?.type).toBe("finish");
    expect(logs.filter((l) => /CORS/i.test(l))).toEqual([]);
  });

  it("fetch streams a POST /v1/streams SSE response progressively and reads Sluice-Stream-Id", async () => {
    const { page } = await pageOn(allowedPage.origin);
    const r = (await page.evaluate(
      async ({ url, demo }) => {
        const res = await fetch(url, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "text/event-stream" },
          body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }], demo }),
        });
        const reader = (res.body as ReadableStream<Uint8Array>).getReader();
        const dec = new TextDecoder();
        let text = "";
        let chunks = 0;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          chunks++;
          text += dec.decode(value, { stream: true });
        }
        return { id: res.headers.get("sluice-stream-id"), chunks, text, status: res.status };
      },
      { url: `${s.url}/v1/streams`, demo: DEMO },
    )) as { id: string | null; chunks: number; text: string; status: number };
    expect(r.status).toBe(200);
    expect(r.id).toMatch(/^st_/);
    expect(r.chunks).toBeGreaterThan(1);
    const events = [...r.text.matchAll(/^event: (.+)\ndata: (.+)$/gm)].map((m) => ({
      event: m[1] as string,
      data: m[2] as string,
    }));
    expect(textOf(events)).toBe(await serverText(r.id as string));
  });

  it("the openai SDK (dangerouslyAllowBrowser) streams chat completions cross-origin, x-stainless-* headers and all", async () => {
    const { page } = await pageOn(allowedPage.origin);
    const r = (await page.evaluate(
      async ({ baseURL, demo }) => {
        const client = new (window as W).sdk.OpenAI({
          baseURL,
          apiKey: "sk-browser",
          dangerouslyAllowBrowser: true,
          maxRetries: 0,
        });
        const { data, response } = await client.chat.completions
          .create({ model: "demo", messages: [{ role: "user", content: "hi" }], stream: true, demo })
          .withResponse();
        let text = "";
        let chunks = 0;
        for await (const c of data) {
          chunks++;
          text += c.choices[0]?.delta?.content ?? "";
        }
        return { id: response.headers.get("sluice-stream-id"), text, chunks };
      },
      { baseURL: `${s.url}/v1`, demo: DEMO },
    )) as { id: string | null; text: string; chunks: number };
    expect(r.id).toMatch(/^st_/);
    expect(r.chunks).toBeGreaterThan(1);
    expect(r.text).toBe(await serverText(r.id as string));
  });

  it("the AI SDK's DefaultChatTransport streams a chat cross-origin", async () => {
    const { page } = await pageOn(allowedPage.origin);
    const r = (await page.evaluate(
      async ({ api, demo }) => {
        const transport = new (window as W).sdk.DefaultChatTransport({ api, body: { demo } });
        const stream: ReadableStream<{ type: string; delta?: string }> = await transport.sendMessages({
          chatId: "cors-chat",
          messages: [{ id: "m1", role: "user", parts: [{ type: "text", text: "hi" }] }],
          trigger: "submit-message",
          messageId: undefined,
          abortSignal: undefined,
        });
        const reader = stream.getReader();
        const types: string[] = [];
        let text = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          types.push(value.type);
          if (value.type === "text-delta") text += value.delta ?? "";
        }
        return { types, text };
      },
      { api: `${s.url}/v1/ai-sdk/chat`, demo: DEMO },
    )) as { types: string[]; text: string };
    expect(r.types).toContain("start");
    expect(r.types).toContain("finish");
    expect(r.text.length).toBeGreaterThan(20);
  });

  it("the AI SDK's DefaultChatTransport, dropped mid-answer, reconnects to the running answer cross-origin", async () => {
    const { page } = await pageOn(allowedPage.origin);
    const r = (await page.evaluate(
      async ({ api, demo }) => {
        const transport = new (window as W).sdk.DefaultChatTransport({ api, body: { demo } });
        const first: ReadableStream<{ type: string; delta?: string }> = await transport.sendMessages({
          chatId: "cors-resume",
          messages: [{ id: "m1", role: "user", parts: [{ type: "text", text: "a long answer" }] }],
          trigger: "submit-message",
          messageId: undefined,
          abortSignal: undefined,
        });
        const r1 = first.getReader();
        let before = 0;
        while (before < 5) {
          const { value, done } = await r1.read();
          if (done) break;
          if (value.type === "text-delta") before++;
        }
        await r1.cancel();
        const again: ReadableStream<{ type: string; delta?: string }> | null =
          await transport.reconnectToStream({
            chatId: "cors-resume",
          });
        if (!again) return { before, types: [] as string[], text: "" };
        const r2 = again.getReader();
        const types: string[] = [];
        let text = "";
        for (;;) {
          const { value, done } = await r2.read();
          if (done) break;
          types.push(value.type);
          if (value.type === "text-delta") text += value.delta ?? "";
        }
        return { before, types, text };
      },
      { api: `${s.url}/v1/ai-sdk/chat`, demo: { ...DEMO, length: 400, tokens_per_s: 200 } },
    )) as { before: number; types: string[]; text: string };
    expect(r.before).toBe(5);
    // The resumed answer is the whole message, from its start to its end.
    expect(r.types[0]).toBe("start");
    expect(r.types).toContain("finish");
    expect(r.text.length).toBeGreaterThan(200);
  });

  it("the Durable Streams client creates a stream and reads it live (SSE) cross-origin", async () => {
    const { page } = await pageOn(allowedPage.origin);
    const url = `${s.url}/ds/v1/stream/cors-browser-${Date.now()}`;
    await page.evaluate(async (u) => {
      const w = window as W;
      w.items = [];
      await w.sdk.DurableStream.create({ url: u, contentType: "application/json" });
      const res = await w.sdk.dsStream({ url: u, offset: "-1", live: "sse" });
      w.dsRes = res;
      res.subscribeJson(async (batch: { items: unknown[] }) => {
        w.items.push(...batch.items);
      });
    }, url);
    // Appended by someone else while the page is following.
    for (const n of [1, 2, 3]) {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ n }),
      });
      expect(res.status).toBeLessThan(300);
    }
    await page.waitForFunction(() => (window as W).items.length >= 3, undefined, { timeout: 20_000 });
    expect(await page.evaluate(() => (window as W).items)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    await page.evaluate(() => (window as W).dsRes.cancel?.());
  });

  it("a WebSocket opens from the allowed origin and follows a stream; from another origin it is refused", async () => {
    const { id } = await startStream(s.url, {
      model: "demo",
      messages: [{ role: "user", content: "hi" }],
      demo: DEMO,
    });
    const text = await serverText(id);
    const follow = (origin: string) =>
      pageOn(origin).then(({ page }) =>
        page.evaluate(
          ({ url, id }) =>
            new Promise<{ opened: boolean; text: string }>((resolve) => {
              const ws = new WebSocket(url);
              let opened = false;
              let text = "";
              ws.onopen = () => {
                opened = true;
                ws.send(JSON.stringify({ type: "subscribe", stream: id, offset: "-1" }));
              };
              ws.onmessage = (m) => {
                const msg = JSON.parse(String(m.data));
                if (msg.event?.type === "text-delta") text += msg.event.delta;
                if (msg.event?.type === "finish") ws.close();
              };
              ws.onclose = () => resolve({ opened, text });
            }),
          { url: `${s.url.replace(/^http/, "ws")}/v1/ws`, id },
        ),
      );
    expect(await follow(allowedPage.origin)).toEqual({ opened: true, text });
    expect(await follow(otherPage.origin)).toEqual({ opened: false, text: "" });
  });

  it("credentialed fetch (credentials: include) works only where cors.credentials is set", async () => {
    const withCreds = await startSluice({
      cors: { origins: [allowedPage.origin], credentials: true },
    } as never);
    try {
      const { page } = await pageOn(allowedPage.origin);
      const r = (await page.evaluate(
        async ({ yes, no, demo }) => {
          const call = async (base: string) => {
            try {
              const res = await fetch(`${base}/v1/streams`, {
                method: "POST",
                credentials: "include",
                headers: { "content-type": "application/json", accept: "text/event-stream" },
                body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }], demo }),
              });
              return /event: finish/.test(await res.text()) ? "finished" : "no finish";
            } catch (e) {
              return (e as Error).name;
            }
          };
          return { yes: await call(yes), no: await call(no) };
        },
        { yes: withCreds.url, no: s.url, demo: DEMO },
      )) as { yes: string; no: string };
      expect(r).toEqual({ yes: "finished", no: "TypeError" });
    } finally {
      await withCreds.close();
    }
  });

  it("a page on an origin not in cors.origins stays blocked, /ds included", async () => {
    const { id } = await startStream(s.url, {
      model: "demo",
      messages: [{ role: "user", content: "hi" }],
      demo: DEMO,
    });
    await waitForStatus(s.url, id, (st) => st !== "running");
    const dsUrl = `${s.url}/ds/v1/stream/blocked-${Date.now()}`;
    expect((await fetch(dsUrl, { method: "PUT", headers: { "content-type": "text/plain" } })).status).toBe(
      201,
    );
    const { page } = await pageOn(otherPage.origin);
    const r = (await page.evaluate(
      async ({ base, id, dsUrl }) => {
        const blocked = async (f: () => Promise<unknown>) => {
          try {
            await f();
            return "read";
          } catch (e) {
            return (e as Error).name;
          }
        };
        const es = await new Promise<{ messages: number; state: number }>((resolve) => {
          const src = new EventSource(`${base}/v1/streams/${id}`);
          let messages = 0;
          src.addEventListener("text-delta", () => messages++);
          src.onerror = () => {
            src.close();
            resolve({ messages, state: src.readyState });
          };
        });
        const client = new (window as W).sdk.OpenAI({
          baseURL: `${base}/v1`,
          apiKey: "sk-browser",
          dangerouslyAllowBrowser: true,
          maxRetries: 0,
        });
        return {
          models: await blocked(() => fetch(`${base}/v1/models`)),
          post: await blocked(() =>
            fetch(`${base}/v1/streams`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "x" }] }),
            }),
          ),
          ds: await blocked(() => fetch(`${dsUrl}?offset=-1`)),
          openai: await blocked(() => client.models.list()),
          es,
        };
      },
      { base: s.url, id, dsUrl },
    )) as { models: string; post: string; ds: string; openai: string; es: { messages: number } };
    expect(r.models).toBe("TypeError");
    expect(r.post).toBe("TypeError");
    expect(r.ds).toBe("TypeError");
    expect(r.openai).toMatch(/Error/);
    expect(r.openai).not.toBe("read");
    expect(r.es.messages).toBe(0);
  });
});
