/**
 * @module
 * Copies on demand, the rule: given the router's queues, the pods and the copies
 * loaded on demand so far, which extra copies to load on idle boards and which to
 * unload once idle again. A pure function over plain data, so every rule is a row
 * in a table test; on_demand_controller.ts runs it and hands the actions to the
 * applier.
 *
 * Rules:
 * - only the leader acts;
 * - a model gets another copy while its queue would take longer to drain on the
 *   copies it has (and those loading) than a load takes: waiting requests times the
 *   mean answer time, over the copies; so a short queue never starts a load;
 * - the copy goes on a board that has the model on disk and is idle: routable, no
 *   request in flight, loading nothing; fewest models held first, then by name;
 * - at most `maxReplicas` copies (models.yaml), or every board with the model on
 *   disk for models it does not name; a model pinned to `nodes` gets none;
 * - a board holding `maxLoaded` models makes room only by unloading its least
 *   recently used copy that nobody needs: not waited for or served, not kept by
 *   models.yaml (`replicas` elsewhere too few, or pinned there), not loaded on
 *   demand less than the minimum residency ago; when there is none, the board is
 *   passed over;
 * - a copy loaded on demand is unloaded after `idleMs` without requests, and never
 *   before `residencyMs` after its load, while no request waits for its model and
 *   its model keeps `replicas` copies (one, for models models.yaml does not name).
 */

import type { ModelDemand } from "../cluster/demand.ts";
import type { DesiredConfig, ModelPlacement } from "../config/models.ts";
import type { Action, PlanPod } from "./plan.ts";

/** What the rule needs to know about one pod. */
export interface OnDemandPod extends PlanPod {
  /**
   * Takes requests now: ready, reachable, not ejected, no explicit load or unload
   * running on it (stricter than the plan's `routable`).
   */
  routable: boolean;
  /** Epoch ms the router last sent a request for each loaded model (0: none yet). */
  lastUsed: ReadonlyMap<string, number>;
}

/** A copy loaded on demand that is, or is becoming, loaded. */
export interface OnDemandCopy {
  pod: string;
  model: string;
  /** Epoch ms the load was started. */
  loadedAt: number;
}

/** Everything the rule looks at. */
export interface OnDemandInput {
  /** Only the leader loads and unloads. */
  leader: boolean;
  /** Epoch ms. */
  now: number;
  /** The router's queues (cluster/demand.ts). */
  demands: readonly ModelDemand[];
  pods: readonly OnDemandPod[];
  /** models.yaml in force, or undefined without one. */
  config: DesiredConfig | undefined;
  /** Copies loaded on demand so far. */
  copies: readonly OnDemandCopy[];
  /** Observed load time per model, ms. */
  loadMs: ReadonlyMap<string, number>;
  /** Load time of a model not observed yet, ms. */
  defaultLoadMs: number;
  /** Answer time of a model the scheduler has not timed yet, ms. */
  defaultAnswerMs: number;
  /** Models a board may hold at once; 0: no limit. */
  maxLoaded: number;
  /** Idle time after which a copy loaded on demand goes. */
  idleMs: number;
  /** Least time a copy loaded on demand stays. */
  residencyMs: number;
}

/**
 * The loads and unloads that copies on demand call for now, loads first (the most
 * urgent model's first), at most one action per pod.
 *
 * @example
 * ```ts
 * const actions = extraCopies({ leader: true, now: Date.now(), demands, pods, ... });
 * applier.submit(actions);
 * ```
 */
export function extraCopies(input: OnDemandInput): Action[] {
  if (!input.leader) return [];
  const pods = [...input.pods].sort((a, b) => byText(a.name, b.name));
  const placements = new Map((input.config?.models ?? []).map((model) => [model.name, model]));
  const demands = new Map(input.demands.map((demand) => [demand.model, demand]));
  const used = new Set<string>();
  return [
    ...loads(input, pods, placements, demands, used),
    ...idleReturns(input, pods, placements, demands, used),
  ];
}

function loads(
  input: OnDemandInput,
  pods: readonly OnDemandPod[],
  placements: ReadonlyMap<string, ModelPlacement>,
  demands: ReadonlyMap<string, ModelDemand>,
  used: Set<string>,
): Action[] {
  const held = new Map(
    pods.map((pod) => [pod.name, new Set([...pod.loaded, ...pod.loading]).size]),
  );
  const urgent = input.demands
    .filter((demand) => demand.waiting > 0 && placements.get(demand.model)?.nodes === undefined)
    .map((demand) => ({
      demand,
      answerMs: demand.answerMs ?? input.defaultAnswerMs,
      loadMs: input.loadMs.get(demand.model) ?? input.defaultLoadMs,
      have: pods.filter((pod) => hasCopy(pod, demand.model)).length,
    }))
    .map((entry) => ({
      ...entry,
      drainMs: drainMs(entry.demand.waiting, entry.answerMs, entry.have),
    }))
    .sort((a, b) => b.drainMs - a.drainMs || byText(a.demand.model, b.demand.model));
  const actions: Action[] = [];
  for (const { demand, answerMs, loadMs, have } of urgent) {
    const model = demand.model;
    const placement = placements.get(model);
    const most = placement?.maxReplicas ?? Infinity;
    const priority = placement?.priority ?? -Infinity;
    let copies = have;
    const candidates = pods
      .filter((pod) =>
        !used.has(pod.name) && pod.routable && pod.inflight === 0 && pod.loading.size === 0 &&
        pod.onDisk.has(model) && !pod.loaded.has(model)
      )
      .sort((a, b) => held.get(a.name)! - held.get(b.name)! || byText(a.name, b.name));
    for (const pod of candidates) {
      const waitMs = drainMs(demand.waiting, answerMs, copies);
      if (copies >= most || waitMs <= loadMs) break;
      const reason = `${model}: ${demand.waiting} waiting would take ${
        seconds(waitMs)
      } on ${copies} ${copies === 1 ? "copy" : "copies"}, a load ${seconds(loadMs)}`;
      if (input.maxLoaded > 0 && held.get(pod.name)! >= input.maxLoaded) {
        const victim = evictable(input, pod, pods, placements, demands);
        if (victim === undefined) continue;
        used.add(pod.name);
        actions.push({
          kind: "unload",
          pod: pod.name,
          node: pod.node,
          model: victim,
          reason:
            `${pod.name} holds ${input.maxLoaded} models; ${victim} is its least recently used copy nobody needs, and ${reason}`,
          priority: placements.get(victim)?.priority ?? -Infinity,
        });
        // The load follows once the board has room (the next run), so it counts now:
        // another board would only be one copy too many.
        copies++;
        continue;
      }
      used.add(pod.name);
      held.set(pod.name, held.get(pod.name)! + 1);
      actions.push({ kind: "load", pod: pod.name, node: pod.node, model, reason, priority });
      copies++;
    }
  }
  return actions;
}

/** The least recently used copy on a full board that nobody needs, or undefined. */
function evictable(
  input: OnDemandInput,
  pod: OnDemandPod,
  pods: readonly OnDemandPod[],
  placements: ReadonlyMap<string, ModelPlacement>,
  demands: ReadonlyMap<string, ModelDemand>,
): string | undefined {
  const young = new Set(
    input.copies
      .filter((copy) => copy.pod === pod.name && input.now - copy.loadedAt < input.residencyMs)
      .map((copy) => copy.model),
  );
  const needed = (model: string): boolean => {
    const demand = demands.get(model);
    if (demand && (demand.waiting > 0 || demand.serving > 0)) return true;
    if (young.has(model)) return true;
    const placement = placements.get(model);
    if (placement?.nodes !== undefined) return placement.nodes.includes(pod.node);
    if (placement?.replicas !== undefined) {
      const others = pods.filter((other) => other !== pod && hasCopy(other, model)).length;
      return others < placement.replicas;
    }
    return false;
  };
  return [...pod.loaded]
    .filter((model) => !pod.loading.has(model) && !needed(model))
    .sort((a, b) => (pod.lastUsed.get(a) ?? 0) - (pod.lastUsed.get(b) ?? 0) || byText(a, b))[0];
}

function idleReturns(
  input: OnDemandInput,
  pods: readonly OnDemandPod[],
  placements: ReadonlyMap<string, ModelPlacement>,
  demands: ReadonlyMap<string, ModelDemand>,
  used: Set<string>,
): Action[] {
  const byName = new Map(pods.map((pod) => [pod.name, pod]));
  const left = new Map<string, number>();
  const copiesOf = (model: string) =>
    left.get(model) ?? pods.filter((pod) => pod.routable && pod.loaded.has(model)).length;
  const actions: Action[] = [];
  const sorted = [...input.copies].sort((a, b) => a.loadedAt - b.loadedAt || byText(a.pod, b.pod));
  for (const copy of sorted) {
    const pod = byName.get(copy.pod);
    if (!pod || used.has(pod.name) || !pod.routable || pod.inflight > 0) continue;
    if (!pod.loaded.has(copy.model) || pod.loading.has(copy.model)) continue;
    if (input.now - copy.loadedAt < input.residencyMs) continue;
    const lastUsed = Math.max(copy.loadedAt, pod.lastUsed.get(copy.model) ?? 0);
    if (input.now - lastUsed < input.idleMs) continue;
    const demand = demands.get(copy.model);
    if (demand && (demand.waiting > 0 || demand.serving > 0)) continue;
    const placement = placements.get(copy.model);
    const floor = placement === undefined ? 1 : placement.replicas ?? Infinity;
    const copies = copiesOf(copy.model);
    if (copies - 1 < floor) continue;
    left.set(copy.model, copies - 1);
    used.add(pod.name);
    actions.push({
      kind: "unload",
      pod: pod.name,
      node: pod.node,
      model: copy.model,
      reason: `${copy.model} was loaded on demand and has had no request for ${
        seconds(input.now - lastUsed)
      }`,
      priority: placement?.priority ?? -Infinity,
    });
  }
  return actions;
}

/** A copy that serves or soon will: loaded on a routable pod, or loading. */
function hasCopy(pod: OnDemandPod, model: string): boolean {
  return pod.loading.has(model) || (pod.routable && pod.loaded.has(model));
}

/** How long `waiting` requests take to drain over `copies` (a coming cold load counts as one). */
function drainMs(waiting: number, answerMs: number, copies: number): number {
  return (waiting * answerMs) / Math.max(1, copies);
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** Code-point order: the same on every machine, unlike `localeCompare`. */
function byText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
