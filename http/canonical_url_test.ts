import assert from "node:assert/strict";
import { canonicalUrl } from "./canonical_url.ts";

const base = "http://127.0.0.1:8080";

Deno.test("canonicalUrl() resolves the spellings pods resolve", () => {
  const cases: [string, string][] = [
    ["/api/./unload", "/api/unload"],
    ["/x/../api/load", "/api/load"],
    ["/api/%2e/load", "/api/load"],
    ["/api/%2E%2E/api/load", "/api/load"],
    ["/api\\load", "/api/load"],
    ["/api/%6Coad", "/api/load"],
    ["//api//load", "/api/load"],
    ["/router/./force_unload_all?x=1", "/router/force_unload_all?x=1"],
    ["/v1/models/qwen%3Alatest/../../models", "/v1/models"],
    ["/../../etc/passwd", "/etc/passwd"],
  ];
  for (const [raw, expected] of cases) {
    assert.equal(canonicalUrl(base + raw), base + expected, raw);
  }
});

Deno.test("canonicalUrl() leaves plain paths and reserved escapes as they are", () => {
  for (
    const raw of [
      "/api/chat",
      "/api/chat/",
      "/v1/models/qwen%3Alatest",
      "/files/model%2Fname/x",
      "/api/tags?name=a//b",
      "/",
    ]
  ) {
    assert.equal(canonicalUrl(base + raw), undefined, raw);
  }
});
