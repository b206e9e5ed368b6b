/**
 * What a read of a stream carries, format-independent (test helper for compact catch-up): the
 * delta text, tool arguments and names of its events, and event ids as comparable keys.
 */
/** Keys whose string values are the content a stream carries, in every format. */
const CONTENT_KEYS = new Set([
  "delta",
  "args_delta",
  "content",
  "refusal",
  "reasoning_content",
  "arguments",
  "text",
  "thinking",
  "partial_json",
  "inputTextDelta",
  "name",
  "toolName",
]);

export type Piece = [label: string, text: string];

/** Pieces labelled by key, and by the object's own type when that names a kind of delta (text vs reasoning). */
function collect(v: unknown, out: Piece[]): void {
  if (Array.isArray(v)) {
    for (const x of v) collect(x, out);
    return;
  }
  if (v === null || typeof v !== "object") return;
  const o = v as Record<string, unknown>;
  const t = typeof o.type === "string" && /delta$/.test(o.type) ? o.type : "";
  for (const [k, x] of Object.entries(o)) {
    if (typeof x === "string" && CONTENT_KEYS.has(k)) out.push([`${t}/${k}`, x]);
    else collect(x, out);
  }
}

/**
 * The content of events (their data: JSON, or `[DONE]`) in order, with consecutive pieces of one
 * label joined: two reads of one stream carry the same content whatever their framing or folding.
 */
export function contentOf(evs: { data: string }[]): Piece[] {
  const raw: Piece[] = [];
  for (const e of evs) {
    if (e.data === "[DONE]") continue;
    collect(JSON.parse(e.data), raw);
  }
  return normalize(raw);
}

export function normalize(pieces: Piece[]): Piece[] {
  const out: Piece[] = [];
  for (const [label, text] of pieces) {
    if (text === "") continue;
    const last = out[out.length - 1];
    if (last && last[0] === label) last[1] += text;
    else out.push([label, text]);
  }
  return out;
}

/** An event id as (seq, k): `<offset>.<k>` is the k-th event of that record, before its last. */
export function idKey(id: string): [number, number] {
  const m = /^(\d{16})(?:\.(\d+))?$/.exec(id);
  if (!m) throw new Error(`not an offset: ${id}`);
  return [Number(m[1]), m[2] === undefined ? Number.POSITIVE_INFINITY : Number(m[2])];
}
