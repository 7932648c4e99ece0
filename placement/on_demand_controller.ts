/**
 * @module
 * Runs the copies-on-demand rule (on_demand.ts): whenever the router's queues, the
 * pods or leadership change, and on a timer for idle copies, it asks the rule and
 * hands the actions to the applier, which takes a board out of routing while it
 * loads. The scheduler sends queued requests to a new copy once the store shows it
 * loaded. It also times every load it sees (its own, the reconciler's and the cold
 * starts of requests), so the rule compares a queue with this cluster's load times.
 *
 * Who writes what: only this controller adds to or removes from the copies loaded
 * on demand; it forgets a copy once the store shows it neither loaded nor loading.
 * Every replica runs it, only the leader's rule returns actions.
 */

import type { ModelDemand } from "../cluster/demand.ts";
import { computed, effect, type ReadonlySignal, signal } from "@preact/signals-core";
import type { DemandSource } from "../cluster/demand.ts";
import { isRoutable, type PodRecord, type Store } from "../cluster/store.ts";
import type { RouterConfig } from "../config/flags.ts";
import type { DesiredConfig } from "../config/models.ts";
import { logger } from "../obs/log.ts";
import { type ActionResult, Applier } from "./apply.ts";
import { extraCopies, type OnDemandCopy, type OnDemandPod } from "./on_demand.ts";
import type { Action } from "./plan.ts";
import type { Placement } from "./placement.ts";

const log = logger("on-demand");

/** Load time assumed for a model until one load of it was seen: RKLlama loads take seconds to minutes. */
const DEFAULT_LOAD_MS = 30_000;
/** Answer time assumed until the scheduler has timed one: a short chat answer on a board. */
const DEFAULT_ANSWER_MS = 10_000;
/** Many changes come together (a burst of requests, a poll round). */
const DEBOUNCE_MS = 50;

/** What the controller needs. */
export interface OnDemandOptions {
  store: Store;
  applier: Applier;
  demand: DemandSource;
  /** Whether this replica may act. */
  leading: ReadonlySignal<boolean>;
  /** models.yaml in force, or undefined without one. */
  config: () => DesiredConfig | undefined;
  /** `--max-loaded`: models a board may hold; 0: no limit. */
  maxLoaded: number;
  /** `--on-demand-idle`. */
  idleMs: number;
  /** `--on-demand-residency`. */
  residencyMs: number;
  defaultLoadMs?: number;
  defaultAnswerMs?: number;
  /** Told of every action started (for metrics). */
  onAction?: (action: Action) => void;
}

/** Copies on demand, running. */
export class OnDemandCopies {
  readonly #options: OnDemandOptions;
  readonly #copies = signal<ReadonlyMap<string, OnDemandCopy>>(new Map());
  readonly #loadMs = new Map<string, number>();
  /** Loads in progress by pod and model: when each started, and whether the model was loaded then. */
  #seenLoading = new Map<string, { since: number; reload: boolean }>();
  #disposers: (() => void)[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  #pending: ReturnType<typeof setTimeout> | undefined;

  constructor(options: OnDemandOptions) {
    this.#options = options;
  }

  /** Copies loaded on demand (loaded or loading), oldest first. */
  get copies(): readonly OnDemandCopy[] {
    return [...this.#copies.peek().values()];
  }

  /** {@linkcode OnDemandCopies.copies} as a signal, for whoever shows them live. */
  readonly copiesSignal: ReadonlySignal<readonly OnDemandCopy[]> = computed(() => [
    ...this.#copies.value.values(),
  ]);

  /** Observed load time per model, ms (a moving average). */
  get loadMs(): ReadonlyMap<string, number> {
    return this.#loadMs;
  }

  /** Reacts to the queues, the pods and leadership, and checks idle copies on a timer. */
  start(): void {
    const { store, demand, leading, idleMs, residencyMs } = this.#options;
    this.#disposers.push(effect(() => {
      this.#observeLoads(store.pods.value);
      this.#forgetGone();
    }));
    this.#disposers.push(effect(() => {
      demand.changes.value;
      store.pods.value;
      leading.value;
      this.#schedule();
    }));
    // Idle and residency times pass with no event: a timer a fraction of the shorter.
    const tick = Math.min(10_000, Math.max(50, Math.min(idleMs, residencyMs) / 4));
    this.#timer = setInterval(() => this.run(), tick);
  }

  /** Stops reacting; actions in progress are the applier's to stop. */
  stop(): void {
    for (const dispose of this.#disposers) dispose();
    this.#disposers = [];
    clearInterval(this.#timer);
    clearTimeout(this.#pending);
  }

  /** Decides now and starts the actions the applier can start. Returns those started. */
  run(): Action[] {
    clearTimeout(this.#pending);
    this.#pending = undefined;
    const options = this.#options;
    const { store, applier, demand, leading } = options;
    const now = Date.now();
    this.#forgetGone();
    const pods: OnDemandPod[] = store.podList.peek().map((pod) => ({
      name: pod.name,
      node: pod.node,
      routable: isRoutable(pod, now),
      onDisk: new Set(pod.onDisk.keys()),
      loaded: new Set(pod.loaded.keys()),
      loading: new Set(pod.loading.keys()),
      inflight: pod.runtime.inflight,
      lastUsed: pod.runtime.lastSent,
    }));
    const demands = demand.demand();
    const actions = extraCopies({
      leader: leading.peek(),
      now,
      demands,
      pods,
      config: options.config(),
      copies: this.copies,
      loadMs: this.#loadMs,
      // A model never loaded yet is taken to load as fast as the others did on
      // these boards: 30 s when it is the first, against 2 s seen, kept a queue
      // of a model with one copy waiting several seconds (bench:schedule zipf).
      defaultLoadMs: meanOf(this.#loadMs.values()) ?? options.defaultLoadMs ?? DEFAULT_LOAD_MS,
      // Likewise a model with no answer seen yet: 10 s against 0.2 s seen had the
      // first two requests for a rare model load it on two more boards, which then
      // held them for the minimum residency (bench:schedule zipf).
      defaultAnswerMs: meanOf(answerTimes(demands)) ?? options.defaultAnswerMs ??
        DEFAULT_ANSWER_MS,
      maxLoaded: options.maxLoaded,
      idleMs: options.idleMs,
      residencyMs: options.residencyMs,
    });
    if (actions.length === 0) return [];
    const started = applier.submit(actions);
    const copies = new Map(this.#copies.peek());
    for (const action of started) {
      log.info("{action} {model} on {pod} on demand: {reason}", {
        action: action.kind,
        model: action.model,
        pod: action.pod,
        reason: action.reason,
      });
      if (action.kind === "load") {
        copies.set(keyOf(action.pod, action.model), {
          pod: action.pod,
          model: action.model,
          loadedAt: now,
        });
      }
      options.onAction?.(action);
    }
    this.#copies.value = copies;
    return started;
  }

  /** Copies whose pod is gone, or that are neither loaded nor loading (unloaded, failed, expired). */
  #forgetGone(): void {
    const pods = this.#options.store.pods.peek();
    const current = this.#copies.peek();
    const kept = [...current].filter(([, copy]) => {
      const pod = pods.get(copy.pod);
      return pod !== undefined && (pod.loaded.has(copy.model) || pod.loading.has(copy.model));
    });
    if (kept.length !== current.size) this.#copies.value = new Map(kept);
  }

  #schedule(): void {
    if (this.#pending !== undefined) return;
    this.#pending = setTimeout(() => this.run(), DEBOUNCE_MS);
  }

  /**
   * Times each load the store shows ending with the model loaded, whoever started
   * it. A "load" of a copy that was loaded already (the first request to a copy the
   * router did not load goes alone, as if cold) takes no load time: not counted.
   */
  #observeLoads(pods: ReadonlyMap<string, PodRecord>): void {
    const now = Date.now();
    const loading = new Map<string, { since: number; reload: boolean }>();
    for (const [name, pod] of pods) {
      for (const [model, since] of pod.loading) {
        const key = keyOf(name, model);
        loading.set(key, this.#seenLoading.get(key) ?? { since, reload: pod.loaded.has(model) });
      }
    }
    for (const [key, { since, reload }] of this.#seenLoading) {
      if (loading.has(key) || reload) continue;
      const [podName, model] = key.split("\u0000");
      if (!pods.get(podName)?.loaded.has(model)) continue;
      const sample = now - since;
      const previous = this.#loadMs.get(model);
      this.#loadMs.set(model, previous === undefined ? sample : 0.7 * previous + 0.3 * sample);
    }
    this.#seenLoading = loading;
  }
}

function* answerTimes(demands: readonly ModelDemand[]): Iterable<number> {
  for (const { answerMs } of demands) if (answerMs !== undefined) yield answerMs;
}

function meanOf(values: Iterable<number>): number | undefined {
  let sum = 0;
  let count = 0;
  for (const value of values) {
    sum += value;
    count++;
  }
  return count === 0 ? undefined : sum / count;
}

/** What {@linkcode startOnDemand} needs from the router. */
export interface StartOnDemandOptions {
  store: Store;
  config: RouterConfig;
  demand: DemandSource;
  /** Placement, when it runs: its applier, leadership and models.yaml are shared. */
  placement: Placement | undefined;
  /** For an applier of its own, without placement. */
  repoll: (pod: string) => Promise<void>;
  /** Told of every load or unload result of an applier of its own (for metrics). */
  onActionResult?: (result: ActionResult) => void;
  /** Told of every action started on demand (for metrics). */
  onAction?: (action: Action) => void;
}

/** Copies on demand as the router runs them. */
export interface OnDemand {
  controller: OnDemandCopies;
  stop(): Promise<void>;
}

/**
 * Starts copies on demand. With placement running they share its applier (one
 * action per board at a time, whoever asks) and its leadership; without it (static
 * mode without `--models-file`) the router is alone and always leads, and gets an
 * applier of its own.
 */
export function startOnDemand(options: StartOnDemandOptions): OnDemand {
  const { store, config, placement } = options;
  const applier = placement?.applier ?? new Applier({
    store,
    repoll: options.repoll,
    loadTimeoutMs: config.loadTimeoutMs,
    onResult: options.onActionResult,
  });
  const controller = new OnDemandCopies({
    store,
    applier,
    demand: options.demand,
    leading: placement?.leading ?? signal(true),
    config: () => placement?.reconciler.status.config,
    maxLoaded: config.maxLoaded,
    idleMs: config.onDemandIdleMs,
    residencyMs: config.onDemandResidencyMs,
    onAction: options.onAction,
  });
  controller.start();
  return {
    controller,
    async stop() {
      controller.stop();
      if (!placement) await applier.stop();
    },
  };
}

function keyOf(pod: string, model: string): string {
  return `${pod}\u0000${model}`;
}
