import assert from "node:assert/strict";
import { effect, type ReadonlySignal, signal } from "@preact/signals-core";
import type { DemandSource, ModelDemand } from "../cluster/demand.ts";
import { chatStatus, startWorld, storeReaches } from "../sim/fixture.ts";

/**
 * The queue a scheduler would report for one model on one copy with one slot, from
 * the test's own requests: one served, the rest waiting; answers timed as they end.
 */
class OneQueue implements DemandSource {
  readonly changes = signal(0);
  #inFlight = 0;
  #answers: number[] = [];

  constructor(readonly model: string) {}

  demand(): readonly ModelDemand[] {
    if (this.#inFlight === 0) return [];
    const answerMs = this.#answers.length === 0
      ? undefined
      : this.#answers.reduce((sum, ms) => sum + ms, 0) / this.#answers.length;
    return [{
      model: this.model,
      waiting: this.#inFlight - 1,
      serving: 1,
      oldestWaitMs: 0,
      answerMs,
      copies: 1,
    }];
  }

  /** Sends one chat through the router and keeps the queue's numbers. */
  async send(url: string): Promise<number> {
    const started = performance.now();
    // Only an answer that waited behind nobody times the slot alone.
    const alone = this.#inFlight === 0;
    this.#inFlight++;
    this.changes.value++;
    try {
      return await chatStatus(url, this.model);
    } finally {
      this.#inFlight--;
      if (alone) this.#answers.push(performance.now() - started);
      this.changes.value++;
    }
  }
}

/** Resolves once `condition` holds of the signal's value (checked on every change). */
function reaches<T>(
  source: ReadonlySignal<T>,
  condition: (value: T) => boolean,
  signal: AbortSignal,
): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  const dispose = effect(() => {
    if (condition(source.value)) resolve();
  });
  return promise.finally(dispose);
}

async function routerStatus(url: string): Promise<{ on_demand: { model: string; pod: string }[] }> {
  const response = await fetch(`${url}/router/status`);
  assert.equal(response.status, 200);
  return await response.json();
}

async function metric(url: string, sample: string): Promise<number | undefined> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((line) => line.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.slice(sample.length + 1));
}

/**
 * A steady trace, then a burst for one model through a router in front of two idle
 * boards with the model on disk, with or without models.yaml (`replicas: 1`,
 * `maxReplicas: 2`).
 */
async function burstThenIdle(firstAddress: number, modelsYaml?: string): Promise<void> {
  const queue = new OneQueue("qwen");
  const dir = await Deno.makeTempDir({ prefix: "rkllama-router-test-" });
  if (modelsYaml !== undefined) await Deno.writeTextFile(`${dir}/models.yaml`, modelsYaml);
  const board = { models: ["qwen"], loadDelayMs: 150, tokenDelayMs: 40, tokens: ["a", "b", "c"] };
  await using world = await startWorld(
    { firstAddress, pods: [board, board] },
    {
      onDemandIdleMs: 300,
      onDemandResidencyMs: 300,
      ...(modelsYaml === undefined ? {} : { modelsFile: `${dir}/models.yaml` }),
    },
    { demand: queue },
  );
  const { router } = world;
  const limit = AbortSignal.timeout(20_000);
  if (modelsYaml !== undefined) {
    await storeReaches(router.store, (store) => store.loadedOn.value.get("qwen")?.length === 1);
  }

  // A steady trace one copy serves: one request at a time (without models.yaml the
  // first is a cold start).
  for (let i = 0; i < 4; i++) assert.equal(await queue.send(world.url), 200);
  const first = world.cluster.pods.find((pod) => pod.loadedModels().includes("qwen"))!;
  const idle = world.cluster.pods.find((pod) => pod !== first)!;
  assert.deepEqual(router.onDemand.controller.run(), []);
  assert.equal(idle.events.filter((event) => event.type === "loaded").length, 0);
  assert.ok(router.onDemand.controller.loadMs.has("qwen"), "the first load was timed");

  // A burst: every request goes to the one copy and queues there.
  const burst = Array.from({ length: 8 }, () => queue.send(world.url));
  const loaded = await idle.waitFor((event) => event.type === "loaded" && event.model === "qwen", {
    signal: limit,
  });
  const listed = await routerStatus(world.url);
  assert.deepEqual(
    listed.on_demand.map(({ model, pod }) => ({ model, pod })),
    [{ model: "qwen", pod: idle.name }],
  );
  assert.equal(await metric(world.url, 'rkllama_router_on_demand_copies{model="qwen"}'), 1);
  // The reconciler keeps the copy: within maxReplicas, it is no surplus of replicas.
  await storeReaches(router.store, (store) => store.loadedOn.value.get("qwen")?.length === 2);
  assert.deepEqual(router.placement?.reconciler.reconcile().actions ?? [], []);
  assert.deepEqual(await Promise.all(burst), Array(8).fill(200));

  // Idle past --on-demand-idle and --on-demand-residency: back to one copy.
  const unloaded = await idle.waitFor(
    (event) => event.type === "unloaded" && event.model === "qwen",
    { signal: limit },
  );
  assert.ok(unloaded.at - loaded.at >= 300, "not unloaded within the minimum residency");
  await reaches(router.onDemand.controller.copiesSignal, (copies) => copies.length === 0, limit);
  assert.deepEqual(first.loadedModels(), ["qwen"]);
  assert.deepEqual(idle.loadedModels(), []);
  assert.equal(
    await metric(world.url, 'rkllama_router_on_demand_actions_total{model="qwen",action="load"}'),
    1,
  );
  assert.equal(
    await metric(world.url, 'rkllama_router_on_demand_actions_total{model="qwen",action="unload"}'),
    1,
  );
  assert.equal(await metric(world.url, 'rkllama_router_on_demand_copies{model="qwen"}'), undefined);
  assert.deepEqual((await routerStatus(world.url)).on_demand, []);
  await Deno.remove(dir, { recursive: true });
}

Deno.test("without models.yaml, a burst queued on one copy makes the router load a second copy on the idle board, unloaded again once idle", async () => {
  await burstThenIdle(140);
});

Deno.test("with models.yaml's replicas: 1 and maxReplicas: 2, the copy loaded on demand stays until idle, then replicas hold", async () => {
  await burstThenIdle(142, "models:\n  qwen:\n    replicas: 1\n    maxReplicas: 2\n");
});

Deno.test("a board holding --max-loaded models makes room for a copy on demand by unloading its idle copy first", async () => {
  const queue = new OneQueue("qwen");
  const board = { loadDelayMs: 150, tokenDelayMs: 40, tokens: ["a", "b", "c"], maxLoaded: 1 };
  await using world = await startWorld(
    {
      firstAddress: 144,
      pods: [
        { ...board, models: ["qwen"] },
        { ...board, models: ["qwen", "phi"], loaded: ["phi"] },
      ],
    },
    { maxLoaded: 1, onDemandIdleMs: 60_000, onDemandResidencyMs: 60_000 },
    { demand: queue },
  );
  const [first, full] = world.cluster.pods;
  const limit = AbortSignal.timeout(20_000);
  // One answer and one load timed first: a cold start on the board holding fewer models.
  assert.equal(await queue.send(world.url), 200);
  assert.deepEqual(first.loadedModels(), ["qwen"]);

  const burst = Array.from({ length: 10 }, () => queue.send(world.url));
  const loaded = await full.waitFor((event) => event.type === "loaded" && event.model === "qwen", {
    signal: limit,
  });
  const unloaded = full.events.find((event) => event.type === "unloaded" && event.model === "phi");
  assert.ok(unloaded && unloaded.at <= loaded.at, "phi was unloaded before qwen was loaded");
  assert.deepEqual(full.loadedModels(), ["qwen"]);
  assert.deepEqual(first.loadedModels(), ["qwen"]);
  assert.deepEqual(await Promise.all(burst), Array(10).fill(200));
});
