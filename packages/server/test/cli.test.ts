import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readAllJson, textOf, waitForStatus } from "./helpers.js";

const CLI = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));
const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const children: ChildProcess[] = [];

function run(
  args: string[],
  opts: { cwd?: string; cmd?: string; detached?: boolean; env?: Record<string, string> } = {},
) {
  const child = spawn(opts.cmd ?? process.execPath, opts.cmd ? args : [CLI, ...args], {
    cwd: opts.cwd ?? ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, SLUICE_LOG_LEVEL: "warn", ...opts.env },
    detached: opts.detached ?? false,
  });
  children.push(child);
  const result = { child, stdout: "", stderr: "", exit: undefined as Promise<number | null> | undefined };
  child.stdout?.on("data", (d: Buffer) => {
    result.stdout += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    result.stderr += d.toString();
  });
  // "close", not "exit": a child can exit before the last of its output has been read here.
  result.exit = new Promise((resolve) =>
    child.on("close", (code, signal) => resolve(code ?? (signal ? 128 : null))),
  );
  return result;
}

async function until(cond: () => boolean, what: string, ms = 15_000) {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let serverUrl = "";
beforeAll(async () => {
  const srv = run(["serve", "--port", "0"]);
  await until(() => /listening on http/.test(srv.stdout), "sluice serve");
  serverUrl = (/listening on (http:\/\/\S+)/.exec(srv.stdout) as RegExpExecArray)[1] as string;
});
afterAll(() => {
  for (const c of children) {
    try {
      if (c.exitCode === null)
        c.pid && c.spawnargs[0] === "npm" ? process.kill(-c.pid, "SIGTERM") : c.kill("SIGTERM");
    } catch {}
  }
});

describe("the sluice CLI", () => {
  it("mock-upstream --fail-status/--fail-times/--retry-after injects faults, then serves both APIs", async () => {
    const mock = run([
      "mock-upstream",
      "--port",
      "0",
      "--fail-status",
      "503",
      "--fail-times",
      "1",
      "--retry-after",
      "2",
    ]);
    await until(() => /listening on http/.test(mock.stdout), "mock-upstream");
    const base = (/listening on (http:\/\/\S+)/.exec(mock.stdout) as RegExpExecArray)[1] as string;
    const chat = () =>
      fetch(`${base}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "demo",
          messages: [{ role: "user", content: "hi" }],
          demo: { length: 3 },
        }),
      });
    const first = await chat();
    expect(first.status).toBe(503);
    expect(first.headers.get("retry-after")).toBe("2");
    expect(((await first.json()) as { error: { type: string } }).error.type).toBe("server_error");
    const second = await chat();
    expect(second.status).toBe(200);
    const messages = await fetch(`${base.replace(/\/v1$/, "")}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "anthropic-version": "2023-06-01" },
      body: JSON.stringify({ model: "demo", max_tokens: 5, messages: [{ role: "user", content: "hi" }] }),
    });
    expect(messages.status).toBe(200);
    expect(((await messages.json()) as { type: string }).type).toBe("message");
  });

  it("mock-upstream --fault takes the other faults as JSON (here: a stall after 2 tokens) and rejects bad ones", async () => {
    const mock = run(["mock-upstream", "--port", "0", "--fault", '{"stall_after_tokens":2}']);
    await until(() => /listening on http/.test(mock.stdout), "mock-upstream");
    const base = (/listening on (http:\/\/\S+)/.exec(mock.stdout) as RegExpExecArray)[1] as string;
    const controller = new AbortController();
    const res = await fetch(`${base}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        stream: true,
        messages: [{ role: "user", content: "hi" }],
        demo: { length: 10, ttft_ms: 1, tokens_per_s: 1000 },
      }),
      signal: controller.signal,
    });
    expect(res.status).toBe(200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let text = "";
    // Two content chunks arrive, then nothing: the mock holds the connection silent.
    while ((text.match(/"content"/g) ?? []).length < 2) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended: ${text}`);
      text += new TextDecoder().decode(value);
    }
    const more = await Promise.race([
      reader.read().then(() => "more"),
      new Promise((r) => setTimeout(() => r("silent"), 300)),
    ]);
    expect(more).toBe("silent");
    expect(text).not.toContain("[DONE]");
    controller.abort();

    const bad = run(["mock-upstream", "--port", "0", "--fault", '{"stall_after":2}']);
    expect(await bad.exit).not.toBe(0);
    expect(bad.stderr).toMatch(/--fault/);
  });

  it("serve answers health checks", async () => {
    const res = await fetch(`${serverUrl}/healthz`);
    expect(await res.json()).toEqual({ status: "ok" });
  });

  it("chat streams the answer into the terminal and exits 0", async () => {
    const chat = run([
      "chat",
      "Tell me about rivers",
      "--url",
      serverUrl,
      "--tokens-per-s",
      "400",
      "--seed",
      "3",
    ]);
    expect(await chat.exit).toBe(0);
    const id = (/\[stream (st_\w+)\]/.exec(chat.stderr) as RegExpExecArray)[1] as string;
    const text = textOf(await readAllJson(serverUrl, id));
    expect(text.length).toBeGreaterThan(100);
    expect(chat.stdout.trim()).toBe(text.trim());
  });

  it("chat and tail find the server through SLUICE_URL; --url wins over it", async () => {
    // Nothing listens on port 1: a call that used it fails with "cannot reach".
    const closed = "http://127.0.0.1:1";
    const chat = run(["chat", "hi", "--tokens-per-s", "1000", "--seed", "5"], {
      env: { SLUICE_URL: serverUrl },
    });
    expect(await chat.exit).toBe(0);
    const id = (/\[stream (st_\w+)\]/.exec(chat.stderr) as RegExpExecArray)[1] as string;
    const text = textOf(await readAllJson(serverUrl, id));
    expect(chat.stdout.trim()).toBe(text.trim());
    const tail = run(["tail", id], { env: { SLUICE_URL: `${serverUrl}/` } });
    expect(await tail.exit).toBe(0);
    expect(tail.stdout.trim()).toBe(text.trim());
    const flagWins = run(["tail", id, "--url", serverUrl], { env: { SLUICE_URL: closed } });
    expect(await flagWins.exit).toBe(0);
    expect(flagWins.stdout.trim()).toBe(text.trim());
    const envUsed = run(["chat", "hi"], { env: { SLUICE_URL: closed } });
    expect(await envUsed.exit).toBe(1);
    expect(envUsed.stderr).toContain(`cannot reach ${closed}`);
  });

  it("--version prints the server package's version", async () => {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    const v = run(["--version"]);
    expect(await v.exit).toBe(0);
    expect(v.stdout.trim()).toBe(pkg.version);
  });

  it("Ctrl-C in chat cancels the generation on the server", async () => {
    const chat = run(["chat", "Write a long essay", "--url", serverUrl, "--tokens-per-s", "20"]);
    await until(() => chat.stdout.length > 20, "first tokens");
    chat.child.kill("SIGINT");
    expect(await chat.exit).toBe(130);
    const id = (/\[stream (st_\w+)\]/.exec(chat.stderr) as RegExpExecArray)[1] as string;
    const info = await waitForStatus(serverUrl, id, (s) => s !== "running");
    expect(info.status).toBe("cancelled");
  });

  it("tail follows a stream from an offset until it ends", async () => {
    const start = await fetch(`${serverUrl}/v1/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        messages: [{ role: "user", content: "hi" }],
        demo: { tokens_per_s: 300, length: 50 },
      }),
    });
    const { id } = (await start.json()) as { id: string };
    const tail = run(["tail", id, "--url", serverUrl]);
    expect(await tail.exit).toBe(0);
    expect(tail.stdout.trim()).toBe(textOf(await readAllJson(serverUrl, id)).trim());
    const all = await readAllJson(serverUrl, id);
    const fromMid = run(["tail", id, "--url", serverUrl, "--offset", all[10]?.offset as string, "--json"]);
    expect(await fromMid.exit).toBe(0);
    const lines = fromMid.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { offset: string });
    expect(lines.map((l) => l.offset)).toEqual(all.slice(11).map((e) => e.offset));
  });

  it("reports config errors clearly and exits non-zero", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-cli-"));
    const bad = join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify({ port: "eighty", routes: { x: { provider: "openai-compatible" } } }));
    const r1 = run(["serve", "--config", bad]);
    expect(await r1.exit).toBe(2);
    expect(r1.stderr).toMatch(/port/);
    expect(r1.stderr).toMatch(/routes\.x\.base_url/);
    const notJson = join(dir, "nope.json");
    writeFileSync(notJson, "{ port: 1 ");
    const r2 = run(["serve", "--config", notJson]);
    expect(await r2.exit).toBe(2);
    expect(r2.stderr).toMatch(/not valid JSON/);
    const r3 = run(["serve", "--config", join(dir, "missing.json")]);
    expect(await r3.exit).toBe(2);
    expect(r3.stderr).toMatch(/cannot read config file/);
    const open = run(["serve", "--host", "0.0.0.0", "--port", "0"]);
    expect(await open.exit).toBe(2);
    expect(open.stderr).toMatch(/refusing to listen on 0\.0\.0\.0 with no API keys/);
    const r4 = run(["serve", "--port", "abc"]);
    expect(await r4.exit).not.toBe(0);
    expect(r4.stderr).toMatch(/not a non-negative integer/);
  });

  it("npm start -- --port P passes flags through to sluice serve", async () => {
    const npm = run(["start", "--", "--port", "0"], { cmd: "npm", detached: true });
    await until(() => /listening on http/.test(npm.stdout), "npm start");
    const url = (/listening on (http:\/\/\S+)/.exec(npm.stdout) as RegExpExecArray)[1] as string;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(url).not.toMatch(/:8080$/);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    process.kill(-(npm.child.pid as number), "SIGTERM");
    await npm.exit;
  });
});
