/**
 * The fenced code blocks of a Markdown file, with the `<!-- doc-test: … -->` annotations written
 * just before them, classified by how docs-examples.test.ts checks them. The syntax is described
 * in docs/contributing-docs.md.
 */

/** How a block is checked. */
export type BlockKind =
  | "shell" // sh, bash, shell, console: run with bash against a started server
  | "script" // ts, js, mjs: transpiled (TypeScript's transpileModule) and run with node
  | "json" // parsed; a Sluice config unless annotated `json-only`
  | "nginx" // must equal docs/examples/nginx.conf, which nginx -t accepts
  | "text" // text, http: output or a listing, not run
  | "typecheck" // ts/tsx annotated `typecheck-only reason="…"`: type-checked, not run
  | "skip"; // annotated `skip reason="…"`

export interface Directive {
  name: string;
  /** Positional values: quoted strings or bare words after the name, up to the next `;`. */
  args: string[];
  /** `key="value"` / `key=value` pairs. */
  opts: Record<string, string>;
}

export interface DocBlock {
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** The info string's first word, lower-cased ("" when there is none). */
  lang: string;
  code: string;
  directives: Directive[];
}

const FENCE = /^( {0,3})(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const ANNOTATION = /^\s*<!--\s*doc-test:([\s\S]*?)-->\s*$/;

/** Every fenced block of `markdown`, each with the annotations of the lines just before it. */
export function extractBlocks(markdown: string, file: string): DocBlock[] {
  const lines = markdown.split("\n");
  const blocks: DocBlock[] = [];
  let pending: Directive[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    const ann = ANNOTATION.exec(line);
    if (ann) {
      pending.push(...parseDirectives(ann[1] as string, `${file}:${i + 1}`));
      continue;
    }
    const open = FENCE.exec(line);
    if (!open) {
      // Annotations bind to the next block; blank lines may sit between, prose may not.
      if (line.trim() !== "" && pending.length > 0)
        throw new Error(`${file}:${i + 1}: a doc-test annotation must come right before a code block`);
      continue;
    }
    const fence = open[2] as string;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const l = lines[j] as string;
      if (l.trimStart().startsWith(fence) && l.trim().replace(/[`~]/g, "") === "") break;
      body.push(l.slice(Math.min(open[1]?.length ?? 0, l.length - l.trimStart().length)));
    }
    if (j >= lines.length) throw new Error(`${file}:${i + 1}: code block never closed`);
    blocks.push({
      file,
      line: i + 1,
      lang: (open[3] as string).toLowerCase(),
      code: `${body.join("\n")}\n`,
      directives: pending,
    });
    pending = [];
    i = j;
  }
  if (pending.length > 0)
    throw new Error(`${file}: a doc-test annotation at the end of the file has no block`);
  return blocks;
}

/** Known directives and whether each needs a value. */
const DIRECTIVES: Record<string, { minArgs: number; opts?: string[] }> = {
  skip: { minArgs: 0, opts: ["reason"] },
  "typecheck-only": { minArgs: 0, opts: ["reason"] },
  "json-only": { minArgs: 0 },
  defaults: { minArgs: 0, opts: ["except"] },
  "expect-stdout-contains": { minArgs: 1 },
  "expect-stderr-contains": { minArgs: 1 },
  "expect-exit": { minArgs: 1 },
  "omit-line": { minArgs: 1 },
  replace: { minArgs: 2 },
  env: { minArgs: 1 },
  file: { minArgs: 1 },
  "server-args": { minArgs: 1 },
  serve: { minArgs: 0, opts: ["ready", "probe"] },
  "each-line": { minArgs: 0 },
  redis: { minArgs: 0 },
  background: { minArgs: 1 },
  continues: { minArgs: 0 },
  "shape-of": { minArgs: 1 },
  timeout: { minArgs: 1 },
};

/** `name a "b c" k="v"; name2 …` → directives. Unknown names and missing values throw. */
export function parseDirectives(text: string, where: string): Directive[] {
  const out: Directive[] = [];
  const tokens = tokenize(text, where);
  let cur: Directive | undefined;
  for (const t of tokens) {
    if (t === ";") {
      cur = undefined;
      continue;
    }
    if (!cur) {
      if (!(t in DIRECTIVES)) throw new Error(`${where}: unknown doc-test directive "${t}"`);
      cur = { name: t, args: [], opts: {} };
      out.push(cur);
      continue;
    }
    const kv = /^([a-z-]+)=([\s\S]*)$/.exec(t);
    if (kv && DIRECTIVES[cur.name]?.opts?.includes(kv[1] as string))
      cur.opts[kv[1] as string] = kv[2] as string;
    else cur.args.push(t);
  }
  for (const d of out) {
    const spec = DIRECTIVES[d.name] as { minArgs: number };
    if (d.args.length < spec.minArgs) throw new Error(`${where}: doc-test "${d.name}" needs a value`);
    if ((d.name === "skip" || d.name === "typecheck-only") && !d.opts.reason)
      throw new Error(`${where}: doc-test "${d.name}" needs reason="…"`);
  }
  return out;
}

function tokenize(text: string, where: string): string[] {
  const tokens: string[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (/\s/.test(c)) {
      i++;
    } else if (c === ";") {
      tokens.push(";");
      i++;
    } else {
      let tok = "";
      while (i < text.length && !/[\s;]/.test(text[i] as string)) {
        if (text[i] === '"') {
          // A quoted value: \" is a quote, \\ a backslash, \n a newline.
          i++;
          for (;;) {
            if (i >= text.length) throw new Error(`${where}: unclosed quote in a doc-test annotation`);
            const ch = text[i] as string;
            if (ch === '"') break;
            if (ch === "\\" && i + 1 < text.length) {
              const next = text[i + 1] as string;
              tok += next === "n" ? "\n" : next;
              i += 2;
            } else {
              tok += ch;
              i++;
            }
          }
          i++;
        } else tok += text[i++];
      }
      tokens.push(tok);
    }
  }
  return tokens;
}

const LANGS: Record<string, BlockKind> = {
  sh: "shell",
  bash: "shell",
  shell: "shell",
  console: "shell",
  ts: "script",
  js: "script",
  mjs: "script",
  json: "json",
  nginx: "nginx",
  text: "text",
  http: "text",
};

/** How `block` is checked; throws for a block nothing knows how to check (no language, or an unknown one). */
export function classify(block: DocBlock): BlockKind {
  if (directive(block, "skip")) return "skip";
  if (directive(block, "typecheck-only")) {
    if (block.lang !== "ts" && block.lang !== "tsx")
      throw new Error(`${block.file}:${block.line}: typecheck-only is for ts and tsx blocks`);
    return "typecheck";
  }
  const kind = LANGS[block.lang];
  if (!kind)
    throw new Error(
      `${block.file}:${block.line}: a \`\`\`${block.lang || "(no language)"} block cannot be checked: ` +
        "give it a language the doc test runs (sh, ts, json, …), `text` for output, or " +
        '<!-- doc-test: skip reason="…" --> (docs/contributing-docs.md)',
    );
  return kind;
}

export function directive(block: DocBlock, name: string): Directive | undefined {
  return block.directives.find((d) => d.name === name);
}

export function directives(block: DocBlock, name: string): Directive[] {
  return block.directives.filter((d) => d.name === name);
}
