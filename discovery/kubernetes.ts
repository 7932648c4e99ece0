/**
 * @module
 * RKLlama pods from the Kubernetes API: a list, then a watch from the list's
 * resourceVersion, and on any end of the watch (error, timeout, 410 Gone, API
 * outage) a fresh list after a backoff. Re-listing on every reconnect is what
 * guarantees no deletion is missed; pods the list no longer has leave the store.
 * While the API is away, routing goes on with the last known pods.
 */

import * as k8s from "@kubernetes/client-node";
import type { PodIdentity, Store } from "../store.ts";
import { logger } from "../log.ts";

const log = logger("kubernetes");

/** Where the service account's files are mounted inside a pod. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** How long one watch lasts before the server ends it and the pods are listed again. */
const WATCH_SECONDS = 25;

/** How the router reaches the API server. */
export interface KubeConnection {
  config: k8s.KubeConfig;
  /** Said in logs and `/router/status`: `in-cluster`, `kubeconfig PATH` or `URL`. */
  source: string;
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
  readonly #connection: KubeConnection;
  readonly #options: PodWatchOptions;
  readonly #stopped = new AbortController();
  #watch: AbortController | undefined;
  #running: Promise<void> | undefined;
  #restarts = 0;

  constructor(store: Store, connection: KubeConnection, options: PodWatchOptions) {
    this.#store = store;
    this.#connection = connection;
    this.#options = options;
  }

  /** Times the watch had to be started again after an error. */
  get restarts(): number {
    return this.#restarts;
  }

  /** Lists and watches in the background; resolves after the first list (or its failure). */
  start(): Promise<void> {
    const firstList = Promise.withResolvers<void>();
    this.#running = this.#run(() => firstList.resolve());
    return firstList.promise;
  }

  /** Stops watching; the store keeps the pods it has. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    this.#watch?.abort();
    await this.#running;
  }

  async #run(listed: () => void): Promise<void> {
    const api = this.#connection.config.makeApiClient(k8s.CoreV1Api);
    const watcher = new k8s.Watch(this.#connection.config);
    const maxBackoff = this.#options.maxBackoffMs ?? 30_000;
    let backoff = 250;
    while (!this.#stopped.signal.aborted) {
      let failure: unknown;
      try {
        const list = await api.listNamespacedPod({
          namespace: this.#options.namespace,
          labelSelector: this.#options.selector,
        });
        this.#replaceAll(list.items);
        this.#store.setDiscovery({ connected: true, error: "", at: Date.now() });
        listed();
        const watchStarted = Date.now();
        failure = await this.#watchFrom(watcher, list.metadata?.resourceVersion ?? "");
        if (failure === undefined && Date.now() - watchStarted > 1000) backoff = 250;
      } catch (error) {
        failure = error;
      }
      listed();
      if (this.#stopped.signal.aborted) return;
      if (failure === undefined) {
        // A watch that ends at once, again and again, must not turn into a tight loop.
        if (backoff > 250) await delay(backoff, this.#stopped.signal);
        backoff = Math.min(backoff * 2, maxBackoff);
        continue;
      }
      this.#restarts++;
      const message = describe(failure);
      this.#store.setDiscovery({ connected: false, error: message, at: Date.now() });
      log.warn(
        "Kubernetes pod watch failed ({error}); keeping the last known pods, retrying in {backoffMs} ms",
        {
          error: message,
          backoffMs: backoff,
        },
      );
      await delay(backoff, this.#stopped.signal);
      backoff = Math.min(backoff * 2, maxBackoff);
    }
  }

  /** Resolves when the watch ends: undefined when it ended normally, else why. */
  async #watchFrom(watcher: k8s.Watch, resourceVersion: string): Promise<unknown> {
    const ended = Promise.withResolvers<unknown>();
    let expired = false;
    this.#watch = await watcher.watch(
      `/api/v1/namespaces/${encodeURIComponent(this.#options.namespace)}/pods`,
      {
        labelSelector: this.#options.selector,
        resourceVersion,
        allowWatchBookmarks: true,
        // client-node gives up on a watch silent for 30 s; a quiet namespace sends
        // nothing for minutes, so the server ends each watch first and the loop
        // re-lists: a cheap call for a few pods, and a fresh full state each time.
        timeoutSeconds: WATCH_SECONDS,
      },
      (phase: string, object: k8s.V1Pod & { code?: number; message?: string }) => {
        if (phase === "ERROR") {
          // 410 Gone: the resourceVersion is too old (API server restarted or compacted).
          expired = true;
          ended.resolve(new Error(`watch error ${object.code}: ${object.message}`));
          this.#watch?.abort();
          return;
        }
        if (phase === "ADDED" || phase === "MODIFIED") this.#upsert(object);
        else if (phase === "DELETED" && object.metadata?.name) {
          this.#store.removePod(object.metadata.name);
        }
      },
      (error: unknown) => ended.resolve(error ?? undefined),
    );
    if (this.#stopped.signal.aborted) this.#watch.abort();
    const result = await ended.promise;
    if (expired) return undefined;
    if (this.#stopped.signal.aborted) return undefined;
    return isTimeout(result) ? undefined : result;
  }

  #upsert(pod: k8s.V1Pod): void {
    const name = pod.metadata?.name;
    if (!name) return;
    const identity = podIdentity(pod, this.#options.podPort);
    if (!identity) {
      this.#store.removePod(name);
      return;
    }
    const before = this.#store.pods.peek().get(name);
    this.#store.upsertPod(identity);
    const after = this.#store.pods.peek().get(name);
    if (after && (!before || !before.ready && after.ready || !after.polled)) {
      this.#options.onNewPod(name);
    }
  }

  #replaceAll(pods: readonly k8s.V1Pod[]): void {
    const listed = new Set<string>();
    for (const pod of pods) {
      if (pod.metadata?.name) listed.add(pod.metadata.name);
      this.#upsert(pod);
    }
    for (const name of this.#store.pods.peek().keys()) {
      if (!listed.has(name)) this.#store.removePod(name);
    }
  }
}

function isTimeout(error: unknown): boolean {
  return error instanceof Error && error.name === "TimeoutError";
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
    const code = (error as { code?: unknown; statusCode?: unknown }).code ??
      (error as { statusCode?: unknown }).statusCode;
    return `${error.message}${cause}${typeof code === "number" ? ` (HTTP ${code})` : ""}`;
  }
  return String(error);
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
