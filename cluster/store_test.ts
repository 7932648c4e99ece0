import assert from "node:assert/strict";
import { effect } from "@preact/signals-core";
import { generationOf, isRoutable, podState, type PollResult, Store } from "./store.ts";

const models = (...names: string[]) => new Map(names.map((n) => [n, { name: n, model: n }]));

function okPoll(pod: string, onDisk: string[], loaded: string[]): PollResult {
  return {
    pod,
    ok: true,
    at: 1,
    onDisk: models(...onDisk),
    loaded: models(...loaded),
    otherModels: new Set(),
  };
}

function storeWith(...names: string[]): Store {
  const store = new Store(3);
  for (const name of names) {
    store.upsertPod({ name, node: name, url: `http://${name}:8080`, ready: true });
  }
  return store;
}

Deno.test("a pod takes requests only after its first good poll", () => {
  const store = storeWith("a");
  assert.equal(isRoutable(store.pods.value.get("a")!, 0), false);
  store.applyPolls([okPoll("a", ["qwen"], [])]);
  assert.equal(isRoutable(store.pods.value.get("a")!, 0), true);
});

Deno.test("the model indexes follow poll rounds, in pod-name order", () => {
  const store = storeWith("b", "a");
  store.applyPolls([okPoll("b", ["qwen", "phi"], ["qwen"]), okPoll("a", ["qwen"], ["qwen"])]);
  assert.deepEqual(store.loadedOn.value.get("qwen")!.map((p) => p.name), ["a", "b"]);
  assert.deepEqual(store.onDiskOn.value.get("phi")!.map((p) => p.name), ["b"]);
  assert.deepEqual([...store.modelNames.value].sort(), ["phi", "qwen"]);
});

Deno.test("a poll round is one update for the reactive graph", () => {
  const store = storeWith("a", "b", "c");
  let runs = 0;
  const dispose = effect(() => {
    store.loadedOn.value;
    runs++;
  });
  store.applyPolls([okPoll("a", [], ["x"]), okPoll("b", [], ["x"]), okPoll("c", [], ["y"])]);
  dispose();
  assert.equal(runs, 2);
});

Deno.test("a pod keeps its models through failed polls, then leaves routing", () => {
  const store = storeWith("a");
  store.applyPolls([okPoll("a", ["qwen"], ["qwen"])]);
  const fail: PollResult = { pod: "a", ok: false, at: 2, error: "refused" };
  store.applyPolls([fail]);
  store.applyPolls([fail]);
  let pod = store.pods.value.get("a")!;
  assert.equal(pod.reachable, true);
  assert.deepEqual([...pod.loaded.keys()], ["qwen"]);
  store.applyPolls([fail]);
  pod = store.pods.value.get("a")!;
  assert.equal(pod.reachable, false);
  assert.equal(pod.lastPollError, "refused");
  store.applyPolls([okPoll("a", ["qwen"], [])]);
  assert.equal(store.pods.value.get("a")!.reachable, true);
});

Deno.test("a pod that never answers is pending, then unreachable after --unreachable-after failed polls", () => {
  const store = storeWith("a");
  const state = () => podState(store.pods.value.get("a")!, 0);
  assert.equal(state(), "pending");
  const fail: PollResult = { pod: "a", ok: false, at: 2, error: "refused" };
  store.applyPolls([fail]);
  store.applyPolls([fail]);
  assert.equal(state(), "pending");
  store.applyPolls([fail]);
  assert.equal(state(), "unreachable");
  assert.equal(isRoutable(store.pods.value.get("a")!, 0), false);
  store.applyPolls([okPoll("a", ["qwen"], [])]);
  assert.equal(state(), "routable");
  store.applyPolls([fail]);
  assert.equal(state(), "routable");
});

Deno.test("a finished cold load counts as loaded before the next poll", () => {
  const store = storeWith("a");
  store.applyPolls([okPoll("a", ["qwen"], [])]);
  store.markLoading("a", "qwen", 5);
  assert.equal(store.pods.value.get("a")!.loading.get("qwen"), 5);
  store.finishLoading("a", "qwen", true);
  const pod = store.pods.value.get("a")!;
  assert.equal(pod.loading.size, 0);
  assert.deepEqual(store.loadedOn.value.get("qwen")!.map((p) => p.name), ["a"]);
});

Deno.test("a failed cold load leaves the model unloaded", () => {
  const store = storeWith("a");
  store.applyPolls([okPoll("a", ["qwen"], [])]);
  store.markLoading("a", "qwen", 5);
  store.finishLoading("a", "qwen", false);
  assert.equal(store.loadedOn.value.get("qwen"), undefined);
});

Deno.test("request counters survive updates of the pod's record", () => {
  const store = storeWith("a");
  store.pods.value.get("a")!.runtime.inflight = 2;
  store.applyPolls([okPoll("a", ["qwen"], [])]);
  store.upsertPod({ name: "a", node: "a", url: "http://a:8080", ready: false });
  assert.equal(store.pods.value.get("a")!.runtime.inflight, 2);
});

Deno.test("an ejected pod comes back when its time is up and a poll has seen it answer", () => {
  const store = storeWith("a");
  store.applyPolls([okPoll("a", [], [])]);
  store.eject("a", 100, "refused");
  assert.equal(isRoutable(store.pods.value.get("a")!, 99), false);
  assert.equal(isRoutable(store.pods.value.get("a")!, 100), false);
  store.applyPolls([{ pod: "a", ok: false, at: Date.now(), error: "refused" }]);
  assert.equal(isRoutable(store.pods.value.get("a")!, 100), false);
  store.applyPolls([{ ...okPoll("a", [], []), at: Date.now() }]);
  assert.equal(isRoutable(store.pods.value.get("a")!, 99), false);
  assert.equal(isRoutable(store.pods.value.get("a")!, 100), true);
});

Deno.test("nodeNames holds the nodes of routable pods and of pods discovery cannot route to yet", () => {
  const store = storeWith("a");
  store.setPendingNodes(new Set(["board-b"]));
  assert.deepEqual([...store.nodeNames.value].sort(), ["a", "board-b"]);
});

Deno.test("ejections in a row double in length, up to a cap, and an answer resets them", () => {
  const store = storeWith("a");
  const lengths = [];
  for (let i = 0; i < 7; i++) {
    store.ejectWithBackoff("a", 1000, "timeout", 0);
    lengths.push(store.pods.value.get("a")!.runtime.ejectedUntil);
  }
  assert.deepEqual(lengths, [1000, 2000, 4000, 8000, 16000, 16000, 16000]);
  store.answered("a");
  store.ejectWithBackoff("a", 1000, "timeout", 0);
  assert.equal(store.pods.value.get("a")!.runtime.ejectedUntil, 1000);
});

Deno.test("generationOf() tells the Flask generation (0.0.70 on) from older servers", () => {
  assert.equal(generationOf("0.0.54"), "fastapi");
  assert.equal(generationOf("0.0.69"), "fastapi");
  assert.equal(generationOf("0.0.70"), "flask");
  assert.equal(generationOf("0.0.74"), "flask");
  assert.equal(generationOf("0.1.0"), "flask");
  assert.equal(generationOf("1.2.3-4"), "flask");
  assert.equal(generationOf(""), "unknown");
  assert.equal(generationOf("dev"), "unknown");
});

Deno.test("a poll that gets no version keeps the version the pod told before", () => {
  const store = new Store();
  store.upsertPod({ name: "a", node: "n", url: "http://a", ready: true });
  store.applyPolls([{ ...okPoll("a", ["qwen"], []), version: "0.0.74" } as PollResult]);
  store.applyPolls([okPoll("a", ["qwen"], [])]);
  const [pod] = store.podList.value;
  assert.equal(pod.version, "0.0.74");
  assert.equal(pod.generation, "flask");
});
