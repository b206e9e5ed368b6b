import { describe, expect, it } from "vitest";
import { redactUpstreamText, UpstreamHttp } from "../src/providers/upstream-http.js";

describe("redactUpstreamText", () => {
  it("removes Bearer/Basic credentials, sk- keys and api-key field values", () => {
    const text =
      'bad key: Authorization: Bearer abc.def-123 / Basic dXNlcjpwYXNz; key sk-proj-AbCdEf123456 {"x-api-key":"k-9f8e7d6c"} api_key=zzz111yyy';
    const out = redactUpstreamText(text);
    for (const secret of ["abc.def-123", "dXNlcjpwYXNz", "AbCdEf123456", "k-9f8e7d6c", "zzz111yyy"]) {
      expect(out).not.toContain(secret);
    }
    expect(out).toBe(
      'bad key: Authorization: Bearer [REDACTED] / Basic [REDACTED]; key sk-[REDACTED] {"x-api-key":"[REDACTED]"} api_key=[REDACTED]',
    );
  });

  it("removes configured secrets wherever they appear, and is idempotent", () => {
    const secrets = ["my-org-token-42"];
    const once = redactUpstreamText("token my-org-token-42 rejected (my-org-token-42)", secrets);
    expect(once).toBe("token [REDACTED] rejected ([REDACTED])");
    expect(redactUpstreamText(once, secrets)).toBe(once);
    const bearer = redactUpstreamText("Authorization: Bearer xyz123456");
    expect(redactUpstreamText(bearer)).toBe(bearer);
  });

  it("a provider redacts its key, its header values and the token inside a `Bearer …` header value", () => {
    const http = new UpstreamHttp({
      secrets: ["key-0123456789", "Token tok-abcdefgh", "abc" /* too short to replace literally */],
    });
    expect(http.redact("got key-0123456789 and tok-abcdefgh, abc")).toBe(
      "got [REDACTED] and [REDACTED], abc",
    );
  });

  it("leaves ordinary text alone", () => {
    const text = "The model is overloaded; try again in 3 seconds (request id req_123).";
    expect(redactUpstreamText(text)).toBe(text);
  });
});
