import assert from "node:assert/strict";
import { type Choice, pick, type PickInput } from "./pick.ts";
import type { PodRecord } from "../cluster/store.ts";
import { NOW, podRecord as pod } from "../sim/records.ts";

function choose(
  model: string | undefined,
  pods: PodRecord[],
  extra: Partial<PickInput> = {},
): Choice {
  return pick({
    model,
    pods,
    loadedOn: model ? pods.filter((p) => p.loaded.has(model)) : [],
    onDiskOn: model ? pods.filter((p) => p.onDisk.has(model)) : [],
    now: NOW,
    exclude: new Set(),
    turn: 0,
    staleAfterMs: 60_000,
    ...extra,
  });
}

function chosen(choice: Choice): string {
  return "pod" in choice ? `${choice.kind}:${choice.pod.name}` : choice.kind;
}

Deno.test("pick() prefers the pod with fewer requests in flight", () => {
  const pods = [
    pod("a", { loaded: ["qwen"] }, { inflight: 2 }),
    pod("b", { loaded: ["qwen"] }, { inflight: 0 }),
    pod("c", { loaded: ["qwen"] }, { inflight: 1 }),
  ];
  assert.equal(chosen(choose("qwen", pods)), "loaded:b");
});

Deno.test("pick() takes turns among equally busy pods", () => {
  const pods = [pod("a", { loaded: ["qwen"] }), pod("b", { loaded: ["qwen"] })];
  const names = [0, 1, 2, 3].map((turn) => chosen(choose("qwen", pods, { turn })));
  assert.deepEqual(names, ["loaded:a", "loaded:b", "loaded:a", "loaded:b"]);
});

Deno.test("pick() prefers a loaded copy over a busy-free pod that would have to load", () => {
  const pods = [pod("a", { loaded: ["qwen"] }, { inflight: 3 }), pod("b", { onDisk: ["qwen"] })];
  assert.equal(chosen(choose("qwen", pods)), "loaded:a");
});

Deno.test("pick() sends a cold model to the on-disk pod with fewest loaded models, then fewest in flight", () => {
  const pods = [
    pod("a", { onDisk: ["qwen"], loaded: ["phi", "llama"] }),
    pod("b", { onDisk: ["qwen"], loaded: ["phi"] }, { inflight: 1 }),
    pod("c", { onDisk: ["qwen"], loaded: ["llama"] }, { inflight: 0 }),
  ];
  assert.equal(chosen(choose("qwen", pods)), "cold:c");
});

Deno.test("pick() makes later requests follow the pod that is loading the model", () => {
  const pods = [pod("a", { onDisk: ["qwen"] }), pod("b", { onDisk: ["qwen"], loading: ["qwen"] })];
  assert.equal(chosen(choose("qwen", pods)), "follow:b");
});

Deno.test("pick() skips pods that are unready, unreachable, ejected or already tried", () => {
  const pods = [
    pod("a", { loaded: ["qwen"] }, { ready: false }),
    pod("b", { loaded: ["qwen"] }, { reachable: false }),
    pod("c", { loaded: ["qwen"] }, { ejectedUntil: NOW + 1 }),
    pod("d", { loaded: ["qwen"] }),
    pod("e", { loaded: ["qwen"] }, { inflight: 5 }),
  ];
  assert.equal(chosen(choose("qwen", pods)), "loaded:d");
  assert.equal(chosen(choose("qwen", pods, { exclude: new Set(["d"]) })), "loaded:e");
});

Deno.test("pick() lets an ejection end when its time is up", () => {
  const pods = [pod("a", { loaded: ["qwen"] }, { ejectedUntil: NOW })];
  assert.equal(chosen(choose("qwen", pods)), "loaded:a");
});

Deno.test("pick() says not_found only when no pod in any state has the model", () => {
  const pods = [pod("a", { loaded: ["phi"] })];
  assert.equal(chosen(choose("qwen", pods)), "not_found");
});

Deno.test("pick() answers unavailable when the model's pods cannot take requests", () => {
  const pods = [
    pod("a", { loaded: ["qwen"] }, { reachable: false }),
    pod("b", { loaded: ["phi"] }),
  ];
  const choice = choose("qwen", pods);
  assert.equal(choice.kind, "unavailable");
  assert.match(
    (choice as { reason: string }).reason,
    /only on pods that cannot take requests now: a/,
  );
});

Deno.test("pick() answers unavailable when there are no pods or none is ready", () => {
  assert.equal(choose("qwen", []).kind, "unavailable");
  assert.equal(choose(undefined, []).kind, "unavailable");
  assert.equal(choose(undefined, [pod("a", {}, { ready: false })]).kind, "unavailable");
});

Deno.test("pick() sends requests that name no model to the least busy routable pod", () => {
  const pods = [pod("a", {}, { inflight: 1 }), pod("b"), pod("c", {}, { reachable: false })];
  assert.equal(chosen(choose(undefined, pods)), "any:b");
});

Deno.test("pick() sends a request for a copy idle past the pod's expiry as cold, so it goes alone", () => {
  const pods = [
    pod("a", { loaded: ["qwen"] }, { lastSent: NOW - 60_000 }),
    pod("b", { onDisk: ["qwen"] }),
  ];
  assert.equal(chosen(choose("qwen", pods)), "cold:a");
});

Deno.test("pick() prefers an idle copy that may have expired over a busy one, and a recent one among equals", () => {
  const stale = pod("a", { loaded: ["qwen"] }, { lastSent: NOW - 60_000 });
  const busy = pod("b", { loaded: ["qwen"] }, { lastSent: NOW - 1, inflight: 3 });
  assert.equal(chosen(choose("qwen", [stale, busy])), "cold:a");
  const recent = pod("c", { loaded: ["qwen"] }, { lastSent: NOW - 1 });
  assert.equal(chosen(choose("qwen", [stale, recent])), "loaded:c");
  assert.equal(chosen(choose("qwen", [stale, recent], { turn: 1 })), "loaded:c");
});

Deno.test("pick() makes requests follow a possibly expired copy while one request reloads it", () => {
  const pods = [pod("a", { loaded: ["qwen"], loading: ["qwen"] }, { lastSent: NOW - 60_000 })];
  assert.equal(chosen(choose("qwen", pods)), "follow:a");
});
