import { stableMarkdown } from "@sluice/client";
import hljs from "highlight.js/lib/common";
import { Marked, type Tokens } from "marked";

const escapeHtml = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c,
  );

/**
 * Markdown for model output: raw HTML is shown as text (never injected), links only to
 * http(s)/mailto, code blocks highlighted with highlight.js.
 */
const md = new Marked({
  gfm: true,
  renderer: {
    html(token: Tokens.HTML | Tokens.Tag) {
      return escapeHtml(token.text);
    },
    code(token: Tokens.Code) {
      const lang = (token.lang ?? "").split(/\s/)[0] ?? "";
      let body: string;
      try {
        body =
          lang && hljs.getLanguage(lang)
            ? hljs.highlight(token.text, { language: lang, ignoreIllegals: true }).value
            : hljs.highlightAuto(token.text).value;
      } catch {
        body = escapeHtml(token.text);
      }
      return `<pre><code class="hljs${lang ? ` language-${escapeHtml(lang)}` : ""}">${body}</code></pre>\n`;
    },
    link(token: Tokens.Link) {
      const href = /^(https?:|mailto:|\/|#)/i.test(token.href) ? token.href : "#";
      const text = this.parser.parseInline(token.tokens);
      return `<a href="${escapeHtml(href)}" target="_blank" rel="noopener noreferrer">${text}</a>`;
    },
    image(token: Tokens.Image) {
      return escapeHtml(token.text || "");
    },
  },
});

/** HTML for a (possibly partial) answer: the stable prefix while streaming, all of it once final. */
export function renderMarkdown(text: string, final: boolean): string {
  return md.parse(stableMarkdown(text, { final }), { async: false }) as string;
}
