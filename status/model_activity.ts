/**
 * @module
 * Per-model request counts and time to first byte over a sliding window, kept by
 * the router itself for the status page: requests per minute and the p95 of time
 * to first byte. Pure bookkeeping with the clock passed in, so it is tested
 * without I/O; the proxy feeds it and the status feed reads it.
 */

/** How the window is bounded. */
export interface ActivityLimits {
  /** How far back requests count, in ms (default 5 minutes). */
  windowMs?: number;
  /** Most samples kept per model; the oldest go first (default 2000). */
  maxSamples?: number;
  /** Most models tracked; a new one past it is not recorded (default 500). */
  maxModels?: number;
}

/** What one model's recent requests look like. */
export interface ModelStats {
  /** Requests answered in the last minute. */
  requestsPerMinute: number;
  /** 95th percentile of time to first byte over the window, in ms, or null with no request. */
  p95TtfbMs: number | null;
  /** Requests the p95 is taken over. */
  samples: number;
}

/** One answered request: when, and how long its first byte took. */
interface Sample {
  at: number;
  ttfbMs: number;
}

/**
 * Sliding windows of answered requests, one per model. Memory stays bounded by
 * `maxModels × maxSamples` whatever the traffic; callers must still key it only
 * by models the router knows, never by a name a client made up.
 *
 * @example
 * ```ts
 * const activity = new ModelActivity();
 * activity.record("qwen", 120, Date.now());
 * activity.stats("qwen", Date.now()); // { requestsPerMinute: 1, p95TtfbMs: 120, samples: 1 }
 * ```
 */
export class ModelActivity {
  readonly #windowMs: number;
  readonly #maxSamples: number;
  readonly #maxModels: number;
  readonly #samples = new Map<string, Sample[]>();

  constructor(limits: ActivityLimits = {}) {
    this.#windowMs = limits.windowMs ?? 5 * 60_000;
    this.#maxSamples = limits.maxSamples ?? 2000;
    this.#maxModels = limits.maxModels ?? 500;
  }

  /** Records one request for `model` whose first byte came after `ttfbMs`, answered at `now`. */
  record(model: string, ttfbMs: number, now: number): void {
    let samples = this.#samples.get(model);
    if (!samples) {
      this.#prune(now);
      if (this.#samples.size >= this.#maxModels) return;
      samples = [];
      this.#samples.set(model, samples);
    }
    samples.push({ at: now, ttfbMs });
    // Trimmed in batches: dropping the oldest one at each request moved the whole
    // array every time, 2% of the router's CPU under load (bench/). Readers skip
    // what is past the limit.
    if (samples.length >= 2 * this.#maxSamples) {
      samples.splice(0, samples.length - this.#maxSamples);
    }
  }

  /** Requests per minute and p95 time to first byte of `model` as of `now`. */
  stats(model: string, now: number): ModelStats {
    const samples = this.#recent(model, now);
    const minuteAgo = now - 60_000;
    return {
      requestsPerMinute: samples.filter((sample) => sample.at > minuteAgo).length,
      p95TtfbMs: percentile(samples.map((sample) => sample.ttfbMs), 0.95),
      samples: samples.length,
    };
  }

  /** Models with a request in the window as of `now`. */
  models(now: number): string[] {
    this.#prune(now);
    return [...this.#samples.keys()].sort();
  }

  #recent(model: string, now: number): Sample[] {
    const samples = this.#samples.get(model);
    if (!samples) return [];
    const cutoff = now - this.#windowMs;
    const first = samples.findIndex((sample) => sample.at > cutoff);
    if (first === -1) {
      this.#samples.delete(model);
      return [];
    }
    const skipped = Math.max(first, samples.length - this.#maxSamples);
    if (skipped > 0) samples.splice(0, skipped);
    return samples;
  }

  /** Drops models whose requests have all left the window. */
  #prune(now: number): void {
    for (const model of [...this.#samples.keys()]) this.#recent(model, now);
  }
}

/**
 * The `p` quantile (0..1) of `values` by the nearest-rank method, or null when
 * there are none: the value below which that share of requests fell.
 */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil(p * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}
