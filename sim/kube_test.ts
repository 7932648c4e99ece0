/**
 * @module
 * Tests for the fake Kubernetes API server, driven by the official
 * `@kubernetes/client-node` client as the router uses it.
 */

import assert from "node:assert/strict";
import * as k8s from "@kubernetes/client-node";
import {
  configMapObject,
  type FakeKube,
  type KubeObject,
  type KubeRequest,
  podObject,
  type PodObjectOptions,
  startFakeKube,
} from "./kube.ts";

const PODS = "/api/v1/namespaces/default/pods";
const SELECTOR = "app=rkllama";

/** A client config for the fake, the way the router connects to `kubectl proxy`. */
function kubeConfig(kube: FakeKube): k8s.KubeConfig {
  const config = new k8s.KubeConfig();
  config.loadFromOptions({
    clusters: [{ name: "fake", server: kube.url, skipTLSVerify: true }],
    users: [{ name: "anonymous" }],
    contexts: [{ name: "fake", cluster: "fake", user: "anonymous" }],
    currentContext: "fake",
  });
  return config;
}

/** Rejects when the promise takes longer than `ms`, so a broken test fails instead of hanging. */
async function within<T>(promise: Promise<T>, what: string, ms = 3000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The ApiException client-node threw, with the Status body parsed. */
async function apiError(call: Promise<unknown>): Promise<{ code: number; body: KubeObject }> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof k8s.ApiException, `not an ApiException: ${error}`);
    const body = typeof error.body === "string" ? JSON.parse(error.body) : error.body;
    return { code: error.code, body };
  }
  assert.fail("the call succeeded");
}

function isWatch(request: KubeRequest): boolean {
  return request.query.watch === "true";
}

function isList(path: string) {
  return (request: KubeRequest) => request.path === path && !isWatch(request);
}

/** What an informer reported, in order, with a way to wait for the next thing. */
class InformerLog {
  readonly entries: string[] = [];
  readonly errors: unknown[] = [];
  #waiters: { match: (entry: string) => boolean; resolve: (entry: string) => void }[] = [];
  #seen = 0;

  constructor(informer: k8s.Informer<k8s.V1Pod>) {
    for (const verb of [k8s.ADD, k8s.UPDATE, k8s.DELETE] as const) {
      informer.on(verb, (pod) => this.#push(`${verb} ${pod.metadata?.name}`));
    }
    informer.on(k8s.CONNECT, () => this.#push("connect"));
    informer.on(k8s.ERROR, (error) => {
      this.errors.push(error);
      this.#push(`error ${error?.statusCode ?? error?.code ?? error?.name ?? ""}`.trim());
    });
  }

  /** Resolves with the next entry (after those already waited for) that matches. */
  next(entry: string | ((entry: string) => boolean)): Promise<string> {
    const match = typeof entry === "string" ? (e: string) => e === entry : entry;
    const index = this.entries.findIndex((e, i) => i >= this.#seen && match(e));
    if (index >= 0) {
      this.#seen = index + 1;
      return Promise.resolve(this.entries[index]);
    }
    return within(
      new Promise((resolve) => this.#waiters.push({ match, resolve })),
      `informer entry ${entry}`,
    );
  }

  #push(entry: string): void {
    this.entries.push(entry);
    const waiter = this.#waiters.find((w) => w.match(entry));
    if (waiter) {
      this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
      this.#seen = this.entries.length;
      waiter.resolve(entry);
    }
  }
}

/** An informer on default's pods matching SELECTOR, as the router sets one up. */
function podInformer(kube: FakeKube): k8s.Informer<k8s.V1Pod> & k8s.ObjectCache<k8s.V1Pod> {
  const config = kubeConfig(kube);
  const api = config.makeApiClient(k8s.CoreV1Api);
  return k8s.makeInformer(
    config,
    PODS,
    () => api.listNamespacedPod({ namespace: "default", labelSelector: SELECTOR }),
    SELECTOR,
  );
}

/** A ready RKLlama pod that SELECTOR matches. */
function rkPod(name: string, extra: Partial<PodObjectOptions> = {}): KubeObject {
  return podObject({ name, labels: { app: "rkllama" }, ip: "10.0.0.1", ...extra });
}

// ---------------------------------------------------------------------------
// CRUD through CoreV1Api and CoordinationV1Api

Deno.test("pods are created, read, listed by label and field selector, and deleted through CoreV1Api", async () => {
  await using kube = await startFakeKube();
  const api = kubeConfig(kube).makeApiClient(k8s.CoreV1Api);
  const created = await api.createNamespacedPod({
    namespace: "default",
    body: {
      metadata: { name: "rk-0", labels: { app: "rkllama", tier: "npu" } },
      spec: { containers: [{ name: "rkllama", image: "rkllama" }] },
    },
  });
  assert.equal(created.metadata?.namespace, "default");
  assert.match(created.metadata?.uid ?? "", /^[0-9a-f-]{36}$/);
  assert.ok(created.metadata?.creationTimestamp instanceof Date);
  assert.equal(created.metadata?.resourceVersion, kube.resourceVersion);
  kube.apply("pods", podObject({ name: "other", labels: { app: "web" } }));
  kube.apply("pods", rkPod("elsewhere", { namespace: "kube-system" }));

  const read = await api.readNamespacedPod({ namespace: "default", name: "rk-0" });
  assert.equal(read.metadata?.uid, created.metadata?.uid);
  assert.equal(read.kind, "Pod");

  const names = async (request: Promise<k8s.V1PodList>) =>
    (await request).items.map((pod) => pod.metadata?.name);
  assert.deepEqual(await names(api.listNamespacedPod({ namespace: "default" })), ["other", "rk-0"]);
  assert.deepEqual(
    await names(api.listNamespacedPod({ namespace: "default", labelSelector: SELECTOR })),
    ["rk-0"],
  );
  assert.deepEqual(
    await names(
      api.listNamespacedPod({ namespace: "default", fieldSelector: "metadata.name=other" }),
    ),
    ["other"],
  );
  assert.deepEqual(
    await names(api.listPodForAllNamespaces({ labelSelector: SELECTOR })),
    ["rk-0", "elsewhere"],
  );
  const list = await api.listNamespacedPod({ namespace: "default" });
  assert.equal(list.metadata?.resourceVersion, kube.resourceVersion);

  const deleted = await api.deleteNamespacedPod({ namespace: "default", name: "rk-0" });
  assert.equal(deleted.metadata?.name, "rk-0");
  assert.equal(kube.get("pods", "default", "rk-0"), undefined);
  const missing = await apiError(api.readNamespacedPod({ namespace: "default", name: "rk-0" }));
  assert.equal(missing.code, 404);
  assert.deepEqual(missing.body, {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message: 'pods "rk-0" not found',
    reason: "NotFound",
    code: 404,
    details: { name: "rk-0", kind: "pods" },
  });
});

Deno.test("replacing a configmap with a stale resourceVersion fails with 409 Conflict", async () => {
  await using kube = await startFakeKube();
  const api = kubeConfig(kube).makeApiClient(k8s.CoreV1Api);
  const first = await api.createNamespacedConfigMap({
    namespace: "default",
    body: { metadata: { name: "router" }, data: { models: "a" } },
  });
  const exists = await apiError(api.createNamespacedConfigMap({
    namespace: "default",
    body: { metadata: { name: "router" }, data: {} },
  }));
  assert.equal(exists.code, 409);
  assert.equal(exists.body.reason, "AlreadyExists");
  assert.equal(exists.body.message, 'configmaps "router" already exists');

  const second = await api.replaceNamespacedConfigMap({
    namespace: "default",
    name: "router",
    body: { ...first, data: { models: "b" } },
  });
  assert.equal(second.data?.models, "b");
  assert.ok(Number(second.metadata?.resourceVersion) > Number(first.metadata?.resourceVersion));
  assert.equal(second.metadata?.uid, first.metadata?.uid);

  const stale = await apiError(api.replaceNamespacedConfigMap({
    namespace: "default",
    name: "router",
    body: { ...first, data: { models: "c" } },
  }));
  assert.equal(stale.code, 409);
  assert.equal(stale.body.reason, "Conflict");
  assert.match(String(stale.body.message), /the object has been modified/);
  assert.deepEqual(kube.get("configmaps", "default", "router")?.data, { models: "b" });

  const status = await api.deleteNamespacedConfigMap({ namespace: "default", name: "router" });
  assert.equal(status.status, "Success");
  assert.deepEqual(kube.list("configmaps"), []);
});

Deno.test("client-node's default JSON patch and an explicit merge patch both change an object", async () => {
  await using kube = await startFakeKube();
  const api = kubeConfig(kube).makeApiClient(k8s.CoreV1Api);
  kube.apply("configmaps", configMapObject("router", { a: "1", b: "2" }));
  const since = kube.requests.length;
  await api.patchNamespacedConfigMap({
    namespace: "default",
    name: "router",
    body: [{ op: "replace", path: "/data/a", value: "10" }, { op: "remove", path: "/data/b" }],
  });
  const request = await kube.waitForRequest((r) => r.method === "PATCH", { since });
  assert.deepEqual(request.body, [
    { op: "replace", path: "/data/a", value: "10" },
    { op: "remove", path: "/data/b" },
  ]);
  assert.deepEqual(kube.get("configmaps", "default", "router")?.data, { a: "10" });

  const merged = await api.patchNamespacedConfigMap(
    { namespace: "default", name: "router", body: { data: { c: "3" } } },
    k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
  );
  assert.deepEqual(merged.data, { a: "10", c: "3" });

  const failed = await apiError(api.patchNamespacedConfigMap({
    namespace: "default",
    name: "router",
    body: [{ op: "test", path: "/data/a", value: "nope" }],
  }));
  assert.equal(failed.code, 422);
  const stale = await apiError(api.patchNamespacedConfigMap(
    { namespace: "default", name: "router", body: { metadata: { resourceVersion: "1" } } },
    k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
  ));
  assert.equal(stale.code, 409);
});

Deno.test("an Event created through CoreV1Api is stored and listed", async () => {
  await using kube = await startFakeKube();
  const api = kubeConfig(kube).makeApiClient(k8s.CoreV1Api);
  await api.createNamespacedEvent({
    namespace: "default",
    body: {
      metadata: { generateName: "rk-0." },
      involvedObject: { kind: "Pod", namespace: "default", name: "rk-0" },
      reason: "ModelLoaded",
      message: "qwen loaded",
      type: "Normal",
      source: { component: "rkllama-router" },
    },
  });
  const [event] = kube.list("events", "default");
  assert.match(event.metadata?.name ?? "", /^rk-0\.[a-z0-9]{5}$/);
  assert.equal(event.reason, "ModelLoaded");
  const listed = await api.listNamespacedEvent({
    namespace: "default",
    fieldSelector: "involvedObject.name=rk-0,source=rkllama-router",
  });
  assert.deepEqual(listed.items.map((e) => e.message), ["qwen loaded"]);
});

Deno.test("leases are created, read and replaced through CoordinationV1Api, with conflicts on stale versions", async () => {
  await using kube = await startFakeKube();
  const api = kubeConfig(kube).makeApiClient(k8s.CoordinationV1Api);
  const created = await api.createNamespacedLease({
    namespace: "default",
    body: {
      metadata: { name: "router-leader" },
      spec: { holderIdentity: "router-a", leaseDurationSeconds: 15 },
    },
  });
  assert.equal(created.apiVersion, "coordination.k8s.io/v1");
  const read = await api.readNamespacedLease({ namespace: "default", name: "router-leader" });
  assert.equal(read.spec?.holderIdentity, "router-a");

  const taken = await api.replaceNamespacedLease({
    namespace: "default",
    name: "router-leader",
    body: { ...read, spec: { ...read.spec, holderIdentity: "router-b" } },
  });
  assert.equal(taken.spec?.holderIdentity, "router-b");
  const lost = await apiError(api.replaceNamespacedLease({
    namespace: "default",
    name: "router-leader",
    body: { ...read, spec: { ...read.spec, holderIdentity: "router-c" } },
  }));
  assert.equal(lost.code, 409);
  assert.equal(
    lost.body.message,
    'Operation cannot be fulfilled on leases.coordination.k8s.io "router-leader": ' +
      "the object has been modified; please apply your changes to the latest version and try again",
  );
  assert.deepEqual(lost.body.details, {
    name: "router-leader",
    kind: "leases",
    group: "coordination.k8s.io",
  });
  assert.equal(
    (kube.get("leases", "default", "router-leader")?.spec as { holderIdentity: string })
      .holderIdentity,
    "router-b",
  );
  const missing = await apiError(api.readNamespacedLease({ namespace: "default", name: "none" }));
  assert.equal(missing.body.message, 'leases.coordination.k8s.io "none" not found');
});

Deno.test("label selectors support equality, inequality, existence and set terms", async () => {
  await using kube = await startFakeKube();
  kube.apply("pods", podObject({ name: "a", labels: { app: "rkllama", tier: "npu" } }));
  kube.apply("pods", podObject({ name: "b", labels: { app: "rkllama" } }));
  kube.apply("pods", podObject({ name: "c", labels: { app: "web", tier: "cpu" } }));
  const select = async (labelSelector: string) => {
    const url = `${kube.url}${PODS}?labelSelector=${encodeURIComponent(labelSelector)}`;
    const response = await fetch(url);
    const body = await response.json();
    if (response.status !== 200) return `${response.status} ${body.reason}`;
    return body.items.map((pod: KubeObject) => pod.metadata?.name).join(",");
  };
  assert.equal(await select("app=rkllama"), "a,b");
  assert.equal(await select("app==rkllama,tier"), "a");
  assert.equal(await select("app!=web"), "a,b");
  assert.equal(await select("tier!=npu"), "b,c");
  assert.equal(await select("!tier"), "b");
  assert.equal(await select("tier in (npu, cpu),app notin (web)"), "a");
  assert.equal(await select(""), "a,b,c");
  assert.equal(await select("app=(oops"), "400 BadRequest");
});

// ---------------------------------------------------------------------------
// Watches and informers

Deno.test("an informer sees pods matching its label selector added, modified and deleted, and no others", async () => {
  await using kube = await startFakeKube();
  kube.apply("pods", rkPod("rk-0"));
  kube.apply("pods", podObject({ name: "web", labels: { app: "web" } }));
  const informer = podInformer(kube);
  const log = new InformerLog(informer);
  await informer.start();
  try {
    await log.next("add rk-0");
    kube.apply("pods", rkPod("rk-1", { ready: false }));
    await log.next("add rk-1");
    kube.patch("pods", "default", "rk-1", {
      status: { conditions: [{ type: "Ready", status: "True" }] },
    });
    await log.next("update rk-1");
    kube.apply("pods", podObject({ name: "web", labels: { app: "web", v: "2" } }));
    kube.remove("pods", "default", "web");
    // A pod relabelled out of the selector leaves the informer as a deletion.
    kube.patch("pods", "default", "rk-0", { metadata: { labels: { app: "retired" } } });
    await log.next("delete rk-0");
    kube.remove("pods", "default", "rk-1");
    await log.next("delete rk-1");
    assert.deepEqual(log.entries, [
      "connect",
      "add rk-0",
      "add rk-1",
      "update rk-1",
      "delete rk-0",
      "delete rk-1",
    ]);
    assert.deepEqual(informer.list(), []);
    const watch = kube.requests.find(isWatch);
    assert.equal(watch?.path, PODS);
    assert.equal(watch?.query.labelSelector, SELECTOR);
  } finally {
    await informer.stop();
  }
});

Deno.test("after closeWatches an informer watches again from its last resourceVersion without listing, missing nothing", async () => {
  await using kube = await startFakeKube();
  kube.apply("pods", rkPod("rk-0"));
  const informer = podInformer(kube);
  const log = new InformerLog(informer);
  await informer.start();
  try {
    await log.next("add rk-0");
    const firstWatch = await kube.waitForRequest(isWatch);
    const since = kube.requests.length;
    kube.closeWatches();
    // Changes while no watch is open are replayed from the server's history.
    kube.apply("pods", rkPod("rk-1"));
    const rewatch = await within(kube.waitForRequest(isWatch, { since }), "a new watch");
    assert.equal(rewatch.query.resourceVersion, firstWatch.query.resourceVersion);
    await log.next("add rk-1");
    assert.equal(kube.requests.slice(since).filter(isList(PODS)).length, 0);
    assert.deepEqual(log.entries, ["connect", "add rk-0", "connect", "add rk-1"]);
    assert.deepEqual(log.errors, []);
  } finally {
    await informer.stop();
  }
});

Deno.test("after expireResourceVersions an informer's watch gets 410 Expired and the informer lists again by itself", async () => {
  await using kube = await startFakeKube();
  kube.apply("pods", rkPod("rk-0"));
  kube.apply("pods", rkPod("rk-1"));
  const informer = podInformer(kube);
  const log = new InformerLog(informer);
  await informer.start();
  try {
    await log.next("add rk-1");
    // No change since the list: the informer holds the list's resourceVersion.
    const held = (await kube.waitForRequest(isWatch)).query.resourceVersion;
    const since = kube.requests.length;
    kube.expireResourceVersions();
    // What the informer will be sent on its next watch, read by a raw watch of our own.
    const raw = await fetch(`${kube.url}${PODS}?watch=true&resourceVersion=${held}`);
    assert.equal(raw.status, 200);
    assert.deepEqual(JSON.parse(await raw.text()), {
      type: "ERROR",
      object: {
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message: `too old resource version: ${held} (${kube.resourceVersion})`,
        reason: "Expired",
        code: 410,
      },
    });
    kube.closeWatches();
    kube.remove("pods", "default", "rk-0");
    kube.apply("pods", rkPod("rk-2"));
    await log.next("add rk-2");
    const relist = await kube.waitForRequest(isList(PODS), { since });
    // First a watch from the expired version, then a list, then a watch from the list's version.
    const expiredWatch = await kube.waitForRequest(isWatch, { since: since + 1 });
    assert.equal(expiredWatch.query.resourceVersion, held);
    assert.ok(kube.requests.indexOf(expiredWatch) < kube.requests.indexOf(relist));
    const freshWatch = await within(
      kube.waitForRequest(isWatch, { since: kube.requests.indexOf(relist) }),
      "the watch after the list",
    );
    assert.equal(freshWatch.query.resourceVersion, kube.resourceVersion);
    // The re-list is what tells the informer rk-0 went while it was not watching.
    assert.deepEqual(log.entries.slice(3), ["connect", "connect", "delete rk-0", "add rk-2"]);
    assert.deepEqual(log.errors, []);
  } finally {
    await informer.stop();
  }
});

Deno.test("when the API refuses connections an informer emits error and stops; start() resumes from its resourceVersion", async () => {
  await using kube = await startFakeKube();
  kube.apply("pods", rkPod("rk-0"));
  const informer = podInformer(kube);
  const log = new InformerLog(informer);
  await informer.start();
  try {
    await log.next("add rk-0");
    const held = (await kube.waitForRequest(isWatch)).query.resourceVersion;
    await kube.outage();
    await log.next((entry) => entry.startsWith("error"));
    const [refused] = log.errors as { cause?: { code?: string } }[];
    assert.equal(refused.cause?.code, "ECONNREFUSED");
    // The store lives on while the API is away, like etcd behind a restarting API server.
    kube.remove("pods", "default", "rk-0");
    kube.apply("pods", rkPod("rk-1"));
    await kube.restore();
    const since = kube.requests.length;
    await informer.start();
    await log.next("add rk-1");
    assert.deepEqual(log.entries, [
      "connect",
      "add rk-0",
      "connect",
      "error TypeError",
      "connect",
      "delete rk-0",
      "add rk-1",
    ]);
    // start() keeps the resourceVersion: no list, the watch replays what was missed.
    assert.deepEqual(
      kube.requests.slice(since).map((r) => [isWatch(r), r.query.resourceVersion]),
      [[true, held]],
    );
  } finally {
    await informer.stop();
  }
});

Deno.test("during an unavailable outage every request gets a 503 Status, which an informer reports as an error", async () => {
  await using kube = await startFakeKube();
  const informer = podInformer(kube);
  const log = new InformerLog(informer);
  await informer.start();
  try {
    await kube.outage("unavailable");
    await log.next("error 503");
    const response = await fetch(`${kube.url}${PODS}`);
    assert.equal(response.status, 503);
    assert.equal((await response.json()).reason, "ServiceUnavailable");
    await kube.restore();
    kube.apply("pods", rkPod("rk-0"));
    await informer.start();
    await log.next("add rk-0");
  } finally {
    await informer.stop();
  }
});

Deno.test("a cut watch ends in a broken body, not a clean end of the stream", async () => {
  await using kube = await startFakeKube();
  const response = await fetch(`${kube.url}${PODS}?watch=1`);
  const reader = response.body!.getReader();
  kube.apply("pods", rkPod("rk-0"));
  const first = await reader.read();
  assert.equal(JSON.parse(new TextDecoder().decode(first.value)).type, "ADDED");
  kube.cutWatches();
  await assert.rejects(reader.read());
  assert.equal(kube.openWatches, 0);
});

Deno.test("a watch with a fieldSelector on one ConfigMap sees only that ConfigMap, and timeoutSeconds ends it cleanly", async () => {
  await using kube = await startFakeKube();
  const config = kubeConfig(kube);
  kube.apply("configmaps", configMapObject("router", { models: "a" }));
  kube.apply("configmaps", configMapObject("other", { x: "1" }));
  kube.apply("configmaps", configMapObject("router", { models: "z" }, "elsewhere"));
  const list = await config.makeApiClient(k8s.CoreV1Api).listNamespacedConfigMap({
    namespace: "default",
    fieldSelector: "metadata.name=router",
  });
  assert.deepEqual(list.items.map((c) => c.data), [{ models: "a" }]);
  const seen: string[] = [];
  const changed = Promise.withResolvers<void>();
  const ended = Promise.withResolvers<unknown>();
  await new k8s.Watch(config).watch(
    "/api/v1/namespaces/default/configmaps",
    {
      fieldSelector: "metadata.name=router",
      resourceVersion: list.metadata?.resourceVersion,
      timeoutSeconds: 1,
    },
    (type: string, object: k8s.V1ConfigMap) => {
      seen.push(`${type} ${object.metadata?.name} ${object.data?.models}`);
      if (object.data?.models === "c") changed.resolve();
    },
    (error: unknown) => ended.resolve(error),
  );
  kube.patch("configmaps", "default", "other", { data: { x: "2" } });
  kube.patch("configmaps", "elsewhere", "router", { data: { models: "y" } });
  kube.patch("configmaps", "default", "router", { data: { models: "b" } });
  kube.remove("configmaps", "default", "other");
  kube.patch("configmaps", "default", "router", { data: { models: "c" } });
  await within(changed.promise, "the second change");
  assert.equal(await within(ended.promise, "the watch timeout"), null);
  assert.deepEqual(seen, ["MODIFIED router b", "MODIFIED router c"]);
  assert.equal(kube.openWatches, 0);
});

Deno.test("a watch from no resourceVersion starts with ADDED for each object, and bookmarks come only when asked for", async () => {
  await using kube = await startFakeKube();
  kube.apply("pods", rkPod("rk-0"));
  kube.apply("pods", rkPod("rk-1"));
  const read = async (query: string) => {
    const response = await fetch(`${kube.url}${PODS}?${query}`);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    return {
      /** Reads until `count` lines have arrived. */
      async lines(count: number) {
        while (text.split("\n").length <= count) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
        const lines = text.split("\n").slice(0, count).map((line) => JSON.parse(line));
        return lines.map((e) => `${e.type} ${e.object.metadata.name ?? e.object.kind}`);
      },
      async rest() {
        for (let next = await reader.read(); !next.done; next = await reader.read()) {
          text += next.value;
        }
        return text;
      },
    };
  };
  const withBookmarks = await read("watch=true&allowWatchBookmarks=true");
  const without = await read("watch=true&resourceVersion=0");
  assert.deepEqual(await withBookmarks.lines(2), ["ADDED rk-0", "ADDED rk-1"]);
  kube.bookmark();
  kube.apply("pods", rkPod("rk-2"));
  assert.deepEqual(await withBookmarks.lines(4), [
    "ADDED rk-0",
    "ADDED rk-1",
    "BOOKMARK Pod",
    "ADDED rk-2",
  ]);
  assert.deepEqual(await without.lines(3), ["ADDED rk-0", "ADDED rk-1", "ADDED rk-2"]);
  kube.closeWatches();
  assert.equal((await without.rest()).split("\n").filter((line) => line !== "").length, 3);
  await withBookmarks.rest();
});

Deno.test("objects built by podObject read back through CoreV1Api with address, port, node and readiness", async () => {
  await using kube = await startFakeKube();
  kube.apply(
    "pods",
    podObject({ name: "rk-0", ip: "10.0.0.7", node: "rock-1", port: 8080, ready: false }),
  );
  kube.apply("pods", podObject({ name: "rk-1", deleting: true, phase: "Pending" }));
  const api = kubeConfig(kube).makeApiClient(k8s.CoreV1Api);
  const pod = await api.readNamespacedPod({ namespace: "default", name: "rk-0" });
  assert.equal(pod.status?.podIP, "10.0.0.7");
  assert.equal(pod.spec?.nodeName, "rock-1");
  assert.equal(pod.status?.phase, "Running");
  assert.deepEqual(pod.spec?.containers[0].ports?.map((p) => [p.name, p.containerPort]), [
    ["http", 8080],
  ]);
  assert.equal(pod.status?.conditions?.find((c) => c.type === "Ready")?.status, "False");
  const leaving = await api.readNamespacedPod({ namespace: "default", name: "rk-1" });
  assert.ok(leaving.metadata?.deletionTimestamp instanceof Date);
  assert.equal(leaving.status?.podIP, undefined);
  const running = await api.listNamespacedPod({
    namespace: "default",
    fieldSelector: "status.phase=Running,spec.nodeName=rock-1",
  });
  assert.deepEqual(running.items.map((p) => p.metadata?.name), ["rk-0"]);
  const unsupported = await apiError(
    api.listNamespacedPod({ namespace: "default", fieldSelector: "spec.foo=bar" }),
  );
  assert.equal(unsupported.code, 400);
  assert.equal(unsupported.body.message, "field label not supported: spec.foo");
});

Deno.test("waitForRequest finds past and future requests, and rejects when the fake closes", async () => {
  const kube = await startFakeKube();
  await (await fetch(`${kube.url}/api/v1/namespaces/a/pods?labelSelector=x`)).body?.cancel();
  const past = await kube.waitForRequest((r) => r.query.labelSelector === "x");
  assert.equal(past.path, "/api/v1/namespaces/a/pods");
  assert.equal(past.method, "GET");
  const future = kube.waitForRequest((r) => r.path.endsWith("/b/pods"), {
    since: kube.requests.length,
  });
  await (await fetch(`${kube.url}/api/v1/namespaces/b/pods`)).body?.cancel();
  assert.equal((await future).path, "/api/v1/namespaces/b/pods");
  const never = assert.rejects(kube.waitForRequest(() => false), /closed/);
  await kube.close();
  await never;
  await kube.close();
});
