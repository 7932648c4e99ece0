/**
 * @module
 * Test wiring: a router in this process in front of a simulated cluster, both on
 * loopback, torn down by `await using`.
 */

import { effect } from "@preact/signals-core";
import { parseConfig, type RouterConfig } from "../config/flags.ts";
import type { Store } from "../cluster/store.ts";
import { type Router, type RouterParts, startRouter } from "../router.ts";
import { type SimCluster, type SimClusterOptions, startSimCluster } from "./cluster.ts";
import { type FakeKube, podObject, startFakeKube } from "./kube.ts";

/** A router and the simulated pods behind it. */
export interface TestWorld extends AsyncDisposable {
  router: Router;
  cluster: SimCluster;
  /** The router's base URL. */
  url: string;
}

/**
 * Starts a simulated cluster and a router in front of it. Polls are left to the
 * test (a long interval), so the store changes only when the test says so.
 */
export async function startWorld(
  cluster: SimClusterOptions,
  overrides: Partial<RouterConfig> = {},
  parts: RouterParts = {},
): Promise<TestWorld> {
  const sim = await startSimCluster(cluster);
  const parsed = parseConfig(
    [
      // No pods: the test gives its own backends (an empty --backends is refused).
      ...(sim.backends === "" ? [] : ["--backends", sim.backends]),
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--poll-interval",
      "1h",
    ],
    () => undefined,
  );
  if (parsed.help) throw new Error("unreachable");
  // Polls are the test's to make (a 1 h interval), so loaded copies would all count
  // as possibly expired under the default idle expiry; tests of that set their own.
  const router = await startRouter({
    ...parsed.config,
    podIdleExpiryMs: 24 * 3_600_000,
    ...overrides,
  }, parts);
  return {
    router,
    cluster: sim,
    url: router.url,
    async [Symbol.asyncDispose]() {
      await router.shutdown();
      await sim.close();
    },
  };
}

/** POSTs JSON to the router. */
/** Sends one non-streaming chat for `model`; returns its status, the answer read and dropped. */
export async function chatStatus(url: string, model = "qwen"): Promise<number> {
  const response = await postJson(`${url}/api/chat`, {
    model,
    stream: false,
    messages: [{ role: "user", content: "hi" }],
  });
  await response.body?.cancel();
  return response.status;
}

export function postJson(
  url: string,
  body: unknown,
  init: RequestInit = {},
): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    ...init,
  });
}

/** Resolves once the store satisfies `condition` (checked on every change). */
export function storeReaches(store: Store, condition: (store: Store) => boolean): Promise<void> {
  const reached = Promise.withResolvers<void>();
  let done = false;
  const dispose = effect(() => {
    store.pods.value;
    if (!done && condition(store)) {
      done = true;
      reached.resolve();
    }
  });
  return reached.promise.finally(dispose);
}

/** Simulated pods known to a fake Kubernetes API, and routers that discover them there. */
export interface KubeWorld extends AsyncDisposable {
  kube: FakeKube;
  cluster: SimCluster;
  routers: Router[];
  /** Publishes (or republishes) a simulated pod as a Kubernetes Pod object. */
  publish(index: number, changes?: { ready?: boolean }): void;
}

/**
 * Starts a fake API server with one Pod object per simulated pod (node = pod
 * name, label app=rkllama), and `routers` routers that use it.
 */
export async function startKubeWorld(
  cluster: SimClusterOptions,
  options: { routers?: number; overrides?: Partial<RouterConfig>; publish?: boolean } = {},
): Promise<KubeWorld> {
  const kube = await startFakeKube();
  const sim = await startSimCluster(cluster);
  const publish = (index: number, changes: { ready?: boolean } = {}) => {
    const pod = sim.pods[index];
    kube.apply(
      "pods",
      podObject({
        name: pod.name,
        labels: { app: "rkllama" },
        ip: pod.hostname,
        port: pod.port,
        node: pod.name,
        ready: changes.ready ?? true,
      }),
    );
  };
  if (options.publish ?? true) sim.pods.forEach((_, index) => publish(index));
  const routers: Router[] = [];
  for (let i = 0; i < (options.routers ?? 1); i++) {
    const parsed = parseConfig(
      ["--kube-api", kube.url, "--port", "0", "--host", "127.0.0.1", "--poll-interval", "1h"],
      () => undefined,
    );
    if (parsed.help) throw new Error("unreachable");
    routers.push(
      await startRouter({
        ...parsed.config,
        identity: `router-${i}`,
        podIdleExpiryMs: 24 * 3_600_000,
        ...options.overrides,
      }),
    );
  }
  return {
    kube,
    cluster: sim,
    routers,
    publish,
    async [Symbol.asyncDispose]() {
      await Promise.all(routers.map((router) => router.shutdown()));
      await sim.close();
      await kube.close();
    },
  };
}
