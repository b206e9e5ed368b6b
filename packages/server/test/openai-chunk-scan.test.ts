import { readdirSync, readFileSync } from "node:fs";
import { SluiceError } from "@sluice/protocol";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ChunkScanner } from "../src/providers/openai-chunk-scan.js";
import { ChunkReader } from "../src/providers/openai-compatible.js";
import type { ProviderEvent } from "../src/providers/provider.js";

const redact = (t: string) => t;

/** Everything a reader makes of a stream of `data` payloads: events, `sluice_due`s, the error
 * that stopped it, then what its end emits. */
function run(datas: string[], fast: boolean) {
  const reader = new ChunkReader(redact, fast);
  const events: ProviderEvent[] = [];
  const dues: unknown[] = [];
  let error: unknown;
  for (const data of datas) {
    try {
      dues.push(reader.read(data, events));
    } catch (err) {
      error = err instanceof SluiceError ? { code: err.code, message: err.message } : String(err);
      break;
    }
  }
  let final: unknown;
  try {
    final = [...reader.state.final()];
  } catch (err) {
    final = err instanceof SluiceError ? { code: err.code, message: err.message } : String(err);
  }
  return { events, dues, error, final, finishReason: reader.state.finishReason };
}

/** A JSON object written key by key (so keys may repeat and whitespace may vary). */
function object(entries: [string, string][], spaces: string[]): string {
  const sp = (i: number) => spaces[i % spaces.length] ?? "";
  return `{${entries.map(([k, v], i) => `${sp(i)}${JSON.stringify(k)}${sp(i + 1)}:${v}`).join(",")}}`;
}

const tricky = fc.constantFrom(
  '"',
  "\\",
  '\\"',
  "\n",
  "\u2028",
  "\u0000",
  "\ud800",
  "é",
  "😀",
  "",
  " ",
  "}]",
);
const content = fc.oneof(
  fc.string(),
  fc.string({ unit: "grapheme" }),
  fc.string({ unit: "binary" }),
  fc.array(tricky, { maxLength: 5 }).map((a) => a.join("")),
);
const scalar = fc.oneof(
  fc.string().map((s) => JSON.stringify(s)),
  fc.constantFrom("null", "1", "true", '"\\u0041"', '"a\\"b"', "{}", "[]", '{"x":1}'),
  fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
);
const headKey = fc.constantFrom(
  "id",
  "object",
  "created",
  "model",
  "system_fingerprint",
  "service_tier",
  "usage",
  "error",
  "choices",
  "__proto__",
  "sluice_due",
  "x",
);
const headValue = (key: string) => {
  switch (key) {
    case "system_fingerprint":
    case "service_tier":
      return fc.oneof(
        fc.string().map((s) => JSON.stringify(s)),
        scalar,
      );
    case "usage":
      return fc.oneof(
        fc.constant("null"),
        fc.constant('{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}'),
        scalar,
      );
    case "error":
      return fc.oneof(fc.constant("null"), fc.constant('{"message":"boom"}'), scalar);
    case "sluice_due":
      return fc.oneof(fc.integer().map(String), scalar);
    default:
      return scalar;
  }
};
const fields = fc.array(
  headKey.chain((k) => headValue(k).map((v): [string, string] => [k, v])),
  { maxLength: 5 },
);
const choices = fc.oneof(
  {
    weight: 6,
    arbitrary: content.map(
      (c) => `[{"index":0,"delta":{"content":${JSON.stringify(c)}},"logprobs":null,"finish_reason":null}]`,
    ),
  },
  {
    weight: 2,
    arbitrary: content.map(
      (c) => `[{"index":0,"delta":{"content":${JSON.stringify(c)}},"finish_reason":null}]`,
    ),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}]',
      '[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":"stop"}]',
      '[{"index":0,"delta":{"content":"Hi","reasoning_content":"R"},"finish_reason":null}]',
      '[{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{"content":"b"}}]',
      '[{"index":1,"delta":{"content":"b"},"finish_reason":null}]',
      '[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{}"}}]},"finish_reason":null}]',
      '[{"index":0,"delta":{},"finish_reason":"length"}]',
      "[]",
      "null",
    ),
  },
);
/** One chunk: head fields, choices, tail fields, with optional whitespace. */
const chunk = fc
  .record({
    head: fields,
    choices,
    tail: fields,
    spaces: fc.array(fc.constantFrom("", "", "", " ", "\n", "\u00a0"), { minLength: 1, maxLength: 4 }),
  })
  .map(({ head, choices, tail, spaces }) => object([...head, ["choices", choices], ...tail], spaces));
/** Optionally broken: a character inserted or removed somewhere. */
const mutated = fc.oneof(
  { weight: 4, arbitrary: chunk },
  {
    weight: 1,
    arbitrary: fc
      .tuple(
        chunk,
        fc.nat(),
        fc.constantFrom("", "{", "}", "[", "]", ",", ":", '"', "\\", " ", "\u00a0", "x", "\u0001"),
      )
      .map(([c, at, ch]) => {
        const i = at % (c.length + 1);
        return ch === "" ? c.slice(0, i) + c.slice(i + 1) : c.slice(0, i) + ch + c.slice(i);
      }),
  },
);
/** A stream: mostly chunks that share their head and tail (as real streams do) but for the
 * tail's last value (mock-upstream's `sluice_due`, OpenAI's `obfuscation`), some not. */
const lastValue = fc.oneof(
  fc.integer().map(String),
  fc.string().map((s) => JSON.stringify(s)),
  fc.constantFrom('"a\\"b"', "1.5", "-0", "null", "{}", '"x"}', '1,"choices":[]', '"\u0001"', " 7", "[1]"),
  scalar,
);
const lastKey = fc.constantFrom(
  "sluice_due",
  "obfuscation",
  "error",
  "usage",
  "__proto__",
  "choices",
  'a\\"b',
  "",
);
const stream = fc
  .tuple(
    fc.array(fields, { minLength: 1, maxLength: 2 }),
    fc.array(fields, { minLength: 1, maxLength: 2 }),
    lastKey,
    fc.array(
      fc.oneof(
        fc.tuple(content, lastValue, fc.nat(), fc.nat()).map(([c, v, h, t]) => ({ c, v, h, t })),
        mutated.map((m) => ({ m })),
      ),
      { maxLength: 12 },
    ),
  )
  .map(([heads, tails, key, parts]) =>
    parts.map((p) =>
      "c" in p
        ? object(
            [
              ...(heads[p.h % heads.length] ?? []),
              [
                "choices",
                `[{"index":0,"delta":{"content":${JSON.stringify(p.c)}},"logprobs":null,"finish_reason":null}]`,
              ],
              ...(tails[p.t % tails.length] ?? []),
              ...(key === "" ? [] : ([[key, p.v]] as [string, string][])),
            ],
            [""],
          )
        : p.m,
    ),
  );

describe("OpenAI chunk scanner (the fast path for plain text deltas)", () => {
  it("takes the fast path for mock-upstream's and OpenAI's text-delta chunks", () => {
    const scanner = new ChunkScanner();
    const mock =
      '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"demo","choices":[{"index":0,"delta":{"content":" log\\n\\"q\\" é😀"},"logprobs":null,"finish_reason":null}],"usage":null,"sluice_due":1745330021123}';
    expect(scanner.scan(mock)).toMatchObject({
      content: ' log\n"q" é😀',
      lastKey: "sluice_due",
      lastValue: 1745330021123,
      fields: {
        id: "chatcmpl-1",
        object: "chat.completion.chunk",
        created: 1,
        model: "demo",
        usage: null,
        sluice_due: 1745330021123,
      },
    });
    const openai =
      '{"id":"chatcmpl-B","object":"chat.completion.chunk","created":2,"model":"gpt-4o-mini","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x1"}';
    // The next chunk of the stream: only the last value of the tail differs.
    const next = mock.replace(" log", "s").replace("1745330021123", "1745330021156");
    expect(scanner.scan(next)?.lastValue).toBe(1745330021156);
    expect(scanner.scan(next.replace("1745330021156", '"x"'))?.lastValue).toBe("x");
    expect(scanner.scan(next.replace("1745330021156", '1,"error":{"m":1}'))).toBeUndefined();
    expect(scanner.scan(openai)?.content).toBe("Hi");
    expect(scanner.scan(openai)?.fields.system_fingerprint).toBe("fp_1");
  });

  it("refuses what is not exactly a plain text delta or not JSON", () => {
    const scanner = new ChunkScanner();
    const refused = [
      '{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}]}',
      '{"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":"stop"}]}',
      '{"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"choices":[]}',
      '{"error":{"message":"x"},"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}',
      '{,"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}',
      '{"a":1,"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],}',
      '{"a":1,\u00a0"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}',
      '{"choices":[{"index":0,"delta":{"content":"H\u0001i"},"logprobs":null,"finish_reason":null}]}',
      '{"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]} x',
      '{"__proto__":{"usage":{}},"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}',
    ];
    for (const data of refused) expect(scanner.scan(data), data).toBeUndefined();
  });

  it("yields exactly what the full JSON.parse path yields, for random chunks and streams", () => {
    let fastHits = 0;
    fc.assert(
      fc.property(stream, (datas) => {
        const scanner = new ChunkScanner();
        for (const d of datas) if (scanner.scan(d) !== undefined) fastHits++;
        expect(run(datas, true)).toEqual(run(datas, false));
      }),
      { numRuns: 3000 },
    );
    // The property is about the fast path: it must actually have been taken, often.
    expect(fastHits).toBeGreaterThan(1500);
  });

  it("reads every recorded fixture the same either way", () => {
    const dir = new URL("./fixtures/openai/", import.meta.url);
    for (const name of readdirSync(dir)) {
      const text = readFileSync(new URL(name, dir), "utf8");
      const datas = text
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data: ") && l.trim() !== "data: [DONE]")
        .map((l) => l.slice("data: ".length));
      expect(run(datas, true), name).toEqual(run(datas, false));
    }
    const text = readFileSync(new URL("openai-text.sse", dir), "utf8");
    const scanner = new ChunkScanner();
    const hits = text.split("\n").filter((l) => l.startsWith("data: {") && scanner.scan(l.slice(6)));
    expect(hits.length).toBeGreaterThan(0);
  });
});
