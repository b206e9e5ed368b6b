import {
  MessageAccumulator,
  PartialJson,
  parsePartialJson,
  type SseMessage,
  SseParser,
  stableMarkdown,
} from "@sluice/client";
import { marked } from "marked";
import { describe, expect, it } from "vitest";

describe("SseParser", () => {
  const sample =
    'retry: 100\n\n: keep-alive\n\nid: 0000000000000001\nevent: start\ndata: {"a":1}\n\nid: 0000000000000002\r\nevent: text-delta\r\ndata: line1\r\ndata: line2\r\n\r\n';
  const expected: SseMessage[] = [
    { id: "0000000000000001", event: "start", data: '{"a":1}' },
    { id: "0000000000000002", event: "text-delta", data: "line1\nline2" },
  ];
  it("parses events, comments, CRLF and multi-line data", () => {
    const out: SseMessage[] = [];
    new SseParser((m) => out.push(m)).feed(sample);
    expect(out).toEqual(expected);
  });
  it("gives the same events whatever the chunk boundaries", () => {
    for (let trial = 0; trial < 200; trial++) {
      const out: SseMessage[] = [];
      const p = new SseParser((m) => out.push(m));
      let i = 0;
      while (i < sample.length) {
        const n = 1 + Math.floor(Math.random() * 7);
        p.feed(sample.slice(i, i + n));
        i += n;
      }
      expect(out).toEqual(expected);
    }
  });
  it("bounds a line that never ends", () => {
    const p = new SseParser(() => {}, 100);
    expect(() => p.feed(`data: ${"x".repeat(200)}`)).toThrow(/longer than 100/);
  });
});

describe("stableMarkdown", () => {
  const doc = [
    "# Title",
    "",
    "Some **bold** text with a [link](https://example.com/a) and `code`.",
    "",
    "| a | b |",
    "|---|---|",
    "| 1 | 2 |",
    "| 3 | 4 |",
    "",
    "```ts",
    "const x = 1;",
    "console.log(x);",
    "```",
    "",
    "- item *one*",
    "- item two",
    "",
  ].join("\n");

  it("never shows half a link, an unclosed fence, half a table row or a bare table header", () => {
    for (let i = 1; i <= doc.length; i++) {
      const partial = doc.slice(0, i);
      const out = stableMarkdown(partial);
      const html = marked.parse(out, { async: false }) as string;
      // Fences balanced: the renderer got a closed code block (or none).
      expect((out.match(/^```/gm) ?? []).length % 2).toBe(0);
      // No raw link syntax leaks into the rendered text.
      expect(html).not.toMatch(/\[link|\]\(http/);
      // A table shows only whole rows: every <tr> has two cells.
      for (const row of html.match(/<tr>[\s\S]*?<\/tr>/g) ?? []) {
        expect((row.match(/<t[hd][ >]/g) ?? []).length).toBe(2);
      }
      // No literal pipes (a table row shown as a paragraph).
      expect(html.replace(/<pre>[\s\S]*?<\/pre>/g, "")).not.toContain("|");
      // Unclosed inline markers never show as literal asterisks or backticks.
      expect(html.replace(/<pre>[\s\S]*?<\/pre>/g, "")).not.toMatch(/\*\*|`/);
    }
  });

  it("shows code as it streams inside a closed block, and returns the text unchanged when final", () => {
    const partial = "Intro\n\n```ts\nconst x =";
    expect(stableMarkdown(partial)).toBe("Intro\n\n```ts\nconst x =\n```\n");
    expect(stableMarkdown(doc, { final: true })).toBe(doc);
    expect(stableMarkdown("See [the docs](https://exa")).toBe("See");
    expect(stableMarkdown("Plain words are shown as they come")).toBe("Plain words are shown as they come");
  });
});

describe("partial JSON", () => {
  it("turns a streaming JSON answer into a sequence of valid partial objects", () => {
    const full = JSON.stringify({
      title: "Logs",
      tags: ["durable", "streams"],
      n: 12345,
      nested: { ok: true },
    });
    const p = new PartialJson<Record<string, unknown>>();
    const seen: unknown[] = [];
    for (const ch of full) {
      const v = p.push(ch);
      if (v !== undefined) seen.push(structuredClone(v));
    }
    expect(seen.length).toBeGreaterThan(10);
    expect(seen.at(-1)).toEqual(JSON.parse(full));
    expect(p.complete()).toEqual(JSON.parse(full));
    for (const v of seen) {
      // Every value is plain JSON data, and numbers never appear half-streamed.
      expect(JSON.parse(JSON.stringify(v))).toEqual(v);
      const n = (v as { n?: number }).n;
      if (n !== undefined) expect(n).toBe(12345);
    }
    expect(parsePartialJson("not json")).toBeUndefined();
    expect(parsePartialJson('{"a": "hel')).toEqual({ a: "hel" });
  });
});

describe("MessageAccumulator", () => {
  it("folds text, reasoning, tool calls, usage and status; ignores replayed offsets", () => {
    const acc = new MessageAccumulator();
    const o = (n: number) => String(n).padStart(16, "0");
    const evs = [
      { type: "start", model: "demo", created_at: "x", metadata: { stream_id: "st_1" } },
      { type: "reasoning-delta", delta: "think" },
      { type: "text-delta", delta: "Hel" },
      { type: "text-delta", delta: "lo" },
      { type: "tool-call-delta", id: "c1", name: "get", args_delta: '{"q":' },
      { type: "tool-call-delta", id: "c1", args_delta: '"x"}' },
      { type: "tool-call", id: "c1", name: "get", args: { q: "x" } },
      { type: "usage", input_tokens: 3, output_tokens: 4 },
      { type: "finish", reason: "stop" },
    ] as const;
    evs.forEach((event, i) => {
      acc.apply({ offset: o(i + 1), event: event as never });
      if (i === 3) acc.apply({ offset: o(3), event: { type: "text-delta", delta: "Hel" } }); // replay
    });
    const m = acc.message;
    expect(m).toMatchObject({
      streamId: "st_1",
      model: "demo",
      text: "Hello",
      reasoning: "think",
      status: "completed",
      finishReason: "stop",
      usage: { input_tokens: 3, output_tokens: 4 },
      offset: o(9),
    });
    expect(m.toolCalls).toEqual([
      { id: "c1", name: "get", argsText: '{"q":"x"}', args: { q: "x" }, complete: true },
    ]);
  });
});
