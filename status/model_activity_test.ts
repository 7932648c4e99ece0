import assert from "node:assert/strict";
import { ModelActivity, percentile } from "./model_activity.ts";

Deno.test("percentile() takes the nearest rank, and null of nothing", () => {
  assert.equal(percentile([], 0.95), null);
  assert.equal(percentile([7], 0.95), 7);
  const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.equal(percentile(hundred, 0.95), 95);
  assert.equal(percentile(hundred, 0.5), 50);
  assert.equal(percentile([1, 2, 3, 1000], 0.95), 1000);
});

Deno.test("ModelActivity counts requests of the last minute and the p95 of the window", () => {
  const activity = new ModelActivity({ windowMs: 300_000 });
  const t0 = 1_000_000;
  for (let i = 0; i < 20; i++) activity.record("qwen", i === 19 ? 900 : 100, t0 + i * 1000);
  activity.record("phi", 50, t0);
  const now = t0 + 19_000;
  assert.deepEqual(activity.stats("qwen", now), {
    requestsPerMinute: 20,
    p95TtfbMs: 100,
    samples: 20,
  });
  // Two minutes later the requests are out of the minute but still in the p95 window.
  assert.deepEqual(activity.stats("qwen", now + 120_000), {
    requestsPerMinute: 0,
    p95TtfbMs: 100,
    samples: 20,
  });
  assert.deepEqual(activity.stats("nobody", now), {
    requestsPerMinute: 0,
    p95TtfbMs: null,
    samples: 0,
  });
  assert.deepEqual(activity.models(now), ["phi", "qwen"]);
});

Deno.test("ModelActivity forgets models whose requests all left the window", () => {
  const activity = new ModelActivity({ windowMs: 10_000 });
  activity.record("qwen", 100, 0);
  activity.record("phi", 100, 5_000);
  assert.deepEqual(activity.models(12_000), ["phi"]);
  assert.deepEqual(activity.stats("qwen", 12_000).samples, 0);
  assert.deepEqual(activity.models(20_000), []);
});

Deno.test("ModelActivity stays bounded in samples per model and in models", () => {
  const activity = new ModelActivity({ maxSamples: 10, maxModels: 2 });
  for (let i = 0; i < 1000; i++) activity.record("qwen", i, i);
  const stats = activity.stats("qwen", 1000);
  assert.equal(stats.samples, 10);
  // Only the newest ten (990..999) are left.
  assert.equal(stats.p95TtfbMs, 999);
  activity.record("phi", 1, 1000);
  activity.record("third", 1, 1000);
  assert.deepEqual(activity.models(1000), ["phi", "qwen"]);
});
