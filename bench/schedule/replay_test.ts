import assert from "node:assert/strict";
import { replayOnRouter } from "./replay.ts";
import { summarise } from "./stats.ts";
import { coldBurstTrace, warmTrace } from "./trace.ts";

Deno.test("replayOnRouter() answers a small warm trace through the router, one generation per board", async () => {
  const run = await replayOnRouter(warmTrace({ seed: 15, load: 0.7, requests: 30 }), 10);
  const summary = summarise(run);
  assert.equal(summary.answered, 30, run.failures.join("; "));
  assert.ok(Object.values(run.maxConcurrent).every((n) => n === 1));
  assert.equal(run.orphanedWorkers, 0);
  assert.equal(run.loads, 0);
});

Deno.test("replayOnRouter() counts the load a cold burst makes", async () => {
  const run = await replayOnRouter(coldBurstTrace({ seed: 15, requests: 6, loadMs: 500 }), 10);
  assert.equal(summarise(run).answered, 6, run.failures.join("; "));
  assert.ok(run.loads >= 1);
  assert.ok(Object.values(run.maxConcurrent).every((n) => n <= 1));
});
