import assert from "node:assert/strict";
import { backoffMs } from "./backoff.ts";

Deno.test("backoffMs() doubles the base for each failure, up to the maximum", () => {
  const table: [attempt: number, baseMs: number, maxMs: number, expected: number][] = [
    [0, 250, 10_000, 250],
    [1, 250, 10_000, 500],
    [5, 250, 10_000, 8_000],
    [6, 250, 10_000, 10_000],
    [1_000_000, 250, 10_000, 10_000],
    // The store's ejection: 30 s doubled at most four times.
    [4, 30_000, 30_000 * 16, 480_000],
    [5, 30_000, 30_000 * 16, 480_000],
    // The applier's retry: 30 s doubling up to 10 min.
    [2, 30_000, 600_000, 120_000],
    [5, 30_000, 600_000, 600_000],
    // A zero base never waits, however many failures.
    [2000, 0, 1000, 0],
    // A maximum below the base caps the first wait too.
    [0, 250, 100, 100],
    [-1, 250, 10_000, 250],
  ];
  for (const [attempt, baseMs, maxMs, expected] of table) {
    assert.equal(
      backoffMs(attempt, baseMs, maxMs),
      expected,
      `backoffMs(${attempt}, ${baseMs}, ${maxMs})`,
    );
  }
});
