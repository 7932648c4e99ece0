import assert from "node:assert/strict";
import { chatStatus, startWorld } from "../sim/fixture.ts";
import type { SimPod } from "../sim/pod.ts";
import { originMatcher } from "./cors.ts";

const CHAT = JSON.stringify({
  model: "qwen",
  stream: false,
  messages: [{ role: "user", content: "hi" }],
});

function chats(pod: SimPod): number {
  return pod.events.filter((e) => e.type === "request" && e.path === "/api/chat").length;
}

Deno.test("originMatcher() matches exact origins, * patterns, and * alone as any", () => {
  const allows = originMatcher(["https://chat.example.com", "http://localhost:*"]);
  assert.equal(allows("https://chat.example.com"), true);
  assert.equal(allows("HTTPS://Chat.Example.com"), true);
  assert.equal(allows("http://chat.example.com"), false);
  assert.equal(allows("http://localhost:3000"), true);
  assert.equal(allows("http://localhost.evil.com:3000"), false);
  assert.equal(allows("http://127.0.0.1:3000"), false);
  assert.equal(originMatcher([])("http://localhost:3000"), false);
  assert.equal(originMatcher(["*"])("https://anything.example"), true);
});

Deno.test("by default a browser page from another origin gets 403 and reaches no board", async () => {
  await using world = await startWorld({
    pods: [{ flavor: "fl", models: ["qwen"], loaded: ["qwen"] }],
  });
  const [pod] = world.cluster.pods;
  const preflight = await fetch(`${world.url}/api/chat`, {
    method: "OPTIONS",
    headers: {
      origin: "https://evil.example",
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type",
    },
  });
  assert.equal(preflight.status, 403);
  assert.equal(preflight.headers.get("access-control-allow-origin"), null);
  assert.match(
    (await preflight.json()).error,
    /'https:\/\/evil\.example' may not call.*--allowed-origins/,
  );
  // A "simple" request needs no preflight: it is refused all the same.
  const simple = await fetch(`${world.url}/api/chat`, {
    method: "POST",
    headers: { origin: "https://evil.example", "content-type": "text/plain" },
    body: CHAT,
  });
  assert.equal(simple.status, 403);
  await simple.body?.cancel();
  assert.equal(chats(pod), 0);
  // Without an Origin (curl, SDKs) or from the router's own pages, nothing changes.
  assert.equal(await chatStatus(world.url), 200);
  const own = await fetch(`${world.url}/api/chat`, {
    method: "POST",
    headers: { origin: world.url, "content-type": "application/json" },
    body: CHAT,
  });
  assert.equal(own.status, 200);
  await own.body?.cancel();
  assert.equal(chats(pod), 2);
});

Deno.test("OPTIONS is answered by the router and needs no model", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  for (const path of ["/api/chat", "/v1/chat/completions", "/api/tags"]) {
    const response = await fetch(`${world.url}${path}`, { method: "OPTIONS" });
    assert.equal(response.status, 204, path);
    assert.match(response.headers.get("allow")!, /POST/);
  }
  const [pod] = world.cluster.pods;
  assert.equal(pod.events.some((e) => e.type === "request" && e.method === "OPTIONS"), false);
});

Deno.test("an allowed origin gets its preflight answered and its answers marked for it, not the board's", async () => {
  await using world = await startWorld(
    { pods: [{ flavor: "fl", models: ["qwen"], loaded: ["qwen"] }] },
    { allowedOrigins: ["https://chat.example.com", "http://localhost:*"] },
  );
  const preflight = await fetch(`${world.url}/api/chat`, {
    method: "OPTIONS",
    headers: {
      origin: "http://localhost:5173",
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type, authorization",
    },
  });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("access-control-allow-origin"), "http://localhost:5173");
  assert.match(preflight.headers.get("access-control-allow-methods")!, /POST/);
  assert.equal(
    preflight.headers.get("access-control-allow-headers"),
    "content-type, authorization",
  );
  const chat = await fetch(`${world.url}/api/chat`, {
    method: "POST",
    headers: { origin: "https://chat.example.com", "content-type": "application/json" },
    body: CHAT,
  });
  assert.equal(chat.status, 200);
  // The Flask board says "*"; the router says who may read it.
  assert.equal(chat.headers.get("access-control-allow-origin"), "https://chat.example.com");
  assert.match(chat.headers.get("vary")!, /origin/i);
  assert.match(chat.headers.get("access-control-expose-headers")!, /x-request-id/);
  assert.equal((await chat.json()).done, true);
  const tags = await fetch(`${world.url}/api/tags`, {
    headers: { origin: "https://chat.example.com" },
  });
  assert.equal(tags.headers.get("access-control-allow-origin"), "https://chat.example.com");
  await tags.body?.cancel();
  const other = await fetch(`${world.url}/api/tags`, { headers: { origin: "https://x.example" } });
  assert.equal(other.status, 403);
  await other.body?.cancel();
});

Deno.test("--allowed-origins '*' lets any page call the router", async () => {
  await using world = await startWorld(
    { pods: [{ models: ["qwen"], loaded: ["qwen"] }] },
    { allowedOrigins: ["*"] },
  );
  const response = await fetch(`${world.url}/api/tags`, {
    headers: { origin: "https://anywhere.example" },
  });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("access-control-allow-origin"), "*");
  await response.body?.cancel();
});
