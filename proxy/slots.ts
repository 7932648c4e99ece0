/**
 * @module
 * Generation slots, and where a request that takes one goes: pure functions over
 * plain data. An RKLlama board runs one generation at a time (FastAPI generation:
 * one per board, behind one lock; Flask generation: one per model, each model's
 * worker in turn), and a request sent to a busy board waits there, bound to that
 * board, while another may free up first. So the router sends a request only to a
 * board with a free slot for it, and keeps the others in its own queue
 * (`scheduler.ts`) until one frees: late binding.
 */

import { isRoutable, type PodRecord } from "../cluster/store.ts";
import { pick, type PickInput } from "./pick.ts";

/** How many generations a board runs at once, and whether per board or per model. */
export interface Slots {
  scope: "board" | "model";
  count: number;
}

/**
 * A board's slots: `setting` is `--slots` (0 = by the board's RKLlama generation;
 * N = N per board, for other Ollama-compatible servers). A board whose generation
 * is not known yet gets the stricter rule, one per board.
 */
export function slotsOf(generation: string | undefined, setting: number): Slots {
  if (setting > 0) return { scope: "board", count: setting };
  return generation === "flask" ? { scope: "model", count: 1 } : { scope: "board", count: 1 };
}

/** Whether a board with `busy` slots taken (per model) can start a generation of `model`. */
export function hasFreeSlot(
  slots: Slots,
  busy: ReadonlyMap<string, number> | undefined,
  model: string,
): boolean {
  if (!busy) return slots.count > 0;
  if (slots.scope === "model") return (busy.get(model) ?? 0) < slots.count;
  let taken = 0;
  for (const count of busy.values()) taken += count;
  return taken < slots.count;
}

/** Where a request that takes a slot goes now. */
export type Placement =
  /** Send it there now; `cold` when the pod will load the model inside the request. */
  | { kind: "send"; pod: PodRecord; cold: boolean }
  /** A board will take it, but none can now (busy, or loading the model): queue it. */
  | { kind: "wait" }
  /** No pod has the model, in any state. */
  | { kind: "not_found" }
  /** Pods that could serve exist but none can take it (503). */
  | { kind: "unavailable"; reason: string };

/** What {@linkcode place} looks at: {@linkcode pick}'s input for a named model, and free slots. */
export interface PlaceInput extends PickInput {
  model: string;
  /** `--slots` (see {@linkcode slotsOf}). */
  slots: number;
  /** Slots taken now: pod -> model -> requests holding one. */
  busy: ReadonlyMap<string, ReadonlyMap<string, number>>;
  /** `--max-loaded`: models a board holds at most (0: no limit). */
  maxLoaded: number;
}

/**
 * Chooses a board with a free slot for a request naming a model:
 * - a loaded copy with a free slot (as {@linkcode pick} ranks them);
 * - every copy busy: wait for one, rather than loading the model on another board
 *   inside a client's request (extra copies are loaded outside requests, on demand);
 * - a board loading it: wait for the load;
 * - no copy anywhere: the one cold request goes to a free board with it on disk
 *   and room for it (`--max-loaded`; a full board refuses the load), or waits for
 *   one to free (copies on demand make room on a full board when that helps);
 * - otherwise {@linkcode pick}'s answer: not found, or unavailable and why.
 *
 * @example
 * ```ts
 * const where = place({ ...pickInput, model: "qwen", free: new Set(["rk-1"]) });
 * if (where.kind === "send") send(where.pod, where.cold);
 * ```
 */
export function place(input: PlaceInput): Placement {
  const { model, now, exclude } = input;
  const usable = (pod: PodRecord) => isRoutable(pod, now) && !exclude.has(pod.name);
  // Asked only of the model's candidates, not of every pod: 39 -> 16 µs a request
  // with 500 pods (bench/scale_bench.ts).
  const free = (pod: PodRecord) =>
    hasFreeSlot(slotsOf(pod.generation, input.slots), input.busy.get(pod.name), model);
  const copies = input.loadedOn.filter((pod) => usable(pod) && !pod.loading.has(model));
  if (copies.length > 0) {
    const open = copies.filter(free);
    if (open.length === 0) return { kind: "wait" };
    return sent(pick({ ...input, loadedOn: open, onDiskOn: [] }));
  }
  const holders = [...input.loadedOn, ...input.onDiskOn];
  if (holders.some((pod) => usable(pod) && pod.loading.has(model))) return { kind: "wait" };
  const onDisk = input.onDiskOn.filter(usable);
  if (onDisk.length > 0) {
    const roomy = (pod: PodRecord) =>
      input.maxLoaded === 0 || pod.loaded.size + pod.loading.size < input.maxLoaded;
    const open = onDisk.filter((pod) => roomy(pod) && free(pod));
    if (open.length === 0) return { kind: "wait" };
    return sent(pick({ ...input, loadedOn: [], onDiskOn: open }));
  }
  const choice = pick(input);
  if (choice.kind === "not_found" || choice.kind === "unavailable") return choice;
  // pick found a pod only this function's filters left out: there is none to send to.
  return { kind: "unavailable", reason: `model '${model}' has no pod that can take it now` };
}

function sent(choice: ReturnType<typeof pick>): Placement {
  if (choice.kind === "loaded") return { kind: "send", pod: choice.pod, cold: false };
  if (choice.kind === "cold") return { kind: "send", pod: choice.pod, cold: true };
  return { kind: "wait" };
}
