/**
 * @module
 * What the router's request queue says about each model's demand, in plain data:
 * the scheduler (proxy/) writes it, placement's copies on demand read it. It lives
 * here, below both, so that neither imports the other.
 */

import type { ReadonlySignal } from "@preact/signals-core";

/** One model's queue and service, as the scheduler sees it now. */
export interface ModelDemand {
  /** The model as pods name it. */
  model: string;
  /** Requests waiting in the router for a slot on a board with the model. */
  waiting: number;
  /** Requests holding a slot on a board for the model now. */
  serving: number;
  /** How long the oldest waiting request has waited, ms (0 when none waits). */
  oldestWaitMs: number;
  /**
   * Mean time a request for the model held its slot (from send to the answer's
   * end), ms, over recent answers; undefined until one was observed.
   */
  answerMs?: number;
  /** Copies that can take its requests now (loaded, routable, not being loaded). */
  copies: number;
}

/** The scheduler's demand, read by whoever decides on extra copies. */
export interface DemandSource {
  /** Every model with requests waiting or being served. */
  demand(): readonly ModelDemand[];
  /** Changes whenever a request is queued, dispatched, or ends. */
  readonly changes: ReadonlySignal<number>;
}
