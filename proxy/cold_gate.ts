/**
 * @module
 * Marks a load that a request makes a pod do. RKLlama has no lock around its load:
 * two concurrent cold requests for one model each start a worker, and one is
 * orphaned holding NPU memory until the pod restarts. So the first cold request
 * goes through alone, marked loading in the store; the scheduler keeps the others
 * queued until the store shows the model loaded (or the load failed).
 */

import type { Store } from "../cluster/store.ts";

/** The loads requests are making. */
export class ColdGate {
  readonly #store: Store;

  /** @param store where loads are shown (`PodRecord.loading`) for routing and operators */
  constructor(store: Store) {
    this.#store = store;
  }

  /**
   * Records that a request is loading `model` on `pod`. Returns the function that
   * ends the load; call it once the pod answered (true) or failed (false).
   */
  begin(pod: string, model: string): (succeeded: boolean) => void {
    this.#store.markLoading(pod, model, Date.now());
    let ended = false;
    return (succeeded) => {
      if (ended) return;
      ended = true;
      this.#store.finishLoading(pod, model, succeeded);
    };
  }
}
