import assert from "node:assert/strict";
import { postJson, startKubeWorld, storeReaches } from "../sim/fixture.ts";
import { isRoutable } from "../cluster/store.ts";
import { connectKube, podIdentity } from "./kubernetes.ts";

const CHAT = { messages: [{ role: "user", content: "hi" }], stream: false };

Deno.test("pods found through the API are routed to once they answer a poll", async () => {
  await using world = await startKubeWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"] }, { models: ["phi"] }],
  });
  const [router] = world.routers;
  await storeReaches(router.store, (s) => s.podList.value.every((p) => p.polled));
  const response = await postJson(`${router.url}/api/chat`, { model: "phi", ...CHAT });
  assert.equal(response.status, 200);
  await response.body?.cancel();
  const status = await (await fetch(`${router.url}/router/status`)).json();
  assert.equal(status.mode, "kubernetes");
  assert.equal(status.discovery.connected, true);
  assert.deepEqual(status.pods.map((p: { name: string }) => p.name), ["rk-0", "rk-1"]);
});

Deno.test("a pod that turns unready or is deleted stops getting requests at once", async () => {
  await using world = await startKubeWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"] }, { models: ["qwen"], loaded: ["qwen"] }],
  });
  const { store } = world.routers[0];
  await storeReaches(store, (s) => s.podList.value.every((p) => p.polled));
  world.publish(0, { ready: false });
  await storeReaches(store, (s) => s.pods.value.get("rk-0")?.ready === false);
  assert.equal(isRoutable(store.pods.value.get("rk-0")!, Date.now()), false);
  world.kube.remove("pods", "default", "rk-1");
  await storeReaches(store, (s) => !s.pods.value.has("rk-1"));
  const response = await postJson(`${world.routers[0].url}/api/chat`, { model: "qwen", ...CHAT });
  assert.equal(response.status, 503);
  await response.body?.cancel();
});

Deno.test("routing goes on through an API outage, and a deletion missed meanwhile is seen after it", async () => {
  await using world = await startKubeWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"] }, { models: ["qwen"], loaded: ["qwen"] }],
  }, { overrides: {} });
  const [router] = world.routers;
  await storeReaches(router.store, (s) => s.podList.value.every((p) => p.polled));
  await world.kube.outage();
  await storeReaches(router.store, (s) => !s.discovery.value.connected);
  const during = await postJson(`${router.url}/api/chat`, { model: "qwen", ...CHAT });
  assert.equal(during.status, 200);
  await during.body?.cancel();
  const status = await (await fetch(`${router.url}/router/status`)).json();
  assert.equal(status.discovery.connected, false);
  assert.ok(status.discovery.error);
  world.kube.remove("pods", "default", "rk-1");
  await world.kube.restore();
  await storeReaches(router.store, (s) => !s.pods.value.has("rk-1") && s.discovery.value.connected);
  assert.deepEqual([...router.store.pods.value.keys()], ["rk-0"]);
});

Deno.test("an expired resourceVersion (410) makes the router list again", async () => {
  await using world = await startKubeWorld({ pods: [{ models: ["qwen"] }, { models: ["phi"] }] });
  const [router] = world.routers;
  await storeReaches(router.store, (s) => s.pods.value.size === 2);
  const since = world.kube.requests.length;
  world.kube.expireResourceVersions();
  world.kube.remove("pods", "default", "rk-0");
  world.kube.closeWatches();
  await world.kube.waitForRequest(
    (r) => r.method === "GET" && r.path.endsWith("/pods") && r.query.watch !== "true",
    { since },
  );
  await storeReaches(router.store, (s) => !s.pods.value.has("rk-0"));
  assert.deepEqual([...router.store.pods.value.keys()], ["rk-1"]);
});

Deno.test("podIdentity() takes the pod IP, the port named http, the node, and readiness", () => {
  const pod = {
    metadata: { name: "rk-a" },
    spec: {
      nodeName: "board-a",
      containers: [{
        name: "c",
        ports: [{ name: "metrics", containerPort: 9 }, { name: "http", containerPort: 8081 }],
      }],
    },
    status: { phase: "Running", podIP: "fd00::5", conditions: [{ type: "Ready", status: "True" }] },
  };
  assert.deepEqual(podIdentity(pod, 8080), {
    name: "rk-a",
    node: "board-a",
    url: "http://[fd00::5]:8081",
    ready: true,
  });
  assert.equal(podIdentity({ ...pod, status: { phase: "Pending" } }, 8080), undefined);
  const terminating = { ...pod, metadata: { name: "rk-a", deletionTimestamp: new Date() } };
  assert.equal(podIdentity(terminating, 8080)!.ready, false);
});

Deno.test("connectKube() prefers --kube-api, then the service account, then a kubeconfig, then kubectl proxy", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert.equal(connectKube("http://api:1", env({}), () => true).source, "http://api:1");
  assert.equal(
    connectKube("", env({ HOME: "/h" }), () => false).source,
    "http://127.0.0.1:8001",
  );
  const proxy = connectKube("", env({}), () => false).config.getCurrentCluster()!;
  assert.equal(proxy.skipTLSVerify, true);
});
