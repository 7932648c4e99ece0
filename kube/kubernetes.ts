/**
 * @module
 * RKLlama pods from the Kubernetes API, and how to reach that API. Pods come from
 * a list-then-watch loop (`list_watch.ts`) that re-lists on every reconnect, so
 * pods the list no longer has leave the store and no deletion is missed. While the
 * API is away, routing goes on with the last known pods.
 */

import * as k8s from "@kubernetes/client-node";
import type { PodIdentity, Store } from "../cluster/store.ts";
import { ListWatchLoop, type WatchRestart } from "./list_watch.ts";
import { logger } from "../obs/log.ts";

const log = logger("discovery");

/** Where the service account's files are mounted inside a pod. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** How the router reaches the API server. */
export interface KubeConnection {
  config: k8s.KubeConfig;
  /** Said in logs and `/router/status`: `in-cluster`, `kubeconfig PATH` or `URL`. */
  source: string;
  /** Told each time a watch starts again after a failure (for metrics). */
  onWatchRestart?: (resource: string, reason: WatchRestart) => void;
}

/**
 * Chooses the connection: `--kube-api` when given; else the in-cluster service
 * account when present; else `$KUBECONFIG` or `~/.kube/config`; else `kubectl proxy`
 * on `http://127.0.0.1:8001`.
 *
 * @param kubeApi the `--kube-api` URL, or "" for automatic
 * @param env reads an environment variable
 * @param exists tells whether a file can be read
 */
export function connectKube(
  kubeApi: string,
  env: (name: string) => string | undefined,
  exists: (path: string) => boolean,
): KubeConnection {
  if (kubeApi !== "") return { config: plainConfig(kubeApi), source: kubeApi };
  if (env("KUBERNETES_SERVICE_HOST") && exists(`${SERVICE_ACCOUNT_DIR}/token`)) {
    const config = new k8s.KubeConfig();
    config.loadFromCluster();
    return { config, source: "in-cluster" };
  }
  const kubeconfig = env("KUBECONFIG")?.split(":").find((path) => path !== "") ??
    (env("HOME") ? `${env("HOME")}/.kube/config` : undefined);
  if (kubeconfig && exists(kubeconfig)) {
    const config = new k8s.KubeConfig();
    config.loadFromFile(kubeconfig);
    return { config: allowPlainHttp(config), source: `kubeconfig ${kubeconfig}` };
  }
  return { config: plainConfig("http://127.0.0.1:8001"), source: "http://127.0.0.1:8001" };
}

/** A config for a URL with no credentials, as `kubectl proxy` serves. */
function plainConfig(server: string): k8s.KubeConfig {
  const config = new k8s.KubeConfig();
  config.loadFromOptions({
    clusters: [{ name: "api", server, skipTLSVerify: server.startsWith("http:") }],
    users: [{ name: "anonymous" }],
    contexts: [{ name: "api", cluster: "api", user: "anonymous" }],
    currentContext: "api",
  });
  return config;
}

/**
 * client-node refuses `http://` servers unless the cluster says `skipTLSVerify`;
 * there is no TLS to verify on plain http, so a kubeconfig pointing at
 * `kubectl proxy` must just work.
 */
function allowPlainHttp(config: k8s.KubeConfig): k8s.KubeConfig {
  if (!config.clusters.some((c) => c.server.startsWith("http:") && !c.skipTLSVerify)) {
    return config;
  }
  const fixed = new k8s.KubeConfig();
  fixed.loadFromOptions({
    clusters: config.clusters.map((c) =>
      c.server.startsWith("http:") ? { ...c, skipTLSVerify: true } : c
    ),
    users: config.users,
    contexts: config.contexts,
    currentContext: config.currentContext,
  });
  return fixed;
}

/** What pod discovery needs to know. */
export interface PodWatchOptions {
  namespace: string;
  selector: string;
  /** RKLlama port of pods that name no container port `http`. */
  podPort: number;
  /** Called when a pod appears or becomes ready, so it is polled at once. */
  onNewPod: (name: string) => void;
  /** Longest wait between reconnect attempts. */
  maxBackoffMs?: number;
}

/** The address, node and readiness of a pod object, or undefined while it has no IP. */
export function podIdentity(pod: k8s.V1Pod, defaultPort: number): PodIdentity | undefined {
  const name = pod.metadata?.name;
  const ip = pod.status?.podIP;
  if (!name || !ip) return undefined;
  const named = pod.spec?.containers?.flatMap((c) => c.ports ?? []).find((p) => p.name === "http");
  const port = named?.containerPort ?? defaultPort;
  const host = ip.includes(":") ? `[${ip}]` : ip;
  const readyCondition = pod.status?.conditions?.find((c) => c.type === "Ready");
  const ready = pod.status?.phase === "Running" && readyCondition?.status === "True" &&
    !pod.metadata?.deletionTimestamp;
  return { name, node: pod.spec?.nodeName ?? "", url: `http://${host}:${port}`, ready };
}

/** Keeps the store's pods equal to the API's, until {@linkcode PodWatch.stop}. */
export class PodWatch {
  readonly #store: Store;
  readonly #options: PodWatchOptions;
  readonly #loop: ListWatchLoop<k8s.V1Pod>;

  constructor(store: Store, connection: KubeConnection, options: PodWatchOptions) {
    this.#store = store;
    this.#options = options;
    const api = connection.config.makeApiClient(k8s.CoreV1Api);
    this.#loop = new ListWatchLoop<k8s.V1Pod>(connection.config, {
      what: "pods",
      list: () =>
        api.listNamespacedPod({ namespace: options.namespace, labelSelector: options.selector }),
      watchPath: `/api/v1/namespaces/${encodeURIComponent(options.namespace)}/pods`,
      watchQuery: { labelSelector: options.selector },
      onList: (pods) => this.#replaceAll(pods),
      onEvent: (phase, pod) => {
        if (phase === "DELETED") {
          if (pod.metadata?.name) this.#remove(pod.metadata.name);
        } else {
          this.#upsert(pod);
        }
      },
      onStatus: (connected, error) =>
        this.#store.setDiscovery({ connected, error, at: Date.now() }),
    }, {
      maxBackoffMs: options.maxBackoffMs,
      onRestart: (reason) => connection.onWatchRestart?.("pods", reason),
    });
  }

  /** Times the watch had to be started again after an error. */
  get restarts(): number {
    return this.#loop.restarts;
  }

  /** Lists and watches in the background; resolves after the first list (or its failure). */
  start(): Promise<void> {
    return this.#loop.start();
  }

  /** Stops watching; the store keeps the pods it has. */
  stop(): Promise<void> {
    return this.#loop.stop();
  }

  #upsert(pod: k8s.V1Pod): void {
    const name = pod.metadata?.name;
    if (!name) return;
    const identity = podIdentity(pod, this.#options.podPort);
    if (!identity) {
      this.#remove(name);
      const node = pod.spec?.nodeName;
      if (node) this.#store.setPendingNodes(new Set([...this.#store.nodeNames.peek(), node]));
      return;
    }
    const before = this.#store.pods.peek().get(name);
    this.#store.upsertPod(identity);
    const after = this.#store.pods.peek().get(name);
    // Operators (and the real API server's tests) follow discovery in the log.
    const state = after?.ready ? "ready" : "not ready";
    if (!before) {
      log.info("pod {pod} found at {address}, {state}", {
        pod: name,
        address: identity.url,
        state,
      });
    } else if (before.ready !== after?.ready) {
      log.info("pod {pod} is {state}", { pod: name, state });
    }
    if (after && (!before || !before.ready && after.ready || !after.polled)) {
      this.#options.onNewPod(name);
    }
  }

  #replaceAll(pods: readonly k8s.V1Pod[]): void {
    const listed = new Set<string>();
    this.#store.setPendingNodes(
      new Set(
        pods.filter((pod) => !pod.status?.podIP).map((pod) => pod.spec?.nodeName ?? "")
          .filter((node) => node !== ""),
      ),
    );
    for (const pod of pods) {
      if (pod.metadata?.name) listed.add(pod.metadata.name);
      this.#upsert(pod);
    }
    for (const name of this.#store.pods.peek().keys()) {
      if (!listed.has(name)) this.#remove(name);
    }
  }

  #remove(name: string): void {
    if (!this.#store.pods.peek().has(name)) return;
    this.#store.removePod(name);
    log.info("pod {pod} is gone", { pod: name });
  }
}
