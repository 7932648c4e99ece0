/**
 * @module
 * Holds requests for a model that a pod is loading. RKLlama has no lock around
 * its load: two concurrent cold requests for one model each start a worker, and
 * one is orphaned holding NPU memory until the pod restarts. So the first cold
 * request goes through alone; followers wait here (bounded, dropping any whose
 * client leaves) until it has its response headers or fails, then pick again.
 */

import type { Store } from "../cluster/store.ts";

/** Too many requests are already waiting for this model to load. */
export class QueueFull extends Error {
  override name = "QueueFull";
}

interface Load {
  done: Promise<void>;
  release: () => void;
  waiting: number;
}

/** The loads in progress and the requests waiting for them. */
export class ColdGate {
  readonly #loads = new Map<string, Load>();
  readonly #store: Store;
  readonly #maxQueue: number;

  /**
   * @param store where loads are shown (`PodRecord.loading`) for routing and operators
   * @param maxQueue requests that may wait for one load
   */
  constructor(store: Store, maxQueue: number) {
    this.#store = store;
    this.#maxQueue = maxQueue;
  }

  /**
   * Records that a request is loading `model` on `pod`. Returns the function that
   * ends the load; call it once the pod answered (true) or failed (false).
   */
  begin(pod: string, model: string): (succeeded: boolean) => void {
    const key = keyOf(pod, model);
    const { promise, resolve } = Promise.withResolvers<void>();
    const load: Load = { done: promise, release: resolve, waiting: 0 };
    this.#loads.set(key, load);
    this.#store.markLoading(pod, model, Date.now());
    let ended = false;
    return (succeeded) => {
      if (ended) return;
      ended = true;
      if (this.#loads.get(key) === load) this.#loads.delete(key);
      this.#store.finishLoading(pod, model, succeeded);
      load.release();
    };
  }

  /** True while a request the router sent is loading `model` on `pod`. */
  has(pod: string, model: string): boolean {
    return this.#loads.has(keyOf(pod, model));
  }

  /**
   * Resolves when the load of `model` on `pod` ends (either way).
   *
   * @throws {QueueFull} when `maxQueue` requests already wait for it
   * @throws the signal's reason when the client goes away first
   */
  async wait(pod: string, model: string, signal: AbortSignal): Promise<void> {
    const load = this.#loads.get(keyOf(pod, model));
    if (!load) return;
    if (load.waiting >= this.#maxQueue) {
      throw new QueueFull(
        `${load.waiting} requests are already waiting for '${model}' to load on ${pod}; retry later`,
      );
    }
    signal.throwIfAborted();
    load.waiting++;
    const { promise: aborted, reject } = Promise.withResolvers<never>();
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await Promise.race([load.done, aborted]);
    } finally {
      load.waiting--;
      signal.removeEventListener("abort", onAbort);
    }
  }
}

function keyOf(pod: string, model: string): string {
  return `${pod}\u0000${model}`;
}
