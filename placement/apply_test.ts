import assert from "node:assert/strict";
import { startSimCluster } from "../sim/cluster.ts";
import { parseBackends } from "../config/flags.ts";
import { addStaticBackends } from "../cluster/static.ts";
import { Poller } from "../cluster/poller.ts";
import { isRoutable, Store } from "../cluster/store.ts";
import { Applier, isRefusal } from "./apply.ts";
import type { Action } from "./plan.ts";

function action(kind: "load" | "unload", pod: string, model: string): Action {
  return { kind, pod, node: pod, model, reason: "test", priority: 0 };
}

async function setup(backends: string) {
  const store = new Store(1);
  addStaticBackends(store, parseBackends(backends));
  const poller = new Poller(store, { intervalMs: 3_600_000, timeoutMs: 200 });
  await poller.pollAll();
  const applier = new Applier({
    store,
    repoll: (pod) => poller.repoll(pod),
    loadTimeoutMs: 10_000,
    retryBaseMs: 3_600_000,
  });
  return { store, poller, applier };
}

Deno.test("a load takes the pod out of routing until it is done, without counting its frozen polls", async () => {
  await using cluster = await startSimCluster({ pods: [{ models: ["qwen"], loadDelayMs: 400 }] });
  const [pod] = cluster.pods;
  const { store, poller, applier } = await setup(cluster.backends);
  assert.deepEqual(applier.submit([action("load", "rk-0", "qwen")]).length, 1);
  await pod.waitFor((e) => e.type === "request" && e.path === "/api/load");
  let record = store.pods.value.get("rk-0")!;
  assert.equal(record.busy, "loading qwen");
  assert.equal(isRoutable(record, Date.now()), false);
  // The FastAPI pod is frozen: this poll times out, and must not count against it.
  await poller.pollAll();
  record = store.pods.value.get("rk-0")!;
  assert.equal(record.reachable, true);
  assert.match(record.lastPollError, /while loading qwen/);
  await applier.idle();
  assert.deepEqual(pod.loadedModels(), ["qwen"]);
  assert.equal(applier.recent[0].outcome, "done");
  assert.equal(isRoutable(store.pods.value.get("rk-0")!, Date.now()), true);
  await applier.stop();
});

Deno.test("one action per pod at a time; the rest wait for a later round", async () => {
  await using cluster = await startSimCluster({ pods: [{ models: ["qwen", "phi"] }] });
  const { store, applier } = await setup(cluster.backends);
  const started = applier.submit([action("load", "rk-0", "qwen"), action("load", "rk-0", "phi")]);
  assert.deepEqual(started.map((a) => a.model), ["qwen"]);
  assert.deepEqual(applier.running.map((a) => a.model), ["qwen"]);
  await applier.idle();
  assert.equal(store.pods.value.get("rk-0")!.loaded.has("qwen"), true);
  await applier.stop();
});

Deno.test("a failed load is reported and not retried before its delay", async () => {
  await using cluster = await startSimCluster({ pods: [{ models: ["qwen"] }] });
  const [pod] = cluster.pods;
  const { applier } = await setup(cluster.backends);
  applier.submit([action("load", "rk-0", "llama")]);
  await applier.idle();
  assert.equal(applier.recent[0].outcome, "failed");
  assert.match(applier.recent[0].message, /llama/);
  assert.deepEqual(applier.submit([action("load", "rk-0", "llama")]), []);
  assert.equal(pod.events.filter((e) => e.path === "/api/load").length, 1);
  await applier.stop();
});

Deno.test("an unload on a Flask pod falls back to /unload_model", async () => {
  await using cluster = await startSimCluster({
    pods: [{ models: ["qwen"], loaded: ["qwen"], flavor: "fl" }],
  });
  const [pod] = cluster.pods;
  const { store, applier } = await setup(cluster.backends);
  applier.submit([action("unload", "rk-0", "qwen")]);
  await applier.idle();
  assert.equal(store.loadedOn.value.get("qwen"), undefined);
  assert.deepEqual(pod.loadedModels(), []);
  assert.ok(pod.events.some((e) => e.path === "/unload_model"));
  await applier.stop();
});

Deno.test("isRefusal() recognises RKLlama's 'unloading is disabled' answer", () => {
  assert.equal(
    isRefusal(
      "Model unloading is disabled to prevent NPU memory leaks. Restart pod to change models.",
    ),
    true,
  );
  assert.equal(isRefusal("Model directory 'x' not found."), false);
});
