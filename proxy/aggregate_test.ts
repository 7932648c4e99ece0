import assert from "node:assert/strict";
import { startWorld } from "../sim/fixture.ts";
import { ollamaName, rfc3339 } from "./aggregate.ts";

Deno.test("/api/tags lists each model on disk anywhere once, in name order", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen", "phi"] }, { models: ["qwen", "llama"] }],
  });
  const body = await (await fetch(`${world.url}/api/tags`)).json();
  assert.deepEqual(body.models.map((m: { name: string }) => m.name), [
    "llama:latest",
    "phi:latest",
    "qwen:latest",
  ]);
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
  assert.deepEqual(copies, [
    "qwen:latest@rk-0/rk-0",
    "phi:latest@rk-1/rk-1",
    "qwen:latest@rk-1/rk-1",
  ]);
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
  assert.deepEqual(tags.models.map((m: { name: string }) => m.name), ["qwen:latest"]);
  const ps = await (await fetch(`${world.url}/api/ps`)).json();
  assert.deepEqual(ps.models.map((m: { name: string }) => m.name), ["qwen:latest"]);
});

Deno.test("/v1/models and /v1/models/{id} answer in OpenAI's shape", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }, { models: ["phi"] }] });
  const list = await (await fetch(`${world.url}/v1/models`)).json();
  assert.equal(list.object, "list");
  assert.deepEqual(list.data.map((m: { id: string }) => m.id), ["phi:latest", "qwen:latest"]);
  assert.equal(list.data[0].object, "model");
  assert.equal(list.data[0].owned_by, "rkllama");
  assert.equal(typeof list.data[0].created, "number");
  // Asked for in either form, a model is answered under the id asked for, as Ollama does.
  for (const id of ["qwen:latest", "qwen", "library/qwen"]) {
    const one = await (await fetch(`${world.url}/v1/models/${id}`)).json();
    assert.equal(one.id, id);
  }
  const missing = await fetch(`${world.url}/v1/models/nope`);
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.message, "The model 'nope' does not exist");
});

Deno.test("rfc3339() turns RKLlama's zone-less times into RFC 3339 and leaves others alone", () => {
  assert.equal(rfc3339("2026-11-27 20:58:32.598478"), "2026-11-27T20:58:32.598478Z");
  assert.equal(rfc3339("2026-11-27T20:58:32Z"), "2026-11-27T20:58:32Z");
  assert.equal(rfc3339(null), null);
});

Deno.test("ollamaName() gives an untagged model Ollama's :latest tag and keeps other tags", () => {
  assert.equal(ollamaName("qwen2.5-1.5b"), "qwen2.5-1.5b:latest");
  assert.equal(ollamaName("qwen:7b"), "qwen:7b");
  assert.equal(ollamaName("qwen:latest"), "qwen:latest");
});

Deno.test("a model stored with a tag is listed under that name, and pods keep theirs", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen:7b", "phi"], loaded: ["qwen:7b"] }],
  });
  const tags = await (await fetch(`${world.url}/api/tags`)).json();
  assert.deepEqual(tags.models.map((m: { name: string }) => m.name), ["phi:latest", "qwen:7b"]);
  const ps = await (await fetch(`${world.url}/api/ps`)).json();
  assert.deepEqual(ps.models.map((m: { model: string }) => m.model), ["qwen:7b"]);
});
