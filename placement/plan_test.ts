import assert from "node:assert/strict";
import type { ModelPlacement } from "../config/models.ts";
import { type Action, plan, type PlanOptions, type PlanPod } from "./plan.ts";

function pod(
  name: string,
  holds: { loaded?: string[]; loading?: string[]; onDisk?: string[] } = {},
  state: { node?: string; routable?: boolean; inflight?: number } = {},
): PlanPod {
  const loaded = holds.loaded ?? [];
  const loading = holds.loading ?? [];
  return {
    name,
    node: state.node ?? `node-${name}`,
    routable: state.routable ?? true,
    onDisk: new Set([...(holds.onDisk ?? []), ...loaded, ...loading]),
    loaded: new Set(loaded),
    loading: new Set(loading),
    inflight: state.inflight ?? 0,
  };
}

function replicas(name: string, count: number, priority = 0): ModelPlacement {
  return { name, replicas: count, priority, line: 1 };
}

function pinned(name: string, nodes: string[], priority = 0): ModelPlacement {
  return { name, nodes, priority, line: 1 };
}

/** An action as one short line, so a table row reads like the plan. */
const brief = (action: Action) => `${action.kind} ${action.model} on ${action.pod}`;

interface Row {
  /** Completes "plan() ..." as a sentence about the rule. */
  rule: string;
  desired: ModelPlacement[];
  pods: PlanPod[];
  options?: PlanOptions;
  actions: string[];
  warnings?: string[];
}

const ROWS: Row[] = [
  {
    rule: "keeps a model where it is loaded",
    desired: [replicas("qwen", 1)],
    pods: [pod("a", { loaded: ["qwen"] }), pod("b", { onDisk: ["qwen"] })],
    actions: [],
  },
  {
    rule: "fills replicas on the pod holding the fewest models",
    desired: [replicas("qwen", 2)],
    pods: [
      pod("a", { loaded: ["qwen"] }),
      pod("b", { loaded: ["x", "y"], onDisk: ["qwen"] }),
      pod("c", { loaded: ["x"], onDisk: ["qwen"] }),
    ],
    actions: ["load qwen on c"],
  },
  {
    rule: "counts a model being loaded when it chooses the least-loaded pod",
    desired: [replicas("qwen", 1)],
    pods: [
      pod("a", { loading: ["x"], onDisk: ["qwen"] }),
      pod("b", { loaded: ["y"], onDisk: ["qwen"] }),
      pod("c", { loaded: ["y"], loading: ["x"], onDisk: ["qwen"] }),
    ],
    actions: ["load qwen on a"],
  },
  {
    rule: "breaks a tie in loaded models by fewest requests in flight",
    desired: [replicas("qwen", 1)],
    pods: [
      pod("a", { onDisk: ["qwen"] }, { inflight: 3 }),
      pod("b", { onDisk: ["qwen"] }, { inflight: 1 }),
    ],
    actions: ["load qwen on b"],
  },
  {
    rule: "breaks a tie in models and requests by pod name",
    desired: [replicas("qwen", 2)],
    pods: [
      pod("c", { onDisk: ["qwen"] }),
      pod("a", { onDisk: ["qwen"] }),
      pod("b", {
        onDisk: ["qwen"],
      }),
    ],
    actions: ["load qwen on a", "load qwen on b"],
  },
  {
    rule: "counts a load in progress as a copy and never starts a second one",
    desired: [replicas("qwen", 1)],
    pods: [pod("a", { loading: ["qwen"] }), pod("b", { onDisk: ["qwen"] })],
    actions: [],
  },
  {
    rule: "adds only the copies a load in progress does not cover",
    desired: [replicas("qwen", 2)],
    pods: [
      pod("a", { loading: ["qwen"] }),
      pod("b", { onDisk: ["qwen"] }),
      pod("c", {
        onDisk: ["qwen"],
      }),
    ],
    actions: ["load qwen on b"],
  },
  {
    rule: "places what it can and says how many when too few pods have the model",
    desired: [replicas("qwen", 3)],
    pods: [pod("a", { onDisk: ["qwen"] }), pod("b", { onDisk: ["qwen"] }), pod("c")],
    actions: ["load qwen on a", "load qwen on b"],
    warnings: ["qwen wants 3 replicas; only 2 routable pods have it on disk"],
  },
  {
    rule: "names the unroutable pods that have the model when too few routable ones do",
    desired: [replicas("qwen", 2)],
    pods: [
      pod("a", { onDisk: ["qwen"] }),
      pod("b", { onDisk: ["qwen"] }, { routable: false }),
    ],
    actions: ["load qwen on a"],
    warnings: [
      "qwen wants 2 replicas; only 1 routable pod has it on disk (b has it too but is not routable)",
    ],
  },
  {
    rule: "says so when no routable pod has the model on disk",
    desired: [replicas("qwen", 1)],
    pods: [pod("a", { onDisk: ["qwen"] }, { routable: false }), pod("b")],
    actions: [],
    warnings: [
      "qwen wants 1 replica; no routable pod has it on disk (a has it too but is not routable)",
    ],
  },
  {
    rule: "suggests checking the name when no pod has the model at all",
    desired: [replicas("qwen:7b", 1)],
    pods: [pod("a", { onDisk: ["qwen-7b"] })],
    actions: [],
    warnings: [
      "qwen:7b wants 1 replica; no pod has it on disk, so check the name against the pods' /api/tags",
    ],
  },
  {
    rule: "unloads surplus copies from the pods holding the most models",
    desired: [replicas("qwen", 1)],
    pods: [
      pod("a", { loaded: ["qwen"] }),
      pod("b", { loaded: ["qwen", "x", "y"] }),
      pod("c", { loaded: ["qwen", "x"] }),
    ],
    actions: ["unload qwen on b", "unload qwen on c"],
  },
  {
    rule: "unloads a surplus copy from the pod with fewer requests in flight among equals",
    desired: [replicas("qwen", 1)],
    pods: [
      pod("a", { loaded: ["qwen"] }, { inflight: 1 }),
      pod("b", { loaded: ["qwen"] }, { inflight: 4 }),
    ],
    actions: ["unload qwen on a"],
  },
  {
    rule: "unloads a surplus copy from the last pod by name among equals",
    desired: [replicas("qwen", 1)],
    pods: [pod("a", { loaded: ["qwen"] }), pod("b", { loaded: ["qwen"] })],
    actions: ["unload qwen on b"],
  },
  {
    rule: "never unloads a copy still loading, and keeps enough ready copies while it loads",
    desired: [replicas("qwen", 1)],
    pods: [
      pod("a", { loaded: ["qwen"] }),
      pod("b", { loaded: ["qwen"] }),
      pod("c", { loading: ["qwen"] }),
    ],
    actions: ["unload qwen on b"],
  },
  {
    rule: "waits for a load to finish before unloading the last ready copy",
    desired: [replicas("qwen", 1)],
    pods: [pod("a", { loaded: ["qwen"] }), pod("b", { loading: ["qwen"] })],
    actions: [],
  },
  {
    rule: "unloads a model everywhere it is ready when it wants 0 replicas",
    desired: [replicas("qwen", 0)],
    pods: [
      pod("a", { loaded: ["qwen"] }),
      pod("b", { loaded: ["qwen"] }),
      pod("c", { loading: ["qwen"] }),
      pod("d", { onDisk: ["qwen"] }),
    ],
    actions: ["unload qwen on b", "unload qwen on a"],
  },
  {
    rule: "loads a pinned model on its nodes and unloads it from every other pod",
    desired: [pinned("phi", ["n1", "n2"])],
    pods: [
      pod("a", { onDisk: ["phi"] }, { node: "n1" }),
      pod("b", { loaded: ["phi"] }, { node: "n2" }),
      pod("c", { loaded: ["phi"] }, { node: "n3" }),
      pod("d", { loading: ["phi"] }, { node: "n4" }),
    ],
    actions: ["load phi on a", "unload phi on c"],
  },
  {
    rule: "loads a pinned model on every pod of a pinned node",
    desired: [pinned("phi", ["n1"])],
    pods: [
      pod("a1", { onDisk: ["phi"] }, { node: "n1" }),
      pod("a2", { onDisk: ["phi"] }, { node: "n1" }),
    ],
    actions: ["load phi on a1", "load phi on a2"],
  },
  {
    rule: "reports a pinned node whose pod does not have the model on disk",
    desired: [pinned("phi", ["n1", "n2"])],
    pods: [pod("a", { onDisk: ["phi"] }, { node: "n1" }), pod("b", {}, { node: "n2" })],
    actions: ["load phi on a"],
    warnings: ["phi is pinned to node n2, but pod b there does not have it on disk"],
  },
  {
    rule: "reports a pinned node whose pod is missing from the list",
    desired: [pinned("phi", ["n1", "n2"])],
    pods: [pod("a", { loaded: ["phi"] }, { node: "n1" })],
    actions: [],
    warnings: ["phi is pinned to node n2, which has no RKLlama pod"],
  },
  {
    rule: "replaces the copies of a pod that is missing from the list",
    desired: [replicas("qwen", 2)],
    pods: [pod("a", { loaded: ["qwen"] }), pod("c", { onDisk: ["qwen"] })],
    actions: ["load qwen on c"],
  },
  {
    rule: "gives unroutable pods no loads and reports a pinned one",
    desired: [pinned("phi", ["n1"]), replicas("qwen", 1)],
    pods: [
      pod("a", { onDisk: ["phi", "qwen"] }, { node: "n1", routable: false }),
      pod("b", { onDisk: ["qwen"] }, { node: "n2" }),
    ],
    actions: ["load qwen on b"],
    warnings: [
      "phi is pinned to node n1, but pod a there is not routable; it loads when the pod is",
    ],
  },
  {
    rule: "gives unroutable pods no unloads",
    desired: [replicas("qwen", 0), pinned("phi", ["n1"])],
    pods: [
      pod("a", { loaded: ["phi"] }, { node: "n1" }),
      pod("b", { loaded: ["qwen", "phi"] }, { node: "n2", routable: false }),
    ],
    actions: [],
  },
  {
    rule: "does not count a copy on an unroutable pod, since it serves nobody",
    desired: [replicas("qwen", 1)],
    pods: [pod("a", { loaded: ["qwen"] }, { routable: false }), pod("b", { onDisk: ["qwen"] })],
    actions: ["load qwen on b"],
  },
  {
    rule: "counts the copies of an unroutable pod that is busy loading",
    desired: [replicas("qwen", 1)],
    pods: [
      pod("a", { loaded: ["qwen"], loading: ["x"] }, { routable: false }),
      pod("b", { onDisk: ["qwen"] }),
    ],
    actions: [],
  },
  {
    rule: "spreads models competing for the same pods, the higher priority first",
    desired: [replicas("phi", 1, 5), replicas("qwen", 1, 10)],
    pods: [pod("a", { onDisk: ["qwen", "phi"] }), pod("b", { onDisk: ["qwen", "phi"] })],
    actions: ["load qwen on a", "load phi on b"],
  },
  {
    rule: "orders actions by priority, then by model name",
    desired: [
      replicas("gemma", 1, 1),
      replicas("qwen", 1, 10),
      replicas("phi", 0, 1),
      replicas("aya", 1, 1),
    ],
    pods: [
      pod("a", { loaded: ["phi"], onDisk: ["gemma", "qwen", "aya"] }),
      pod("b", { onDisk: ["gemma", "qwen", "aya"] }),
    ],
    actions: ["load qwen on b", "load aya on a", "load gemma on b", "unload phi on a"],
  },
  {
    rule: "puts a model's loads before its unloads, so it stays available while it moves",
    desired: [pinned("phi", ["n2"])],
    pods: [
      pod("a", { loaded: ["phi"] }, { node: "n1" }),
      pod("b", { onDisk: ["phi"] }, { node: "n2" }),
    ],
    actions: ["load phi on b", "unload phi on a"],
  },
  {
    rule: "leaves a placement with neither replicas nor nodes where it is",
    desired: [{ name: "qwen", priority: 0, line: 1 }],
    pods: [pod("a", { loaded: ["qwen"] }), pod("b", { onDisk: ["qwen"] })],
    actions: [],
    warnings: ["qwen sets neither replicas nor nodes; it is left where it is"],
  },
  {
    rule: "leaves models that are not in the config alone by default",
    desired: [replicas("qwen", 1)],
    pods: [pod("a", { loaded: ["qwen", "old"] })],
    actions: [],
  },
  {
    rule: "unloads models that are not in the config with unloadUnmanaged, after the rest",
    desired: [replicas("qwen", 1)],
    pods: [
      pod("a", { loaded: ["old", "older"], onDisk: ["qwen"] }),
      pod("b", { loaded: ["old"], loading: ["new"] }),
      pod("c", { loaded: ["old"] }, { routable: false }),
    ],
    options: { unloadUnmanaged: true },
    actions: ["load qwen on a", "unload old on a", "unload old on b", "unload older on a"],
  },
  {
    rule: "loads replicas only on pods holding fewer than maxLoaded models",
    desired: [replicas("qwen", 2)],
    pods: [
      pod("a", { loaded: ["x", "y"], onDisk: ["qwen"] }),
      pod("b", { loaded: ["x"], onDisk: ["qwen"] }),
    ],
    options: { maxLoaded: 2 },
    actions: ["load qwen on b"],
    warnings: [
      "qwen wants 2 replicas and has 1; a has it on disk but holds 2 models already (--max-loaded)",
    ],
  },
  {
    rule: "loads no pinned copy on a pod holding maxLoaded models",
    desired: [pinned("phi", ["node-a"])],
    pods: [pod("a", { loaded: ["x"], onDisk: ["phi"] })],
    options: { maxLoaded: 1 },
    actions: [],
    warnings: [
      "phi is pinned to node node-a, but pod a there holds 1 models already (--max-loaded)",
    ],
  },
  {
    rule: "keeps copies loaded on demand above replicas, up to maxReplicas",
    desired: [{ ...replicas("qwen", 1), maxReplicas: 2 }],
    pods: [
      pod("a", { loaded: ["qwen"] }),
      pod("b", { loaded: ["qwen"] }),
      pod("c", { loaded: ["qwen"] }),
    ],
    options: { onDemand: [{ pod: "b", model: "qwen" }, { pod: "c", model: "qwen" }] },
    actions: ["unload qwen on c"],
  },
  {
    rule: "keeps every copy loaded on demand when maxReplicas is not set, and unloads others",
    desired: [replicas("qwen", 1)],
    pods: [
      pod("a", { loaded: ["qwen"] }),
      pod("b", { loaded: ["qwen"] }),
      pod("c", { loaded: ["qwen"] }),
    ],
    options: { onDemand: [{ pod: "b", model: "qwen" }] },
    actions: ["unload qwen on c"],
  },
  {
    rule: "leaves copies loaded on demand of unmanaged models to their idle return",
    desired: [],
    pods: [pod("a", { loaded: ["old"] }), pod("b", { loaded: ["old"] })],
    options: { unloadUnmanaged: true, onDemand: [{ pod: "b", model: "old" }] },
    actions: ["unload old on a"],
  },
];

for (const row of ROWS) {
  Deno.test(`plan() ${row.rule}`, () => {
    const result = plan({ models: row.desired }, row.pods, row.options);
    assert.deepEqual(result.actions.map(brief), row.actions);
    assert.deepEqual(result.warnings, row.warnings ?? []);
  });
}

Deno.test("plan() describes each action with its node, reason and priority", () => {
  const result = plan(
    { models: [replicas("qwen", 1, 10), replicas("gemma", 0), pinned("phi", ["n2"], 3)] },
    [
      pod("a", { loaded: ["gemma", "phi", "old"], onDisk: ["qwen"] }, { node: "n1" }),
      pod("b", { onDisk: ["phi", "qwen"] }, { node: "n2" }),
    ],
    { unloadUnmanaged: true },
  );
  assert.deepEqual(result.actions, [
    {
      kind: "load",
      pod: "b",
      node: "n2",
      model: "qwen",
      reason: "qwen wants 1 replica and has 0",
      priority: 10,
    },
    {
      kind: "load",
      pod: "b",
      node: "n2",
      model: "phi",
      reason: "phi is pinned to node n2",
      priority: 3,
    },
    {
      kind: "unload",
      pod: "a",
      node: "n1",
      model: "phi",
      reason: "phi is pinned to n2, not to node n1",
      priority: 3,
    },
    {
      kind: "unload",
      pod: "a",
      node: "n1",
      model: "gemma",
      reason: "gemma wants 0 replicas and has 1",
      priority: 0,
    },
    {
      kind: "unload",
      pod: "a",
      node: "n1",
      model: "old",
      reason: "old is not in models.yaml and unmanaged models are unloaded",
      priority: -Infinity,
    },
  ]);
});

Deno.test("plan() reports each configured model as found, in priority order", () => {
  const result = plan(
    { models: [replicas("qwen", 3), pinned("phi", ["n1", "n9"], 5)] },
    [
      pod("a", { loaded: ["qwen", "phi"] }, { node: "n1" }),
      pod("b", { loading: ["qwen"] }, { node: "n2" }),
      pod("c", { loaded: ["qwen"] }, { node: "n3", routable: false }),
    ],
  );
  assert.deepEqual(result.models, [
    {
      name: "phi",
      want: ["n1", "n9"],
      loadedOn: ["a"],
      loadingOn: [],
      problems: ["phi is pinned to node n9, which has no RKLlama pod"],
    },
    {
      name: "qwen",
      want: 3,
      loadedOn: ["a", "c"],
      loadingOn: ["b"],
      problems: [
        "qwen wants 3 replicas; only 2 routable pods have it on disk (c has it too but is not routable)",
      ],
    },
  ]);
  assert.deepEqual(result.warnings, [
    "phi is pinned to node n9, which has no RKLlama pod",
    "qwen wants 3 replicas; only 2 routable pods have it on disk (c has it too but is not routable)",
  ]);
});

Deno.test("plan() gives the same answer whatever order the pods and models come in", () => {
  const desired = [replicas("qwen", 2), replicas("phi", 2), replicas("gemma", 1)];
  const pods = ["d", "b", "a", "c"].map((name) => pod(name, { onDisk: ["qwen", "phi", "gemma"] }));
  const forward = plan({ models: desired }, pods);
  const backward = plan({ models: [...desired].reverse() }, [...pods].reverse());
  assert.deepEqual(backward, forward);
  assert.deepEqual(forward.actions.map(brief), [
    "load gemma on a",
    "load phi on b",
    "load phi on c",
    "load qwen on d",
    "load qwen on a",
  ]);
});

Deno.test("plan() counts a pod's unmanaged models as gone when it is to unload them", () => {
  const pods = [
    pod("a", { loaded: ["old", "older"], onDisk: ["qwen"] }),
    pod("b", { loaded: ["x"], onDisk: ["qwen"] }),
  ];
  const desired = { models: [replicas("qwen", 1), replicas("x", 1)] };
  assert.deepEqual(plan(desired, pods).actions.map(brief), ["load qwen on b"]);
  assert.deepEqual(plan(desired, pods, { unloadUnmanaged: true }).actions.map(brief), [
    "load qwen on a",
    "unload old on a",
    "unload older on a",
  ]);
});

Deno.test("plan() asks for nothing when nothing is desired and no pods exist", () => {
  assert.deepEqual(plan({ models: [] }, []), { actions: [], models: [], warnings: [] });
});
