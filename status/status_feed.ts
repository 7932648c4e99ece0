/**
 * @module
 * One shared, live status snapshot for every open status page and `/router/events`
 * stream: a `computed` over the store and placement signals, pushed by one
 * debounced `effect` to the subscribers. The effect and its refresh timer exist only
 * while someone subscribes, so the feed costs nothing when no page is open, and a
 * request never triggers it (in-flight counts and request rates are plain numbers,
 * re-read by a slow refresh instead).
 */

import type { ModelDemand } from "../cluster/demand.ts";
import { computed, effect, type ReadonlySignal, signal } from "@preact/signals-core";
import type { Store } from "../cluster/store.ts";
import type { Placement } from "../placement/placement.ts";
import type { ModelActivity } from "./model_activity.ts";
import { type OnDemandCopyView, type StatusSnapshot, statusSnapshot } from "./status_snapshot.ts";

/** Called with each new snapshot and its JSON text. */
export type StatusListener = (snapshot: StatusSnapshot, json: string) => void;

/** How often the feed pushes. */
export interface StatusFeedTiming {
  /** Changes within this many ms go out as one push (default 250). */
  debounceMs?: number;
  /** How often the plain-number counters are re-read while someone listens (default 2000). */
  refreshMs?: number;
}

/** A debounced stream of status snapshots, live only while subscribed to. */
export class StatusFeed {
  readonly #build: () => StatusSnapshot;
  readonly #debounceMs: number;
  readonly #refreshMs: number;
  readonly #listeners = new Map<StatusListener, () => void>();
  #stop: (() => void) | undefined;
  readonly #active = signal(false);
  #latest: { snapshot: StatusSnapshot; json: string } | undefined;

  /**
   * @param build makes a snapshot; the signals it reads are what a push follows
   */
  constructor(build: () => StatusSnapshot, timing: StatusFeedTiming = {}) {
    this.#build = build;
    this.#debounceMs = timing.debounceMs ?? 250;
    this.#refreshMs = timing.refreshMs ?? 2000;
  }

  /** A snapshot made now, for a page being rendered. */
  snapshot(): StatusSnapshot {
    return this.#build();
  }

  /** How many listen now. */
  get subscribers(): number {
    return this.#listeners.size;
  }

  /** True while someone listens (the effect and the refresh timer are running). */
  get active(): ReadonlySignal<boolean> {
    return this.#active;
  }

  /**
   * Calls `listener` at once with the current snapshot, then with each one that
   * differs from the last pushed, until unsubscribed or {@linkcode close}d (then
   * `onClose` is called). Returns the unsubscribe function; the last one out
   * stops the effect and the timer.
   */
  subscribe(listener: StatusListener, onClose: () => void = () => {}): () => void {
    this.#listeners.set(listener, onClose);
    if (!this.#stop) this.#start();
    const latest = this.#latest!;
    listener(latest.snapshot, latest.json);
    return () => {
      if (!this.#listeners.delete(listener) || this.#listeners.size > 0) return;
      this.#stop?.();
      this.#stop = undefined;
      this.#latest = undefined;
      this.#active.value = false;
    };
  }

  /**
   * Ends every subscription, e.g. on shutdown: an open event stream is a request
   * in flight, and a graceful server shutdown would wait for it forever.
   */
  close(): void {
    for (const onClose of [...this.#listeners.values()]) onClose();
  }

  #start(): void {
    const tick = signal(0);
    const current = computed(() => {
      tick.value;
      return this.#build();
    });
    let pending: ReturnType<typeof setTimeout> | undefined;
    const flush = () => {
      pending = undefined;
      const snapshot = current.peek();
      const json = JSON.stringify(snapshot);
      if (json === this.#latest?.json) return;
      this.#latest = { snapshot, json };
      for (const listener of [...this.#listeners.keys()]) listener(snapshot, json);
    };
    const dispose = effect(() => {
      const snapshot = current.value;
      if (!this.#latest) {
        this.#latest = { snapshot, json: JSON.stringify(snapshot) };
        return;
      }
      // Trailing push, at most one per debounce period however busy the store is.
      pending ??= setTimeout(flush, this.#debounceMs);
    });
    const refresh = setInterval(() => tick.value = tick.peek() + 1, this.#refreshMs);
    this.#stop = () => {
      dispose();
      clearInterval(refresh);
      clearTimeout(pending);
    };
    this.#active.value = true;
  }
}

/** What {@linkcode routerSnapshot} reads. */
export interface RouterFeedSources {
  store: Store;
  /** Placement once started, or undefined (static mode without a models file, or not yet). */
  placement: () => Placement | undefined;
  /** Copies loaded on demand (read inside the snapshot, so a change pushes one). */
  onDemand?: () => readonly OnDemandCopyView[];
  activity: ModelActivity;
  adminTokenRequired: boolean;
  /** The scheduler's queue: plain numbers, re-read by the slow refresh like in-flight counts. */
  queue?: { demand(): readonly ModelDemand[]; busyOn(pod: string): number };
}

/** The router's snapshot builder: the store, placement and the per-model counters. */
export function routerSnapshot(sources: RouterFeedSources): () => StatusSnapshot {
  const { store, activity } = sources;
  return () => {
    const placement = sources.placement();
    placement?.changes.value;
    const now = Date.now();
    return statusSnapshot({
      pods: store.podList.value,
      discovery: store.discovery.value,
      placement: placement?.view(),
      onDemand: sources.onDemand?.(),
      stats: (model) => activity.stats(model, now),
      adminTokenRequired: sources.adminTokenRequired,
      now,
      queues: sources.queue?.demand(),
      slotsBusy: sources.queue ? (pod) => sources.queue!.busyOn(pod) : undefined,
    });
  };
}
