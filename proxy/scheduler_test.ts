import assert from "node:assert/strict";
import { chatStatus, postJson, startKubeWorld, startWorld } from "../sim/fixture.ts";
import type { SimEvent, SimPod } from "../sim/pod.ts";
import { configMapObject } from "../sim/kube.ts";

/** A streaming chat for `model`; resolves with the status once the answer has been read. */
async function chat(url: string, model: string, signal?: AbortSignal): Promise<number> {
  const response = await postJson(`${url}/api/chat`, {
    model,
    messages: [{ role: "user", content: "hi" }],
  }, { signal });
  await response.text();
  return response.status;
}

const chatsOn = (pod: SimPod, model?: string) =>
  pod.events.filter((e) =>
    e.type === "request" && e.path === "/api/chat" && (model === undefined || e.model === model)
  ).length;

const started = (event: SimEvent) => event.type === "generation-start";

Deno.test("a FastAPI board never runs two generations: requests wait in the router and all finish", async () => {
  await using world = await startWorld({
    pods: Array.from({ length: 3 }, () => ({
      flavor: "fa" as const,
      models: ["qwen"],
      loaded: ["qwen"],
      tokens: ["a", "b", "c"],
      tokenDelayMs: 5,
    })),
  });
  const statuses = await Promise.all(Array.from({ length: 12 }, () => chat(world.url, "qwen")));
  assert.deepEqual(statuses, Array(12).fill(200));
  for (const pod of world.cluster.pods) assert.equal(pod.maxQueuedOnPod, 1, pod.name);
  assert.equal(world.cluster.pods.reduce((sum, pod) => sum + chatsOn(pod), 0), 12);
});

Deno.test("a waiting request goes to whichever board frees first, not to the busy one it might have been bound to", async () => {
  await using world = await startWorld({
    pods: Array.from({ length: 2 }, () => ({
      flavor: "fa" as const,
      models: ["qwen"],
      loaded: ["qwen"],
    })),
  });
  const [slow, quick] = world.cluster.pods;
  slow.pause();
  // One request each: every board has one slot.
  const first = [chat(world.url, "qwen"), chat(world.url, "qwen")];
  await Promise.all(world.cluster.pods.map((pod) => pod.waitFor(started)));
  // The paused board's answer is still open; these three go to the other one, in turn.
  const more = await Promise.all([1, 2, 3].map(() => chat(world.url, "qwen")));
  assert.deepEqual(more, [200, 200, 200]);
  assert.equal(chatsOn(slow), 1);
  assert.equal(chatsOn(quick), 4);
  slow.resume();
  assert.deepEqual(await Promise.all(first), [200, 200]);
});

Deno.test("a Flask board runs one generation per model: two models at once, a second of one model waits in the router", async () => {
  await using world = await startWorld({
    pods: [{ flavor: "fl", models: ["x", "y"], loaded: ["x", "y"] }],
  });
  const [pod] = world.cluster.pods;
  pod.pause();
  const both = [chat(world.url, "x"), chat(world.url, "y")];
  await pod.waitFor((e) => started(e) && e.model === "y");
  await pod.waitFor((e) => started(e) && e.model === "x");
  const second = chat(world.url, "x");
  await waitForQueue(world.url, "x", 1);
  assert.equal(chatsOn(pod, "x"), 1);
  pod.resume();
  assert.deepEqual(await Promise.all([...both, second]), [200, 200, 200]);
  assert.equal(pod.maxConcurrentGenerations, 2);
  assert.equal(pod.maxQueuedOnPod, 1);
});

Deno.test("the oldest waiting request goes first, across models sharing a board", async () => {
  await using world = await startWorld({
    pods: [{ flavor: "fa", models: ["x", "y"], loaded: ["x", "y"] }],
  });
  const [pod] = world.cluster.pods;
  pod.pause();
  const first = chat(world.url, "x");
  await pod.waitFor(started);
  const order: Promise<number>[] = [];
  for (const model of ["y", "x", "y"]) {
    order.push(chat(world.url, model));
    // Each is in the router's queue before the next is sent.
    await waitForQueue(world.url, model, order.length === 3 ? 2 : 1);
  }
  pod.resume();
  assert.deepEqual(await Promise.all([first, ...order]), [200, 200, 200, 200]);
  const models = pod.events.filter((e) => e.type === "request" && e.path === "/api/chat")
    .map((e) => e.model);
  assert.deepEqual(models, ["x", "y", "x", "y"]);
});

Deno.test("a full queue and a long wait are answered 503 with Retry-After; a client that leaves is dropped from the queue", async () => {
  await using world = await startWorld(
    { pods: [{ flavor: "fa", models: ["qwen"], loaded: ["qwen"] }] },
    { maxQueue: 2, queueTimeoutMs: 400 },
  );
  const [pod] = world.cluster.pods;
  pod.pause();
  const first = chat(world.url, "qwen");
  await pod.waitFor(started);
  const leaving = new AbortController();
  const gone = chat(world.url, "qwen", leaving.signal).catch((error) => error.name);
  const timedOut = postJson(`${world.url}/api/chat`, { model: "qwen", messages: [] });
  await waitForQueue(world.url, "qwen", 2);
  const refused = await postJson(`${world.url}/api/chat`, { model: "qwen", messages: [] });
  assert.equal(refused.status, 503);
  assert.ok(refused.headers.get("retry-after"));
  assert.match(
    (await refused.json()).error,
    /2 requests are already waiting for 'qwen'.*--max-queue/,
  );
  leaving.abort();
  assert.equal(await gone, "AbortError");
  const late = await timedOut;
  assert.equal(late.status, 503);
  assert.ok(late.headers.get("retry-after"));
  assert.match((await late.json()).error, /within 0 s \(--queue-timeout\)|--queue-timeout/);
  pod.resume();
  assert.equal(await first, 200);
  // Only the first ever reached the board.
  assert.equal(chatsOn(pod), 1);
  assert.equal(await chatStatus(world.url), 200);
});

Deno.test("with two router replicas, no board runs more generations than its slots", async () => {
  await using world = await startKubeWorld(
    {
      pods: Array.from({ length: 2 }, () => ({
        flavor: "fa" as const,
        models: ["qwen"],
        loaded: ["qwen"],
        tokens: ["a", "b", "c"],
        tokenDelayMs: 5,
      })),
    },
    { routers: 2 },
  );
  world.kube.apply(
    "configmaps",
    configMapObject("rkllama-model-config", { "models.yaml": "models: {}\n" }),
  );
  const placements = world.routers.map((router) => router.placement!);
  // Both replicas know who leads once the follower has read the Lease after the leader took it.
  while (!placements.some((p) => p.leading.value) || !placements.some((p) => p.leaderUrl())) {
    await world.kube.waitForRequest((r) => r.path.includes("/leases/"), {
      since: world.kube.requests.length,
    });
  }
  const statuses = await Promise.all(
    world.routers.flatMap((router) => Array.from({ length: 6 }, () => chat(router.url, "qwen"))),
  );
  assert.deepEqual(statuses, Array(12).fill(200));
  for (const pod of world.cluster.pods) assert.equal(pod.maxQueuedOnPod, 1, pod.name);
});

/** Resolves once `/router/status` shows at least `count` requests waiting for `model`. */
async function waitForQueue(url: string, model: string, count: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const status = await (await fetch(`${url}/router/status`)).json();
    const queue = (status.queues ?? []).find((q: { model: string }) => q.model === model);
    if ((queue?.waiting ?? 0) >= count) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`no ${count} requests waiting for ${model}`);
}
