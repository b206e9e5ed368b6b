/**
 * The built-in `demo` model: an honest *simulator* of an LLM, not a language model.
 *
 * It writes a plausible answer shaped by the prompt (its topic words, a heading, prose from a
 * phrase bank, a list, a TypeScript code block; or JSON, a tool call, reasoning then an answer),
 * cut into BPE-like tokens, with a realistic pace. Everything here is pure and deterministic:
 * the same request (same seed, or the same last user message when no seed is given) yields the
 * same tokens and the same due times. The clock-driven part lives in `provider.ts`.
 */
import type {
  ReasoningDeltaEvent,
  TextDeltaEvent,
  ToolCallDeltaEvent,
  ToolCallEvent,
} from "@sluice/protocol";
import { type GenerationRequest, lastUserText, messageText } from "../../core/request.js";

export type DemoKind = "markdown" | "json" | "tool-call" | "reasoning";

/** The events a demo answer is made of, in order. A `tool-call` closes the deltas of its call. */
export type DemoAnswerEvent = TextDeltaEvent | ReasoningDeltaEvent | ToolCallDeltaEvent | ToolCallEvent;

export interface DemoPacing {
  /** Time to first token, ms after the start. */
  ttft_ms: number;
  tokens_per_s: number;
  /** Relative spread of each inter-token interval: interval = (1000 / tps) * (1 + jitter * u), u in [-1, 1]. */
  jitter: number;
}

export interface DemoPlan {
  /** The seed everything was drawn from (`demo.seed`, else a hash of the last user message). */
  seed: number;
  kind: DemoKind;
  pacing: DemoPacing;
  /** The answer length asked for, in delta tokens (`demo.length`, else drawn from the seed). */
  length: number;
  /** The whole answer, before `max_tokens` or a simulated failure cuts it. */
  events: readonly DemoAnswerEvent[];
  /**
   * When each event is due, in ms after the start (parallel to `events`). A `tool-call` event is
   * due with the last delta of its call; deltas are paced one token at a time.
   */
  due_ms: Float64Array;
  /** Number of delta events (text, reasoning, tool-call argument pieces): the output tokens. */
  delta_count: number;
  /** How the answer ends when nothing cuts it. */
  finish_reason: "stop" | "tool-calls";
  /** `request.max_tokens`: the stream stops after this many deltas with `finish: length`. */
  max_tokens: number | undefined;
  /** `demo.fail_after_tokens`: the stream fails after this many deltas (simulated upstream failure). */
  fail_after_tokens: number | undefined;
  /** Prompt size, ≈ the number of words in all messages. */
  input_tokens: number;
}

export const DEMO_DEFAULTS = {
  ttft_ms: 300,
  tokens_per_s: 40,
  jitter: 0.2,
  kind: "markdown" as DemoKind,
  /** Without `demo.length`, the length is drawn from the seed in [min_length, max_length]. */
  min_length: 150,
  max_length: 400,
} as const;

// ─── Randomness ──────────────────────────────────────────────────────────────────────────────

/** mulberry32: a tiny, fast, well-distributed 32-bit PRNG. Returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a, 32 bits: a stable hash for strings (prompt → seed). */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Independent sub-streams per concern, so that e.g. changing the length does not change the pace. */
function subSeed(seed: number, salt: string): number {
  return hashString(`${seed}/${salt}`);
}

class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  float(): number {
    return this.next();
  }
  /** Integer in [min, max], both inclusive. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T;
  }
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }
}

/** Draws items without repeating one until all were used (then reshuffles): varied long answers. */
class Deck<T> {
  private pile: T[] = [];
  constructor(
    private readonly items: readonly T[],
    private readonly rng: Rng,
  ) {}
  draw(): T {
    if (this.pile.length === 0) this.pile = this.rng.shuffle([...this.items]);
    return this.pile.pop() as T;
  }
}

// ─── Tokens ──────────────────────────────────────────────────────────────────────────────────

/**
 * A GPT-2 style pre-tokenizer: contractions, words with their leading space, numbers (up to
 * three digits), punctuation runs, newlines as tokens of their own, and indentation. Every
 * character is matched by some branch, so the tokens always concatenate back to the text.
 */
const TOKEN_RE =
  /'(?:s|t|re|ve|m|ll|d)\b|\n+| ?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|[ \t]+(?!\S)|[ \t]+|[\s\S]/gu;

export function tokenize(text: string): string[] {
  return text.match(TOKEN_RE) ?? [];
}

const WORD_TOKEN_RE = /^( ?)(\p{L}+)$/u;
const SUFFIXES = ["ations", "ation", "ments", "ment", "ness", "able", "ing", "ally", "ed", "ly"];

/**
 * Splits a word token in two the way BPE splits rarer words: at a camelCase boundary, before a
 * common suffix, else near the middle. Returns undefined for tokens too short to split.
 */
function splitWord(token: string, rng: Rng): [string, string] | undefined {
  const m = WORD_TOKEN_RE.exec(token);
  const space = m?.[1] ?? "";
  const word = m?.[2];
  if (!word || word.length < 4) return undefined;
  let cut = 0;
  const camel = /\p{Ll}\p{Lu}/u.exec(word);
  if (camel) cut = camel.index + 1;
  if (!cut) {
    const suffix = SUFFIXES.find((s) => word.length - s.length >= 2 && word.toLowerCase().endsWith(s));
    if (suffix) cut = word.length - suffix.length;
  }
  if (!cut) cut = 2 + Math.floor(rng.float() * (word.length - 3));
  return [space + word.slice(0, cut), word.slice(cut)];
}

/** Last resort to make more tokens: cut any token of two characters or more in half. */
function splitAny(token: string): [string, string] | undefined {
  if (token.length < 2 || token.includes("\n")) return undefined;
  const cut = Math.floor(token.length / 2);
  return [token.slice(0, cut), token.slice(cut)];
}

/**
 * Grows a token list to exactly `target` tokens (when its characters allow) by splitting words
 * into BPE-like pieces: long words first, then shorter ones, then anything. The text is unchanged.
 */
function growTo(tokens: string[], target: number, rng: Rng): string[] {
  let out = tokens;
  const passes: Array<(t: string) => boolean> = [
    (t) => (WORD_TOKEN_RE.exec(t)?.[2]?.length ?? 0) >= 7,
    (t) => (WORD_TOKEN_RE.exec(t)?.[2]?.length ?? 0) >= 4,
  ];
  let pass = 0;
  while (out.length < target && pass <= passes.length) {
    const need = target - out.length;
    const test = passes[pass];
    const candidates: number[] = [];
    for (let i = 0; i < out.length; i++) {
      const t = out[i] as string;
      if (test ? test(t) : splitAny(t) !== undefined) candidates.push(i);
    }
    if (candidates.length === 0) {
      pass++;
      continue;
    }
    const chosen = new Set(rng.shuffle(candidates).slice(0, need));
    const next: string[] = [];
    for (let i = 0; i < out.length; i++) {
      const t = out[i] as string;
      const parts = chosen.has(i) ? (test ? splitWord(t, rng) : splitAny(t)) : undefined;
      if (parts) next.push(parts[0], parts[1]);
      else next.push(t);
    }
    out = next;
    // A word pass that could not supply enough pieces moves on to a coarser rule; the last
    // pass repeats until no token can be cut any more.
    if (candidates.length < need && test) pass++;
  }
  return out;
}

/** Shrinks a token list to `target` pieces by joining neighbours, evenly. The text is unchanged. */
function mergeTo(tokens: string[], target: number): string[] {
  const n = tokens.length;
  if (n <= target || target < 1) return tokens;
  const out: string[] = [];
  for (let i = 0; i < target; i++) {
    out.push(tokens.slice(Math.floor((i * n) / target), Math.floor(((i + 1) * n) / target)).join(""));
  }
  return out;
}

/** Exactly `target` pieces of the same text: grows or merges (for structured output that must stay whole). */
function resizeTo(tokens: string[], target: number, rng: Rng): string[] {
  return tokens.length < target ? growTo(tokens, target, rng) : mergeTo(tokens, target);
}

// ─── The prompt's topic ──────────────────────────────────────────────────────────────────────

const STOPWORDS = new Set(
  (
    "a an the and or but if then than so to of in on at by for with about from into onto over under " +
    "between through during before after above below up down out off again further once here there " +
    "when where why how what which who whom whose this that these those i me my mine we us our you " +
    "your yours he him his she her it its they them their is are was were be been being am do does " +
    "did doing have has had having can could would should will shall may might must not no yes " +
    "very just really also too more most much many some any all each every both few other such own " +
    "same only please thanks thank hi hello hey ok okay explain describe tell show give write create " +
    "make want need help use using used like get got let lets know think way ways best good better " +
    "simple quick quickly example examples thing things something anything everything work works " +
    "working set sets setup new vs versus via etc e g ie eg what's how's i'm i'd i've it's don't " +
    "doesn't can't won't compare compared difference differences summarize summarise list define " +
    "implement build design fix debug generate recommend suggest find choose pick understand learn " +
    "start started"
  ).split(/\s+/),
);

interface Topic {
  /** The main noun phrase, as written in the prompt ("Redis cluster"). */
  phrase: string;
  /** A second subject, from the prompt when it has one. */
  aux: string;
  /** Distinct content words, lower case. */
  keywords: string[];
  /** The same words as written in the prompt. */
  terms: string[];
  /** Identifiers for code: redisCluster, RedisCluster, REDIS_CLUSTER. */
  ident: string;
  Ident: string;
  IDENT: string;
  /** A place named in the prompt ("weather in Paris"), if any. */
  place: string | undefined;
  prompt: string;
}

const GENERIC_AUX = [
  "error handling",
  "the data model",
  "performance",
  "the deployment",
  "testing",
  "observability",
];
const WORD_RE = /[\p{L}\p{N}][\p{L}\p{N}_+#-]*(?:\.[\p{L}\p{N}]+)*/gu;

function analyzeTopic(prompt: string, rng: Rng): Topic {
  const place = /\b(?:in|at|for|near|around)\s+(\p{Lu}[\p{L}'-]+(?:\s+\p{Lu}[\p{L}'-]+)*)/u.exec(prompt)?.[1];
  const words: Array<{ text: string; content: boolean }> = [];
  for (const m of prompt.matchAll(WORD_RE)) {
    let text = m[0];
    // "How" at the start of a sentence is just capitalised; "Redis" stays as written.
    const atSentenceStart = m.index === 0 || /[.!?]\s*$/.test(prompt.slice(0, m.index));
    if (atSentenceStart && /^\p{Lu}\p{Ll}+$/u.test(text) && STOPWORDS.has(text.toLowerCase()))
      text = text.toLowerCase();
    const lower = text.toLowerCase();
    words.push({ text, content: !STOPWORDS.has(lower) && !/^\d+$/.test(text) && text.length > 1 });
  }
  // Runs of consecutive content words are noun-phrase candidates. The best is long and has
  // names in it (capitalised words, acronyms); the place in "weather in Paris" is not the topic.
  const runs: string[][] = [];
  let run: string[] = [];
  for (const w of [...words, { text: "", content: false }]) {
    if (w.content) run.push(w.text);
    else if (run.length) {
      runs.push(run.length > 4 ? run.slice(-3) : run);
      run = [];
    }
  }
  const placeIsNoTopic =
    place !== undefined && /weather|forecast|temperature|rain|snow|climate/i.test(prompt);
  const score = (r: string[]) =>
    placeIsNoTopic && r.join(" ") === place
      ? -1
      : Math.min(r.length, 3) + r.filter((w) => /^\p{Lu}/u.test(w)).length;
  const ranked = runs.map((r, i) => ({ r, i, s: score(r) })).sort((a, b) => b.s - a.s || a.i - b.i);
  const best = ranked[0]?.r ?? [];
  const second = ranked[1]?.r;
  const terms = [
    ...new Map(words.filter((w) => w.content).map((w) => [w.text.toLowerCase(), w.text])).values(),
  ];
  const keywords = terms.slice(0, 6).map((w) => w.toLowerCase());
  const phrase = best.length ? best.join(" ") : "your question";
  const aux = second ? second.slice(-2).join(" ") : rng.pick(GENERIC_AUX);

  const identWords = (best.length ? best : ["task"])
    .join(" ")
    .split(/[^\p{L}\p{N}]+/u)
    .filter(Boolean)
    .map((w) => w.toLowerCase().replace(/[^a-z0-9]/g, ""))
    .filter(Boolean);
  if (identWords.length === 0) identWords.push("task");
  if (/^\d/.test(identWords[0] as string)) identWords.unshift("the");
  const cap = (w: string) => w.charAt(0).toUpperCase() + w.slice(1);
  const ident = identWords.map((w, i) => (i === 0 ? w : cap(w))).join("");
  return {
    phrase,
    aux,
    keywords,
    terms: terms.slice(0, 6),
    ident,
    Ident: cap(ident),
    IDENT: identWords.map((w) => w.toUpperCase()).join("_"),
    place,
    prompt,
  };
}

/** Fills `{topic}`, `{Topic}`, `{aux}`, `{kw}`, `{ident}`, `{Ident}`, `{IDENT}`, `{n1}`, `{n2}` in a template. */
function fill(template: string, t: Topic, rng: Rng): string {
  return template.replace(/\{(topic|Topic|aux|kw|ident|Ident|IDENT|n1|n2)\}/g, (_, key: string) => {
    switch (key) {
      case "topic":
        return t.phrase;
      case "Topic":
        return t.phrase.charAt(0).toUpperCase() + t.phrase.slice(1);
      case "aux":
        return t.aux;
      case "kw":
        return t.terms.length ? rng.pick(t.terms) : t.aux;
      case "ident":
        return t.ident;
      case "Ident":
        return t.Ident;
      case "IDENT":
        return t.IDENT;
      case "n1":
        return String(rng.int(2, 9));
      default:
        return String(rng.int(1, 9));
    }
  });
}

// ─── Phrase banks ────────────────────────────────────────────────────────────────────────────

const HEADINGS = [
  "## {Topic}: a practical overview",
  "## Understanding {topic}",
  "## Getting {topic} right",
  "## {Topic} in practice",
  "## A quick guide to {topic}",
  "## How to approach {topic}",
];

const INTROS = [
  "{Topic} is one of those subjects that looks simple until you have to make it work in production.",
  "Good question: {topic} comes up a lot, and the details matter more than the headline.",
  "Here is a practical way to think about {topic}, with the trade-offs that usually decide things.",
  "The short answer: {topic} works best when you keep the moving parts few and the failure modes explicit.",
  "At its core, {topic} is about making {aux} predictable under load, not just correct on a good day.",
  "Let's break {topic} down into the parts you actually need to decide on.",
  "Most problems with {topic} trace back to a handful of assumptions about {aux}.",
];

const SENTENCES = [
  "The first thing to settle is how {aux} fits into the rest of the system.",
  "In practice, the hard part is rarely the happy path; it is what happens when {aux} is slow or unavailable.",
  "A useful rule of thumb is to measure before you optimize, because intuition about {topic} is often wrong.",
  "If you only remember one thing, make it this: keep {aux} behind a small, well-defined interface.",
  "That way you can swap the implementation later without touching the callers.",
  "Timeouts, retries and backpressure deserve as much attention as the main logic.",
  "It also helps to log enough context to reconstruct what happened after the fact.",
  "For small projects, the simplest approach is usually good enough.",
  "As traffic grows, you will want to revisit {aux} with real numbers in hand.",
  "Be careful with shared state: it is the most common source of subtle bugs here.",
  "Tests that exercise the failure paths pay for themselves the first time something breaks at night.",
  "Note that {topic} behaves differently under concurrency than it does in a single-threaded test.",
  "There is no universal answer, but there is a sensible default.",
  "Start with the default, then change one thing at a time and watch the metrics.",
  "Documentation for {kw} tends to skip the edge cases, so read the source when in doubt.",
  "Keeping configuration explicit makes {topic} much easier to reason about.",
  "A common mistake is to treat {aux} as an afterthought.",
  "The cost usually shows up in latency first, and in memory second.",
  "Once the basics work, add observability: counters, histograms and a few structured log lines.",
  "Avoid premature abstraction; three similar call sites are fine.",
  "When something fails, fail loudly and early rather than returning a half-valid result.",
  "The trade-off is between simplicity now and flexibility later.",
  "Most teams find that a boring, well-tested solution beats a clever one.",
  "You can always add caching later, but removing it is harder than it looks.",
  "Think about idempotency: what happens if the same request arrives twice?",
  "Keep the critical path short and push everything else to the background.",
  "Version your data formats early; migrating {kw} data later is painful.",
  "If {aux} is shared between services, agree on ownership before writing code.",
];

/** Short sentences: they fill the last few tokens of a budget. */
const SHORT_SENTENCES = [
  "That's the core idea.",
  "It works.",
  "Simple, but effective.",
  "Measure it.",
  "Keep it boring.",
  "This matters in practice.",
  "Start there.",
];

const LIST_INTROS = [
  "The key points:",
  "Here is what to keep in mind:",
  "A checklist that works well:",
  "The steps, in order:",
  "Things to watch out for:",
];

const LIST_ITEMS = [
  "**Start small**: get a minimal version of {topic} working end to end first.",
  "**Measure**: track latency, error rate and throughput from day one.",
  "**Handle failure**: decide what happens when {aux} times out.",
  "**Keep it explicit**: configuration in one place, with sane defaults.",
  "**Test the edges**: empty input, huge input, and concurrent callers.",
  "**Document decisions**: a short note on why beats a long note on what.",
  "**Bound everything**: queues, buffers and retries all need limits.",
  "**Automate**: make the build, the tests and the deploy one command each.",
  "**Review the defaults** of {kw}: they are tuned for demos, not production.",
  "**Plan for change**: isolate {aux} behind an interface.",
  "**Use backoff** with jitter for retries, so clients do not stampede.",
  "**Prefer streaming** over buffering when responses are large.",
];

const CODE_INTROS = [
  "Here's a minimal example in TypeScript:",
  "A small sketch of how this can look:",
  "For example:",
  "Something like this is a reasonable starting point:",
];

const CODE_OUTROS = [
  "The important part is the error path; everything else is plumbing.",
  "Adjust the numbers to your workload, and keep them in configuration.",
  "In a real codebase you would add tests around this before relying on it.",
];

const SUBHEADINGS = [
  "### Common pitfalls",
  "### Performance considerations",
  "### Testing it",
  "### Handling errors",
  "### When {topic} is not the right tool",
  "### A worked example",
  "### Trade-offs",
  "### Going further",
  "### Observability",
  "### Security notes",
];

const CLOSINGS = [
  "Hope this helps. Let me know if you want me to go deeper on {aux}.",
  "If you share more about your setup, I can tailor this to your case.",
  "Happy to expand on any part of this, including {aux}.",
  "That should be enough to get {topic} working; tweak the details as you measure.",
  "Let me know how it goes!",
];

const REASONING_OPENERS = [
  "Okay, the user is asking about {topic}.",
  "Let me think about {topic} for a moment.",
  "The question is about {topic}.",
];

const REASONING = [
  "Let me think about what they actually need here.",
  "They probably want something practical rather than a textbook definition.",
  "The key aspects seem to be {topic} and {aux}.",
  "I should mention failure handling, since that is where most real problems come from.",
  "Should I include code? A short TypeScript example would make it concrete.",
  "Let me structure this: a short overview, then the key points as a list, then an example.",
  "Wait, I should also consider the case where {aux} is slow.",
  "Edge cases matter here, so they deserve at least a sentence.",
  "I don't want to overcomplicate it; a sensible default plus the trade-offs is enough.",
  "Let me double-check the example logic before writing it out.",
  "Retries need a bound, and the backoff should have jitter.",
  "Hmm, is {aux} really the crux, or is it {topic} itself?",
  "Probably both, but {topic} should lead.",
  "Let me also keep the tone direct and skip the filler.",
];

/** Plausible TypeScript, named after the topic. Lines, so no escaping of backticks is needed. */
const CODE_SNIPPETS: readonly (readonly string[])[] = [
  [
    "export interface {Ident}Options {",
    "  retries: number;",
    "  baseDelayMs: number;",
    "}",
    "",
    "export async function with{Ident}<T>(",
    "  task: () => Promise<T>,",
    "  { retries = {n1}, baseDelayMs = {n2}00 }: Partial<{Ident}Options> = {},",
    "): Promise<T> {",
    "  for (let attempt = 0; ; attempt++) {",
    "    try {",
    "      return await task();",
    "    } catch (err) {",
    "      if (attempt >= retries) throw err;",
    "      // Full jitter: wait a random time up to the exponential bound.",
    "      const delay = Math.random() * baseDelayMs * 2 ** attempt;",
    "      await new Promise((resolve) => setTimeout(resolve, delay));",
    "    }",
    "  }",
    "}",
  ],
  [
    "export async function* read{Ident}(url: string, signal?: AbortSignal): AsyncGenerator<string> {",
    "  const res = await fetch(url, { signal });",
    '  if (!res.ok || !res.body) throw new Error("request failed: " + res.status);',
    "  const decoder = new TextDecoder();",
    "  for await (const chunk of res.body) {",
    "    yield decoder.decode(chunk, { stream: true });",
    "  }",
    "}",
    "",
    "const controller = new AbortController();",
    "setTimeout(() => controller.abort(), {n1}_000);",
    'for await (const text of read{Ident}("https://example.com/{ident}", controller.signal)) {',
    "  process.stdout.write(text);",
    "}",
  ],
  [
    "export class {Ident}Cache<V> {",
    "  private readonly entries = new Map<string, { value: V; expiresAt: number }>();",
    "",
    "  constructor(private readonly ttlMs = {n1}_000, private readonly maxEntries = {n2}00) {}",
    "",
    "  get(key: string): V | undefined {",
    "    const hit = this.entries.get(key);",
    "    if (!hit || hit.expiresAt <= Date.now()) {",
    "      this.entries.delete(key);",
    "      return undefined;",
    "    }",
    "    return hit.value;",
    "  }",
    "",
    "  set(key: string, value: V): void {",
    "    if (this.entries.size >= this.maxEntries) {",
    "      // Evict the oldest entry: a Map keeps insertion order.",
    "      const oldest = this.entries.keys().next().value;",
    "      if (oldest !== undefined) this.entries.delete(oldest);",
    "    }",
    "    this.entries.set(key, { value, expiresAt: Date.now() + this.ttlMs });",
    "  }",
    "}",
  ],
  [
    'import { z } from "zod";',
    "",
    "const {Ident}Config = z.object({",
    "  endpoint: z.string().url(),",
    "  timeoutMs: z.number().int().positive().default({n1}_000),",
    "  maxConcurrency: z.number().int().min(1).max({n2}0).default(4),",
    "  verbose: z.boolean().default(false),",
    "});",
    "",
    "export type {Ident}Config = z.infer<typeof {Ident}Config>;",
    "",
    "export function load{Ident}Config(env = process.env): {Ident}Config {",
    "  return {Ident}Config.parse({",
    "    endpoint: env.{IDENT}_ENDPOINT,",
    "    timeoutMs: env.{IDENT}_TIMEOUT_MS ? Number(env.{IDENT}_TIMEOUT_MS) : undefined,",
    "  });",
    "}",
  ],
  [
    "export class {Ident}Queue<T> {",
    "  private readonly items: T[] = [];",
    "  private readonly waiters: Array<(item: T) => void> = [];",
    "",
    "  constructor(private readonly capacity = {n1}00) {}",
    "",
    "  /** Returns false when full: the caller applies backpressure. */",
    "  push(item: T): boolean {",
    "    const waiter = this.waiters.shift();",
    "    if (waiter) {",
    "      waiter(item);",
    "      return true;",
    "    }",
    "    if (this.items.length >= this.capacity) return false;",
    "    this.items.push(item);",
    "    return true;",
    "  }",
    "",
    "  async pop(): Promise<T> {",
    "    const item = this.items.shift();",
    "    if (item !== undefined) return item;",
    "    return new Promise((resolve) => this.waiters.push(resolve));",
    "  }",
    "}",
  ],
];

/** Short snippets, for answers whose budget has no room for a long one. */
const SHORT_CODE_SNIPPETS: readonly (readonly string[])[] = [
  [
    'const res = await fetch("https://api.example.com/{ident}", {',
    "  signal: AbortSignal.timeout({n1}_000),",
    "});",
    'if (!res.ok) throw new Error("HTTP " + res.status);',
    "const {ident} = await res.json();",
  ],
  [
    "const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));",
    "",
    "for (let attempt = 0; attempt < {n1}; attempt++) {",
    "  if (await try{Ident}()) break;",
    "  await sleep(2 ** attempt * 100);",
    "}",
  ],
  [
    "export function {ident}Key(id: string, version = {n1}): string {",
    '  return "{ident}:v" + version + ":" + id;',
    "}",
  ],
];

const CITIES = [
  "Paris",
  "Tokyo",
  "Berlin",
  "San Francisco",
  "Lisbon",
  "Toronto",
  "Singapore",
  "Nairobi",
  "Melbourne",
];

// ─── Prose and Markdown ──────────────────────────────────────────────────────────────────────

/** Number of tokens a sentence adds to a paragraph (its leading space included). */
function sentenceCost(s: string): number {
  return tokenize(` ${s}`).length;
}

type Block = { type: "prose"; sentences: string[] } | { type: "raw"; text: string };

/**
 * Builds text from blocks (paragraphs, lists, code, headings) separated by blank lines, against
 * a token budget: blocks and sentences are only added when they fit.
 */
class BlockWriter {
  readonly blocks: Block[] = [];
  used = 0;
  constructor(readonly budget: number) {}

  /** Tokens a new block costs, with the separator before it. */
  blockCost(text: string): number {
    return (this.blocks.length ? 1 : 0) + tokenize(text).length;
  }
  fits(cost: number, reserve = 0): boolean {
    return this.used + cost + reserve <= this.budget;
  }
  addRaw(text: string): void {
    this.used += this.blockCost(text);
    this.blocks.push({ type: "raw", text });
  }
  addProse(sentences: string[]): void {
    this.used += this.blockCost(sentences.join(" "));
    this.blocks.push({ type: "prose", sentences: [...sentences] });
  }
  /** The paragraph sentences can be appended to, if the last block is one. */
  lastProse(): { type: "prose"; sentences: string[] } | undefined {
    const last = this.blocks[this.blocks.length - 1];
    return last?.type === "prose" ? last : undefined;
  }
  appendSentence(s: string): void {
    const last = this.lastProse();
    if (!last) {
      this.addProse([s]);
      return;
    }
    last.sentences.push(s);
    this.used += sentenceCost(s);
  }
  tokens(): string[] {
    const out: string[] = [];
    for (const b of this.blocks) {
      if (out.length) out.push("\n\n");
      for (const t of tokenize(b.type === "prose" ? b.sentences.join(" ") : b.text)) out.push(t);
    }
    return out;
  }
}

interface Banks {
  sentences: Deck<string>;
  items: Deck<string>;
  code: Deck<readonly string[]>;
  subheadings: Deck<string>;
}

function makeBanks(rng: Rng): Banks {
  return {
    sentences: new Deck(SENTENCES, rng),
    items: new Deck(LIST_ITEMS, rng),
    code: new Deck(CODE_SNIPPETS, rng),
    subheadings: new Deck(SUBHEADINGS, rng),
  };
}

function listBlock(t: Topic, rng: Rng, banks: Banks, numbered: boolean, n = rng.int(3, 5)): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++)
    lines.push(`${numbered ? `${i + 1}.` : "-"} ${fill(banks.items.draw(), t, rng)}`);
  return lines.join("\n");
}

function renderCode(t: Topic, rng: Rng, lines: readonly string[]): string {
  return `\`\`\`ts\n${fill(lines.join("\n"), t, rng)}\n\`\`\``;
}

function codeBlock(t: Topic, rng: Rng, banks: Banks): string {
  return renderCode(t, rng, banks.code.draw());
}

/** A code block of at most `room` tokens if any snippet is that short (else the shortest one). */
function codeBlockWithin(t: Topic, rng: Rng, banks: Banks, room: number): string {
  const first = codeBlock(t, rng, banks);
  if (tokenize(first).length <= room) return first;
  const short = SHORT_CODE_SNIPPETS.map((lines) => renderCode(t, rng, lines));
  const fitting = short.filter((c) => tokenize(c).length <= room);
  if (fitting.length) return rng.pick(fitting);
  return short.reduce((a, b) => (tokenize(b).length < tokenize(a).length ? b : a));
}

/**
 * Adds sentences (to the last paragraph, or a new one every few sentences) while they fit the
 * budget minus `reserve`. Tries a few long sentences, then short ones, then stops.
 */
function fillProse(w: BlockWriter, t: Topic, rng: Rng, deck: Deck<string>, reserve: number): void {
  for (;;) {
    const room = w.budget - w.used - reserve;
    if (room <= 0) return;
    const para = w.lastProse();
    const newPara = !para || para.sentences.length >= rng.int(3, 5);
    const candidates = [
      fill(deck.draw(), t, rng),
      fill(deck.draw(), t, rng),
      fill(rng.pick(SHORT_SENTENCES), t, rng),
    ];
    const fitting = candidates.find((s) => (newPara ? w.blockCost(s) : sentenceCost(s)) <= room);
    if (!fitting) return;
    if (newPara) w.addProse([fitting]);
    else w.appendSentence(fitting);
  }
}

/**
 * A Markdown answer of exactly `target` tokens when the target holds at least the basic shape
 * (heading, intro, list, code block, closing line); shorter targets get that shape cut short.
 */
function markdownTokens(t: Topic, target: number, rng: Rng): string[] {
  if (target <= 0) return [];
  const banks = makeBanks(rng);
  const w = new BlockWriter(target);
  const closing = fill(rng.pick(CLOSINGS), t, rng);

  // The shape every answer has; its parts grow with the budget.
  w.addRaw(fill(rng.pick(HEADINGS), t, rng));
  const intro = [fill(rng.pick(INTROS), t, rng)];
  if (target >= 220) intro.push(fill(banks.sentences.draw(), t, rng));
  if (target >= 320 && rng.chance(0.5)) intro.push(fill(banks.sentences.draw(), t, rng));
  w.addProse(intro);
  const introList = rng.pick(LIST_INTROS);
  w.addProse([introList]);
  w.addRaw(
    listBlock(
      t,
      rng,
      banks,
      introList.includes("steps") || rng.chance(0.3),
      target < 250 ? 3 : rng.int(3, 5),
    ),
  );
  w.addProse(
    target >= 250 ? [fill(banks.sentences.draw(), t, rng), rng.pick(CODE_INTROS)] : [rng.pick(CODE_INTROS)],
  );
  const closingCost = w.blockCost(closing);
  w.addRaw(codeBlockWithin(t, rng, banks, target - w.used - 1 - closingCost));

  if (!w.fits(closingCost)) {
    // Too short for the whole shape: the answer simply stops at the limit.
    w.addRaw(closing);
    return w.tokens().slice(0, target);
  }

  // Longer answers: more sections, each with prose and maybe a list or a code block.
  for (;;) {
    const section: Array<{ prose?: string[]; raw?: string }> = [
      { raw: fill(banks.subheadings.draw(), t, rng) },
    ];
    const para = [fill(banks.sentences.draw(), t, rng), fill(banks.sentences.draw(), t, rng)];
    if (rng.chance(0.5)) para.push(fill(banks.sentences.draw(), t, rng));
    section.push({ prose: para });
    const extra = rng.float();
    if (extra < 0.35) {
      section.push({ prose: [rng.pick(LIST_INTROS)] });
      section.push({ raw: listBlock(t, rng, banks, rng.chance(0.4)) });
    } else if (extra < 0.6) {
      section.push({ prose: [rng.pick(CODE_INTROS)] });
      section.push({ raw: codeBlock(t, rng, banks) });
      section.push({ prose: [rng.pick(CODE_OUTROS)] });
    } else {
      section.push({ prose: [fill(banks.sentences.draw(), t, rng), fill(banks.sentences.draw(), t, rng)] });
    }
    const cost = section.reduce((n, b) => n + 1 + tokenize(b.raw ?? (b.prose ?? []).join(" ")).length, 0);
    if (!w.fits(cost, closingCost)) break;
    for (const b of section) {
      if (b.raw !== undefined) w.addRaw(b.raw);
      else if (b.prose) w.addProse(b.prose);
    }
  }
  // Top up with prose, then the closing line; BPE-like splits make up the last few tokens.
  fillProse(w, t, rng, banks.sentences, closingCost);
  w.addRaw(closing);
  return growTo(w.tokens(), target, rng).slice(0, target);
}

/** Model "thinking" about the prompt: plain prose paragraphs of exactly `target` tokens. */
function reasoningTokens(t: Topic, target: number, rng: Rng): string[] {
  if (target <= 0) return [];
  const w = new BlockWriter(target);
  w.addProse([fill(rng.pick(REASONING_OPENERS), t, rng)]);
  if (w.used > target) return w.tokens().slice(0, target);
  fillProse(w, t, rng, new Deck(REASONING, rng), 0);
  return growTo(w.tokens(), target, rng).slice(0, target);
}

// ─── JSON and tool calls ─────────────────────────────────────────────────────────────────────

function truncateWords(s: string, max: number): string {
  if (s.length <= max) return s;
  const cut = s.slice(0, max);
  const space = cut.lastIndexOf(" ");
  return `${(space > max / 2 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

/** A JSON document about the prompt, pretty-printed, cut into exactly `target` pieces. */
function jsonTokens(t: Topic, target: number, rng: Rng, seed: number): string[] {
  const efforts = ["low", "medium", "high"];
  const steps: unknown[] = [];
  const itemDeck = new Deck(LIST_ITEMS, rng);
  const step = (i: number) => {
    while (steps.length <= i) {
      const item = fill(itemDeck.draw(), t, rng);
      const m = /^\*\*(.+?)\*\*:?\s*(.*)$/.exec(item);
      steps.push({
        order: steps.length + 1,
        title: m?.[1] ?? item,
        detail: (m?.[2] ?? "").replace(/^./, (c) => c.toUpperCase()),
        effort: rng.pick(efforts),
        done: false,
      });
    }
    return steps[i];
  };
  const head = {
    topic: t.phrase,
    question: truncateWords(t.prompt.trim(), 160),
    summary: fill(rng.pick(INTROS), t, rng),
    keywords: t.keywords.length ? t.keywords : [t.aux],
    confidence: Math.round((0.6 + rng.float() * 0.38) * 100) / 100,
  };
  const tail = { metadata: { generator: "sluice-demo", seed, kind: "json", version: 1 } };
  const notes: string[] = [];
  const render = (k: number) =>
    tokenize(
      JSON.stringify(
        { ...head, steps: Array.from({ length: k }, (_, i) => step(i)), notes, ...tail },
        null,
        2,
      ),
    );

  // Size the steps array to the budget: estimate from one and two steps, then correct.
  const one = render(1).length;
  const perStep = Math.max(1, render(2).length - one);
  let k = Math.max(1, Math.floor((target - one) / perStep) + 1);
  let tokens = render(k);
  while (tokens.length > target && k > 1) {
    k = Math.max(1, k - Math.max(1, Math.ceil((tokens.length - target) / perStep)));
    tokens = render(k);
  }
  // Then whole sentences in `notes` while they fit (an entry costs its string, a comma, a
  // newline and the indent; one render checks the estimate).
  const noteDeck = new Deck(SENTENCES, rng);
  let estimate = tokens.length;
  for (let tries = 0; tries < 3; ) {
    const note = fill(noteDeck.draw(), t, rng);
    const cost = tokenize(JSON.stringify(note)).length + (notes.length ? 3 : 4);
    if (estimate + cost <= target) {
      notes.push(note);
      estimate += cost;
    } else tries++;
  }
  if (notes.length) {
    tokens = render(k);
    while (tokens.length > target && notes.length) {
      notes.pop();
      tokens = render(k);
    }
  }
  // Always complete, valid JSON: split into more pieces, or join into fewer.
  return resizeTo(tokens, target, rng);
}

const B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

function toolCallId(rng: Rng): string {
  let id = "call_";
  for (let i = 0; i < 24; i++) id += B62[rng.int(0, 61)];
  return id;
}

/** A value for a JSON-schema property, guided by its type, enum and name. */
function valueFor(name: string, schema: unknown, t: Topic, rng: Rng, depth: number): unknown {
  const s = (schema && typeof schema === "object" ? schema : {}) as Record<string, unknown>;
  if (Array.isArray(s.enum) && s.enum.length) return rng.pick(s.enum);
  const type = Array.isArray(s.type) ? s.type.find((x) => x !== "null") : s.type;
  const n = name.toLowerCase();
  switch (type) {
    case "integer":
      return /limit|count|max|top|num|size/.test(n) ? rng.int(3, 10) : rng.int(1, 100);
    case "number":
      return Math.round(rng.float() * 1000) / 10;
    case "boolean":
      return rng.chance(0.5);
    case "array":
      return depth > 2
        ? []
        : t.keywords
            .slice(0, rng.int(1, 3))
            .map((k) => (s.items ? valueFor(k, s.items, t, rng, depth + 1) : k));
    case "object":
      return depth > 2 ? {} : objectFor(s, t, rng, depth + 1);
    default:
      if (/location|city|place|where/.test(n)) return t.place ?? rng.pick(CITIES);
      if (/unit/.test(n)) return "celsius";
      if (/date|day|time/.test(n)) return `2025-0${rng.int(1, 9)}-1${rng.int(0, 9)}`;
      if (/email/.test(n)) return "user@example.com";
      if (/url|link/.test(n)) return `https://example.com/${t.ident}`;
      if (/lang/.test(n)) return "en";
      if (/query|question|prompt|text|search|input|q$/.test(n))
        return truncateWords(t.prompt.trim(), 120) || t.phrase;
      return t.phrase;
  }
}

function objectFor(
  schema: Record<string, unknown>,
  t: Topic,
  rng: Rng,
  depth: number,
): Record<string, unknown> {
  const props = schema.properties;
  const out: Record<string, unknown> = {};
  if (!props || typeof props !== "object") return out;
  for (const [name, sub] of Object.entries(props as Record<string, unknown>).slice(0, 12)) {
    out[name] = valueFor(name, sub, t, rng, depth);
  }
  return out;
}

/** The arguments of the call: from the tool's JSON schema when it has properties. */
function toolArgs(name: string, parameters: unknown, t: Topic, rng: Rng): Record<string, unknown> {
  const fromSchema =
    parameters && typeof parameters === "object"
      ? objectFor(parameters as Record<string, unknown>, t, rng, 0)
      : {};
  if (Object.keys(fromSchema).length) return fromSchema;
  if (name === "get_weather") return { location: t.place ?? rng.pick(CITIES), unit: "celsius" };
  return { query: truncateWords(t.prompt.trim(), 120) || t.phrase };
}

/** The tool the call goes to: the one `tool_choice` names, else the first tool, else `get_weather`. */
function chooseTool(request: GenerationRequest): { name: string; parameters: unknown } {
  const tools = request.tools ?? [];
  const choice = request.tool_choice as { function?: { name?: unknown } } | undefined;
  const wanted = typeof choice === "object" && choice ? choice.function?.name : undefined;
  const tool = tools.find((x) => x.function.name === wanted) ?? tools[0];
  return tool
    ? { name: tool.function.name, parameters: tool.function.parameters }
    : { name: "get_weather", parameters: undefined };
}

// ─── Structured outputs: values that conform to a JSON Schema ────────────────────────────────

type Schema = Record<string, unknown>;

/** The schema of `response_format: {type: "json_schema", json_schema: {schema}}`, if the request has one. */
export function responseSchema(request: GenerationRequest): Schema | undefined {
  const format = request.upstream_extra?.response_format as
    | { type?: unknown; json_schema?: unknown }
    | undefined;
  if (!format || typeof format !== "object" || format.type !== "json_schema") return undefined;
  const js = format.json_schema as { schema?: unknown } | undefined;
  const schema = js && typeof js === "object" ? js.schema : undefined;
  return schema && typeof schema === "object" && !Array.isArray(schema) ? (schema as Schema) : {};
}

/** Whether the request asks for JSON (`response_format` json_object or json_schema). */
function wantsJson(request: GenerationRequest): boolean {
  const type = (request.upstream_extra?.response_format as { type?: unknown } | undefined)?.type;
  return type === "json_object" || type === "json_schema";
}

const MAX_SCHEMA_DEPTH = 8;
const MAX_ARRAY_ITEMS = 20;
/** Bounds on what one answer may build, whatever the schema asks (it comes from the request). */
const MAX_SCHEMA_VALUES = 2000;
const MAX_STRING_CHARS = 64 * 1024;

interface SchemaWalk {
  root: Schema;
  t: Topic;
  rng: Rng;
  /** Values left to build: past it, everything is null (bounded, if no longer conforming). */
  left: number;
  /** String characters left (minLength padding draws on it). */
  chars: number;
}

/** `#`, `#/$defs/X`, `#/definitions/X` (what zod-to-json-schema and Pydantic emit). */
function resolveRef(ref: string, root: Schema): Schema {
  if (ref === "#") return root;
  const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(ref);
  const defs = m ? (root[m[1] as string] as Record<string, unknown> | undefined) : undefined;
  let key = (m?.[2] ?? "").replace(/~1/g, "/").replace(/~0/g, "~");
  try {
    key = decodeURIComponent(key);
  } catch {
    // Not percent-encoded after all: the name as written.
  }
  const target = m && defs ? defs[key] : undefined;
  return target && typeof target === "object" ? (target as Schema) : {};
}

/**
 * A value that conforms to `schema` (the subset structured outputs use: type, object properties
 * and required, array items with minItems/maxItems, string/number/integer/boolean/null, enum,
 * const, anyOf/oneOf, $ref to $defs/definitions, string min/maxLength, number bounds). Every
 * property is filled, so `required` and `additionalProperties: false` both hold.
 */
function schemaValue(schema: unknown, w: SchemaWalk, name: string, depth = 0): unknown {
  // A schema that recurses through required properties (or asks for more than an answer holds)
  // has no small instance: stop building rather than run out of stack or memory.
  if (w.left <= 0 || depth > 2 * MAX_SCHEMA_DEPTH) return null;
  w.left--;
  const { root, t, rng } = w;
  let s = (schema && typeof schema === "object" ? schema : {}) as Schema;
  for (let hops = 0; typeof s.$ref === "string" && hops < 16; hops++) s = resolveRef(s.$ref, root);
  if ("const" in s) return s.const;
  if (Array.isArray(s.enum) && s.enum.length) return rng.pick(s.enum);
  const options = (Array.isArray(s.anyOf) ? s.anyOf : Array.isArray(s.oneOf) ? s.oneOf : undefined) as
    | unknown[]
    | undefined;
  if (options?.length) {
    // Prefer a branch that is not plain null, so the answer carries something.
    const real = options.filter((o) => (o as Schema | undefined)?.type !== "null");
    return schemaValue(rng.pick(real.length ? real : options), w, name, depth + 1);
  }
  if (Array.isArray(s.allOf) && s.allOf.length) return schemaValue(s.allOf[0], w, name, depth + 1);
  const types = Array.isArray(s.type) ? s.type : s.type !== undefined ? [s.type] : [];
  const type =
    types.find((x) => x !== "null") ?? types[0] ?? (s.properties ? "object" : s.items ? "array" : "string");
  const num = (k: string) => (typeof s[k] === "number" ? (s[k] as number) : undefined);
  switch (type) {
    case "null":
      return null;
    case "boolean":
      return rng.chance(0.5);
    case "integer": {
      const exMin = num("exclusiveMinimum");
      const exMax = num("exclusiveMaximum");
      const hi = num("maximum") ?? (exMax !== undefined ? Math.ceil(exMax) - 1 : undefined);
      const min = Math.ceil(
        num("minimum") ?? (exMin !== undefined ? Math.floor(exMin) + 1 : Math.min(1, hi ?? 1)),
      );
      const max = Math.floor(hi ?? min + 99);
      return max >= min ? rng.int(min, max) : min;
    }
    case "number": {
      const hi = num("maximum") ?? num("exclusiveMaximum");
      const min = num("minimum") ?? num("exclusiveMinimum") ?? Math.min(0, (hi ?? 0) - 100);
      const max = hi ?? min + 100;
      // Strictly inside (min, max) when there is room, so exclusive bounds hold too.
      const v = Math.round((min + (max - min) * (0.05 + 0.9 * rng.float())) * 100) / 100;
      return v > min && v < max ? v : (min + max) / 2;
    }
    case "array": {
      const minItems = Math.min(num("minItems") ?? 1, MAX_ARRAY_ITEMS);
      const maxItems = Math.max(minItems, Math.min(num("maxItems") ?? minItems + 2, MAX_ARRAY_ITEMS));
      const n = depth >= MAX_SCHEMA_DEPTH ? minItems : rng.int(minItems, maxItems);
      const items = Array.isArray(s.items) ? undefined : s.items;
      return Array.from({ length: n }, (_, i) => schemaValue(items, w, t.keywords[i] ?? name, depth + 1));
    }
    case "object": {
      const out: Record<string, unknown> = {};
      const props = (s.properties && typeof s.properties === "object" ? s.properties : {}) as Record<
        string,
        unknown
      >;
      const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
      for (const [key, sub] of Object.entries(props)) {
        // Deep down, only what is required (a recursive schema must end somewhere).
        if (depth >= MAX_SCHEMA_DEPTH && !required.has(key)) continue;
        out[key] = schemaValue(sub, w, key, depth + 1);
      }
      return out;
    }
    default: {
      let v = String(valueFor(name, { type: "string" }, t, rng, depth));
      const format = s.format;
      if (format === "date") v = `2025-0${rng.int(1, 9)}-1${rng.int(0, 9)}`;
      else if (format === "date-time")
        v = `2025-0${rng.int(1, 9)}-1${rng.int(0, 9)}T1${rng.int(0, 9)}:00:00Z`;
      else if (format === "email") v = "user@example.com";
      else if (format === "uri" || format === "url") v = `https://example.com/${t.ident}`;
      else if (format === "uuid") v = "123e4567-e89b-42d3-a456-426614174000";
      const maxLength = num("maxLength");
      const minLength = Math.min(num("minLength") ?? 0, Math.max(0, w.chars));
      if (maxLength !== undefined && v.length > maxLength) v = v.slice(0, maxLength);
      if (v.length < minLength) v = v.padEnd(minLength, "x");
      w.chars -= v.length;
      return v;
    }
  }
}

// ─── The plan ────────────────────────────────────────────────────────────────────────────────

/**
 * Without `demo.kind`: a tool call when the request requires one, else JSON when
 * `response_format` asks for it, else Markdown.
 */
function inferKind(request: GenerationRequest): DemoKind {
  const choice = request.tool_choice;
  const required = choice === "required" || (typeof choice === "object" && choice !== null);
  if (request.tools?.length && required) return "tool-call";
  return wantsJson(request) ? "json" : DEMO_DEFAULTS.kind;
}

function countWords(text: string): number {
  let n = 0;
  for (const _ of text.matchAll(/\S+/g)) n++;
  return n;
}

/**
 * Plans the whole answer to a request: its tokens (as events) and when each is due.
 *
 * Length: markdown, json and reasoning answers have exactly `demo.length` delta tokens (default:
 * drawn from the seed in 150–400); a Markdown target too short for its basic shape is cut
 * short. JSON is always complete and valid (any length: the pieces just get larger or smaller).
 * A tool call's length is that of its arguments unless `demo.length` asks for a number of pieces.
 */
export function planDemo(request: GenerationRequest): DemoPlan {
  const demo = request.demo ?? {};
  const prompt = lastUserText(request.messages);
  // OpenAI's `seed` (forwarded in upstream_extra) works as `demo.seed` does.
  const openaiSeed = request.upstream_extra?.seed;
  const seed = demo.seed ?? (Number.isSafeInteger(openaiSeed) ? (openaiSeed as number) : hashString(prompt));
  const kind = demo.kind ?? inferKind(request);
  const pacing: DemoPacing = {
    ttft_ms: demo.ttft_ms ?? DEMO_DEFAULTS.ttft_ms,
    tokens_per_s: demo.tokens_per_s ?? DEMO_DEFAULTS.tokens_per_s,
    jitter: demo.jitter ?? DEMO_DEFAULTS.jitter,
  };
  const rng = new Rng(subSeed(seed, `content:${kind}`));
  // Reasoning: thinking takes a quarter to two fifths of the tokens, the answer the rest. By
  // default the *answer* gets the drawn length and the thinking comes on top of it.
  const thinkingShare = 0.25 + rng.float() * 0.15;
  const drawn = new Rng(subSeed(seed, "length")).int(DEMO_DEFAULTS.min_length, DEMO_DEFAULTS.max_length);
  const length = demo.length ?? (kind === "reasoning" ? Math.round(drawn / (1 - thinkingShare)) : drawn);
  const topic = analyzeTopic(prompt, rng);

  const events: DemoAnswerEvent[] = [];
  let finish: DemoPlan["finish_reason"] = "stop";
  switch (kind) {
    case "markdown":
      for (const delta of markdownTokens(topic, length, rng)) events.push({ type: "text-delta", delta });
      break;
    case "json": {
      const schema = responseSchema(request);
      // A schema's answer is as long as the value it needs, unless `demo.length` asks otherwise.
      const fromSchema = (schema: Schema) => {
        const walk: SchemaWalk = {
          root: schema,
          t: topic,
          rng,
          left: MAX_SCHEMA_VALUES,
          chars: MAX_STRING_CHARS,
        };
        const tokens = tokenize(JSON.stringify(schemaValue(schema, walk, "value"), null, 2));
        return demo.length !== undefined ? resizeTo(tokens, demo.length, rng) : tokens;
      };
      const tokens = schema !== undefined ? fromSchema(schema) : jsonTokens(topic, length, rng, seed);
      for (const delta of tokens) events.push({ type: "text-delta", delta });
      break;
    }
    case "reasoning": {
      const thinking = Math.round(length * thinkingShare);
      for (const delta of reasoningTokens(topic, thinking, rng))
        events.push({ type: "reasoning-delta", delta });
      for (const delta of markdownTokens(topic, length - thinking, rng))
        events.push({ type: "text-delta", delta });
      break;
    }
    case "tool-call": {
      const tool = chooseTool(request);
      const id = toolCallId(rng);
      const args = toolArgs(tool.name, tool.parameters, topic, rng);
      let pieces = tokenize(JSON.stringify(args));
      if (demo.length !== undefined) pieces = resizeTo(pieces, demo.length, rng);
      // The first piece names the call; the rest carry only arguments.
      pieces.forEach((args_delta, i) => {
        events.push(
          i === 0
            ? { type: "tool-call-delta", id, name: tool.name, args_delta }
            : { type: "tool-call-delta", id, args_delta },
        );
      });
      events.push({ type: "tool-call", id, name: tool.name, args });
      finish = "tool-calls";
      break;
    }
  }

  // Pace: the first delta at ttft, each next one an interval later, jittered from its own stream.
  const pace = new Rng(subSeed(seed, "pacing"));
  const interval = 1000 / pacing.tokens_per_s;
  const due_ms = new Float64Array(events.length);
  let due = pacing.ttft_ms;
  let deltas = 0;
  events.forEach((e, i) => {
    if (e.type !== "tool-call") {
      if (deltas > 0) due += interval * (1 + pacing.jitter * (pace.float() * 2 - 1));
      deltas++;
    }
    due_ms[i] = due;
  });

  return {
    seed,
    kind,
    pacing,
    length,
    events,
    due_ms,
    delta_count: deltas,
    finish_reason: finish,
    max_tokens: request.max_tokens,
    fail_after_tokens: demo.fail_after_tokens ?? undefined,
    input_tokens: request.messages.reduce((n, m) => n + countWords(messageText(m)), 0),
  };
}

/** Whether an answer event is a delta (one output token). */
export function isDemoDelta(
  e: DemoAnswerEvent,
): e is TextDeltaEvent | ReasoningDeltaEvent | ToolCallDeltaEvent {
  return e.type !== "tool-call";
}
