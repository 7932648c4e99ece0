/**
 * @module
 * Tests for the simulated cluster.
 */

import assert from "node:assert/strict";
import { startSimCluster } from "./cluster.ts";

Deno.test("a cluster puts each pod on its own loopback address and lists them as backends", async () => {
  const cluster = await startSimCluster({
    pods: [{ models: ["a"] }, { models: ["b"], flavor: "fl" }, { models: ["a", "b"] }],
  });
  try {
    assert.deepEqual(cluster.pods.map((pod) => pod.name), ["rk-0", "rk-1", "rk-2"]);
    assert.deepEqual(cluster.pods.map((pod) => pod.hostname), [
      "127.0.0.11",
      "127.0.0.12",
      "127.0.0.13",
    ]);
    assert.equal(
      cluster.backends,
      cluster.pods.map((pod) => `${pod.name}=http://${pod.hostname}:${pod.port}`).join(","),
    );
    const onDisk = await Promise.all(cluster.pods.map(async (pod) => {
      const tags = await (await fetch(`${pod.url}/api/tags`)).json();
      return tags.models.map((model: { name: string }) => model.name);
    }));
    assert.deepEqual(onDisk, [["a"], ["b"], ["a", "b"]]);
  } finally {
    await cluster.close();
  }
});

Deno.test("a cluster keeps the names, addresses and first address it is given", async () => {
  const cluster = await startSimCluster({
    firstAddress: 30,
    pods: [{ models: ["a"], name: "left" }, { models: ["a"], hostname: "127.0.0.99" }],
  });
  try {
    assert.equal(cluster.pods[0].name, "left");
    assert.equal(cluster.pods[0].hostname, "127.0.0.30");
    assert.equal(cluster.pods[1].name, "rk-1");
    assert.equal(cluster.pods[1].hostname, "127.0.0.99");
  } finally {
    await cluster.close();
  }
});

Deno.test("pods in a cluster load models independently", async () => {
  await using cluster = await startSimCluster({
    pods: [{ models: ["a"], loadDelayMs: 1 }, { models: ["a"], loadDelayMs: 1 }],
  });
  const [first, second] = cluster.pods;
  const response = await fetch(`${first.url}/api/load`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "a" }),
  });
  assert.equal(response.status, 200);
  await response.body?.cancel();
  assert.deepEqual(first.loadedModels(), ["a"]);
  assert.deepEqual(second.loadedModels(), []);
});

Deno.test("closing a cluster stops every pod", async () => {
  const cluster = await startSimCluster({ pods: [{ models: ["a"] }, { models: ["a"] }] });
  await cluster.close();
  for (const pod of cluster.pods) await assert.rejects(fetch(`${pod.url}/api/version`));
});

Deno.test("a cluster whose pod cannot bind fails and leaves no pod running", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.41", port: 0 });
  try {
    await assert.rejects(
      startSimCluster({
        firstAddress: 40,
        pods: [{ models: ["a"] }, { models: ["a"], port: taken.addr.port }],
      }),
      Deno.errors.AddrInUse,
    );
  } finally {
    taken.close();
  }
});
