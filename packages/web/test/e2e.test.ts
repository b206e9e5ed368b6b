import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CuttingProxy, startCuttingProxy } from "../../client/test/proxy.js";
import { DEFAULT_WEB_ROOT } from "../../server/src/http/web.js";
import { type Running, readAllJson, startSluice, textOf, waitForStatus } from "../../server/test/helpers.js";

/**
 * The playground and dashboard in Debian's chromium, driven by playwright-core, against a
 * real server (through a proxy that can cut connections). Screenshots go to test-artifacts/.
 */
const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = fileURLToPath(new URL("../../../test-artifacts/", import.meta.url));
const missing = [
  ...(existsSync(CHROMIUM) ? [] : [`${CHROMIUM} (apt-get install chromium)`]),
  ...(existsSync(path.join(DEFAULT_WEB_ROOT, "index.html")) ? [] : ["the web build (npm run build)"]),
];
// A developer without the browser skips these tests; under CI (.ci/run sets CI) they fail instead,
// so a CI image without chromium cannot stay green with the browser untested.
const inCI = !!process.env.CI && process.env.CI !== "false" && process.env.CI !== "0";
const ready = missing.length === 0;

let s: Running;
let proxy: CuttingProxy;
let browser: Browser;

beforeAll(async () => {
  if (!ready && inCI) throw new Error(`the browser tests need ${missing.join(" and ")}`);
  if (!ready) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  s = await startSluice({ sse: { heartbeat_ms: 500, retry_ms: 100 } });
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
});

afterAll(async () => {
  await browser?.close();
  await proxy?.close();
  await s?.close();
});

async function newPage(ctx?: BrowserContext): Promise<{ page: Page; ctx: BrowserContext }> {
  const context = ctx ?? (await browser.newContext({ viewport: { width: 1100, height: 900 } }));
  const page = await context.newPage();
  return { page, ctx: context };
}

async function shot(page: Page, name: string) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

async function assembled(page: Page): Promise<string> {
  return page.evaluate(
    () => (window as unknown as { __sluiceMessage?: { text: string } }).__sluiceMessage?.text ?? "",
  );
}

async function startFromUi(page: Page, speed: number): Promise<string> {
  await page.goto(`${proxy.url}/`);
  await page.getByTestId("model").selectOption("demo");
  await page.getByTestId("speed").fill(String(speed));
  await page.getByTestId("send").click();
  await page.waitForFunction(() => /#s=st_/.test(window.location.hash));
  const id = /s=(st_[A-Za-z0-9_-]+)/.exec(await page.evaluate(() => window.location.hash))?.[1];
  if (!id) throw new Error("no stream id in the URL");
  return id;
}

async function serverText(id: string): Promise<string> {
  await waitForStatus(s.url, id, (st) => st !== "running", 60_000);
  return textOf(await readAllJson(s.url, id));
}

describe.skipIf(!ready && !inCI)("web playground and dashboard in chromium", () => {
  it("streams the answer progressively, with TTFT and tokens/s, and ends with the generation's exact text", async () => {
    const { page, ctx } = await newPage();
    const problems: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(m.text());
    });
    page.on("pageerror", (e) => problems.push(e.message));
    const id = await startFromUi(page, 60);
    const states = new Set<string>();
    let sawStreaming = false;
    for (let i = 0; i < 400; i++) {
      const html = await page.getByTestId("answer").innerHTML();
      states.add(html);
      const status = await page.getByTestId("status").innerText();
      if (status === "streaming") sawStreaming = true;
      if (status === "completed") break;
      if (i === 15) await shot(page, "playground-streaming");
      await page.waitForTimeout(50);
    }
    expect(sawStreaming).toBe(true);
    expect(states.size).toBeGreaterThan(5);
    await expect.poll(() => page.getByTestId("status").innerText(), { timeout: 30_000 }).toBe("completed");
    const text = await serverText(id);
    expect(text.length).toBeGreaterThan(200);
    expect(await assembled(page)).toBe(text);
    expect(await page.getByTestId("ttft").innerText()).toMatch(/^\d+ ms$/);
    expect(Number(await page.getByTestId("tps").innerText())).toBeGreaterThan(0);
    // Markdown was rendered (the demo answers have headings, lists or code).
    expect(
      await page
        .locator(
          "[data-testid=answer] h1, [data-testid=answer] h2, [data-testid=answer] h3, [data-testid=answer] li, [data-testid=answer] pre",
        )
        .count(),
    ).toBeGreaterThan(0);
    await shot(page, "playground-completed");
    // No script errors and no Content-Security-Policy violations.
    expect(problems).toEqual([]);
    await ctx.close();
  });

  it("stop cancels the generation on the server", async () => {
    const { page, ctx } = await newPage();
    const id = await startFromUi(page, 15);
    await expect
      .poll(() => page.getByTestId("tokens").innerText().then(Number), { timeout: 20_000 })
      .toBeGreaterThan(3);
    await page.getByTestId("stop").click();
    const info = await waitForStatus(s.url, id, (st) => st !== "running");
    expect(info.status).toBe("cancelled");
    await expect.poll(() => page.getByTestId("status").innerText(), { timeout: 10_000 }).toBe("cancelled");
    await shot(page, "playground-cancelled");
    await ctx.close();
  });

  it("going offline mid-answer shows reconnecting, then the complete text with nothing duplicated", async () => {
    const { page, ctx } = await newPage();
    const id = await startFromUi(page, 40);
    await expect
      .poll(() => page.getByTestId("tokens").innerText().then(Number), { timeout: 20_000 })
      .toBeGreaterThan(5);
    await ctx.setOffline(true);
    proxy.pause();
    proxy.cutAll();
    await page.getByTestId("reconnecting").waitFor({ timeout: 15_000 });
    expect(await page.getByTestId("status").innerText()).toBe("reconnecting");
    await shot(page, "playground-reconnecting");
    await page.waitForTimeout(1000);
    await ctx.setOffline(false);
    proxy.resume();
    await expect.poll(() => page.getByTestId("status").innerText(), { timeout: 60_000 }).toBe("completed");
    const text = await serverText(id);
    expect(await assembled(page)).toBe(text);
    const info = (await (await fetch(`${s.url}/v1/streams/${id}/info`)).json()) as { status: string };
    expect(info.status).toBe("completed");
    await ctx.close();
  });

  it("a reload mid-answer resumes the same stream; a second tab follows it too", async () => {
    const { page, ctx } = await newPage();
    const id = await startFromUi(page, 40);
    await expect
      .poll(() => page.getByTestId("tokens").innerText().then(Number), { timeout: 20_000 })
      .toBeGreaterThan(5);
    const second = await ctx.newPage();
    const reads: string[] = [];
    second.on("request", (r) => {
      if (r.url().includes(`/v1/streams/${id}?`)) reads.push(r.url());
    });
    await second.goto(`${proxy.url}/#s=${id}`);
    await page.reload();
    expect(await page.evaluate(() => window.location.hash)).toBe(`#s=${id}`);
    await expect.poll(() => page.getByTestId("stream-id").innerText(), { timeout: 10_000 }).toBe(id);
    const running = await (await fetch(`${s.url}/v1/streams/${id}/info`)).json();
    expect(running.status).toBe("running");
    for (const p of [page, second]) {
      await expect.poll(() => p.getByTestId("status").innerText(), { timeout: 60_000 }).toBe("completed");
    }
    const text = await serverText(id);
    expect(await assembled(page)).toBe(text);
    expect(await assembled(second)).toBe(text);
    // The playground catches up compact unless its address says ?compact=false.
    expect(reads.length).toBeGreaterThan(0);
    expect(reads.every((u) => new URL(u).searchParams.get("compact") === "true")).toBe(true);
    const third = await ctx.newPage();
    const plainReads: string[] = [];
    third.on("request", (r) => {
      if (r.url().includes(`/v1/streams/${id}?`)) plainReads.push(r.url());
    });
    await third.goto(`${proxy.url}/?compact=false#s=${id}`);
    await expect.poll(() => third.getByTestId("status").textContent(), { timeout: 60_000 }).toBe("completed");
    expect(await assembled(third)).toBe(text);
    expect(plainReads.length).toBeGreaterThan(0);
    expect(plainReads.some((u) => new URL(u).searchParams.has("compact"))).toBe(false);
    await ctx.close();
  });

  it("the dashboard lists the live stream with its readers, and links to follow it", async () => {
    const { page, ctx } = await newPage();
    const id = await startFromUi(page, 20);
    const { page: dash } = await newPage(ctx);
    await dash.goto(`${proxy.url}/dashboard`);
    const row = dash.locator(`[data-testid=live-streams] tr[data-stream="${id}"]`);
    await row.waitFor({ timeout: 15_000 });
    expect(await row.innerText()).toContain("demo");
    expect(await row.locator("a").getAttribute("href")).toBe(`/#s=${id}`);
    await expect
      .poll(async () => Number(await dash.getByTestId("rate-tokens").innerText()), { timeout: 15_000 })
      .toBeGreaterThan(0);
    await shot(dash, "dashboard");
    await page.getByTestId("stop").click();
    await waitForStatus(s.url, id, (st) => st === "cancelled");
    await dash.locator(`[data-testid=recent-streams] tr[data-stream="${id}"]`).waitFor({ timeout: 10_000 });
    await ctx.close();
  });
});
