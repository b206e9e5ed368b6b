import { MessageAccumulator, SluiceClient, type WebSocketLike } from "@sluice/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { demoBody, type Running, readAllJson, startSluice, textOf } from "../../server/test/helpers.js";

/**
 * The SDK's WebSocket transport against the server's real `/v1/ws`. The server always has the
 * endpoint: a socket that does not open is a failure, never a reason to skip.
 */
let s: Running;
beforeAll(async () => {
  s = await startSluice();
});
afterAll(async () => {
  await s.close();
});

describe("client SDK over the server's WebSocket", () => {
  it("the server accepts a WebSocket on /v1/ws", async () => {
    const opened = await new Promise<string>((resolve) => {
      const ws = new WebSocket(`${s.url.replace("http", "ws")}/v1/ws`);
      ws.on("open", () => {
        ws.close();
        resolve("open");
      });
      ws.on("error", (err) => resolve(`error: ${err.message}`));
    });
    expect(opened).toBe("open");
  });

  it("follows many streams on one socket and survives the socket being killed at random points", async () => {
    const sockets: WebSocket[] = [];
    const client = new SluiceClient({
      baseUrl: s.url,
      transport: "ws",
      backoff: { initialMs: 20, maxMs: 100 },
      webSocket: (url) => {
        const ws = new WebSocket(url);
        sockets.push(ws);
        return ws as unknown as WebSocketLike;
      },
    });
    const ids: string[] = [];
    for (let i = 0; i < 6; i++)
      ids.push((await client.start(demoBody({ length: 300, tokens_per_s: 500, seed: i }))).id);
    let kills = 0;
    const killer = (async () => {
      for (let k = 0; k < 4; k++) {
        await new Promise((r) => setTimeout(r, 60 + Math.random() * 120));
        const live = sockets.at(-1);
        if (live && live.readyState === WebSocket.OPEN) {
          live.terminate();
          kills++;
        }
      }
    })();
    const texts = await Promise.all(
      ids.map(async (id) => {
        const acc = new MessageAccumulator();
        for await (const se of client.follow(id)) acc.apply(se);
        return acc.message;
      }),
    );
    await killer;
    client.close();
    for (const [i, id] of ids.entries()) {
      expect(texts[i]?.status).toBe("completed");
      expect(texts[i]?.text).toBe(textOf(await readAllJson(s.url, id)));
    }
    expect(kills).toBeGreaterThan(0);
    // Every (re)connection carried all the streams: far fewer sockets than streams × drops.
    expect(sockets.length).toBeLessThanOrEqual(kills + 1);
  });
});
