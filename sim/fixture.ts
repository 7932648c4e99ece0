/**
 * @module
 * Test wiring: a router in this process in front of a simulated cluster, both on
 * loopback, torn down by `await using`.
 */

import { effect } from "@preact/signals-core";
import { parseConfig, type RouterConfig } from "../config.ts";
import type { Store } from "../store.ts";
import { type Router, startRouter } from "../main.ts";
import { type SimCluster, type SimClusterOptions, startSimCluster } from "./cluster.ts";

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
): Promise<TestWorld> {
  const sim = await startSimCluster(cluster);
  const parsed = parseConfig(
    ["--backends", sim.backends, "--port", "0", "--host", "127.0.0.1", "--poll-interval", "1h"],
    () => undefined,
  );
  if (parsed.help) throw new Error("unreachable");
  const router = await startRouter({ ...parsed.config, ...overrides });
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
