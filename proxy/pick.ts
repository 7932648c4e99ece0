/**
 * @module
 * The balancing rule: which pod gets a request. A pure function over plain data;
 * waiting for a loading model and proxying live elsewhere (`cold_gate.ts`, `proxy.ts`).
 */

import { isRoutable, type PodRecord, podState } from "../cluster/store.ts";

/** What to do with a request. */
export type Choice =
  /** The model is loaded there: send it. */
  | { kind: "loaded"; pod: PodRecord }
  /** The router is loading the model there: wait for that load, then pick again. */
  | { kind: "follow"; pod: PodRecord }
  /** Nobody has it loaded: send it there and let the pod load it inside the request. */
  | { kind: "cold"; pod: PodRecord }
  /** The request names no model: any routable pod will do. */
  | { kind: "any"; pod: PodRecord }
  /** No pod has the model, in any state. */
  | { kind: "not_found" }
  /** Pods that could serve exist but none can take it now (503). */
  | { kind: "unavailable"; reason: string };

/** Everything {@linkcode pick} looks at. */
export interface PickInput {
  /** The model as pods name it, or undefined when the request names none. */
  model: string | undefined;
  /** All known pods. */
  pods: readonly PodRecord[];
  /** Pods with the model loaded (the store's `loadedOn` entry). */
  loadedOn: readonly PodRecord[];
  /** Pods with the model on disk (the store's `onDiskOn` entry). */
  onDiskOn: readonly PodRecord[];
  now: number;
  /** Pods already tried for this request. */
  exclude: ReadonlySet<string>;
  /** A counter the caller advances on every pick; breaks ties round-robin. */
  turn: number;
  /**
   * A loaded copy the router has sent nothing to for this long may have been
   * unloaded by the pod's idle expiry since the last poll; it is then treated as
   * cold, so that only one request at a time can make the pod load it again.
   */
  staleAfterMs: number;
}

/**
 * Chooses a pod: loaded copies first (fewest requests in flight, then recently used
 * ones, round-robin among equals; a copy idle past the pods' expiry is sent as
 * cold), then a pod the router is already loading the model on, then a pod with
 * the model on disk (fewest loaded models, then fewest in flight).
 *
 * @example
 * ```ts
 * const choice = pick({ model: "qwen", pods, loadedOn, onDiskOn, now: Date.now(), exclude: new Set(), turn: 0, staleAfterMs: 1_740_000 });
 * if (choice.kind === "loaded") send(choice.pod);
 * ```
 */
export function pick(input: PickInput): Choice {
  const { model, now, exclude, turn } = input;
  const usable = (pod: PodRecord) => isRoutable(pod, now) && !exclude.has(pod.name);
  if (input.pods.length === 0) {
    return { kind: "unavailable", reason: "no RKLlama pods have been discovered yet" };
  }
  if (model === undefined) {
    const pod = fewest(input.pods.filter(usable), turn, (p) => p.runtime.inflight);
    return pod ? { kind: "any", pod } : { kind: "unavailable", reason: "no RKLlama pod is ready" };
  }
  const fresh = (pod: PodRecord) =>
    now - (pod.runtime.lastSent.get(model) ?? 0) < input.staleAfterMs;
  // A copy being (re)loaded by a request is not a copy to send more requests to yet.
  const loadedCopies = input.loadedOn.filter((pod) => usable(pod) && !pod.loading.has(model));
  const loaded = fewest(
    loadedCopies,
    turn,
    (p) => p.runtime.inflight,
    (p) => fresh(p) ? 0 : 1,
  );
  // The least busy copy may have expired: it is then sent one request, as if cold.
  if (loaded) return { kind: fresh(loaded) ? "loaded" : "cold", pod: loaded };
  const onDisk = input.onDiskOn.filter(usable);
  const loading = [...input.loadedOn, ...input.onDiskOn].find((pod) =>
    usable(pod) && pod.loading.has(model)
  );
  if (loading) return { kind: "follow", pod: loading };
  const cold = fewest(
    onDisk,
    turn,
    (p) => p.loaded.size,
    (p) => p.runtime.inflight,
  );
  if (cold) return { kind: "cold", pod: cold };
  if (input.loadedOn.length > 0 || input.onDiskOn.length > 0) {
    const holders = [
      ...new Set(
        [...input.loadedOn, ...input.onDiskOn].map((p) => `${p.name} (${podState(p, now)})`),
      ),
    ];
    return {
      kind: "unavailable",
      reason: `model '${model}' is only on pods that cannot take requests now: ${
        holders.join(", ")
      }`,
    };
  }
  if (!input.pods.some(usable)) {
    return { kind: "unavailable", reason: "no RKLlama pod is ready" };
  }
  return { kind: "not_found" };
}

/** The pod with the lowest keys (compared in order); ties broken by `turn`. */
function fewest(
  pods: readonly PodRecord[],
  turn: number,
  ...keys: ((pod: PodRecord) => number)[]
): PodRecord | undefined {
  if (pods.length <= 1) return pods[0];
  let best: PodRecord[] = [];
  let bestKeys: number[] = [];
  for (const pod of pods) {
    const podKeys = keys.map((key) => key(pod));
    const order = compareKeys(podKeys, bestKeys);
    if (best.length === 0 || order < 0) {
      best = [pod];
      bestKeys = podKeys;
    } else if (order === 0) {
      best.push(pod);
    }
  }
  return best[turn % best.length];
}

function compareKeys(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return 0;
}
