import { SluiceError } from "@sluice/protocol";
import type { FastifyInstance } from "fastify";

/** Default bound on how deep arrays and objects may nest in a JSON body (`limits.json_max_depth`). */
export const DEFAULT_JSON_MAX_DEPTH = 64;

/**
 * How deep arrays/objects nest in `text`, scanning at most until `max` is passed (then returns
 * max + 1). Iterative on purpose: deep JSON is exactly what makes recursive code (JSON.stringify,
 * zod, structured clone) overflow the stack, so the check itself must not recurse. The text need
 * not be valid JSON; brackets inside strings do not count.
 */
export function jsonDepth(text: string, max: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      depth++;
      if (depth > deepest) {
        deepest = depth;
        if (deepest > max) return deepest;
      }
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) {
      depth--;
    }
  }
  return deepest;
}

/** Throws 400 `invalid_request` when `text` nests deeper than `max`. */
export function checkJsonDepth(text: string, max: number, what = "the body"): void {
  if (jsonDepth(text, max) > max) {
    throw new SluiceError(
      "invalid_request",
      `${what} nests JSON arrays/objects more than ${max} levels deep (limits.json_max_depth)`,
    );
  }
}

/** `JSON.parse` of text from a client, refusing nesting deeper than `max` before parsing. */
export function parseBoundedJson(text: string, max: number, what = "the body"): unknown {
  checkJsonDepth(text, max, what);
  return JSON.parse(text);
}

/**
 * The one JSON body parser for every route of the app: Fastify's own (size bound by `bodyLimit`,
 * `__proto__`/`constructor` poisoning refused) behind a nesting-depth check, so no handler, store
 * or encoder ever sees a value deep enough to overflow a recursive walk.
 */
export function registerJsonBodyParser(app: FastifyInstance, maxDepth: number): void {
  const parse = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (req, body, done) => {
    const text = body as string;
    try {
      checkJsonDepth(text, maxDepth);
    } catch (err) {
      done(err as SluiceError, undefined);
      return;
    }
    parse(req, text, done);
  });
}
