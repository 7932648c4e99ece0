/**
 * @module
 * Carries out the planner's loads and unloads on pods: at most one action per pod
 * at a time, each in the background so routing never waits on it. A FastAPI pod
 * freezes entirely during an explicit load (streams included), so before acting
 * the pod is taken out of routing and its requests in flight are let finish; if
 * they do not finish in time the action is postponed, not forced. Failures are
 * retried with a growing delay; a pod that refuses on principle ("unloading is
 * disabled") is reported and not asked again.
 */

import { type ReadonlySignal, signal } from "@preact/signals-core";
import type { Store } from "../cluster/store.ts";
import type { Action } from "./plan.ts";
import * as rkllama from "../rkllama/client.ts";
import { logger } from "../obs/log.ts";
import { backoffMs } from "../time/backoff.ts";

const log = logger("apply");

/** How the applier paces itself. */
export interface ApplierOptions {
  store: Store;
  /** Polls a pod the applier just changed. */
  repoll: (pod: string) => Promise<void>;
  /** Longest wait for one load or unload (loads take minutes). */
  loadTimeoutMs: number;
  /** Longest wait for a pod's requests in flight to finish before acting. */
  drainTimeoutMs?: number;
  /** First delay before retrying a failed action; it doubles up to `retryMaxMs`. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Told of every result (for metrics). */
  onResult?: (result: ActionResult) => void;
}

/** What became of an action. */
export interface ActionResult {
  action: Action;
  outcome: "done" | "failed" | "refused" | "postponed";
  message: string;
  /** Epoch ms it ended. */
  at: number;
  durationMs: number;
}

interface Failure {
  count: number;
  retryAt: number;
  refused: boolean;
}

const RECENT_RESULTS = 50;

/** Runs actions on pods, one per pod at a time. */
export class Applier {
  readonly #options: Required<ApplierOptions>;
  readonly #running = new Map<string, Action>();
  readonly #failures = new Map<string, Failure>();
  readonly #recent: ActionResult[] = [];
  readonly #stopped = new AbortController();
  readonly #tasks = new Set<Promise<void>>();
  readonly #changes = signal(0);

  constructor(options: ApplierOptions) {
    this.#options = {
      drainTimeoutMs: 60_000,
      retryBaseMs: 30_000,
      retryMaxMs: 600_000,
      ...options,
      onResult: options.onResult ?? (() => {}),
    };
  }

  /** Actions in progress, one per pod. */
  get running(): readonly Action[] {
    return [...this.#running.values()];
  }

  /** The last results, newest first. */
  get recent(): readonly ActionResult[] {
    return this.#recent;
  }

  /** Counts changes of {@linkcode running} and {@linkcode recent}, for whoever shows them live. */
  get changes(): ReadonlySignal<number> {
    return this.#changes;
  }

  /**
   * Starts every action whose pod is free and which is not waiting out a retry
   * delay; the others are left for a later call (the planner asks again).
   * Returns the actions started.
   */
  submit(actions: readonly Action[]): Action[] {
    const started: Action[] = [];
    const now = Date.now();
    for (const action of actions) {
      if (this.#stopped.signal.aborted || this.#running.has(action.pod)) continue;
      const failure = this.#failures.get(keyOf(action));
      if (failure && (failure.refused || failure.retryAt > now)) continue;
      this.#running.set(action.pod, action);
      started.push(action);
      const task = this.#execute(action).finally(() => {
        this.#running.delete(action.pod);
        this.#tasks.delete(task);
        this.#changes.value = this.#changes.peek() + 1;
      });
      this.#tasks.add(task);
    }
    if (started.length > 0) this.#changes.value = this.#changes.peek() + 1;
    return started;
  }

  /** Resolves when every action started so far has ended. */
  async idle(): Promise<void> {
    while (this.#tasks.size > 0) await Promise.all(this.#tasks);
  }

  /** Abandons the actions in progress and waits for them to wind down. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    await Promise.all(this.#tasks);
  }

  async #execute(action: Action): Promise<void> {
    const { store } = this.#options;
    const started = Date.now();
    store.setBusy(
      action.pod,
      `${action.kind === "load" ? "loading" : "unloading"} ${action.model}`,
    );
    if (action.kind === "load") store.markLoading(action.pod, action.model, started);
    let result: Omit<ActionResult, "action" | "at" | "durationMs">;
    try {
      const idle = await this.#drain(action.pod);
      result = idle
        ? await this.#call(action)
        : { outcome: "postponed", message: "requests still in flight on the pod" };
    } catch (error) {
      result = {
        outcome: "failed",
        message: error instanceof Error ? error.message : String(error),
      };
    }
    // Before the pod takes requests again, the store must show what it now holds:
    // requests following a copy that is gone would each make the pod load it.
    if (action.kind === "unload" && result.outcome === "done") {
      store.markUnloaded(action.pod, action.model);
    }
    if (action.kind === "load") {
      store.finishLoading(action.pod, action.model, result.outcome === "done");
    }
    store.setBusy(action.pod, "");
    this.#record({ action, ...result, at: Date.now(), durationMs: Date.now() - started });
    if (!this.#stopped.signal.aborted) await this.#options.repoll(action.pod);
  }

  /** Waits until the pod has no request in flight; false if that takes too long. */
  async #drain(podName: string): Promise<boolean> {
    const deadline = Date.now() + this.#options.drainTimeoutMs;
    for (;;) {
      const pod = this.#options.store.pods.peek().get(podName);
      if (!pod) throw new Error(`pod ${podName} is gone`);
      if (pod.runtime.inflight === 0) return true;
      if (Date.now() >= deadline || this.#stopped.signal.aborted) return false;
      // The in-flight counter is a plain number on the hot path, not a signal, so
      // there is no event to wait on; a coarse check costs nothing here.
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** `/api/load` or `/api/unload` (falling back to the Flask generation's routes). */
  async #call(action: Action): Promise<Omit<ActionResult, "action" | "at" | "durationMs">> {
    const pod = this.#options.store.pods.peek().get(action.pod);
    if (!pod) throw new Error(`pod ${action.pod} is gone`);
    const call = { timeoutMs: this.#options.loadTimeoutMs, signal: this.#stopped.signal };
    try {
      await (action.kind === "load" ? rkllama.load : rkllama.unload)(pod, action.model, call);
      return { outcome: "done", message: `${action.kind}ed` };
    } catch (error) {
      if (!(error instanceof rkllama.BoardError) || error.failure !== "status") throw error;
      return { outcome: isRefusal(error.message) ? "refused" : "failed", message: error.message };
    }
  }

  #record(result: ActionResult): void {
    const key = keyOf(result.action);
    if (result.outcome === "done") {
      this.#failures.delete(key);
    } else if (result.outcome === "postponed") {
      // Not a failure, but asking again at once would drain the pod again at once.
      const previous = this.#failures.get(key);
      this.#failures.set(key, {
        count: previous?.count ?? 0,
        retryAt: Date.now() + this.#options.retryBaseMs,
        refused: false,
      });
    } else if (result.outcome === "failed" || result.outcome === "refused") {
      const count = (this.#failures.get(key)?.count ?? 0) + 1;
      const delay = backoffMs(count - 1, this.#options.retryBaseMs, this.#options.retryMaxMs);
      this.#failures.set(key, {
        count,
        retryAt: Date.now() + delay,
        refused: result.outcome === "refused",
      });
    }
    this.#options.onResult(result);
    this.#recent.unshift(result);
    this.#recent.length = Math.min(this.#recent.length, RECENT_RESULTS);
    const fields = {
      action: result.action.kind,
      model: result.action.model,
      pod: result.action.pod,
      outcome: result.outcome,
      message: result.message,
      durationMs: result.durationMs,
    };
    if (result.outcome === "done") log.info("{action} {model} on {pod}: done", fields);
    else log.warn("{action} {model} on {pod}: {outcome}: {message}", fields);
  }
}

/**
 * True for answers that retrying cannot change: RKLlama started with
 * `disable_model_unloading` refuses every unload until the pod restarts.
 */
export function isRefusal(message: string): boolean {
  return /unloading is disabled/i.test(message);
}

function keyOf(action: Action): string {
  return `${action.kind}\u0000${action.pod}\u0000${action.model}`;
}
