/**
 * @module
 * The status page's picture of the cluster, as plain data: pods, models (desired
 * against loaded, with request rates), and the reconciler. A pure function of the
 * store's records, the placement view and the per-model counters, so what the page
 * shows is tested without a browser, and `/router/events` sends exactly this.
 */

import type { ModelDemand } from "../cluster/demand.ts";
import { type DiscoveryStatus, type PodRecord, podState } from "../cluster/store.ts";
import type { PlacementView } from "../placement/placement.ts";
import type { ModelStats } from "./model_activity.ts";

/** One pod as the page shows it. */
export interface PodView {
  name: string;
  node: string;
  url: string;
  /** `routable`, `loading` (an explicit action), `ejected`, `unreachable`, `unready` or `pending`. */
  state: string;
  /** What the pod is busy with (an explicit load or unload), or "". */
  busy: string;
  /** Requests in flight on it. */
  inflight: number;
  /** Generation slots this router holds on it. */
  slotsBusy: number;
  loaded: string[];
  /** Loads in progress, with the epoch ms each started. */
  loading: { model: string; since: number }[];
  onDisk: string[];
  /** Why it was ejected, while it is. */
  ejectedReason: string | null;
  ejectedUntil: number | null;
  /** Why its last poll failed, or null. */
  lastError: string | null;
}

/** One model as the page shows it. */
export interface ModelView {
  name: string;
  /** What the config asks, in words (`2 replicas`, `nodes a, b`), or null when it is not in the config. */
  want: string | null;
  /** Copies wanted, when the config says (replicas, or one per pinned node's pod). */
  wanted: number | null;
  priority: number | null;
  /**
   * Where it is loaded; `counts` is false for a copy on a pod that is unready or
   * unreachable, which serves nobody (the reconciler does not count it either).
   */
  loadedOn: { pod: string; node: string; state: string; counts: boolean }[];
  /** Copies that count: loaded on pods that are ready and answer polls. */
  copies: number;
  /** Where it is loading, with the epoch ms each load started. */
  loadingOn: { pod: string; since: number }[];
  /** Pods that have it on disk. */
  onDiskOn: string[];
  requestsPerMinute: number;
  /** In whole ms. */
  p95TtfbMs: number | null;
  /** Requests waiting in the router's queue for a free slot. */
  waiting: number;
  /** How long the oldest of them has waited, whole ms (0 when none waits). */
  oldestWaitMs: number;
  /** Its requests holding a slot on a pod now. */
  serving: number;
  /** Why the plan cannot give it what the config asks. */
  problems: string[];
}

/** One load or unload, planned, running or done. */
export interface ActionView {
  kind: "load" | "unload";
  model: string;
  pod: string;
  node: string;
  reason: string;
  /** For done actions: `done`, `failed`, `refused` or `postponed`. */
  outcome?: string;
  message?: string;
  /** Epoch ms it ended, for done actions. */
  at?: number;
  durationMs?: number;
}

/** The reconciler as the page shows it. */
export interface ReconcilerView {
  source: string;
  valid: boolean;
  /** The newest document's error, with its YAML line, or null. */
  error: string | null;
  leader: boolean;
  identity: string;
  /** Who holds the Lease ("" when nobody does yet). */
  holder: string;
  leaderError: string | null;
  /**
   * Epoch ms since which the plan has been what it is, or null before any. The
   * reconciler remakes it on every poll round, and a push for that alone would
   * only redraw the page.
   */
  planChangedAt: number | null;
  /** Planned actions not running yet (waiting for their pod, a retry delay, or the leader). */
  pending: ActionView[];
  running: ActionView[];
  /** The last results, newest first. */
  recent: ActionView[];
}

/** A copy loaded on demand, as the page shows it. */
export interface OnDemandCopyView {
  model: string;
  pod: string;
  /** Epoch ms its load started. */
  loadedAt: number;
}

/** Everything the status page shows. */
export interface StatusSnapshot {
  /** `ok`, `degraded` (no pod can take requests) or `no_pods`. */
  status: string;
  discovery: { mode: string; source: string; connected: boolean; error: string | null };
  pods: PodView[];
  models: ModelView[];
  /** Null when there is no placement config to follow. */
  reconciler: ReconcilerView | null;
  /** Copies loaded on demand for long queues (loaded or loading), oldest first. */
  onDemand: OnDemandCopyView[];
  /** Whether a state-changing action on the page needs the admin token. */
  adminTokenRequired: boolean;
}

/** What {@linkcode statusSnapshot} is built from. */
export interface SnapshotInput {
  /** In name order. */
  pods: readonly PodRecord[];
  discovery: DiscoveryStatus;
  placement: PlacementView | undefined;
  /** Copies loaded on demand; none when not given. */
  onDemand?: readonly OnDemandCopyView[];
  stats: (model: string) => ModelStats;
  adminTokenRequired: boolean;
  now: number;
  /** The scheduler's queue per model (models with requests waiting or served). */
  queues?: readonly ModelDemand[];
  /** Generation slots this router holds on a pod. */
  slotsBusy?: (pod: string) => number;
}

/** Recent results shown; the applier keeps more (see `/router/plan`). */
const RECENT_SHOWN = 20;

/**
 * Builds the status page's data from the store's pods, the placement view and
 * the per-model counters, as of `now`.
 */
export function statusSnapshot(input: SnapshotInput): StatusSnapshot {
  const { pods, placement, now } = input;
  // rk-2 before rk-10.
  const podViews = pods.map((pod) => podView(pod, now, input.slotsBusy?.(pod.name) ?? 0))
    .sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true }));
  const routable = podViews.filter((pod) => pod.state === "routable").length;
  return {
    status: pods.length === 0 ? "no_pods" : routable === 0 ? "degraded" : "ok",
    discovery: {
      mode: input.discovery.mode,
      source: input.discovery.source,
      connected: input.discovery.connected,
      error: input.discovery.error || null,
    },
    pods: podViews,
    models: modelViews(pods, placement, input.stats, now, input.queues ?? []),
    reconciler: placement ? reconcilerView(placement) : null,
    onDemand: (input.onDemand ?? []).map(({ model, pod, loadedAt }) => ({ model, pod, loadedAt })),
    adminTokenRequired: input.adminTokenRequired,
  };
}

function podView(pod: PodRecord, now: number, slotsBusy: number): PodView {
  const ejected = pod.runtime.ejectedUntil > now;
  return {
    name: pod.name,
    node: pod.node,
    url: pod.url,
    state: podState(pod, now),
    busy: pod.busy,
    inflight: pod.runtime.inflight,
    slotsBusy,
    loaded: [...pod.loaded.keys()].sort(),
    loading: [...pod.loading].map(([model, since]) => ({ model, since }))
      .sort((a, b) => a.model.localeCompare(b.model)),
    onDisk: [...new Set([...pod.onDisk.keys(), ...pod.otherModels])].sort(),
    ejectedReason: ejected ? pod.runtime.ejectedReason : null,
    ejectedUntil: ejected ? pod.runtime.ejectedUntil : null,
    lastError: pod.lastPollError || null,
  };
}

/** Configured models first (by priority, as the plan orders them), then the others by name. */
function modelViews(
  pods: readonly PodRecord[],
  placement: PlacementView | undefined,
  stats: (model: string) => ModelStats,
  now: number,
  queues: readonly ModelDemand[],
): ModelView[] {
  const queueOf = new Map(queues.map((queue) => [queue.model, queue]));
  const configured = new Map(placement?.config.models.map((model) => [model.name, model]));
  const planned = new Map(placement?.plan.models.map((model) => [model.name, model]));
  const names = [
    ...(placement?.plan.models.map((model) => model.name) ?? []),
    ...[...configured.keys()].filter((name) => !planned.has(name)),
  ];
  const seen = new Set(names);
  const others = new Set<string>();
  for (const pod of pods) {
    for (const name of [...pod.onDisk.keys(), ...pod.otherModels, ...pod.loaded.keys()]) {
      if (!seen.has(name)) others.add(name);
    }
  }
  names.push(...[...others].sort());
  return names.map((name) => {
    const placementOf = configured.get(name);
    const activity = stats(name);
    const loadedOn = pods.filter((pod) => pod.loaded.has(name))
      .sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true }))
      .map((pod) => ({
        pod: pod.name,
        node: pod.node,
        state: podState(pod, now),
        // As placement/reconciler.ts counts copies for the plan.
        counts: pod.ready && pod.reachable,
      }));
    return {
      name,
      want: placementOf ? wantText(placementOf.replicas, placementOf.nodes) : null,
      wanted: placementOf ? wantedCount(placementOf.replicas, placementOf.nodes, pods) : null,
      priority: placementOf?.priority ?? null,
      loadedOn,
      copies: loadedOn.filter((copy) => copy.counts).length,
      loadingOn: pods.filter((pod) => pod.loading.has(name))
        .map((pod) => ({ pod: pod.name, since: pod.loading.get(name)! })),
      onDiskOn: pods.filter((pod) => pod.onDisk.has(name) || pod.otherModels.has(name))
        .map((pod) => pod.name),
      requestsPerMinute: activity.requestsPerMinute,
      p95TtfbMs: activity.p95TtfbMs === null ? null : Math.round(activity.p95TtfbMs),
      waiting: queueOf.get(name)?.waiting ?? 0,
      oldestWaitMs: Math.round(queueOf.get(name)?.oldestWaitMs ?? 0),
      serving: queueOf.get(name)?.serving ?? 0,
      problems: planned.get(name)?.problems ?? [],
    };
  });
}

function wantText(replicas: number | undefined, nodes: string[] | undefined): string {
  if (nodes !== undefined) return `nodes ${nodes.join(", ")}`;
  if (replicas !== undefined) return `${replicas} ${replicas === 1 ? "replica" : "replicas"}`;
  return "not placed";
}

function wantedCount(
  replicas: number | undefined,
  nodes: string[] | undefined,
  pods: readonly PodRecord[],
): number | null {
  if (nodes !== undefined) {
    // One copy per pod on each pinned node; a node with no pod yet still wants one.
    return nodes.reduce(
      (sum, node) => sum + Math.max(1, pods.filter((pod) => pod.node === node).length),
      0,
    );
  }
  return replicas ?? null;
}

function reconcilerView(view: PlacementView): ReconcilerView {
  const running = new Set(view.running.map(actionKey));
  return {
    source: view.config.source,
    valid: view.config.valid,
    error: view.config.error,
    leader: view.leader.leader,
    identity: view.leader.identity,
    holder: view.leader.holder,
    leaderError: view.leader.error || null,
    planChangedAt: view.plan.changedAt === null ? null : Date.parse(view.plan.changedAt),
    pending: view.plan.actions.filter((action) => !running.has(actionKey(action)))
      .map(actionView),
    running: view.running.map(actionView),
    recent: view.recent.slice(0, RECENT_SHOWN).map((result) => ({
      ...actionView(result.action),
      outcome: result.outcome,
      message: result.message,
      at: Date.parse(result.at),
      durationMs: result.durationMs,
    })),
  };
}

function actionView(
  action: { kind: "load" | "unload"; model: string; pod: string; node: string; reason: string },
): ActionView {
  return {
    kind: action.kind,
    model: action.model,
    pod: action.pod,
    node: action.node,
    reason: action.reason,
  };
}

function actionKey(action: { kind: string; pod: string; model: string }): string {
  return `${action.kind}\u0000${action.pod}\u0000${action.model}`;
}
