import assert from "node:assert/strict";
import { startWorld } from "../sim/fixture.ts";
import { rfc3339 } from "./aggregate.ts";

Deno.test("/api/tags lists each model on disk anywhere once, in name order", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen", "phi"] }, { models: ["qwen", "llama"] }],
  });
  const body = await (await fetch(`${world.url}/api/tags`)).json();
  assert.deepEqual(body.models.map((m: { name: string }) => m.name), ["llama", "phi", "qwen"]);
  const qwen = body.models[2];
  assert.deepEqual(Object.keys(qwen), [
    "name",
    "model",
    "modified_at",
    "size",
    "digest",
    "details",
  ]);
  assert.equal(qwen.details.format, "rkllm");
});

Deno.test("/api/ps lists every loaded copy with its pod and node", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"] }, {
      models: ["qwen", "phi"],
      loaded: ["qwen", "phi"],
    }],
  });
  const body = await (await fetch(`${world.url}/api/ps`)).json();
  const copies = body.models.map((m: { name: string; pod_name: string; node_name: string }) =>
    `${m.name}@${m.pod_name}/${m.node_name}`
  );
  assert.deepEqual(copies, ["qwen@rk-0/rk-0", "phi@rk-1/rk-1", "qwen@rk-1/rk-1"]);
  assert.match(body.models[0].expires_at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
});

Deno.test("/api/tags and /api/ps leave out pods that stopped answering polls", async () => {
  await using world = await startWorld(
    { pods: [{ models: ["qwen"], loaded: ["qwen"] }, { models: ["phi"], loaded: ["phi"] }] },
    { unreachableAfter: 1 },
  );
  await world.cluster.pods[1].kill();
  await world.router.poller.pollAll();
  const tags = await (await fetch(`${world.url}/api/tags`)).json();
  assert.deepEqual(tags.models.map((m: { name: string }) => m.name), ["qwen"]);
  const ps = await (await fetch(`${world.url}/api/ps`)).json();
  assert.deepEqual(ps.models.map((m: { name: string }) => m.name), ["qwen"]);
});

Deno.test("/v1/models and /v1/models/{id} answer in OpenAI's shape", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }, { models: ["phi"] }] });
  const list = await (await fetch(`${world.url}/v1/models`)).json();
  assert.equal(list.object, "list");
  assert.deepEqual(list.data.map((m: { id: string }) => m.id), ["phi", "qwen"]);
  assert.equal(list.data[0].object, "model");
  assert.equal(list.data[0].owned_by, "rkllama");
  assert.equal(typeof list.data[0].created, "number");
  const one = await (await fetch(`${world.url}/v1/models/qwen:latest`)).json();
  assert.equal(one.id, "qwen");
  const missing = await fetch(`${world.url}/v1/models/nope`);
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.message, "The model 'nope' does not exist");
});

Deno.test("rfc3339() turns RKLlama's zone-less times into RFC 3339 and leaves others alone", () => {
  assert.equal(rfc3339("2026-11-27 20:58:32.598478"), "2026-11-27T20:58:32.598478Z");
  assert.equal(rfc3339("2026-11-27T20:58:32Z"), "2026-11-27T20:58:32Z");
  assert.equal(rfc3339(null), null);
});
