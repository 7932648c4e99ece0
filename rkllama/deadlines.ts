/**
 * @module
 * Timeouts of requests in flight, all checked by one shared interval instead of a
 * timer each. A request had three or four timers (body, connect, first byte,
 * idle) and a stream one per chunk; creating and clearing them was a tenth of the
 * router's CPU under load (bench/). The router's timeouts are seconds to minutes,
 * so a check every twentieth of the shortest one running is precise enough.
 */

/** The shortest and longest pause between two checks, in ms. */
const MIN_TICK_MS = 1;
const MAX_TICK_MS = 250;

/** One pending timeout; see {@linkcode Deadlines.start}. */
export class Deadline {
  /** `performance.now()` past which it fires; Infinity while paused. */
  at: number;
  readonly #owner: Deadlines;
  readonly #ms: number;
  readonly onExpire: () => void;

  constructor(owner: Deadlines, ms: number, onExpire: () => void) {
    this.#owner = owner;
    this.#ms = ms;
    this.onExpire = onExpire;
    this.at = performance.now() + ms;
  }

  /** It will not fire. */
  cancel(): void {
    this.#owner.cancel(this);
  }

  /** Stops the clock until {@linkcode restart}. */
  pause(): void {
    this.at = Infinity;
  }

  /** It fires its whole duration from now (unless it fired or was cancelled). */
  restart(): void {
    this.at = performance.now() + this.#ms;
  }
}

/**
 * Timeouts checked together. Each fires at most once, between its time and a
 * tick later: a tick is a twentieth of the shortest timeout started since the
 * interval last ran dry, at most {@linkcode MAX_TICK_MS}. The interval runs only
 * while there are timeouts (and up to a tick after the last one ended).
 *
 * @example
 * ```ts
 * const deadlines = new Deadlines();
 * const timeout = deadlines.start(5000, () => controller.abort());
 * // ... the work finished in time:
 * timeout.cancel();
 * ```
 */
export class Deadlines {
  readonly #pending = new Set<Deadline>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #tickMs = MAX_TICK_MS;

  /** Calls `onExpire` once, about `ms` from now, unless cancelled first. */
  start(ms: number, onExpire: () => void): Deadline {
    const deadline = new Deadline(this, ms, onExpire);
    this.#pending.add(deadline);
    const tick = Math.min(MAX_TICK_MS, Math.max(MIN_TICK_MS, Math.floor(ms / 20)));
    if (this.#timer === undefined || tick < this.#tickMs) {
      if (this.#timer !== undefined) clearInterval(this.#timer);
      this.#tickMs = tick;
      this.#timer = setInterval(this.#check, tick);
    }
    return deadline;
  }

  cancel(deadline: Deadline): void {
    this.#pending.delete(deadline);
  }

  /** Timeouts started and neither fired nor cancelled yet. */
  get size(): number {
    return this.#pending.size;
  }

  #check = () => {
    const now = performance.now();
    for (const deadline of this.#pending) {
      if (deadline.at > now) continue;
      this.#pending.delete(deadline);
      deadline.onExpire();
    }
    if (this.#pending.size === 0) {
      // Stopped only once a check finds nothing, not at every cancel: one request
      // after another would otherwise start and stop the interval each time.
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#tickMs = MAX_TICK_MS;
    }
  };
}

/** The router's timeouts (a process has one event loop; one interval serves all). */
export const deadlines: Deadlines = new Deadlines();
