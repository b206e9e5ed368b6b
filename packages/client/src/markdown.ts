/**
 * Streaming Markdown without flicker: `stableMarkdown(text)` returns the longest form of
 * a partial answer that renders without a broken, half-made construct, to hand to any
 * Markdown renderer on every token:
 *
 * - an open code fence is closed (the code shows as it streams, highlighted, in a block);
 *   a fence whose opening line is still being typed is held back;
 * - table rows are shown only once complete, and a table only once its delimiter row is
 *   there (so a header never flashes as a paragraph first);
 * - on the line being typed: a half link or image (`[text`, `[text](http…`), an unclosed
 *   inline code span, unclosed `**`/`__`/`~~`, a half HTML tag and a lone `-`/`=` line
 *   (which would turn the previous line into a heading) are held back.
 *
 * Pass `final: true` once the stream ended: the text is returned unchanged.
 */
export function stableMarkdown(text: string, opts: { final?: boolean } = {}): string {
  if (opts.final) return text;
  const lines = text.split("\n");
  // The line being typed (empty when the text ends with a newline).
  let partial = lines.pop() ?? "";
  const fence = openFence(lines);
  if (fence) {
    if (fence.line === lines.length) return text; // unreachable: opener is a complete line
    // Inside a code block: show everything, hide a half-typed closing fence, close it.
    if (/^ {0,3}[`~]+\s*$/.test(partial)) partial = "";
    const body = partial === "" ? lines.join("\n") : [...lines, partial].join("\n");
    return `${body}\n${fence.marker}\n`;
  }
  // A fence opener being typed: hold it back until its line is complete.
  if (/^ {0,3}(`{3,}|~{3,})/.test(partial)) partial = "";
  if (/^\s*\|/.test(partial)) partial = "";
  // Trailing table block: hold it until header and delimiter rows are both complete.
  if (partial === "") {
    let start = lines.length;
    while (start > 0 && /^\s*\|/.test(lines[start - 1] as string)) start--;
    const block = lines.length - start;
    if (block > 0 && (block < 2 || !isDelimiterRow(lines[start + 1] as string))) {
      lines.length = start;
    }
  }
  partial = stableInline(partial);
  if (partial === "") return lines.length > 0 ? `${lines.join("\n")}\n` : "";
  return [...lines, partial].join("\n");
}

function isDelimiterRow(line: string): boolean {
  return /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/.test(line);
}

/** The open fence at the end of `lines` (complete lines), if any. */
function openFence(lines: string[]): { marker: string; line: number } | undefined {
  let open: { char: string; len: number; marker: string; line: number } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] as string;
    const m = /^ {0,3}(`{3,}|~{3,})(.*)$/.exec(l);
    if (!m) continue;
    const run = m[1] as string;
    if (!open) {
      if (run[0] === "`" && (m[2] as string).includes("`")) continue; // not a fence
      open = { char: run[0] as string, len: run.length, marker: run, line: i };
    } else if (run[0] === open.char && run.length >= open.len && (m[2] as string).trim() === "") {
      open = undefined;
    }
  }
  return open ? { marker: open.marker, line: open.line } : undefined;
}

/** Holds back the unfinished inline construct at the end of the line being typed. */
function stableInline(line: string): string {
  let s = line;
  // A lone setext underline would turn the previous line into a heading for a moment.
  if (/^ {0,3}(-+|=+)\s*$/.test(s)) return "";
  for (let guard = 0; guard < 8; guard++) {
    const before = s;
    // Inline code: an odd number of backtick runs means one is still open.
    const ticks = s.match(/`+/g);
    if (ticks && ticks.length % 2 === 1) s = s.slice(0, s.lastIndexOf(ticks[ticks.length - 1] as string));
    // Links and images: `[text`, `[text]`, `[text](url` are held back from their `[`.
    const link = /!?\[[^\]]*(\](\([^)]*)?)?$/.exec(s);
    if (link) s = s.slice(0, link.index);
    // Half an HTML tag or autolink.
    const tag = /<[^>]*$/.exec(s);
    if (tag) s = s.slice(0, tag.index);
    // Strong / strikethrough markers that are not closed yet.
    for (const mark of ["**", "__", "~~"]) {
      const n = s.split(mark).length - 1;
      if (n % 2 === 1) s = s.slice(0, s.lastIndexOf(mark));
    }
    // Emphasis with a single `*` (not a list bullet).
    const stars =
      s
        .replace(/^\s*[*-]\s/, "  ")
        .replace(/\*\*/g, "")
        .split("*").length - 1;
    if (stars % 2 === 1) s = s.slice(0, s.lastIndexOf("*"));
    if (s === before) break;
  }
  return s.replace(/[ \t]+$/, "");
}
