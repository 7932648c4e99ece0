import assert from "node:assert/strict";
import { Hono } from "hono";
import { startWorld } from "../sim/fixture.ts";
import { frontDoor } from "./front_door.ts";
import { requestIdOf } from "../api/request_id.ts";

Deno.test("every answer carries a request id, through the inference shortcut and through Hono alike", async () => {
  await using world = await startWorld(
    { pods: [{ models: ["qwen"], loaded: ["qwen"], tokenDelayMs: 1 }] },
    { adminToken: "s3cret", allowedOrigins: ["https://chat.example.com"] },
  );
  const chat = JSON.stringify({ model: "qwen", stream: false, messages: [] });
  const cases: [string, string, RequestInit, number][] = [
    ["inference shortcut", "/api/chat", { method: "POST", body: chat }, 200],
    ["inference, canonicalised", "/api/./chat", { method: "POST", body: chat }, 200],
    ["router's own path", "/api/tags", {}, 200],
    ["own path, wrong method", "/metrics", { method: "DELETE" }, 405],
    ["admin path without token", "/router/force_unload_all", { method: "POST" }, 401],
    ["unknown model", "/api/chat", { method: "POST", body: '{"model":"nope"}' }, 404],
    ["bad JSON", "/api/generate", { method: "POST", body: '{"model":' }, 400],
    ["preflight", "/api/chat", { method: "OPTIONS" }, 204],
    ["origin refused", "/api/tags", { headers: { origin: "https://evil.example" } }, 403],
  ];
  for (const [what, path, init, status] of cases) {
    const response = await fetch(world.url + path, init);
    await response.body?.cancel();
    assert.equal(response.status, status, what);
    assert.match(response.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/, what);
  }
  for (const path of ["/api/chat", "/api/./chat", "/api/tags"]) {
    const response = await fetch(world.url + path, {
      method: path === "/api/tags" ? "GET" : "POST",
      headers: { "x-request-id": "client-id.1" },
      body: path === "/api/tags" ? undefined : chat,
    });
    await response.body?.cancel();
    assert.equal(response.headers.get("x-request-id"), "client-id.1", path);
  }
});

Deno.test("an error thrown anywhere behind the front door is one JSON 500 with the request id", async () => {
  const app = new Hono();
  app.get("/router/status", () => {
    throw new Error("broken status");
  });
  app.get("/api/x", (c) => c.text(requestIdOf(c.req.raw)));
  app.onError((error) => {
    throw error;
  });
  const handle = frontDoor({
    app,
    forward: () => Promise.reject(new Error("broken proxy")),
    allowedOrigins: [],
  });
  const status = await handle(new Request("http://router.test/router/status"));
  assert.equal(status.status, 500);
  assert.deepEqual(await status.json(), { error: "internal router error: broken status" });
  assert.ok(status.headers.get("x-request-id"));
  const chat = await handle(
    new Request("http://router.test/v1/chat/completions", { method: "POST", body: "{}" }),
  );
  assert.equal(chat.status, 500);
  assert.equal((await chat.json()).error.message, "internal router error: broken proxy");
  // The canonical copy of a request keeps the id the front door gave the original.
  const canonical = await handle(
    new Request("http://router.test/api/%78", { headers: { "x-request-id": "abc" } }),
  );
  assert.equal(await canonical.text(), "abc");
  assert.equal(canonical.headers.get("x-request-id"), "abc");
});
