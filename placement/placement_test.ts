import assert from "node:assert/strict";
import { startWorld, storeReaches } from "../sim/fixture.ts";

async function modelsFile(text: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "rkllama-router-test-" });
  const path = `${dir}/models.yaml`;
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("a models file's replicas are loaded on the pods that have the model on disk", async () => {
  const path = await modelsFile("models:\n  qwen:\n    replicas: 2\n");
  await using world = await startWorld({
    pods: [{ models: ["qwen"] }, { models: ["qwen"], flavor: "fl" }, { models: ["phi"] }],
  }, { modelsFile: path, syncIntervalMs: 3_600_000 });
  const [a, b, c] = world.cluster.pods;
  await storeReaches(
    world.router.store,
    (store) => store.loadedOn.value.get("qwen")?.length === 2,
  );
  assert.deepEqual(a.loadedModels(), ["qwen"]);
  assert.deepEqual(b.loadedModels(), ["qwen"]);
  assert.deepEqual(c.loadedModels(), []);
  // The Flask pod has no /api/load: the router fell back to /load_model.
  assert.ok(b.events.some((e) => e.type === "request" && e.path === "/load_model"));
  const plan = await (await fetch(`${world.url}/router/plan`)).json();
  assert.equal(plan.config.valid, true);
  assert.equal(plan.leader.leader, true);
  assert.deepEqual(
    plan.recent.map((r: { outcome: string; action: { pod: string } }) =>
      `${r.outcome} ${r.action.pod}`
    )
      .sort(),
    ["done rk-0", "done rk-1"],
  );
});

Deno.test("lowering replicas unloads the surplus copy", async () => {
  const path = await modelsFile("models:\n  qwen:\n    replicas: 2\n");
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"] }, { models: ["qwen"], loaded: ["qwen"] }],
  }, { modelsFile: path, syncIntervalMs: 3_600_000 });
  await Deno.writeTextFile(path, "models:\n  qwen:\n    replicas: 1\n");
  await world.router.placement!.reread();
  const unloaded = await Promise.race(
    world.cluster.pods.map((pod) => pod.waitFor((e) => e.type === "unloaded").then(() => pod)),
  );
  const kept = world.cluster.pods.find((pod) => pod !== unloaded)!;
  assert.deepEqual(kept.loadedModels(), ["qwen"]);
});

Deno.test("an invalid models file is reported and the last good one stays in force", async () => {
  const path = await modelsFile("models:\n  qwen:\n    replicas: 1\n");
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"] }],
  }, { modelsFile: path, syncIntervalMs: 3_600_000 });
  await Deno.writeTextFile(path, "models:\n  qwen:\n    replicas: -1\n");
  await world.router.placement!.reread();
  const status = await (await fetch(`${world.url}/router/status`)).json();
  assert.equal(status.placement.config.valid, false);
  assert.match(status.placement.config.error, /line 3/);
  const plan = await (await fetch(`${world.url}/router/plan`)).json();
  assert.deepEqual(plan.config.models.map((m: { replicas: number }) => m.replicas), [1]);
  assert.deepEqual(plan.plan.actions, []);
  assert.deepEqual(world.cluster.pods[0].loadedModels(), ["qwen"]);
});

Deno.test("/router/plan says there is nothing to place without a config", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const response = await fetch(`${world.url}/router/plan`);
  assert.equal(response.status, 404);
  assert.match((await response.json()).error, /--models-file/);
});
