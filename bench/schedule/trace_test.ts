import assert from "node:assert/strict";
import {
  coldBurstTrace,
  drawIndex,
  mulberry32,
  warmTrace,
  zipfTrace,
  zipfWeights,
} from "./trace.ts";

Deno.test("mulberry32() gives the same numbers for the same seed, in [0, 1)", () => {
  const a = mulberry32(15);
  const b = mulberry32(15);
  const c = mulberry32(16);
  const first = Array.from({ length: 1000 }, () => a());
  assert.deepEqual(first, Array.from({ length: 1000 }, () => b()));
  assert.notDeepEqual(first.slice(0, 5), Array.from({ length: 5 }, () => c()));
  assert.ok(first.every((u) => u >= 0 && u < 1));
});

Deno.test("zipfWeights() and drawIndex() follow the weights", () => {
  assert.deepEqual(zipfWeights(2, 1), [2 / 3, 1 / 3]);
  const random = mulberry32(1);
  const counts = [0, 0, 0];
  for (let i = 0; i < 30_000; i++) counts[drawIndex(random, [0.5, 0.3, 0.2])]++;
  counts.forEach((count, i) => assert.ok(Math.abs(count / 30_000 - [0.5, 0.3, 0.2][i]) < 0.02));
});

Deno.test("warmTrace() offers the load it is asked for, with the mix of lengths", () => {
  const trace = warmTrace({ seed: 15, load: 0.85, requests: 5000 });
  assert.deepEqual(trace, warmTrace({ seed: 15, load: 0.85, requests: 5000 }));
  const work = trace.requests.reduce((sum, r) => sum + r.serviceMs, 0);
  const offered = work / (trace.requests.at(-1)!.atMs * trace.boards.length);
  assert.ok(Math.abs(offered - 0.85) < 0.05, `offered ${offered}`);
  const long = trace.requests.filter((r) => r.serviceMs === 1500).length / 5000;
  assert.ok(Math.abs(long - 0.2) < 0.02, `long share ${long}`);
  assert.ok(trace.boards.every((b) => b.loaded.includes("qwen")));
});

Deno.test("coldBurstTrace() sends every request at once for a model no board has loaded", () => {
  const trace = coldBurstTrace({ seed: 15 });
  assert.equal(trace.requests.length, 24);
  assert.ok(trace.requests.every((r) => r.atMs === 0 && r.model === "phi"));
  assert.ok(trace.boards.every((b) => b.onDisk.includes("phi") && !b.loaded.includes("phi")));
});

Deno.test("zipfTrace() asks for popular models more and starts with the tail unloaded", () => {
  const trace = zipfTrace({ seed: 15, requests: 3000 });
  const count = (model: string) => trace.requests.filter((r) => r.model === model).length;
  assert.ok(count("m1") > count("m2") && count("m2") > count("m6"));
  const loaded = new Set(trace.boards.flatMap((b) => b.loaded));
  assert.ok(loaded.has("m1") && !loaded.has("m5"));
  assert.ok(trace.boards.every((b) => b.loaded.length < b.maxLoaded));
});
