/**
 * @module
 * The numbers of a run: waits for the first byte, completion, loads and how busy
 * the boards were. Pure functions over {@linkcode Run}s.
 */

import type { Run } from "./simulate.ts";

/**
 * The `q`-th percentile (0..100) of `values`, nearest rank; NaN for none.
 *
 * @example
 * ```ts
 * percentile([1, 2, 3, 4], 50); // 2
 * ```
 */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((q / 100) * sorted.length));
  return sorted[rank - 1];
}

/** The arithmetic mean; NaN for none. */
export function mean(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** The summary of one run (times in real ms). */
export interface Summary {
  requests: number;
  answered: number;
  /** Refused (503 and the like) or failed. */
  refused: number;
  /** Wait for the first byte of answered requests: arrival to first byte. */
  waitMean: number;
  waitP90: number;
  waitP99: number;
  waitMax: number;
  /** Arrival to last byte, mean over answered requests. */
  responseMean: number;
  /** From the first arrival to the last answer's end. */
  completionMs: number;
  loads: number;
  /** Generating time over (boards x completion time). */
  utilisation: number;
}

/** Summarises a run. */
export function summarise(run: Run): Summary {
  const answered = run.outcomes.filter((o) => o.status === "ok" && o.firstByteMs !== undefined);
  const waits = answered.map((o) => o.firstByteMs! - o.arrivalMs);
  const start = Math.min(...run.outcomes.map((o) => o.arrivalMs));
  const end = Math.max(...run.outcomes.map((o) => o.endMs));
  const completionMs = run.outcomes.length === 0 ? 0 : end - start;
  const busy = run.busyMs.reduce((a, b) => a + b, 0);
  return {
    requests: run.outcomes.length,
    answered: answered.length,
    refused: run.outcomes.length - answered.length,
    waitMean: mean(waits),
    waitP90: percentile(waits, 90),
    waitP99: percentile(waits, 99),
    waitMax: waits.length === 0 ? NaN : Math.max(...waits),
    responseMean: mean(answered.map((o) => o.endMs - o.arrivalMs)),
    completionMs,
    loads: run.loads,
    utilisation: completionMs > 0 && run.busyMs.length > 0
      ? busy / (run.busyMs.length * completionMs)
      : 0,
  };
}

/** How a policy compares with the bound, and whether the targets are met. */
export interface Verdict {
  meanRatio: number;
  p90Ratio: number;
  completionRatio: number;
  /** Mean and p90 within 1.3x of the bound plus 60 ms. */
  waitsMet: boolean;
  /** Completion within 1.5x of the bound. */
  completionMet: boolean;
  /** Every request answered. */
  allAnswered: boolean;
}

/**
 * Compares `summary` with the `bound`: mean and p90 wait within
 * `1.3 x bound + 60 ms`, completion within `1.5 x bound` (the targets).
 */
export function verdict(summary: Summary, bound: Summary): Verdict {
  const within = (value: number, limit: number) => Number.isFinite(value) && value <= limit;
  return {
    meanRatio: summary.waitMean / bound.waitMean,
    p90Ratio: summary.waitP90 / bound.waitP90,
    completionRatio: summary.completionMs / bound.completionMs,
    waitsMet: within(summary.waitMean, 1.3 * bound.waitMean + 60) &&
      within(summary.waitP90, 1.3 * bound.waitP90 + 60),
    completionMet: within(summary.completionMs, 1.5 * bound.completionMs),
    allAnswered: summary.refused === 0,
  };
}
