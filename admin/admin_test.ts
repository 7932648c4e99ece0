import assert from "node:assert/strict";
import { startWorld } from "../sim/fixture.ts";

Deno.test("/router/status counts pods and models and says how each pod is doing", async () => {
  await using world = await startWorld(
    {
      pods: [{ models: ["qwen", "phi"], loaded: ["qwen"] }, { models: ["qwen"], loaded: ["qwen"] }],
    },
    { unreachableAfter: 1 },
  );
  await world.cluster.pods[1].kill();
  await world.router.poller.pollAll();
  const status = await (await fetch(`${world.url}/router/status`)).json();
  assert.equal(status.status, "ok");
  assert.equal(status.mode, "static");
  assert.equal(status.pod_count, 2);
  assert.equal(status.routable_pod_count, 1);
  assert.equal(status.loaded_count, 2);
  assert.deepEqual(status.unique_models, ["phi", "qwen"]);
  assert.deepEqual(
    status.pods.map((p: { name: string; state: string; ip: string }) =>
      `${p.name} ${p.state} ${p.ip}`
    ),
    ["rk-0 routable 127.0.0.11", "rk-1 unreachable 127.0.0.12"],
  );
});

Deno.test("/router/pods and /router/models show what is where", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen", "phi"], loaded: ["qwen"] }, { flavor: "fl", models: ["qwen"] }],
  });
  const pods = (await (await fetch(`${world.url}/router/pods`)).json()).pods;
  assert.deepEqual(
    pods.map((p: { version: string; generation: string }) => [p.version, p.generation]),
    [["0.0.54", "fastapi"], ["0.0.74", "flask"]],
  );
  assert.deepEqual(pods[0].models, ["qwen"]);
  assert.deepEqual(pods[0].on_disk, ["phi", "qwen"]);
  assert.equal(pods[0].model_count, 1);
  assert.equal(pods[0].inflight, 0);
  assert.equal(pods[1].state, "routable");
  const models = (await (await fetch(`${world.url}/router/models`)).json()).models;
  assert.deepEqual(models, [
    { name: "phi", pods: [], nodes: [], replicas: 0, on_disk_pods: ["rk-0"], loading_pods: [] },
    {
      name: "qwen",
      pods: ["rk-0"],
      nodes: ["rk-0"],
      replicas: 1,
      on_disk_pods: ["rk-0", "rk-1"],
      loading_pods: [],
    },
  ]);
});

Deno.test("POST /router/force_unload_all empties every pod and reports Flask pods as unsupported", async () => {
  await using world = await startWorld({
    pods: [
      { models: ["qwen"], loaded: ["qwen"] },
      { models: ["qwen", "phi"], loaded: ["qwen", "phi"] },
      { models: ["qwen"], loaded: ["qwen"], flavor: "fl" },
    ],
  });
  const response = await fetch(`${world.url}/router/force_unload_all`, { method: "POST" });
  assert.equal(response.status, 200);
  const body = await response.json();
  assert.equal(body.message, "Force unload completed on 2/3 pods");
  assert.equal(body.total_pods, 3);
  assert.equal(body.success_count, 2);
  assert.deepEqual(body.results[1].killed_tracked.sort(), ["phi", "qwen"]);
  assert.equal(body.results[2].unsupported, true);
  assert.equal(body.results[2].success, false);
  const ps = await (await fetch(`${world.url}/api/ps`)).json();
  assert.deepEqual(ps.models.map((m: { pod_name: string }) => m.pod_name), ["rk-2"]);
});

Deno.test("operator paths answer for themselves: wrong method 405, unknown path 404", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const wrongMethod = await fetch(`${world.url}/router/force_unload_all`);
  assert.equal(wrongMethod.status, 405);
  assert.match((await wrongMethod.json()).error, /GET is not allowed/);
  const unknown = await fetch(`${world.url}/router/nothing`);
  assert.equal(unknown.status, 404);
  await unknown.body?.cancel();
  assert.equal(world.cluster.pods[0].events.some((e) => e.path?.startsWith("/router")), false);
});
