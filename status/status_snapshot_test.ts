import assert from "node:assert/strict";
import { type PollResult, Store } from "../cluster/store.ts";
import type { PlacementView } from "../placement/placement.ts";
import { statusSnapshot } from "./status_snapshot.ts";

const entries = (...names: string[]) => new Map(names.map((n) => [n, { name: n, model: n }]));

function poll(pod: string, onDisk: string[], loaded: string[]): PollResult {
  return {
    pod,
    ok: true,
    at: 1,
    onDisk: entries(...onDisk),
    loaded: entries(...loaded),
    otherModels: new Set(pod === "c" ? ["whisper"] : []),
  };
}

/** Pods a (qwen loaded), b (phi loading since 1000, ejected), c (unreachable). */
function threePods(): Store {
  const store = new Store(1);
  for (const name of ["a", "b", "c"]) {
    store.upsertPod({ name, node: `node-${name}`, url: `http://${name}:8080`, ready: true });
  }
  store.applyPolls([
    poll("a", ["qwen", "phi"], ["qwen"]),
    poll("b", ["qwen", "phi"], []),
    poll("c", ["phi"], []),
  ]);
  store.applyPolls([{ pod: "c", ok: false, at: 2, error: "connection refused" }]);
  store.markLoading("b", "phi", 1000);
  store.eject("b", 60_000, "pod b did not answer");
  store.pods.peek().get("a")!.runtime.inflight = 2;
  return store;
}

const view: PlacementView = {
  config: {
    source: "file /etc/rkllama-router/models.yaml",
    valid: false,
    error: "models.yaml line 3: 'replicas' of model 'phi' must be a whole number, got -1",
    models: [
      { name: "qwen", replicas: 2, priority: 5, line: 1 },
      { name: "phi", nodes: ["node-b", "node-x"], priority: 0, line: 3 },
    ],
  },
  leader: { identity: "r1", holder: "r1", leader: true, error: "" },
  plan: {
    at: new Date(5000).toISOString(),
    changedAt: new Date(3000).toISOString(),
    actions: [
      { kind: "load", pod: "b", node: "node-b", model: "qwen", reason: "2 replicas", priority: 5 },
      { kind: "load", pod: "a", node: "node-a", model: "phi", reason: "pinned", priority: 0 },
    ],
    models: [
      { name: "qwen", want: 2, loadedOn: ["a"], loadingOn: [], problems: [] },
      {
        name: "phi",
        want: ["node-b", "node-x"],
        loadedOn: [],
        loadingOn: ["b"],
        problems: ["node 'node-x' has no RKLlama pod"],
      },
    ],
    warnings: [],
  },
  running: [{
    kind: "load",
    pod: "a",
    node: "node-a",
    model: "phi",
    reason: "pinned",
    priority: 0,
  }],
  recent: [{
    action: { kind: "unload", pod: "a", node: "node-a", model: "old", reason: "", priority: 0 },
    outcome: "failed",
    message: "pod a answered 500",
    at: new Date(4000).toISOString(),
    durationMs: 12,
  }],
};

Deno.test("statusSnapshot() shows each pod's state, load, and models loaded, loading and on disk", () => {
  const snapshot = statusSnapshot({
    pods: threePods().podList.peek(),
    discovery: { mode: "static", source: "--backends", connected: true, error: "", at: 0 },
    placement: undefined,
    stats: () => ({ requestsPerMinute: 0, p95TtfbMs: null, samples: 0 }),
    adminTokenRequired: false,
    now: 30_000,
  });
  assert.equal(snapshot.status, "ok");
  const [a, b, c] = snapshot.pods;
  assert.deepEqual(
    [a.state, a.inflight, a.loaded, a.onDisk, a.ejectedReason],
    ["routable", 2, ["qwen"], ["phi", "qwen"], null],
  );
  assert.deepEqual(
    [b.state, b.loading, b.ejectedReason],
    ["ejected", [{ model: "phi", since: 1000 }], "pod b did not answer"],
  );
  assert.deepEqual([c.state, c.lastError, c.onDisk], [
    "unreachable",
    "connection refused",
    ["phi", "whisper"],
  ]);
  assert.equal(snapshot.reconciler, null);
  // Without a config every model is listed by name, wanting nothing.
  assert.deepEqual(snapshot.models.map((m) => [m.name, m.want, m.wanted]), [
    ["phi", null, null],
    ["qwen", null, null],
    ["whisper", null, null],
  ]);
});

Deno.test("statusSnapshot() puts configured models first, with wants, copies and rates", () => {
  const snapshot = statusSnapshot({
    pods: threePods().podList.peek(),
    discovery: { mode: "static", source: "--backends", connected: true, error: "", at: 0 },
    placement: view,
    stats: (model) =>
      model === "qwen"
        ? { requestsPerMinute: 12, p95TtfbMs: 339.7, samples: 30 }
        : { requestsPerMinute: 0, p95TtfbMs: null, samples: 0 },
    adminTokenRequired: true,
    now: 30_000,
  });
  const [qwen, phi, whisper] = snapshot.models;
  assert.deepEqual(
    [qwen.name, qwen.want, qwen.wanted, qwen.priority, qwen.requestsPerMinute, qwen.p95TtfbMs],
    ["qwen", "2 replicas", 2, 5, 12, 340],
  );
  assert.deepEqual(qwen.loadedOn, [{ pod: "a", node: "node-a", state: "routable", counts: true }]);
  assert.equal(qwen.copies, 1);
  // Pinned to two nodes, one of them without a pod: two copies wanted all the same.
  assert.deepEqual([phi.want, phi.wanted, phi.loadingOn], [
    "nodes node-b, node-x",
    2,
    [{ pod: "b", since: 1000 }],
  ]);
  assert.deepEqual(phi.problems, ["node 'node-x' has no RKLlama pod"]);
  assert.deepEqual([whisper.name, whisper.want, whisper.onDiskOn], ["whisper", null, ["c"]]);
  assert.equal(snapshot.adminTokenRequired, true);
});

Deno.test("statusSnapshot() shows the config error, and pending actions apart from running ones", () => {
  const snapshot = statusSnapshot({
    pods: threePods().podList.peek(),
    discovery: { mode: "kubernetes", source: "in-cluster", connected: false, error: "x", at: 0 },
    placement: view,
    stats: () => ({ requestsPerMinute: 0, p95TtfbMs: null, samples: 0 }),
    adminTokenRequired: false,
    now: 30_000,
  });
  const reconciler = snapshot.reconciler!;
  assert.equal(reconciler.valid, false);
  assert.match(reconciler.error!, /line 3/);
  // When the plan last changed, not when it was last remade (every poll round).
  assert.deepEqual([reconciler.leader, reconciler.planChangedAt], [true, 3000]);
  assert.deepEqual(reconciler.pending.map((a) => `${a.kind} ${a.model} on ${a.pod}`), [
    "load qwen on b",
  ]);
  assert.deepEqual(reconciler.running.map((a) => `${a.kind} ${a.model} on ${a.pod}`), [
    "load phi on a",
  ]);
  assert.deepEqual(reconciler.recent, [{
    kind: "unload",
    model: "old",
    pod: "a",
    node: "node-a",
    reason: "",
    outcome: "failed",
    message: "pod a answered 500",
    at: 4000,
    durationMs: 12,
  }]);
  assert.deepEqual(snapshot.discovery, {
    mode: "kubernetes",
    source: "in-cluster",
    connected: false,
    error: "x",
  });
});

Deno.test("statusSnapshot() says degraded when no pod can take requests, no_pods with none", () => {
  const input = {
    discovery: { mode: "static" as const, source: "", connected: true, error: "", at: 0 },
    placement: undefined,
    stats: () => ({ requestsPerMinute: 0, p95TtfbMs: null, samples: 0 }),
    adminTokenRequired: false,
    now: 0,
  };
  assert.equal(statusSnapshot({ ...input, pods: [] }).status, "no_pods");
  const store = new Store(1);
  store.upsertPod({ name: "a", node: "n", url: "http://a:1", ready: false });
  assert.equal(statusSnapshot({ ...input, pods: store.podList.peek() }).status, "degraded");
});

Deno.test("statusSnapshot() does not count a copy on a dead pod, and sorts pods by number", () => {
  const store = new Store(1);
  for (const name of ["rk-10", "rk-2", "rk-1"]) {
    store.upsertPod({ name, node: name, url: `http://${name}:8080`, ready: true });
  }
  store.applyPolls([
    poll("rk-10", ["qwen"], ["qwen"]),
    poll("rk-2", ["qwen"], ["qwen"]),
    poll("rk-1", [], []),
  ]);
  store.applyPolls([{ pod: "rk-10", ok: false, at: 2, error: "connection refused" }]);
  const snapshot = statusSnapshot({
    pods: store.podList.peek(),
    discovery: { mode: "static", source: "--backends", connected: true, error: "", at: 0 },
    placement: undefined,
    stats: () => ({ requestsPerMinute: 0, p95TtfbMs: null, samples: 0 }),
    adminTokenRequired: false,
    now: 30_000,
  });
  assert.deepEqual(snapshot.pods.map((pod) => pod.name), ["rk-1", "rk-2", "rk-10"]);
  const [qwen] = snapshot.models;
  assert.equal(qwen.copies, 1);
  assert.deepEqual(qwen.loadedOn.map((copy) => [copy.pod, copy.state, copy.counts]), [
    ["rk-2", "routable", true],
    ["rk-10", "unreachable", false],
  ]);
});
