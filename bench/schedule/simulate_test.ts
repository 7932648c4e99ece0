import assert from "node:assert/strict";
import { LOAD_AFTER, lowerBound, seedRule, sharedQueue } from "./simulate.ts";
import type { BoardSpec, Scenario, TraceRequest } from "./trace.ts";

function scenario(
  boards: BoardSpec[],
  requests: [atMs: number, model: string, serviceMs: number][],
  loadMs = 1000,
): Scenario {
  return {
    name: "t",
    description: "t",
    seed: 1,
    boards,
    loadMs,
    firstTokenMs: 10,
    requests: requests.map(([atMs, model, serviceMs], id): TraceRequest => ({
      id,
      atMs,
      model,
      serviceMs,
    })),
  };
}

const board = (name: string, onDisk: string[], loaded: string[], maxLoaded = 2): BoardSpec => ({
  name,
  onDisk,
  loaded,
  maxLoaded,
});

/** [first byte, end] of each request, or "refused". */
function timeline(run: ReturnType<typeof seedRule>): (string | [number, number])[] {
  return run.outcomes.map((o) => o.status === "ok" ? [o.firstByteMs!, o.endMs] : o.status);
}

const twoWarm = scenario(
  [board("a", ["qwen"], ["qwen"]), board("b", ["qwen"], ["qwen"])],
  [[0, "qwen", 1000], [0, "qwen", 100], [10, "qwen", 100]],
);

const cases: {
  name: string;
  scenario: Scenario;
  seed: (string | [number, number])[];
  bound: (string | [number, number])[];
  boundLoads: number;
}[] = [
  {
    name: "a request behind a long answer waits for it under the seed's rule, not in the bound",
    scenario: twoWarm,
    // Round-robin sends the third to board a, behind the long answer.
    seed: [[10, 1000], [10, 100], [1010, 1100]],
    // One queue: it takes board b as soon as b is free.
    bound: [[10, 1000], [10, 100], [110, 200]],
    boundLoads: 0,
  },
  {
    name: "a cold burst is refused by the seed's rule and loaded on every idle board by the bound",
    scenario: scenario(
      [0, 1, 2, 3].map((i) => board(`rk-${i}`, ["phi"], [])),
      Array.from({ length: 8 }, () => [0, "phi", 500] as [number, string, number]),
      2000,
    ),
    seed: Array(8).fill("rejected"),
    bound: [
      ...Array(4).fill([2010, 2500]),
      ...Array(4).fill([2510, 3000]),
    ],
    boundLoads: 4,
  },
  {
    name: "a full board evicts a copy nobody waits for to load the one that is asked for",
    scenario: scenario([board("a", ["x", "y"], ["x"], 1)], [[0, "y", 100], [5000, "x", 100]]),
    seed: ["rejected", [5010, 5100]],
    // y loads at 0 (1 s), then x loads again when it is asked for.
    bound: [[1010, 1100], [6010, 6100]],
    boundLoads: 2,
  },
  {
    name: "a model on no board's disk is refused by both",
    scenario: scenario([board("a", ["x"], ["x"])], [[0, "nope", 100]]),
    seed: ["rejected"],
    bound: ["rejected"],
    boundLoads: 0,
  },
];

for (const c of cases) {
  Deno.test(`simulate: ${c.name}`, () => {
    assert.deepEqual(timeline(seedRule(c.scenario)), c.seed);
    const bound = lowerBound(c.scenario);
    assert.deepEqual(timeline(bound), c.bound);
    assert.equal(bound.loads, c.boundLoads);
  });
}

Deno.test("simulate: the bound adds no copy while the loaded ones keep up", () => {
  const steady = scenario(
    [board("a", ["qwen"], ["qwen"]), board("b", ["qwen"], [])],
    Array.from({ length: 20 }, (_, i) => [i * 200, "qwen", 100] as [number, string, number]),
  );
  for (const loadAfter of LOAD_AFTER) assert.equal(sharedQueue(steady, loadAfter).loads, 0);
});

Deno.test("simulate: busy time is the sum of the answers each board generated", () => {
  assert.deepEqual(lowerBound(twoWarm).busyMs, [1000, 200]);
  assert.deepEqual(seedRule(twoWarm).busyMs, [1100, 100]);
});
