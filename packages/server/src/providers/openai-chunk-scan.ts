/**
 * A fast path for the commonest OpenAI Chat Completions chunk: one choice, index 0, whose delta
 * is only `content` (a JSON string) and whose `finish_reason` is null, e.g.
 *
 *   {"id":"…","object":"chat.completion.chunk","created":1,"model":"m",
 *    "choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],
 *    "usage":null}
 *
 * The chunk is cut in three: the head (the fields before `"choices"`), the content string
 * literal and the tail (the fields after the choices array). Only the string literal is parsed
 * for every chunk; the head and the tail are parsed as small JSON objects, and only when they
 * differ from the previous chunk's (in one stream they are usually the same bytes). So the whole
 * chunk is still validated as JSON — nothing the full `JSON.parse` would refuse is accepted here.
 *
 * Anything that does not match exactly (another delta field, a role, logprobs, a finish reason,
 * tool calls, several choices, escapes before the choices, a duplicate `choices` key, an `error`)
 * returns undefined and the caller parses the chunk in full: the scanner only decides when it is
 * safe to skip the full parse, never what the chunk means (openai-compatible.test.ts has a
 * property test: for random chunks, the same events and state either way).
 */

/** What the scanner read from a plain text-delta chunk (one object per scanner, overwritten by
 * the next `scan`). Read a field with `scannedField`. */
export interface ScannedTextChunk {
  /** `delta.content` (possibly ""). */
  content: string;
  /** The top-level fields other than `choices` (from the head and the tail; the tail's win, as
   * JSON.parse's last-duplicate-wins rule says). Never holds a `choices` key nor a non-null
   * `error`. `lastKey`'s value here may be stale: `lastValue` is the chunk's. */
  fields: Record<string, unknown>;
  /** The key of the tail's last field when its value is read chunk by chunk; "" if none. */
  lastKey: string;
  lastValue: unknown;
}

/** A top-level field of a scanned chunk. */
export function scannedField(s: ScannedTextChunk, key: string): unknown {
  return key === s.lastKey ? s.lastValue : s.fields[key];
}

const CHOICES = '"choices":[{"index":0,"delta":{"content":';
/** What may follow the content string, up to and including the `]` of choices. */
const CHOICE_ENDS = ['},"logprobs":null,"finish_reason":null}]', '},"finish_reason":null}]'];

const hasOwn = Object.prototype.hasOwnProperty;

/**
 * Per-stream cache of the last head and tail parsed: most chunks repeat them byte for byte, but
 * for the tail's last value (mock-upstream's `sluice_due`, OpenAI's `obfuscation` change on
 * every chunk), which is then parsed alone.
 */
export class ChunkScanner {
  #head = "";
  #headFields: Record<string, unknown> | undefined;
  #tail = "";
  #tailFields: Record<string, unknown> | undefined;
  /** The text of the tail before its last value, when that value (a number or a string
   * without escapes, right before the closing brace) has a key without escapes; "" otherwise. */
  #tailPrefix = "";
  /** The head or tail changed since `#result.fields` was built. */
  #dirty = true;
  readonly #result: ScannedTextChunk = { content: "", fields: {}, lastKey: "", lastValue: undefined };

  /** The chunk's content and fields when it is a plain text delta; undefined otherwise. */
  scan(data: string): ScannedTextChunk | undefined {
    const at = data.indexOf(CHOICES);
    if (at < 0) return undefined;
    // The content string literal: up to the first quote not escaped by a backslash.
    const start = at + CHOICES.length;
    if (data.charCodeAt(start) !== 34 /* " */) return undefined;
    let end = start;
    for (;;) {
      end = data.indexOf('"', end + 1);
      if (end < 0) return undefined;
      let slashes = 0;
      while (data.charCodeAt(end - 1 - slashes) === 92 /* \ */) slashes++;
      if (slashes % 2 === 0) break;
    }
    let after = end + 1;
    let matched = false;
    for (const choiceEnd of CHOICE_ENDS) {
      if (data.startsWith(choiceEnd, after)) {
        after += choiceEnd.length;
        matched = true;
        break;
      }
    }
    if (!matched) return undefined;
    let content: unknown;
    try {
      content = JSON.parse(data.slice(start, end + 1));
    } catch {
      return undefined;
    }
    if (typeof content !== "string") return undefined;

    const r = this.#result;
    const head = data.slice(0, at);
    const tail = data.slice(after);
    if (head !== this.#head || this.#headFields === undefined) {
      const fields = parseHead(head);
      if (fields === undefined) return undefined;
      this.#head = head;
      this.#headFields = fields;
      this.#dirty = true;
    }
    let lastValue = r.lastValue;
    if (tail !== this.#tail || this.#tailFields === undefined) {
      const value = this.#lastValueOnly(tail);
      if (value !== NOT_ONLY) {
        lastValue = value;
      } else {
        const fields = parseTail(tail);
        if (fields === undefined) return undefined;
        this.#tailFields = fields;
        const valueAt = lastValueAt(tail);
        const key = valueAt < 0 ? "" : keyBefore(tail, valueAt);
        // An `error` is refused above unless null: a later one must go through parseTail again.
        const usable = key !== "" && key !== "error" && key !== "__proto__";
        this.#tailPrefix = usable ? tail.slice(0, valueAt) : "";
        r.lastKey = usable ? key : "";
        lastValue = usable ? fields[key] : undefined;
        this.#dirty = true;
      }
      this.#tail = tail;
    }
    if (this.#dirty) {
      r.fields = Object.assign({}, this.#headFields, this.#tailFields);
      this.#dirty = false;
    }
    r.content = content;
    r.lastValue = lastValue;
    return r;
  }

  /**
   * When `tail` is the cached tail but for its last value: that value, parsed alone (the text
   * before it is the cached tail's, already parsed as JSON; the new value must be one JSON number
   * or string, then the closing brace). NOT_ONLY otherwise.
   */
  #lastValueOnly(tail: string): unknown {
    const prefix = this.#tailPrefix;
    if (prefix === "" || tail.length <= prefix.length + 1 || !tail.startsWith(prefix)) return NOT_ONLY;
    if (tail.charCodeAt(tail.length - 1) !== 125 /* } */) return NOT_ONLY;
    let value: unknown;
    try {
      value = JSON.parse(tail.slice(prefix.length, -1));
    } catch {
      return NOT_ONLY;
    }
    return typeof value === "number" || typeof value === "string" ? value : NOT_ONLY;
  }
}

const NOT_ONLY = Symbol("not only the last value");

/**
 * Where the last value of a tail (`,…}`) starts, when it is an integer or a string without
 * escapes written right before the closing brace, right after its `:`; -1 otherwise.
 */
function lastValueAt(tail: string): number {
  let i = tail.length - 2; // the last character of the value
  if (i < 1 || tail.charCodeAt(i + 1) !== 125 /* } */) return -1;
  const c = tail.charCodeAt(i);
  if (c >= 48 && c <= 57) {
    while (
      i > 0 &&
      ((tail.charCodeAt(i - 1) >= 48 && tail.charCodeAt(i - 1) <= 57) || tail.charCodeAt(i - 1) === 45)
    )
      i--;
  } else if (c === 34 /* " */) {
    i = tail.lastIndexOf('"', i - 1);
    if (i < 0 || tail.includes("\\", i)) return -1;
  } else {
    return -1;
  }
  return tail.charCodeAt(i - 1) === 58 /* : */ ? i : -1;
}

/** The key whose `:` stands right before `valueAt`, when it has no escapes; "" otherwise. */
function keyBefore(tail: string, valueAt: number): string {
  const close = valueAt - 2;
  if (tail.charCodeAt(close) !== 34 /* " */) return "";
  const open = tail.lastIndexOf('"', close - 1);
  if (open < 0) return "";
  const key = tail.slice(open + 1, close);
  return key.includes("\\") ? "" : key;
}

/** `{…,` or `{` → the fields before `"choices"`; undefined if not exactly that. */
function parseHead(head: string): Record<string, unknown> | undefined {
  const last = head.charCodeAt(head.length - 1);
  if (last === 123 /* { */) return parseFields(`${head}}`);
  if (last !== 44 /* , */) return undefined;
  const before = head.slice(0, -1);
  const prev = before.charCodeAt(jsonTrimEnd(before) - 1);
  if (prev === 123 /* { */ || prev === 44 /* , */) return undefined; // `{,` / `,,`: not JSON
  return parseFields(`${before}}`);
}

/** `}` or `,…}` right after the `]` of choices → the fields after it; undefined if not exactly that. */
function parseTail(tail: string): Record<string, unknown> | undefined {
  const c = tail.charCodeAt(0);
  if (c === 125 /* } */) return parseFields(`{${tail}`);
  if (c !== 44 /* , */) return undefined;
  const rest = tail.slice(1);
  if (rest.charCodeAt(jsonTrimStart(rest)) === 125) return undefined; // `,}`: not JSON
  return parseFields(`{${rest}`);
}

/** JSON's whitespace only (JavaScript's trim also strips U+00A0, U+FEFF, … which JSON refuses). */
function isJsonSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13;
}

function jsonTrimEnd(s: string): number {
  let i = s.length;
  while (i > 0 && isJsonSpace(s.charCodeAt(i - 1))) i--;
  return i;
}

function jsonTrimStart(s: string): number {
  let i = 0;
  while (i < s.length && isJsonSpace(s.charCodeAt(i))) i++;
  return i;
}

function parseFields(json: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const fields = value as Record<string, unknown>;
  // A second `choices` (JSON.parse keeps the last one), or an error: the full path decides.
  // `__proto__` as a key is an own property after JSON.parse but would set the prototype of the
  // merged object: refused.
  if (hasOwn.call(fields, "choices") || hasOwn.call(fields, "__proto__")) return undefined;
  const error = fields.error;
  if (hasOwn.call(fields, "error") && error !== null) return undefined;
  return fields;
}
