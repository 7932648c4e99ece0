import assert from "node:assert/strict";
import { effect } from "@preact/signals-core";
import type { ReadonlySignal } from "@preact/signals-core";
import { startKubeWorld, storeReaches } from "../sim/fixture.ts";
import { configMapObject, podObject } from "../sim/kube.ts";
import type { Placement } from "./placement.ts";

function becomes(value: ReadonlySignal<boolean>, wanted: boolean): Promise<void> {
  const reached = Promise.withResolvers<void>();
  const dispose = effect(() => {
    if (value.value === wanted) reached.resolve();
  });
  return reached.promise.finally(dispose);
}

/** The placement of the replica that wins the election. */
function firstToLead(placements: Placement[]): Promise<Placement> {
  return Promise.race(placements.map((p) => becomes(p.leading, true).then(() => p)));
}

Deno.test("of two router replicas exactly one, the Lease holder, loads the ConfigMap's models", async () => {
  await using world = await startKubeWorld({
    pods: [{ models: ["qwen"] }, { models: ["qwen"] }, { models: ["phi"] }],
  }, { routers: 2, publish: true });
  world.kube.apply(
    "configmaps",
    configMapObject("rkllama-model-config", {
      "models.yaml": "models:\n  qwen:\n    replicas: 1\n",
    }),
  );
  const placements = world.routers.map((router) => router.placement!);
  const leader = await firstToLead(placements);
  const follower = placements.find((p) => p !== leader)!;
  await Promise.race(
    world.cluster.pods.map((pod) => pod.waitFor((e) => e.type === "loaded")),
  );
  await leader.applier.idle();
  const loads = world.cluster.pods.flatMap((pod) => pod.events.filter((e) => e.type === "loaded"));
  assert.equal(loads.length, 1);
  assert.equal(follower.applier.recent.length, 0);
  assert.equal(follower.leading.value, false);
  const lease = world.kube.get("leases", "default", "rkllama-router");
  assert.equal(
    (lease?.spec as { holderIdentity: string }).holderIdentity,
    (leader.view().leader as { identity: string }).identity,
  );
});

Deno.test("when the leader stops it releases the Lease and the other replica takes over", async () => {
  await using world = await startKubeWorld({ pods: [{ models: ["qwen"] }] }, { routers: 2 });
  world.kube.apply(
    "configmaps",
    configMapObject("rkllama-model-config", {
      "models.yaml": "models: {}\n",
    }),
  );
  const placements = world.routers.map((router) => router.placement!);
  const leader = await firstToLead(placements);
  const other = world.routers[placements.indexOf(leader) === 0 ? 1 : 0];
  await world.routers[placements.indexOf(leader)].shutdown();
  await becomes(other.placement!.leading, true);
  const lease = world.kube.get("leases", "default", "rkllama-router");
  assert.equal(
    (lease?.spec as { holderIdentity: string }).holderIdentity,
    (other.placement!.view().leader as { identity: string }).identity,
  );
});

Deno.test("an invalid ConfigMap is refused with a Warning Event and the last good config stays", async () => {
  await using world = await startKubeWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const [router] = world.routers;
  world.kube.apply(
    "configmaps",
    configMapObject("rkllama-model-config", {
      "models.yaml": "models:\n  qwen:\n    replicas: 1\n",
    }),
  );
  await world.kube.waitForRequest((r) => r.path.includes("/leases"));
  const since = world.kube.requests.length;
  world.kube.apply(
    "configmaps",
    configMapObject("rkllama-model-config", {
      "models.yaml": "models:\n  qwen:\n    replica: 1\n",
    }),
  );
  await world.kube.waitForRequest((r) => r.method === "POST" && r.path.endsWith("/events"), {
    since,
  });
  const [event] = world.kube.list("events");
  assert.equal(event.reason, "InvalidModelsConfig");
  assert.equal(event.type, "Warning");
  assert.match(String(event.message), /line 3: unknown key 'replica'/);
  assert.equal((event.involvedObject as { name: string }).name, "rkllama-model-config");
  const plan = await (await fetch(`${router.url}/router/plan`)).json();
  assert.equal(plan.config.valid, false);
  assert.deepEqual(plan.config.models.map((m: { name: string }) => m.name), ["qwen"]);
});

Deno.test("replicas hand the first requests for a model not loaded to the leader, so a pod loads it once", async () => {
  await using world = await startKubeWorld(
    { pods: [{ models: ["qwen"], loadDelayMs: 200 }] },
    { routers: 2 },
  );
  world.kube.apply(
    "configmaps",
    configMapObject("rkllama-model-config", {
      "models.yaml": "models: {}\n",
    }),
  );
  const placements = world.routers.map((router) => router.placement!);
  const leader = await firstToLead(placements);
  const follower = placements.find((p) => p !== leader)!;
  // The follower learns the leader's URL from the Lease on its next election round.
  await world.kube.waitForRequest((r) => r.method === "GET" && r.path.includes("/leases/"), {
    since: world.kube.requests.length,
  });
  await world.kube.waitForRequest((r) => r.method === "GET" && r.path.includes("/leases/"), {
    since: world.kube.requests.length,
  });
  assert.ok(follower.leaderUrl());
  const [pod] = world.cluster.pods;
  const responses = await Promise.all(
    world.routers.flatMap((router) =>
      Array.from({ length: 3 }, () =>
        fetch(`${router.url}/api/generate`, {
          method: "POST",
          body: JSON.stringify({ model: "qwen", prompt: "hi", stream: false }),
        }))
    ),
  );
  for (const response of responses) {
    assert.equal(response.status, 200);
    assert.equal((await response.json()).response, "Hello world!");
  }
  assert.equal(pod.orphanedWorkers, 0);
  assert.equal(pod.events.filter((e) => e.type === "loaded").length, 1);
});

Deno.test("a config may pin a node whose RKLlama pod has no IP yet", async () => {
  await using world = await startKubeWorld({ pods: [{ models: ["qwen"] }] });
  world.kube.apply(
    "pods",
    podObject({ name: "rk-new", labels: { app: "rkllama" }, node: "board-x", phase: "Pending" }),
  );
  const [router] = world.routers;
  await storeReaches(router.store, (s) => s.nodeNames.value.has("board-x"));
  world.kube.apply(
    "configmaps",
    configMapObject("rkllama-model-config", {
      "models.yaml": "models:\n  qwen:\n    nodes: [board-x]\n",
    }),
  );
  const { statusSignal } = router.placement!.reconciler;
  const read = Promise.withResolvers<void>();
  const dispose = effect(() => {
    if (statusSignal.value.config !== undefined) read.resolve();
  });
  await read.promise;
  dispose();
  const plan = await (await fetch(`${router.url}/router/plan`)).json();
  assert.equal(plan.config.valid, true);
  assert.deepEqual(plan.config.models[0].nodes, ["board-x"]);
});
