import assert from "node:assert/strict";
import { hasFreeSlot, place, type Placement, slotsOf } from "./slots.ts";
import type { PodRecord } from "../cluster/store.ts";
import { NOW, podRecord as pod } from "../sim/records.ts";

Deno.test("slotsOf(): one per board on FastAPI and unknown boards, one per model on Flask, N per board by flag", () => {
  const rows: [string | undefined, number, ReturnType<typeof slotsOf>][] = [
    ["fastapi", 0, { scope: "board", count: 1 }],
    ["flask", 0, { scope: "model", count: 1 }],
    ["unknown", 0, { scope: "board", count: 1 }],
    [undefined, 0, { scope: "board", count: 1 }],
    ["flask", 4, { scope: "board", count: 4 }],
    ["fastapi", 2, { scope: "board", count: 2 }],
  ];
  for (const [generation, setting, want] of rows) {
    assert.deepEqual(slotsOf(generation, setting), want, `${generation} --slots ${setting}`);
  }
});

Deno.test("hasFreeSlot(): a board's slots are shared by its models, a model's are its own", () => {
  const busy = new Map([["a", 1]]);
  const rows: [ReturnType<typeof slotsOf>, Map<string, number> | undefined, string, boolean][] = [
    [{ scope: "board", count: 1 }, undefined, "a", true],
    [{ scope: "board", count: 1 }, busy, "a", false],
    [{ scope: "board", count: 1 }, busy, "b", false],
    [{ scope: "model", count: 1 }, busy, "a", false],
    [{ scope: "model", count: 1 }, busy, "b", true],
    [{ scope: "board", count: 2 }, busy, "b", true],
    [{ scope: "board", count: 2 }, new Map([["a", 1], ["b", 1]]), "c", false],
  ];
  for (const [slots, taken, model, want] of rows) {
    assert.equal(
      hasFreeSlot(slots, taken, model),
      want,
      `${JSON.stringify(slots)} busy ${JSON.stringify([...(taken ?? [])])} for ${model}`,
    );
  }
});

function where(
  model: string,
  pods: PodRecord[],
  free: string[],
  exclude: string[] = [],
  maxLoaded = 0,
): string {
  const result: Placement = place({
    model,
    pods,
    loadedOn: pods.filter((p) => p.loaded.has(model)),
    onDiskOn: pods.filter((p) => p.onDisk.has(model)),
    now: NOW,
    exclude: new Set(exclude),
    turn: 0,
    staleAfterMs: 60_000,
    // A pod not free holds a generation of another model: its one slot is taken.
    slots: 0,
    busy: new Map(
      pods.filter((p) => !free.includes(p.name)).map((p) => [p.name, new Map([["other", 1]])]),
    ),
    maxLoaded,
  });
  if (result.kind === "send") return `${result.cold ? "cold" : "send"} ${result.pod.name}`;
  return result.kind;
}

Deno.test("place(): a free loaded copy now, else wait for one; a cold load only when no copy exists", () => {
  const rows: [string, () => string, string][] = [
    [
      "the free copy, not the busy one",
      () => where("q", [pod("a", { loaded: ["q"] }), pod("b", { loaded: ["q"] })], ["b"]),
      "send b",
    ],
    [
      "every copy busy: wait, even with an idle board that has it on disk",
      () => where("q", [pod("a", { loaded: ["q"] }), pod("b", { onDisk: ["q"] })], ["b"]),
      "wait",
    ],
    [
      "no copy: the one cold request goes to a free board with it on disk",
      () => where("q", [pod("a", { onDisk: ["q"] }), pod("b", { onDisk: ["q"] })], ["b"]),
      "cold b",
    ],
    [
      "no copy and no free board with it: wait",
      () => where("q", [pod("a", { onDisk: ["q"] }), pod("b", { loaded: ["x"] })], ["b"]),
      "wait",
    ],
    [
      "a board is loading it: wait for the load, even with another free board",
      () =>
        where("q", [pod("a", { onDisk: ["q"], loading: ["q"] }), pod("b", { onDisk: ["q"] })], [
          "a",
          "b",
        ]),
      "wait",
    ],
    [
      "the copy being reloaded is no copy to send to; the other is",
      () =>
        where("q", [pod("a", { loaded: ["q"], loading: ["q"] }), pod("b", { loaded: ["q"] })], [
          "a",
          "b",
        ]),
      "send b",
    ],
    [
      "a copy idle past the pods' expiry is sent alone, as cold",
      () => where("q", [pod("a", { loaded: ["q"] }, { lastSent: NOW - 120_000 })], ["a"]),
      "cold a",
    ],
    [
      "the copy already tried is left out; the other copy is busy: wait",
      () => where("q", [pod("a", { loaded: ["q"] }), pod("b", { loaded: ["q"] })], ["a"], ["a"]),
      "wait",
    ],
    [
      "an ejected copy is no copy: the free board with it on disk is loaded",
      () =>
        where("q", [
          pod("a", { loaded: ["q"] }, { ejectedUntil: NOW + 10_000 }),
          pod("b", { onDisk: ["q"] }),
        ], ["a", "b"]),
      "cold b",
    ],
    [
      "no copy: a board full with loads (--max-loaded) is no place for the cold load",
      () =>
        where(
          "q",
          [
            pod("a", { onDisk: ["q"], loaded: ["x"], loading: ["y", "z"] }),
            pod("b", { onDisk: ["q"], loaded: ["x", "y"] }),
          ],
          ["a", "b"],
          [],
          3,
        ),
      "cold b",
    ],
    [
      "no copy and every board with it full: wait for room",
      () => where("q", [pod("a", { onDisk: ["q"], loaded: ["x", "y"] })], ["a"], [], 2),
      "wait",
    ],
    [
      "nobody has it",
      () => where("nope", [pod("a", { loaded: ["q"] })], ["a"]),
      "not_found",
    ],
    [
      "only on a board that is not ready",
      () => where("q", [pod("a", { loaded: ["q"] }, { ready: false })], ["a"]),
      "unavailable",
    ],
  ];
  for (const [name, run, want] of rows) assert.equal(run(), want, name);
});
