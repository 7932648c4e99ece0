/**
 * @module
 * The router's queue in front of the boards' generation slots. A request that
 * takes a slot (a generation, embedding or load) is sent only when a board has a
 * free slot for its model; until then it waits here, and goes to whichever
 * suitable board frees first (late binding), oldest request first across all
 * models so that none starves. Which board is a pure decision (`slots.ts`); this
 * class keeps the waiting requests, the slots taken, and the timers.
 */

import { effect, type ReadonlySignal, signal } from "@preact/signals-core";
import type { PodRecord, Store } from "../cluster/store.ts";
import type { DemandSource, ModelDemand } from "../cluster/demand.ts";
import type { ColdGate } from "./cold_gate.ts";
import { place } from "./slots.ts";
import { type Deadline, deadlines } from "../rkllama/deadlines.ts";

/** What the scheduler needs from the rest of the router. */
export interface SchedulerOptions {
  store: Store;
  /** Marks the one cold request's load, so that no second one starts beside it. */
  gate: ColdGate;
  /** `--slots`: 0 = by each board's RKLlama generation; N = N per board. */
  slots: number;
  /** `--max-loaded`: models a board holds at most (0: no limit). */
  maxLoaded: number;
  /** `--max-queue`: requests per model that may wait. */
  maxQueue: number;
  /** `--queue-timeout`: the longest a request waits for a slot. */
  queueTimeoutMs: number;
  /** See `PickInput.staleAfterMs` in pick.ts. */
  staleAfterMs: number;
  /** Told of every request that leaves the queue (for metrics): how it left, how long it waited. */
  onLeave?: (model: string, how: "sent" | "timeout" | "left" | "full", waitedMs: number) => void;
}

/** A slot on a pod, taken for one request; `release` once the pod's answer has ended. */
export interface Grant {
  kind: "send";
  pod: PodRecord;
  /** The pod loads the model inside this request. */
  cold: boolean;
  /** Ends the cold request's load (true: the pod answered); set only for a cold grant. */
  endLoad?: (succeeded: boolean) => void;
  /** Frees the slot. Idempotent. */
  release: () => void;
}

/** Why a request got no slot; the proxy turns it into an answer. */
export type Refusal =
  | { kind: "not_found" }
  | { kind: "unavailable"; reason: string }
  /** `--max-queue` requests already wait, or one waited `--queue-timeout`: 503 with Retry-After. */
  | { kind: "busy"; reason: string }
  | { kind: "left" };

interface Waiter {
  model: string;
  exclude: ReadonlySet<string>;
  arrived: number;
  settle: (result: Grant | Refusal) => void;
  timeout?: Deadline;
}

/** The slots taken on one pod: model -> requests holding a slot for it. */
type Busy = Map<string, number>;

/** Mean slot time over about the last this many answers. */
const ANSWER_SMOOTHING = 8;

/**
 * While requests wait, the queue is also looked at this often: a pod whose
 * ejection ran out becomes routable without any change the store signals.
 */
const RECHECK_MS = 500;

/** Generation slots and the queue in front of them; also the demand copies on demand read. */
export class Scheduler implements DemandSource {
  readonly #options: SchedulerOptions;
  readonly #busy = new Map<string, Busy>();
  /** Oldest first; removal is rare enough (a timeout, a client leaving) to splice. */
  readonly #waiting: Waiter[] = [];
  readonly #queued = new Map<string, number>();
  readonly #serving = new Map<string, number>();
  readonly #answerMs = new Map<string, number>();
  readonly #changes = signal(0);
  #turn = 0;
  #pumping = false;
  #again = false;
  #recheck?: ReturnType<typeof setInterval>;
  readonly #stopWatching: () => void;

  constructor(options: SchedulerOptions) {
    this.#options = options;
    // A load finished, a pod appeared or came back: queued requests may go now.
    this.#stopWatching = effect(() => {
      options.store.pods.value;
      this.#pump();
    });
  }

  get changes(): ReadonlySignal<number> {
    return this.#changes;
  }

  /** Requests waiting, across models. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Slots taken on `pod` now. */
  busyOn(pod: string): number {
    let taken = 0;
    for (const count of this.#busy.get(pod)?.values() ?? []) taken += count;
    return taken;
  }

  /** The queue per model, for metrics and the status page. */
  demand(): ModelDemand[] {
    const now = performance.now();
    const oldest = new Map<string, number>();
    for (const waiter of this.#waiting) {
      if (!oldest.has(waiter.model)) oldest.set(waiter.model, now - waiter.arrived);
    }
    const models = new Set([...this.#queued.keys(), ...this.#serving.keys()]);
    const loadedOn = this.#options.store.loadedOn.peek();
    return [...models].sort().map((model) => ({
      model,
      waiting: this.#queued.get(model) ?? 0,
      serving: this.#serving.get(model) ?? 0,
      oldestWaitMs: oldest.get(model) ?? 0,
      answerMs: this.#answerMs.get(model),
      copies: (loadedOn.get(model) ?? []).filter((pod) => !pod.loading.has(model)).length,
    }));
  }

  /**
   * A slot for `model` on a pod not in `exclude`: at once when one is free,
   * otherwise when one frees (or a refusal: queue full, waited too long, the
   * client left, no pod has the model).
   */
  acquire(
    model: string,
    exclude: ReadonlySet<string>,
    signal: AbortSignal,
  ): Grant | Refusal | Promise<Grant | Refusal> {
    if (signal.aborted) return { kind: "left" };
    const arrived = performance.now();
    // Nobody older waits for this model: try at once, without a promise.
    if (!this.#queued.has(model)) {
      const now = this.#tryPlace(model, exclude);
      if (now !== "wait") {
        if (now.kind === "send") this.#options.onLeave?.(model, "sent", 0);
        return now;
      }
    }
    const queued = this.#queued.get(model) ?? 0;
    if (queued >= this.#options.maxQueue) {
      this.#options.onLeave?.(model, "full", 0);
      return {
        kind: "busy",
        reason: `${queued} requests are already waiting for '${model}' (--max-queue); retry later`,
      };
    }
    const { promise, resolve } = Promise.withResolvers<Grant | Refusal>();
    const waiter: Waiter = {
      model,
      exclude,
      arrived,
      settle: (result) => {
        waiter.timeout?.cancel();
        signal.removeEventListener("abort", onAbort);
        resolve(result);
      },
    };
    const onAbort = () => {
      if (this.#remove(waiter)) {
        this.#options.onLeave?.(model, "left", performance.now() - arrived);
        waiter.settle({ kind: "left" });
      }
    };
    signal.addEventListener("abort", onAbort, { once: true });
    waiter.timeout = deadlines.start(this.#options.queueTimeoutMs, () => {
      if (!this.#remove(waiter)) return;
      this.#options.onLeave?.(model, "timeout", performance.now() - arrived);
      waiter.settle({
        kind: "busy",
        reason: `no board could take the request for '${model}' within ${
          Math.round(this.#options.queueTimeoutMs / 1000)
        } s (--queue-timeout); retry later`,
      });
    });
    this.#waiting.push(waiter);
    this.#queued.set(model, queued + 1);
    this.#changed();
    this.#watchWhileWaiting();
    // Placing it may have waited only on older requests that have just gone.
    this.#pump();
    return promise;
  }

  /** Stops watching the store and refuses every waiting request. */
  stop(): void {
    this.#stopWatching();
    for (const waiter of [...this.#waiting]) {
      this.#remove(waiter);
      waiter.settle({ kind: "unavailable", reason: "the router is shutting down" });
    }
  }

  /** Places one request now, or says it must wait. */
  #tryPlace(model: string, exclude: ReadonlySet<string>): Grant | Refusal | "wait" {
    const { store } = this.#options;
    const pods = store.podList.peek();
    const where = place({
      model,
      pods,
      loadedOn: store.loadedOn.peek().get(model) ?? [],
      onDiskOn: store.onDiskOn.peek().get(model) ?? [],
      now: Date.now(),
      exclude,
      turn: this.#turn++,
      staleAfterMs: this.#options.staleAfterMs,
      slots: this.#options.slots,
      busy: this.#busy,
      maxLoaded: this.#options.maxLoaded,
    });
    if (where.kind === "wait") return "wait";
    if (where.kind !== "send") return where;
    return this.#take(where.pod, model, where.cold);
  }

  #take(pod: PodRecord, model: string, cold: boolean): Grant {
    let busy = this.#busy.get(pod.name);
    if (!busy) this.#busy.set(pod.name, busy = new Map());
    busy.set(model, (busy.get(model) ?? 0) + 1);
    this.#serving.set(model, (this.#serving.get(model) ?? 0) + 1);
    // Marked loading before anyone else is placed, so that no second cold request
    // for the model goes to another board in the same pass.
    const endLoad = cold ? this.#options.gate.begin(pod.name, model) : undefined;
    const since = performance.now();
    let released = false;
    this.#changed();
    return {
      kind: "send",
      pod,
      cold,
      endLoad,
      release: () => {
        if (released) return;
        released = true;
        const count = (busy.get(model) ?? 1) - 1;
        if (count > 0) busy.set(model, count);
        else busy.delete(model);
        const serving = (this.#serving.get(model) ?? 1) - 1;
        if (serving > 0) this.#serving.set(model, serving);
        else this.#serving.delete(model);
        if (!cold) this.#observe(model, performance.now() - since);
        this.#changed();
        this.#pump();
      },
    };
  }

  /** Keeps a running mean of how long a warm request holds its slot. */
  #observe(model: string, ms: number): void {
    const mean = this.#answerMs.get(model);
    this.#answerMs.set(
      model,
      mean === undefined ? ms : mean + (ms - mean) / ANSWER_SMOOTHING,
    );
  }

  /** Sends every waiting request that can go now, oldest first. */
  #pump(): void {
    // A grant marks a load, which changes the store, which calls here again.
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#again = false;
        // Once one request for a model must wait, the next (same exclusions) must too.
        const blocked = new Set<string>();
        for (let i = 0; i < this.#waiting.length; i++) {
          const waiter = this.#waiting[i];
          if (waiter.exclude.size === 0 && blocked.has(waiter.model)) continue;
          const result = this.#tryPlace(waiter.model, waiter.exclude);
          if (result === "wait") {
            if (waiter.exclude.size === 0) blocked.add(waiter.model);
            continue;
          }
          this.#remove(waiter);
          i--;
          if (result.kind === "send") {
            this.#options.onLeave?.(waiter.model, "sent", performance.now() - waiter.arrived);
          }
          waiter.settle(result);
        }
      } while (this.#again);
    } finally {
      this.#pumping = false;
    }
  }

  #remove(waiter: Waiter): boolean {
    const at = this.#waiting.indexOf(waiter);
    if (at === -1) return false;
    this.#waiting.splice(at, 1);
    const left = (this.#queued.get(waiter.model) ?? 1) - 1;
    if (left > 0) this.#queued.set(waiter.model, left);
    else this.#queued.delete(waiter.model);
    this.#changed();
    return true;
  }

  #watchWhileWaiting(): void {
    if (this.#recheck !== undefined) return;
    this.#recheck = setInterval(() => {
      if (this.#waiting.length === 0) {
        clearInterval(this.#recheck);
        this.#recheck = undefined;
        return;
      }
      this.#pump();
    }, RECHECK_MS);
  }

  #changed(): void {
    this.#changes.value = this.#changes.peek() + 1;
  }
}
