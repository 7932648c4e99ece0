import assert from "node:assert/strict";
import { effect } from "@preact/signals-core";
import { startSimCluster } from "../sim/cluster.ts";
import { parseBackends } from "../config/flags.ts";
import { addStaticBackends } from "./static.ts";
import { Poller } from "./poller.ts";
import { Store } from "./store.ts";

function storeFor(backends: string, unreachableAfter = 3): Store {
  const store = new Store(unreachableAfter);
  addStaticBackends(store, parseBackends(backends));
  return store;
}

Deno.test("a poll round records what every pod has on disk and loaded", async () => {
  await using cluster = await startSimCluster({
    pods: [{ models: ["qwen", "phi"], loaded: ["qwen"] }, { models: ["llama"] }],
  });
  const store = storeFor(cluster.backends);
  const poller = new Poller(store, { intervalMs: 60_000, timeoutMs: 1000 });
  await poller.pollAll();
  const [a, b] = store.podList.value;
  assert.deepEqual([...a.onDisk.keys()].sort(), ["phi", "qwen"]);
  assert.deepEqual([...a.loaded.keys()], ["qwen"]);
  assert.deepEqual([...b.onDisk.keys()], ["llama"]);
  assert.equal(b.loaded.size, 0);
  assert.equal(a.reachable && b.reachable, true);
});

Deno.test("a frozen pod times out its own poll without holding up the others", async () => {
  await using cluster = await startSimCluster({
    pods: [{ models: ["qwen"], loadDelayMs: 5_000 }, { models: ["phi"], loaded: ["phi"] }],
  });
  const [frozen] = cluster.pods;
  const store = storeFor(cluster.backends, 1);
  const poller = new Poller(store, { intervalMs: 60_000, timeoutMs: 200 });
  await poller.pollAll();
  // An explicit load freezes a FastAPI pod entirely, polls included.
  const load = fetch(`${frozen.url}/api/load`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"model":"qwen"}',
  });
  await frozen.waitFor((e) => e.type === "request" && e.path === "/api/load");
  await poller.pollAll();
  const [a, b] = store.podList.value;
  assert.equal(a.reachable, false);
  assert.equal(a.lastPollError, "no answer within 200 ms");
  assert.equal(b.reachable, true);
  await frozen.kill();
  await load.then((r) => r.body?.cancel(), () => {});
});

Deno.test("the poller polls by itself on its interval", async () => {
  await using cluster = await startSimCluster({ pods: [{ models: ["qwen"] }] });
  const store = storeFor(cluster.backends);
  const poller = new Poller(store, { intervalMs: 20, timeoutMs: 1000 });
  const polled = Promise.withResolvers<void>();
  const dispose = effect(() => {
    if (store.podList.value[0].polled) polled.resolve();
  });
  poller.start();
  await polled.promise;
  dispose();
  poller.stop();
  assert.deepEqual([...store.podList.value[0].onDisk.keys()], ["qwen"]);
});

Deno.test("a pod that refuses connections shows why, not just 'fetch failed'", async () => {
  // A port nobody listens on: bound, then closed.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  const store = storeFor(`dead=http://127.0.0.1:${port}`, 1);
  const poller = new Poller(store, { intervalMs: 60_000, timeoutMs: 5000 });
  await poller.pollAll();
  const [dead] = store.podList.value;
  assert.match(dead.lastPollError, /^fetch failed: .*Connection refused/);
});

Deno.test("a poll learns each pod's server generation from its /api/version", async () => {
  await using cluster = await startSimCluster({
    pods: [{ models: ["qwen"] }, { models: ["qwen"], flavor: "fl" }],
  });
  const store = storeFor(cluster.backends);
  await new Poller(store, { intervalMs: 60_000, timeoutMs: 1000 }).pollAll();
  assert.deepEqual(
    store.podList.value.map((pod) => [pod.version, pod.generation]),
    [["0.0.54", "fastapi"], ["0.0.74", "flask"]],
  );
});
