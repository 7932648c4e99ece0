import assert from "node:assert/strict";
import { startWorld } from "../sim/fixture.ts";
import { endpointOf, ENDPOINTS, isInference, OTHER } from "./endpoints.ts";

Deno.test("endpointOf() finds the exact row, else the longest prefix, else OTHER", () => {
  assert.equal(endpointOf("/api/chat").path, "/api/chat");
  assert.equal(endpointOf("/files/qwen/config.json").path, "/files/");
  assert.equal(endpointOf("/v1/files/qwen").path, "/v1/files/");
  assert.equal(endpointOf("/router/nothing").path, "/router/");
  assert.equal(endpointOf("/router/status").path, "/router/status");
  assert.equal(endpointOf("/v1/models/qwen").answeredBy, "router-get");
  assert.equal(endpointOf("/v1/models").answeredBy, "router");
  assert.equal(endpointOf("/api/chat/x"), OTHER);
  assert.equal(endpointOf("/router"), OTHER);
  assert.equal(isInference("POST", "/v1/chat/completions"), true);
  assert.equal(isInference("GET", "/api/chat"), false);
  assert.equal(isInference("POST", "/api/show"), false);
});

Deno.test("the endpoint table is consistent with itself", () => {
  const paths = ENDPOINTS.map((row) => `${row.path}${row.prefix ? "*" : ""}`);
  assert.deepEqual(paths, [...new Set(paths)], "a path has two rows");
  for (const row of ENDPOINTS) {
    const name = row.path + (row.prefix ? "*" : "");
    if (row.inference) {
      assert.equal(row.answeredBy, "pod", name);
      assert.equal(row.admin, "never", name);
      assert.equal(row.model, "required", name);
      assert.equal(row.loads, true, name);
    }
    if (row.answeredBy !== "pod") assert.equal(row.model, "none", name);
    if (row.prefix) assert.equal(row.metric, "other", `${name}: a prefix's paths are unbounded`);
    if (row.loads) assert.equal(row.unloads, "none", name);
  }
});

/** A request to `row`'s path (a path under it for a prefix) with `method`, the token or not. */
async function send(
  url: string,
  method: string,
  path: string,
  token: string | undefined,
): Promise<number> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const response = await fetch(url + path, {
    method,
    headers,
    body: JSON.stringify({
      model: "qwen",
      name: "qwen",
      model_name: "qwen",
      stream: false,
      prompt: "hi",
      input: "hi",
      messages: [{ role: "user", content: "hi" }],
    }),
    signal: AbortSignal.timeout(20_000),
  });
  await response.body?.cancel();
  return response.status;
}

Deno.test("over a socket with --admin-token: no inference path needs the token, every admin path does", async () => {
  await using world = await startWorld(
    { pods: [{ models: ["qwen", "phi"], loaded: ["qwen"], loadDelayMs: 10, tokenDelayMs: 1 }] },
    { adminToken: "s3cret" },
  );
  const inference = ENDPOINTS.filter((row) => row.inference);
  assert.ok(inference.length >= 7, `only ${inference.length} inference paths`);
  for (const row of inference) {
    const status = await send(world.url, "POST", row.path, undefined);
    assert.ok(status !== 401 && status !== 403, `POST ${row.path} without the token: ${status}`);
  }
  const admin = ENDPOINTS.filter((row) => row.admin !== "never")
    .map((row) => row.prefix ? `${row.path}qwen` : row.path);
  assert.ok(admin.length >= 15, `only ${admin.length} admin paths`);
  for (const path of admin) {
    const without = await send(world.url, "POST", path, undefined);
    assert.ok(without === 401 || without === 403, `POST ${path} without the token: ${without}`);
    assert.equal(await send(world.url, "POST", path, "wrong"), 401, `POST ${path}, wrong token`);
  }
  for (const path of admin) {
    const status = await send(world.url, "POST", path, "s3cret");
    assert.notEqual(status, 401, `POST ${path} with the token`);
  }
});
