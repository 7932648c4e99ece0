/**
 * @module
 * The placement rule: given what `models.yaml` asks for and what the pods hold,
 * which models to load and unload where. A pure function over plain data, so every
 * rule is a row in a table test; running the actions is `apply`'s job.
 *
 * Rules, models taken by priority (highest first, then by name):
 * - copies stay where they are; a copy still loading counts, and never gets a twin;
 * - `replicas: N` loads missing copies on the routable pods with the model on disk
 *   that will hold the fewest models (then fewest requests in flight, then name), and
 *   unloads surplus copies from the pods holding the most; copies loaded on demand
 *   (on_demand.ts) are no surplus up to `maxReplicas`: they return when idle;
 * - a pod holding `maxLoaded` models gets no load;
 * - `nodes: [...]` loads on every pod of those nodes and unloads everywhere else;
 * - models not in the config are left alone, or unloaded with `unloadUnmanaged`
 *   (but for copies loaded on demand);
 * - only routable pods get actions, and a copy still loading is never unloaded.
 */

import type { DesiredConfig, ModelPlacement } from "../config/models.ts";

/** What the plan needs to know about one pod. */
export interface PlanPod {
  /** Pod name. */
  name: string;
  /** The node (board) it runs on; `nodes:` placements match this. */
  node: string;
  /** Can take requests now. */
  routable: boolean;
  /** Models it can load (`/api/tags`). */
  onDisk: ReadonlySet<string>;
  /** Models in its NPU memory (`/api/ps`). */
  loaded: ReadonlySet<string>;
  /** Loads in progress, whoever started them. */
  loading: ReadonlySet<string>;
  /** Requests in flight on the pod. */
  inflight: number;
}

/** One load or unload of one model on one pod. */
export interface Action {
  /** Load the model on the pod, or unload it. */
  kind: "load" | "unload";
  /** The pod to act on. */
  pod: string;
  /** Its node, for the log. */
  node: string;
  /** The model's name as the pod knows it. */
  model: string;
  /** Why, in words, for the log. */
  reason: string;
  /** The model's priority; `-Infinity` for models not in the config, which come last. */
  priority: number;
}

/** How one configured model stands, as found before the actions. */
export interface ModelStatus {
  /** The model, as named in the config. */
  name: string;
  /** The replica count, or the nodes it is pinned to. */
  want: number | string[];
  /** Pods with it loaded, by name. */
  loadedOn: string[];
  /** Pods loading it, by name. */
  loadingOn: string[];
  /** Why the plan cannot give it what it wants, one sentence each. */
  problems: string[];
}

/** What to do, and how each configured model stands. */
export interface Plan {
  /** In priority order: a higher-priority model's actions first, loads before unloads. */
  actions: Action[];
  /** Configured models, in the same order. */
  models: ModelStatus[];
  /** Every model's problems in one list, for the log. */
  warnings: string[];
}

/** Choices the config does not make. */
export interface PlanOptions {
  /** Unload models that are not in the config (default: leave them alone). */
  unloadUnmanaged?: boolean;
  /** Models a pod may hold at once (`--max-loaded`); 0 or undefined: no limit. */
  maxLoaded?: number;
  /** Copies loaded on demand, which are not surplus up to `maxReplicas`. */
  onDemand?: readonly { pod: string; model: string }[];
}

/**
 * Compares desired placements with what the pods hold and returns the actions
 * that close the gap, in the order to run them.
 *
 * A copy counts toward what a model has when its pod is routable, or busy loading
 * something: an FA pod stops answering during an explicit load, and re-placing its
 * models elsewhere meanwhile would only cost more loads and, later, unloads. A copy
 * on any other unroutable pod serves nobody, so it does not count.
 *
 * @example
 * ```ts
 * const { actions, warnings } = plan(config, pods, { unloadUnmanaged: false });
 * ```
 */
export function plan(
  desired: DesiredConfig,
  pods: readonly PlanPod[],
  options: PlanOptions = {},
): Plan {
  const sorted = [...pods].sort((a, b) => byText(a.name, b.name));
  const held = new Holdings(sorted, options.maxLoaded ?? 0);
  const onDemand = new Set((options.onDemand ?? []).map((copy) => copyKey(copy.pod, copy.model)));
  const managed = new Set(desired.models.map((model) => model.name));
  const unmanaged = options.unloadUnmanaged ? unloadUnmanaged(sorted, managed, held, onDemand) : [];
  const ordered = [...desired.models].sort((a, b) =>
    b.priority - a.priority || byText(a.name, b.name)
  );
  const actions: Action[] = [];
  const models: ModelStatus[] = [];
  for (const model of ordered) {
    const result = model.nodes !== undefined
      ? pinned(model, model.nodes, sorted, held)
      : model.replicas !== undefined
      ? replicated(model, model.replicas, sorted, held, onDemand)
      : unplaced(model, sorted);
    actions.push(...result.actions);
    models.push({
      name: model.name,
      want: result.want,
      loadedOn: sorted.filter((pod) => pod.loaded.has(model.name)).map((pod) => pod.name),
      loadingOn: sorted.filter((pod) => pod.loading.has(model.name)).map((pod) => pod.name),
      problems: result.problems,
    });
  }
  return {
    actions: [...actions, ...unmanaged],
    models,
    warnings: models.flatMap((model) => model.problems),
  };
}

interface ModelPlan {
  want: number | string[];
  actions: Action[];
  problems: string[];
}

/**
 * How many models each pod will hold once the actions planned so far have run, so
 * two models competing for the same pods spread out.
 */
function actionFor(
  kind: Action["kind"],
  pod: PlanPod,
  model: string,
  reason: string,
  priority: number,
): Action {
  return { kind, pod: pod.name, node: pod.node, model, reason, priority };
}

class Holdings {
  readonly #count = new Map<string, number>();
  readonly #maxLoaded: number;

  constructor(pods: readonly PlanPod[], maxLoaded: number) {
    this.#maxLoaded = maxLoaded;
    for (const pod of pods) {
      this.#count.set(pod.name, new Set([...pod.loaded, ...pod.loading]).size);
    }
  }

  of(pod: PlanPod): number {
    return this.#count.get(pod.name) ?? 0;
  }

  /** The pod holds `--max-loaded` models: RKLlama would refuse one more. */
  full(pod: PlanPod): boolean {
    return this.#maxLoaded > 0 && this.of(pod) >= this.#maxLoaded;
  }

  get maxLoaded(): number {
    return this.#maxLoaded;
  }

  record(action: Action): Action {
    const change = action.kind === "load" ? 1 : -1;
    this.#count.set(action.pod, (this.#count.get(action.pod) ?? 0) + change);
    return action;
  }
}

/** Copies that count: see {@linkcode plan} for why a busy pod's copies do. */
function counts(pod: PlanPod, model: string): boolean {
  return (pod.loaded.has(model) || pod.loading.has(model)) &&
    (pod.routable || pod.loading.size > 0);
}

/** A copy that can be unloaded now: loaded, not still loading, on a pod that takes requests. */
function unloadable(pod: PlanPod, model: string): boolean {
  return pod.routable && pod.loaded.has(model) && !pod.loading.has(model);
}

function replicated(
  model: ModelPlacement,
  want: number,
  pods: readonly PlanPod[],
  held: Holdings,
  onDemand: ReadonlySet<string>,
): ModelPlan {
  const name = model.name;
  const have = pods.filter((pod) => counts(pod, name)).length;
  const reason = `${name} wants ${replicasText(want)} and has ${have}`;
  const act = (kind: Action["kind"], pod: PlanPod) =>
    held.record(actionFor(kind, pod, name, reason, model.priority));
  const actions: Action[] = [];
  const problems: string[] = [];
  if (have < want) {
    const free = pods.filter((pod) =>
      pod.routable && pod.onDisk.has(name) && !pod.loaded.has(name) && !pod.loading.has(name)
    );
    const candidates = free
      .filter((pod) => !held.full(pod))
      .sort((a, b) => held.of(a) - held.of(b) || a.inflight - b.inflight || byText(a.name, b.name));
    const chosen = candidates.slice(0, want - have);
    actions.push(...chosen.map((pod) => act("load", pod)));
    if (have + chosen.length < want) {
      const full = free.filter((pod) => !chosen.includes(pod) && held.full(pod))
        .map((pod) => pod.name);
      problems.push(
        full.length === 0
          ? shortfall(name, want, have + chosen.length, pods)
          : `${name} wants ${replicasText(want)} and has ${have + chosen.length}; ${
            full.join(", ")
          } ${full.length === 1 ? "has" : "have"} it on disk but ${
            full.length === 1 ? "holds" : "hold"
          } ${held.maxLoaded} models already (--max-loaded)`,
      );
    }
  } else if (have > want) {
    // The surplus comes out of ready copies only, and only while `want` of them stay:
    // a copy still loading may yet fail. Unload from the pods that will hold the most
    // models; then from the one with the fewest requests in flight, since apply
    // drains a pod before it acts on it; then by name from the end, the mirror of
    // loads, so copies settle on the same pods from one plan to the next.
    // Copies loaded on demand are no surplus up to maxReplicas (they go when idle);
    // beyond it, they are the surplus before the others.
    const ready = pods.filter((pod) => unloadable(pod, name));
    const isExtra = (pod: PlanPod) => onDemand.has(copyKey(pod.name, name));
    const extra = ready.filter(isExtra);
    const kept = Math.min(extra.length, Math.max(0, (model.maxReplicas ?? Infinity) - want));
    const surplus = Math.max(0, ready.length - want - kept);
    const order = (list: PlanPod[]) =>
      list.sort((a, b) =>
        held.of(b) - held.of(a) || a.inflight - b.inflight || byText(b.name, a.name)
      );
    const fromExtra = order(extra).slice(0, Math.min(surplus, extra.length - kept));
    const chosen = [
      ...fromExtra,
      ...order(ready.filter((pod) => !isExtra(pod))).slice(0, surplus - fromExtra.length),
    ];
    actions.push(...chosen.map((pod) => act("unload", pod)));
  }
  return { want, actions, problems };
}

function shortfall(name: string, want: number, placed: number, pods: readonly PlanPod[]): string {
  if (!pods.some((pod) => pod.onDisk.has(name) || pod.loaded.has(name))) {
    return `${name} wants ${
      replicasText(want)
    }; no pod has it on disk, so check the name against the pods' /api/tags`;
  }
  const head = placed === 0
    ? `${name} wants ${replicasText(want)}; no routable pod has it on disk`
    : `${name} wants ${replicasText(want)}; only ${placed} routable ${
      placed === 1 ? "pod has" : "pods have"
    } it on disk`;
  const idle = pods
    .filter((pod) => !pod.routable && pod.onDisk.has(name) && !counts(pod, name))
    .map((pod) => pod.name);
  if (idle.length === 0) return head;
  return `${head} (${idle.join(", ")} ${idle.length === 1 ? "has" : "have"} it too but ${
    idle.length === 1 ? "is" : "are"
  } not routable)`;
}

function pinned(
  model: ModelPlacement,
  nodes: readonly string[],
  pods: readonly PlanPod[],
  held: Holdings,
): ModelPlan {
  const name = model.name;
  const act = (kind: Action["kind"], pod: PlanPod, reason: string) =>
    held.record(actionFor(kind, pod, name, reason, model.priority));
  const actions: Action[] = [];
  const problems: string[] = [];
  for (const node of nodes) {
    // Every pod on a pinned node gets a copy: the operator named the board, not a
    // pod, and a second pod there (a surge during a rollout) would otherwise serve
    // the model cold.
    const onNode = pods.filter((pod) => pod.node === node);
    if (onNode.length === 0) {
      problems.push(`${name} is pinned to node ${node}, which has no RKLlama pod`);
    }
    for (const pod of onNode) {
      if (pod.loaded.has(name) || pod.loading.has(name)) continue;
      if (!pod.routable) {
        problems.push(
          `${name} is pinned to node ${node}, but pod ${pod.name} there is not routable; it loads when the pod is`,
        );
      } else if (!pod.onDisk.has(name)) {
        problems.push(
          `${name} is pinned to node ${node}, but pod ${pod.name} there does not have it on disk`,
        );
      } else if (held.full(pod)) {
        problems.push(
          `${name} is pinned to node ${node}, but pod ${pod.name} there holds ${held.maxLoaded} models already (--max-loaded)`,
        );
      } else {
        actions.push(act("load", pod, `${name} is pinned to node ${node}`));
      }
    }
  }
  const wanted = new Set(nodes);
  for (const pod of pods) {
    if (wanted.has(pod.node) || !unloadable(pod, name)) continue;
    actions.push(
      act("unload", pod, `${name} is pinned to ${nodes.join(", ")}, not to node ${pod.node}`),
    );
  }
  return { want: [...nodes], actions, problems };
}

/** A placement with neither replicas nor nodes (the parser refuses those): left as it is. */
function unplaced(model: ModelPlacement, pods: readonly PlanPod[]): ModelPlan {
  return {
    want: pods.filter((pod) => counts(pod, model.name)).length,
    actions: [],
    problems: [`${model.name} sets neither replicas nor nodes; it is left where it is`],
  };
}

function unloadUnmanaged(
  pods: readonly PlanPod[],
  managed: ReadonlySet<string>,
  held: Holdings,
  onDemand: ReadonlySet<string>,
): Action[] {
  const byModel = (a: Action, b: Action) => byText(a.model, b.model) || byText(a.pod, b.pod);
  return pods.flatMap((pod) =>
    [...pod.loaded]
      .filter((model) =>
        !managed.has(model) && unloadable(pod, model) && !onDemand.has(copyKey(pod.name, model))
      )
      .map((model) =>
        held.record(
          actionFor(
            "unload",
            pod,
            model,
            `${model} is not in models.yaml and unmanaged models are unloaded`,
            -Infinity,
          ),
        )
      )
  ).sort(byModel);
}

function copyKey(pod: string, model: string): string {
  return `${pod}\u0000${model}`;
}

function replicasText(count: number): string {
  return count === 1 ? "1 replica" : `${count} replicas`;
}

/** Code-point order: the same on every machine, unlike `localeCompare`. */
function byText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
