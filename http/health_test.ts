import assert from "node:assert/strict";
import { startWorld } from "../sim/fixture.ts";

Deno.test("/health answers whatever the pods do", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  await world.cluster.pods[0].kill();
  const response = await fetch(`${world.url}/health`);
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { status: "ok" });
});

Deno.test("/health/ready is 503 while no pod can take requests, 200 once one can", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] }, { unreachableAfter: 1 });
  const ready = await fetch(`${world.url}/health/ready`);
  assert.equal(ready.status, 200);
  assert.deepEqual(await ready.json(), { status: "ok", pods: 1, routable_pods: 1 });
  await world.cluster.pods[0].kill();
  await world.router.poller.pollAll();
  const notReady = await fetch(`${world.url}/health/ready`);
  assert.equal(notReady.status, 503);
  assert.equal((await notReady.json()).routable_pods, 0);
});

Deno.test("/ answers as Ollama does, to GET and HEAD, without asking a pod", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const get = await fetch(`${world.url}/`);
  assert.equal(get.status, 200);
  assert.equal(await get.text(), "Ollama is running");
  const head = await fetch(`${world.url}/`, { method: "HEAD" });
  assert.equal(head.status, 200);
  await head.body?.cancel();
  assert.equal(world.cluster.pods[0].events.some((e) => e.path === "/"), false);
});
