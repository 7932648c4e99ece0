import assert from "node:assert/strict";
import { Deadlines } from "./deadlines.ts";

/** Resolves when a timeout started now, `ms` long, fires. */
function fired(deadlines: Deadlines, ms: number): Promise<number> {
  return new Promise((resolve) => deadlines.start(ms, () => resolve(performance.now())));
}

Deno.test("Deadlines fire once, not before their time, and the interval stops when none is left", async () => {
  const deadlines = new Deadlines();
  const started = performance.now();
  let calls = 0;
  deadlines.start(20, () => calls++);
  const at = await fired(deadlines, 40);
  assert.ok(at - started >= 40, `fired after ${at - started} ms`);
  assert.equal(calls, 1);
  assert.equal(deadlines.size, 0);
});

Deno.test("A cancelled or paused deadline does not fire; a restarted one fires", async () => {
  const deadlines = new Deadlines();
  const seen: string[] = [];
  deadlines.start(1, () => seen.push("cancelled")).cancel();
  const paused = deadlines.start(1, () => seen.push("paused"));
  paused.pause();
  // A later timeout fires only after the checks that would have fired the others.
  await fired(deadlines, 30);
  assert.deepEqual(seen, []);
  assert.equal(deadlines.size, 1);
  paused.restart();
  await fired(deadlines, 30);
  assert.deepEqual(seen, ["paused"]);
  assert.equal(deadlines.size, 0);
});

Deno.test("A short timeout started after a long one is checked at its own pace", async () => {
  const deadlines = new Deadlines();
  const long = deadlines.start(60_000, () => {});
  const started = performance.now();
  const at = await fired(deadlines, 20);
  // With the long one's pace (250 ms) it would fire far later; a generous bound.
  assert.ok(at - started < 200, `fired after ${at - started} ms`);
  long.cancel();
});
