/**
 * @module
 * How the routing state scales: 500 pods with 20 models each (every model loaded
 * on 50 pods), the size of a large cluster. `pick`, or the scheduler for a request
 * that takes a generation slot, runs on every request; a poll
 * round is written to the store every `--poll-interval`; the poller must reach
 * every pod within a round. `deno task bench` runs this file with `--json`.
 */

import { pick } from "../proxy/pick.ts";
import { Scheduler } from "../proxy/scheduler.ts";
import { ColdGate } from "../proxy/cold_gate.ts";
import { type PodModelEntry, type PollResult, Store } from "../cluster/store.ts";
import { Poller } from "../cluster/poller.ts";
import { startBackend } from "./processes.ts";

const PODS = 500;
const MODELS = 20;
/** Models loaded on each pod; each model is then loaded on PODS * LOADED / MODELS pods. */
const LOADED = 2;

const modelNames = Array.from({ length: MODELS }, (_, i) => `m${i}`);
const entry = (name: string): PodModelEntry => ({ name, model: name, size: 1 });

function pollRound(at: number): PollResult[] {
  return Array.from({ length: PODS }, (_, i) => {
    const loaded = new Map<string, PodModelEntry>();
    for (let k = 0; k < LOADED; k++) {
      const name = modelNames[(i + k) % MODELS];
      loaded.set(name, entry(name));
    }
    return {
      pod: `rk-${i}`,
      ok: true,
      at,
      onDisk: new Map(modelNames.map((name) => [name, entry(name)])),
      loaded,
      otherModels: new Set<string>(),
    };
  });
}

const store = new Store();
for (let i = 0; i < PODS; i++) {
  store.upsertPod({
    name: `rk-${i}`,
    node: `node-${i}`,
    url: `http://127.0.0.1:${i}`,
    ready: true,
  });
}
store.applyPolls(pollRound(Date.now()));
// Every copy counts as recently used, so pick compares all of them.
for (const pod of store.pods.peek().values()) {
  for (const model of pod.loaded.keys()) pod.runtime.lastSent.set(model, Date.now());
}
const round = pollRound(Date.now());
let turn = 0;

Deno.bench("pick: a loaded model, 500 pods x 20 models", { group: "scale" }, () => {
  const model = modelNames[turn % MODELS];
  const choice = pick({
    model,
    pods: store.podList.value,
    loadedOn: store.loadedOn.value.get(model) ?? [],
    onDiskOn: store.onDiskOn.value.get(model) ?? [],
    now: Date.now(),
    exclude: new Set(),
    turn: turn++,
    staleAfterMs: 60_000,
  });
  if (choice.kind !== "loaded") throw new Error(`expected a loaded copy, got ${choice.kind}`);
});

const scheduler = new Scheduler({
  store,
  gate: new ColdGate(store),
  slots: 0,
  maxLoaded: 0,
  maxQueue: 256,
  queueTimeoutMs: 60_000,
  staleAfterMs: 60_000,
});
const never = new AbortController().signal;

Deno.bench("scheduler: a free slot taken and given back, 500 pods x 20 models", {
  group: "scale",
}, () => {
  const model = modelNames[turn++ % MODELS];
  const grant = scheduler.acquire(model, new Set(), never);
  if (grant instanceof Promise || grant.kind !== "send" || grant.cold) {
    throw new Error("expected a free loaded copy at once");
  }
  grant.release();
});

Deno.bench("applyPolls: one round of 500 pods x 20 models, indexes rebuilt", {
  group: "scale",
}, () => {
  store.applyPolls(round);
  // The indexes are computed lazily: the first request after a round pays for them.
  if (store.loadedOn.value.size !== MODELS || store.modelNames.value.size !== MODELS) {
    throw new Error("the indexes lost models");
  }
  void store.podList.value;
});

const backend = await startBackend({ ports: PODS, models: MODELS, loaded: LOADED });
const pollStore = new Store();
backend.urls.forEach((url, i) =>
  pollStore.upsertPod({ name: `rk-${i}`, node: `node-${i}`, url, ready: true })
);
const poller = new Poller(pollStore, { intervalMs: 60_000, timeoutMs: 10_000 });

Deno.bench(
  "poller: one round over 500 pods on loopback (4 requests each: tags, ps, models, version)",
  {
    group: "poller",
    n: 5,
    warmup: 1,
  },
  async () => {
    await poller.pollAll();
    const reached = pollStore.podList.value.filter((pod) => pod.reachable).length;
    if (reached !== PODS) throw new Error(`the poller reached ${reached} of ${PODS} pods`);
  },
);
