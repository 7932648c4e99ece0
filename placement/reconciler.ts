/**
 * @module
 * The reconcile loop: holds the last good placement config, and whenever the pods,
 * the config or leadership change (debounced), and every `--sync-interval`, plans
 * desired against actual and, on the leader only, hands the actions to the applier.
 * Followers plan too, so `/router/plan` shows the same picture on every replica.
 */

import { effect, type ReadonlySignal, signal } from "@preact/signals-core";
import type { Store } from "../cluster/store.ts";
import type { ConfigResult, DesiredConfig } from "../config/models.ts";
import { type Plan, plan, type PlanPod } from "./plan.ts";
import type { Applier } from "./apply.ts";
import { logger } from "../obs/log.ts";

const log = logger("reconcile");

/** The placement config as the router last saw it. */
export interface ConfigStatus {
  /** Where it came from: `configmap ns/name key` or `file PATH`. */
  source: string;
  /** The config in force (the last valid one), or undefined before any. */
  config: DesiredConfig | undefined;
  /** Why the newest document was refused, or "" when it is the one in force. */
  error: string;
  /** Epoch ms of the newest document read. */
  at: number;
}

/** A plan, with when it was made and since when it has been the same (epoch ms, 0 before any). */
export interface LastPlan {
  plan: Plan;
  at: number;
  /** The plan is remade on every change and sync: this moves only when it differs. */
  changedAt: number;
}

/** What the reconciler needs. */
export interface ReconcilerOptions {
  store: Store;
  applier: Applier;
  /** True while this replica may act (holds the Lease, or runs alone). */
  isLeader: () => boolean;
  unloadUnmanaged: boolean;
  /** `--max-loaded`: models a pod may hold; 0: no limit. */
  maxLoaded?: number;
  /** Copies loaded on demand, which are no surplus up to maxReplicas (plan.ts). */
  onDemandCopies?: () => readonly { pod: string; model: string }[];
  syncIntervalMs: number;
  /** Told when a document is refused, e.g. to raise a Kubernetes Event. */
  onInvalid?: (error: string) => void;
}

/** Plans on every change and applies on the leader. */
export class Reconciler {
  readonly #options: ReconcilerOptions;
  readonly #status = signal<ConfigStatus>({ source: "", config: undefined, error: "", at: 0 });
  readonly #lastPlan = signal<LastPlan>({
    plan: { actions: [], models: [], warnings: [] },
    at: 0,
    changedAt: 0,
  });
  #dispose: (() => void) | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #pending: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ReconcilerOptions) {
    this.#options = options;
  }

  /** The config in force and the newest document's error. */
  get status(): ConfigStatus {
    return this.#status.peek();
  }

  /** {@linkcode Reconciler.status} as a signal, for whoever waits on a change. */
  get statusSignal(): ReadonlySignal<ConfigStatus> {
    return this.#status;
  }

  /** The latest plan, when it was made, and since when it has been the same. */
  get lastPlan(): LastPlan {
    return this.#lastPlan.peek();
  }

  /** {@linkcode Reconciler.lastPlan} as a signal, for whoever shows it live. */
  get lastPlanSignal(): ReadonlySignal<LastPlan> {
    return this.#lastPlan;
  }

  /**
   * Takes a newly read document: a valid one replaces the config in force, an
   * invalid one is reported and the last good config stays.
   *
   * @param report whether to tell `onInvalid` (not for a ConfigMap that does not exist)
   */
  setConfig(result: ConfigResult, source: string, report = true): void {
    const current = this.#status.peek();
    if (result.ok) {
      if (current.error !== "" || current.config === undefined) {
        log.info("placement config from {source} is in force", { source });
      }
      this.#status.value = { source, config: result.config, error: "", at: Date.now() };
      return;
    }
    if (current.error !== result.error) {
      log.warn("placement config from {source} refused, keeping the last good one: {error}", {
        source,
        error: result.error,
      });
      if (report) this.#options.onInvalid?.(result.error);
    }
    this.#status.value = { ...current, source, error: result.error, at: Date.now() };
  }

  /** Reconciles on changes (debounced) and every sync interval. */
  start(): void {
    this.#dispose = effect(() => {
      this.#options.store.pods.value;
      this.#status.value;
      this.#schedule();
    });
    this.#timer = setInterval(() => this.reconcile(), this.#options.syncIntervalMs);
  }

  /** Stops reacting; actions in progress are the applier's to stop. */
  stop(): void {
    this.#dispose?.();
    clearInterval(this.#timer);
    clearTimeout(this.#pending);
  }

  /** Plans now, and applies when this replica is the leader. Returns the plan. */
  reconcile(): Plan {
    clearTimeout(this.#pending);
    this.#pending = undefined;
    const config = this.#status.peek().config;
    if (!config) return this.#lastPlan.peek().plan;
    const pods: PlanPod[] = this.#options.store.podList.peek().map((pod) => ({
      name: pod.name,
      node: pod.node,
      // Copies on a pod that is busy with our own action, or ejected for a few
      // seconds after one failed connection, still count: re-placing them would
      // cost a load now and an unload soon after. Only unready or unreachable
      // pods lose their copies.
      routable: pod.ready && pod.reachable,
      onDisk: new Set(pod.onDisk.keys()),
      loaded: new Set(pod.loaded.keys()),
      loading: new Set(pod.loading.keys()),
      inflight: pod.runtime.inflight,
    }));
    const next = plan(config, pods, {
      unloadUnmanaged: this.#options.unloadUnmanaged,
      maxLoaded: this.#options.maxLoaded,
      onDemand: this.#options.onDemandCopies?.(),
    });
    const now = Date.now();
    const last = this.#lastPlan.peek();
    const same = last.at > 0 && JSON.stringify(last.plan) === JSON.stringify(next);
    this.#lastPlan.value = { plan: next, at: now, changedAt: same ? last.changedAt : now };
    if (this.#options.isLeader()) this.#options.applier.submit(next.actions);
    return next;
  }

  /** Many store changes arrive together (a poll round, a burst of pod events). */
  #schedule(): void {
    if (this.#pending !== undefined) return;
    this.#pending = setTimeout(() => this.reconcile(), 200);
  }
}
