/**
 * @module
 * Wiring of model placement: the config source (ConfigMap or models file), the
 * leader election (Kubernetes only; a static router is alone and always leads),
 * the applier and the reconcile loop, plus the operator's view of all of it.
 */

import { computed, effect, type ReadonlySignal, signal } from "@preact/signals-core";
import type { RouterConfig } from "../config/flags.ts";
import type { KubeConnection } from "../kube/kubernetes.ts";
import type { PlacementGauges } from "../obs/metrics.ts";
import type { Store } from "../cluster/store.ts";
import { type ConfigResult, type ModelPlacement, parseModelsConfig } from "../config/models.ts";
import { type ActionResult, Applier } from "./apply.ts";
import type { Action, Plan } from "./plan.ts";
import { Reconciler } from "./reconciler.ts";
import type { LeaderElector } from "../kube/leader.ts";
import type { ConfigMapSource } from "./sources.ts";
import { type ConfigText, ModelsFileSource } from "./models_file.ts";

/** What placement needs from the router. */
export interface PlacementOptions {
  store: Store;
  config: RouterConfig;
  repoll: (pod: string) => Promise<void>;
  /** The API connection in Kubernetes mode; undefined in static mode. */
  connection?: KubeConnection;
  /** Told of every load or unload result (for metrics). */
  onActionResult?: (result: ActionResult) => void;
  /** Copies loaded on demand (on_demand_controller.ts), which the plan keeps up to maxReplicas. */
  onDemandCopies?: () => readonly { pod: string; model: string }[];
}

/** The operator's view of placement, as `/router/plan` shows it. */
export type PlacementView = {
  config: { source: string; valid: boolean; error: string | null; models: ModelPlacement[] };
  leader: { identity: string; holder: string; leader: boolean; error: string };
  plan: { at: string | null; changedAt: string | null } & Plan;
  /** Actions in progress, one per pod. */
  running: readonly Action[];
  /** The last results, newest first, with `at` as an ISO time. */
  recent: (Omit<ActionResult, "at"> & { at: string })[];
};

/** Running placement. */
export interface Placement {
  reconciler: Reconciler;
  applier: Applier;
  /** The operator's view for `/router/plan` and `/router/status`. */
  view(): PlacementView;
  /**
   * Changes whenever {@linkcode Placement.view} may have (config, plan, actions,
   * leadership), for whoever shows it live; the Lease holder's name is only polled.
   */
  changes: ReadonlySignal<unknown>;
  /** What the metrics scrape reads. */
  gauges(): PlacementGauges;
  /** The leading replica's URL when another replica leads, else undefined. */
  leaderUrl(): string | undefined;
  /** Whether this replica may act, as a signal (always true in static mode). */
  leading: ReadonlySignal<boolean>;
  /** Reads the models file again now (the ConfigMap is watched and needs no help). */
  reread(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts placement, or returns undefined in static mode without `--models-file`
 * (nothing to place).
 */
export async function startPlacement(options: PlacementOptions): Promise<Placement | undefined> {
  const { store, config, connection } = options;
  if (!connection && config.modelsFile === "") return undefined;
  const identity = config.identity || `rkllama-router-${crypto.randomUUID().slice(0, 8)}`;
  // The Kubernetes client is loaded only with a connection: static mode never needs it.
  const kube = connection
    ? await Promise.all([import("../kube/leader.ts"), import("./sources.ts")])
    : undefined;
  const elector: LeaderElector | undefined = connection && kube
    ? new kube[0].LeaderElector(connection, {
      namespace: config.namespace,
      name: config.leaseName,
      identity,
      advertiseUrl: config.advertiseUrl,
    })
    : undefined;
  const applier = new Applier({
    store,
    repoll: options.repoll,
    loadTimeoutMs: config.loadTimeoutMs,
    onResult: options.onActionResult,
  });
  const take = (text: ConfigText) => {
    const nodes = store.nodeNames.peek();
    const result: ConfigResult = "text" in text
      ? parseModelsConfig(text.text, nodes, text.key)
      : { ok: false, error: text.missing };
    reconciler.setConfig(result, text.source, "text" in text);
  };
  // The source only calls `take` once started, after the reconciler exists.
  const source: ConfigMapSource | ModelsFileSource = connection && kube
    ? new kube[1].ConfigMapSource(connection, config.namespace, config.configMap, take)
    : new ModelsFileSource(config.modelsFile, take);
  const reconciler = new Reconciler({
    store,
    applier,
    isLeader: () => elector?.isLeader() ?? true,
    unloadUnmanaged: config.unloadUnmanaged,
    maxLoaded: config.maxLoaded,
    onDemandCopies: options.onDemandCopies,
    syncIntervalMs: config.syncIntervalMs,
    onInvalid: (error) => {
      if (!(source instanceof ModelsFileSource)) void source.reportInvalid(error);
    },
  });
  await source.start();
  elector?.start();
  reconciler.start();
  // A new leader acts at once instead of waiting for the next change or sync.
  const disposeLeading = elector
    ? effect(() => {
      if (elector.leading.value) reconciler.reconcile();
    })
    : undefined;
  // The models file has no watch events when its directory cannot be watched.
  const resync = source instanceof ModelsFileSource
    ? setInterval(() => void source.read(), config.syncIntervalMs)
    : undefined;

  const leading = elector?.leading ?? signal(true);
  return {
    reconciler,
    applier,
    leading,
    changes: computed(() => [
      reconciler.statusSignal.value,
      reconciler.lastPlanSignal.value,
      applier.changes.value,
      leading.value,
    ]),
    leaderUrl: () => elector?.leaderUrl || undefined,
    gauges() {
      const status = reconciler.status;
      const desired = new Map<string, number>();
      for (const model of status.config?.models ?? []) {
        desired.set(model.name, model.replicas ?? model.nodes?.length ?? 0);
      }
      return {
        configValid: status.error === "" && status.config !== undefined,
        leader: elector?.isLeader() ?? true,
        desired,
      };
    },
    view() {
      const status = reconciler.status;
      const { plan, at, changedAt } = reconciler.lastPlan;
      return {
        config: {
          source: status.source,
          valid: status.error === "",
          error: status.error || null,
          models: status.config?.models ?? [],
        },
        leader: elector ? elector.status : { identity, holder: identity, leader: true, error: "" },
        plan: {
          at: at > 0 ? new Date(at).toISOString() : null,
          changedAt: changedAt > 0 ? new Date(changedAt).toISOString() : null,
          ...plan,
        },
        running: applier.running,
        recent: applier.recent.map((result) => ({
          ...result,
          at: new Date(result.at).toISOString(),
        })),
      };
    },
    async reread() {
      if (source instanceof ModelsFileSource) await source.read();
    },
    async stop() {
      disposeLeading?.();
      clearInterval(resync);
      reconciler.stop();
      await source.stop();
      await applier.stop();
      await elector?.stop();
    },
  };
}
