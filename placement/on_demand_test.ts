import assert from "node:assert/strict";
import type { ModelDemand } from "../cluster/demand.ts";
import type { ModelPlacement } from "../config/models.ts";
import {
  extraCopies,
  type OnDemandCopy,
  type OnDemandInput,
  type OnDemandPod,
} from "./on_demand.ts";

const NOW = 1_000_000;
const MINUTE = 60_000;

function pod(
  name: string,
  {
    disk = ["qwen", "phi", "gemma"],
    loaded = [] as string[],
    loading = [] as string[],
    inflight = 0,
    routable = true,
    lastUsed = {} as Record<string, number>,
  } = {},
): OnDemandPod {
  return {
    name,
    node: name,
    routable,
    onDisk: new Set(disk),
    loaded: new Set(loaded),
    loading: new Set(loading),
    inflight,
    lastUsed: new Map(Object.entries(lastUsed)),
  };
}

function demand(model: string, waiting: number, changes: Partial<ModelDemand> = {}): ModelDemand {
  return { model, waiting, serving: 1, oldestWaitMs: 0, answerMs: 1000, copies: 1, ...changes };
}

function replicas(name: string, count: number, maxReplicas?: number): ModelPlacement {
  return { name, replicas: count, maxReplicas, priority: 0, line: 1 };
}

function input(changes: Partial<OnDemandInput>): OnDemandInput {
  return {
    leader: true,
    now: NOW,
    demands: [],
    pods: [],
    config: undefined,
    copies: [],
    loadMs: new Map([["qwen", 2000], ["phi", 2000], ["gemma", 2000]]),
    defaultLoadMs: 20_000,
    defaultAnswerMs: 10_000,
    maxLoaded: 0,
    idleMs: 5 * MINUTE,
    residencyMs: 2 * MINUTE,
    ...changes,
  };
}

/** Actions as `kind model@pod`, in order. */
function decide(changes: Partial<OnDemandInput>): string[] {
  return extraCopies(input(changes)).map((action) =>
    `${action.kind} ${action.model}@${action.pod}`
  );
}

const copy = (pod: string, model: string, loadedAt: number): OnDemandCopy => ({
  pod,
  model,
  loadedAt,
});

const ROWS: [string, Partial<OnDemandInput>, string[]][] = [
  [
    "a long queue on one copy loads a copy on the idle board that has the model on disk",
    {
      demands: [demand("qwen", 6)],
      pods: [pod("a", { loaded: ["qwen"], inflight: 1 }), pod("b"), pod("c", { disk: ["phi"] })],
    },
    ["load qwen@b"],
  ],
  [
    "a cold burst loads on every idle board while the queue outlasts a load",
    {
      demands: [demand("qwen", 24, { answerMs: 500, copies: 0 })],
      pods: [pod("a", { loading: ["qwen"], inflight: 1 }), pod("b"), pod("c"), pod("d")],
    },
    ["load qwen@b", "load qwen@c", "load qwen@d"],
  ],
  [
    "only as many copies as make the queue shorter than a load",
    {
      demands: [demand("qwen", 5, { answerMs: 1000 })],
      pods: [pod("a", { loaded: ["qwen"], inflight: 1 }), pod("b"), pod("c"), pod("d")],
    },
    ["load qwen@b", "load qwen@c"],
  ],
  [
    "a short queue starts no load",
    {
      demands: [demand("qwen", 2)],
      pods: [pod("a", { loaded: ["qwen"], inflight: 1 }), pod("b")],
    },
    [],
  ],
  [
    "an unobserved model is judged by the defaults: two waiting of 10 s do not pay a 20 s load",
    {
      demands: [demand("llama", 2, { answerMs: undefined })],
      pods: [
        pod("a", { disk: ["llama"], loaded: ["llama"], inflight: 1 }),
        pod("b", { disk: ["llama"] }),
      ],
    },
    [],
  ],
  [
    "a busy board, a board loading something, or an unroutable one gets no copy",
    {
      demands: [demand("qwen", 10)],
      pods: [
        pod("a", { loaded: ["qwen"], inflight: 1 }),
        pod("b", { inflight: 1 }),
        pod("c", { loading: ["phi"] }),
        pod("d", { routable: false }),
      ],
    },
    [],
  ],
  [
    "maxReplicas reached: nothing",
    {
      demands: [demand("qwen", 10)],
      config: { models: [replicas("qwen", 1, 2)] },
      pods: [
        pod("a", { loaded: ["qwen"], inflight: 1 }),
        pod("b", { loaded: ["qwen"], inflight: 1 }),
        pod("c"),
      ],
    },
    [],
  ],
  [
    "below maxReplicas: loads up to it",
    {
      demands: [demand("qwen", 10)],
      config: { models: [replicas("qwen", 1, 2)] },
      pods: [pod("a", { loaded: ["qwen"], inflight: 1 }), pod("b"), pod("c")],
    },
    ["load qwen@b"],
  ],
  [
    "a model pinned to nodes gets no copies on demand",
    {
      demands: [demand("qwen", 10)],
      config: { models: [{ name: "qwen", nodes: ["a"], priority: 0, line: 1 }] },
      pods: [pod("a", { loaded: ["qwen"], inflight: 1 }), pod("b")],
    },
    [],
  ],
  [
    "a full board evicts its least recently used copy nobody needs",
    {
      maxLoaded: 2,
      demands: [demand("qwen", 10)],
      pods: [
        pod("a", { loaded: ["qwen"], inflight: 1 }),
        pod("b", { loaded: ["phi", "gemma"], lastUsed: { phi: NOW - 1000, gemma: NOW - 9000 } }),
      ],
    },
    ["unload gemma@b"],
  ],
  [
    "a full board with room elsewhere: the board with room is used, nothing evicted",
    {
      maxLoaded: 2,
      demands: [demand("qwen", 4)],
      pods: [
        pod("a", { loaded: ["qwen"], inflight: 1 }),
        pod("b", { loaded: ["phi", "gemma"] }),
        pod("c", { loaded: ["phi"] }),
      ],
    },
    ["load qwen@c"],
  ],
  [
    "a full board whose copies are all needed is passed over: pinned, kept by replicas, waited for",
    {
      maxLoaded: 3,
      demands: [demand("qwen", 10), demand("gemma", 1, { serving: 0 })],
      config: {
        models: [
          { name: "phi", nodes: ["b"], priority: 0, line: 1 },
          replicas("llama", 1),
        ],
      },
      pods: [
        pod("a", { loaded: ["qwen"], inflight: 1 }),
        pod("b", { disk: ["qwen", "phi", "gemma", "llama"], loaded: ["phi", "gemma", "llama"] }),
      ],
    },
    [],
  ],
  [
    "a copy loaded on demand within the minimum residency is not evicted",
    {
      maxLoaded: 1,
      demands: [demand("qwen", 10)],
      copies: [copy("b", "phi", NOW - MINUTE)],
      pods: [pod("a", { loaded: ["qwen"], inflight: 1 }), pod("b", { loaded: ["phi"] })],
    },
    [],
  ],
  [
    "a copy loaded on demand is unloaded once idle past the idle time",
    {
      copies: [copy("b", "qwen", NOW - 10 * MINUTE)],
      pods: [
        pod("a", { loaded: ["qwen"] }),
        pod("b", { loaded: ["qwen"], lastUsed: { qwen: NOW - 6 * MINUTE } }),
      ],
    },
    ["unload qwen@b"],
  ],
  [
    "an idle copy loaded on demand is kept before the idle time",
    {
      copies: [copy("b", "qwen", NOW - 10 * MINUTE)],
      pods: [
        pod("a", { loaded: ["qwen"] }),
        pod("b", { loaded: ["qwen"], lastUsed: { qwen: NOW - 4 * MINUTE } }),
      ],
    },
    [],
  ],
  [
    "an idle copy is kept before the minimum residency, even with a short idle time",
    {
      idleMs: 1000,
      copies: [copy("b", "qwen", NOW - MINUTE)],
      pods: [pod("a", { loaded: ["qwen"] }), pod("b", { loaded: ["qwen"] })],
    },
    [],
  ],
  [
    "idle copies return down to replicas, not below",
    {
      config: { models: [replicas("qwen", 2, 4)] },
      copies: [copy("b", "qwen", NOW - 10 * MINUTE), copy("c", "qwen", NOW - 9 * MINUTE)],
      pods: [
        pod("a", { loaded: ["qwen"] }),
        pod("b", { loaded: ["qwen"] }),
        pod("c", { loaded: ["qwen"] }),
      ],
    },
    ["unload qwen@b"],
  ],
  [
    "the last copy of a model models.yaml does not name stays",
    {
      copies: [copy("b", "qwen", NOW - 10 * MINUTE)],
      pods: [pod("a", { disk: ["qwen"] }), pod("b", { loaded: ["qwen"] })],
    },
    [],
  ],
  [
    "an idle copy whose model has requests waiting stays",
    {
      demands: [demand("qwen", 1, { serving: 0 })],
      copies: [copy("b", "qwen", NOW - 10 * MINUTE)],
      pods: [pod("a", { loaded: ["qwen"] }), pod("b", { loaded: ["qwen"] })],
    },
    [],
  ],
  [
    "not the leader: nothing, however long the queue or idle the copy",
    {
      leader: false,
      demands: [demand("qwen", 50)],
      copies: [copy("c", "phi", NOW - 10 * MINUTE)],
      pods: [
        pod("a", { loaded: ["qwen", "phi"], inflight: 1 }),
        pod("b"),
        pod("c", { loaded: ["phi"] }),
      ],
    },
    [],
  ],
];

for (const [name, changes, expected] of ROWS) {
  Deno.test(`extraCopies(): ${name}`, () => {
    assert.deepEqual(decide(changes), expected);
  });
}

Deno.test("extraCopies() serves the longer queue first when two models want the same board", () => {
  const actions = decide({
    demands: [demand("phi", 4), demand("qwen", 9)],
    pods: [
      pod("a", { loaded: ["qwen"], inflight: 1 }),
      pod("b", { loaded: ["phi"], inflight: 1 }),
      pod("c"),
    ],
  });
  assert.deepEqual(actions, ["load qwen@c"]);
});

Deno.test("extraCopies() starts no load over a steady trace the copies can serve", () => {
  // One copy each, answers of 1 s, a load of 2 s: a queue of up to 2 drains before a load ends.
  const pods = [
    pod("a", { loaded: ["qwen"], inflight: 1 }),
    pod("b", { loaded: ["phi"] }),
    pod("c"),
  ];
  for (let step = 0; step < 200; step++) {
    const waiting = step % 3;
    const actions = decide({ now: NOW + step * 100, demands: [demand("qwen", waiting)], pods });
    assert.deepEqual(actions, [], `step ${step} with ${waiting} waiting`);
  }
});
