import assert from "node:assert/strict";
import { rawExchange, statusOf } from "../sim/raw_http.ts";
import { postJson, startWorld } from "../sim/fixture.ts";
import { isAdmin, needsAdmin } from "./admin_auth.ts";

Deno.test("isAdmin() accepts exactly 'Bearer <token>'", () => {
  assert.equal(isAdmin("Bearer s3cret", "s3cret"), true);
  assert.equal(isAdmin("bearer  s3cret ", "s3cret"), true);
  assert.equal(isAdmin("Bearer s3cre", "s3cret"), false);
  assert.equal(isAdmin("Bearer s3cret2", "s3cret"), false);
  assert.equal(isAdmin("Basic czNjcmV0", "s3cret"), false);
  assert.equal(isAdmin("s3cret", "s3cret"), false);
  assert.equal(isAdmin("Bearer ", ""), false);
  assert.equal(isAdmin(null, "s3cret"), false);
});

Deno.test("needsAdmin() covers operator writes and model management, not reads or inference", () => {
  for (
    const [method, path] of [
      ["POST", "/router/force_unload_all"],
      ["DELETE", "/router/anything"],
      ["POST", "/api/pull"],
      ["DELETE", "/api/delete"],
      ["POST", "/api/create"],
      ["POST", "/api/load"],
      ["POST", "/api/unload"],
      ["POST", "/load_model"],
      ["POST", "/unload_models"],
      ["DELETE", "/rm"],
      ["PATCH", "/api/modelfile/qwen"],
      ["POST", "/api/%6Coad"],
      ["POST", "//api//pull"],
      ["POST", "/router%2Fforce_unload_all"],
    ]
  ) assert.equal(needsAdmin(method, path), true, `${method} ${path}`);
  for (
    const [method, path] of [
      ["GET", "/router/status"],
      ["GET", "/api/tags"],
      ["POST", "/api/chat"],
      ["POST", "/api/show"],
      ["POST", "/v1/chat/completions"],
      ["GET", "/api/modelfile/qwen"],
      ["GET", "/metrics"],
    ]
  ) assert.equal(needsAdmin(method, path), false, `${method} ${path}`);
});

Deno.test("with --admin-token, operator writes and model management need the bearer token", async () => {
  await using world = await startWorld(
    { pods: [{ models: ["qwen", "phi"], loaded: ["qwen"] }] },
    { adminToken: "s3cret" },
  );
  const [pod] = world.cluster.pods;
  const refused = await fetch(`${world.url}/router/force_unload_all`, { method: "POST" });
  assert.equal(refused.status, 401);
  assert.equal(refused.headers.get("www-authenticate"), 'Bearer realm="rkllama-router"');
  assert.match((await refused.json()).error, /needs the admin token/);
  const wrong = await postJson(`${world.url}/api/load`, { model: "phi" }, {
    headers: { authorization: "Bearer guess", "content-type": "application/json" },
  });
  assert.equal(wrong.status, 401);
  assert.match((await wrong.json()).error, /admin token is wrong/);
  const encoded = await postJson(`${world.url}/api/%6Coad`, { model: "phi" });
  assert.equal(encoded.status, 401);
  await encoded.body?.cancel();
  assert.equal(
    pod.events.some((e) =>
      e.path?.startsWith("/api/") && !["/api/tags", "/api/ps", "/api/version"].includes(e.path)
    ),
    false,
  );
  const load = await postJson(`${world.url}/api/load`, { model: "phi" }, {
    headers: { authorization: "Bearer s3cret", "content-type": "application/json" },
  });
  assert.equal(load.status, 200);
  await load.body?.cancel();
  // The token opened the door at the router; the board never sees it.
  const sent = pod.events.find((e) => e.type === "request" && e.path === "/api/load");
  assert.equal(sent?.headers?.authorization, undefined);
  const chatWithKey = await postJson(`${world.url}/api/chat`, {
    model: "qwen",
    messages: [{ role: "user", content: "hi" }],
    stream: false,
  }, { headers: { authorization: "Bearer sk-client-key", "content-type": "application/json" } });
  await chatWithKey.body?.cancel();
  const chatSent = pod.events.findLast((e) => e.type === "request" && e.path === "/api/chat");
  assert.equal(chatSent?.headers?.authorization, "Bearer sk-client-key");
  // Reading and inference stay open.
  const status = await fetch(`${world.url}/router/status`);
  assert.equal(status.status, 200);
  await status.body?.cancel();
  const chat = await postJson(`${world.url}/api/chat`, {
    model: "qwen",
    messages: [{ role: "user", content: "hi" }],
    stream: false,
  });
  assert.equal(chat.status, 200);
  await chat.body?.cancel();
});

Deno.test("the admin token reaches no board in any header shape", async () => {
  await using world = await startWorld(
    { pods: [{ models: ["qwen"], loaded: ["qwen"] }] },
    { adminToken: "s3cret" },
  );
  const [pod] = world.cluster.pods;
  const body = '{"model":"qwen","stream":false,"messages":[]}';
  const shapes = [
    "Authorization: s3cret",
    "Authorization: Token s3cret",
    "Authorization: Bearer sk-client\r\nAuthorization: Bearer s3cret",
    "X-Api-Key: s3cret",
  ];
  for (const shape of shapes) {
    const raw = await rawExchange(
      world.url,
      new TextEncoder().encode(
        `POST /api/chat HTTP/1.1\r\nHost: x\r\n${shape}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      ),
    );
    assert.equal(statusOf(raw), 200, shape);
  }
  const sent = pod.events.filter((e) => e.type === "request" && e.path === "/api/chat");
  assert.equal(sent.length, shapes.length);
  for (const event of sent) assert.doesNotMatch(JSON.stringify(event.headers), /s3cret/);
});

Deno.test("with --admin-token, no spelling of a protected path gets past it", async () => {
  await using world = await startWorld(
    { pods: [{ models: ["qwen", "phi"], loaded: ["qwen"] }] },
    { adminToken: "s3cret" },
  );
  const [pod] = world.cluster.pods;
  const body = '{"model":"qwen"}';
  for (
    const target of [
      "/api/./unload",
      "/x/../api/unload",
      "/api/%2e/unload",
      "/api/%2E%2E/api/unload",
      "/api\\unload",
      "/api/%75nload",
      "//api//unload",
      "/router/./force_unload_all",
      "/api/tags/../../router/force_unload_all",
    ]
  ) {
    const raw = await rawExchange(
      world.url,
      new TextEncoder().encode(
        `POST ${target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      ),
    );
    assert.equal(statusOf(raw), 401, `${target}: ${raw.split("\r\n")[0]}`);
  }
  assert.deepEqual(pod.loadedModels(), ["qwen"]);
  assert.equal(pod.events.some((e) => e.type === "request" && /unload/.test(e.path ?? "")), false);
  const metrics = await (await fetch(`${world.url}/metrics`)).text();
  assert.match(metrics, /^rkllama_router_admin_refusals_total 9$/m);
});

Deno.test("without --admin-token, operator endpoints answer anyone, as before", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const response = await fetch(`${world.url}/router/force_unload_all`, { method: "POST" });
  assert.equal(response.status, 200);
  await response.body?.cancel();
});
