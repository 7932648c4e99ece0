import assert from "node:assert/strict";
import { mean, percentile, summarise, verdict } from "./stats.ts";

Deno.test("percentile() takes the nearest rank", () => {
  const ten = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5];
  const cases: [number[], number, number][] = [
    [ten, 50, 5],
    [ten, 90, 9],
    [ten, 99, 10],
    [ten, 0, 1],
    [[42], 99, 42],
  ];
  for (const [values, q, expected] of cases) assert.equal(percentile(values, q), expected);
  assert.ok(Number.isNaN(percentile([], 50)));
  assert.ok(Number.isNaN(mean([])));
});

Deno.test("summarise() counts waits to the first byte of answered requests only", () => {
  const summary = summarise({
    outcomes: [
      { id: 0, arrivalMs: 0, firstByteMs: 100, endMs: 300, status: "ok" },
      { id: 1, arrivalMs: 100, firstByteMs: 400, endMs: 500, status: "ok" },
      { id: 2, arrivalMs: 200, endMs: 200, status: "rejected" },
    ],
    loads: 1,
    busyMs: [300, 100],
  });
  assert.equal(summary.answered, 2);
  assert.equal(summary.refused, 1);
  assert.equal(summary.waitMean, 200);
  assert.equal(summary.waitP90, 300);
  assert.equal(summary.responseMean, 350);
  assert.equal(summary.completionMs, 500);
  assert.equal(summary.utilisation, 400 / (2 * 500));
});

Deno.test("verdict() allows 1.3x the bound plus 60 ms for waits and 1.5x for completion", () => {
  const bound = summarise({
    outcomes: [{ id: 0, arrivalMs: 0, firstByteMs: 100, endMs: 1000, status: "ok" }],
    loads: 0,
    busyMs: [1000],
  });
  const run = (wait: number, end: number) =>
    summarise({
      outcomes: [{ id: 0, arrivalMs: 0, firstByteMs: wait, endMs: end, status: "ok" }],
      loads: 0,
      busyMs: [end],
    });
  assert.equal(verdict(run(190, 1500), bound).waitsMet, true);
  assert.equal(verdict(run(191, 1500), bound).waitsMet, false);
  assert.equal(verdict(run(190, 1500), bound).completionMet, true);
  assert.equal(verdict(run(190, 1501), bound).completionMet, false);
  assert.equal(verdict(run(200, 1000), bound).meanRatio, 2);
});
