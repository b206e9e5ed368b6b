import net from "node:net";

/**
 * A TCP proxy in front of a server that can cut every open connection (a dropped
 * network, as the client sees it) and refuse new ones for a while (still offline).
 */
export interface CuttingProxy {
  url: string;
  /** Destroys every open connection; returns how many were cut. */
  cutAll(): number;
  /** While paused, new connections are accepted and destroyed at once. */
  pause(): void;
  resume(): void;
  readonly open: number;
  close(): Promise<void>;
}

export async function startCuttingProxy(target: string): Promise<CuttingProxy> {
  const t = new URL(target);
  const pairs = new Set<{ a: net.Socket; b: net.Socket }>();
  let paused = false;
  const server = net.createServer((client) => {
    if (paused) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(t.port), t.hostname);
    const pair = { a: client, b: upstream };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const done = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", done);
    upstream.on("error", done);
    client.on("close", done);
    upstream.on("close", done);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    cutAll() {
      const n = pairs.size;
      for (const p of [...pairs]) {
        p.a.destroy();
        p.b.destroy();
      }
      pairs.clear();
      return n;
    },
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
    },
    get open() {
      return pairs.size;
    },
    close() {
      for (const p of pairs) {
        p.a.destroy();
        p.b.destroy();
      }
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}
