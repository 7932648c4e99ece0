/**
 * @module
 * Pods from `--backends`, for running without Kubernetes: each is always "ready",
 * and the poller alone decides whether it takes requests.
 */

import type { StaticBackend } from "../config/flags.ts";
import type { Store } from "./store.ts";

/** Puts the static backends into the store, named as given (pod name = node name). */
export function addStaticBackends(store: Store, backends: readonly StaticBackend[]): void {
  for (const backend of backends) {
    store.upsertPod({ name: backend.name, node: backend.name, url: backend.url, ready: true });
  }
}
