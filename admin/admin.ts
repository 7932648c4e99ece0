/**
 * @module
 * Operator endpoints under `/router/`: what the router knows about pods and models,
 * and `POST /router/force_unload_all`. Unknown `/router/*` paths answer 404 here
 * instead of being proxied to a pod that would not know them either.
 */

import type { ModelDemand } from "../cluster/demand.ts";
import { Hono } from "hono";
import { isEjected, isRoutable, type PodRecord, podState, type Store } from "../cluster/store.ts";
import { errorResponse } from "../api/errors.ts";
import { ENDPOINTS } from "../api/endpoints.ts";
import * as rkllama from "../rkllama/client.ts";
import { logger } from "../obs/log.ts";
import { requestIdOf } from "../api/request_id.ts";

const log = logger("admin");

/** The router's own `/router/...` paths (api/endpoints.ts): other methods on them are a 405. */
const OPERATOR_PATHS: ReadonlySet<string> = new Set(
  ENDPOINTS.filter((row) => !row.prefix && row.path.startsWith("/router/")).map((row) => row.path),
);

/** What the admin endpoints need from the rest of the router. */
export interface AdminOptions {
  store: Store;
  repoll: (pod: string) => Promise<void>;
  /** The placement view (config, leader, plan, actions), or undefined when nothing is placed. */
  placement: () => Record<string, unknown> | undefined;
  /** Copies loaded on demand for long queues; none when not given. */
  onDemand?: () => readonly { pod: string; model: string; loadedAt: number }[];
  /** How long one pod's force-unload may take. */
  forceUnloadTimeoutMs?: number;
  /** The router's queue per model (see proxy/scheduler.ts). */
  queues?: () => readonly ModelDemand[];
  /** Generation slots taken on a pod now. */
  slotsBusy?: (pod: string) => number;
}

/** The Hono app for `/router/*`. */
export function adminRoutes(options: AdminOptions): Hono {
  const { store } = options;
  const app = new Hono();

  app.get("/router/status", (c) => {
    const now = Date.now();
    const pods = store.podList.value;
    const routable = pods.filter((pod) => isRoutable(pod, now)).length;
    const models = [...store.modelNames.value].sort();
    const discovery = store.discovery.value;
    return c.json({
      status: pods.length === 0 ? "no_pods" : routable === 0 ? "degraded" : "ok",
      mode: discovery.mode,
      discovery: {
        source: discovery.source,
        connected: discovery.connected,
        error: discovery.error || null,
        since: discovery.at > 0 ? new Date(discovery.at).toISOString() : null,
      },
      pod_count: pods.length,
      routable_pod_count: routable,
      model_count: models.length,
      loaded_count: pods.reduce((sum, pod) => sum + pod.loaded.size, 0),
      placement: placementSummary(options.placement()),
      on_demand: (options.onDemand?.() ?? []).map((copy) => ({
        model: copy.model,
        pod: copy.pod,
        loaded_at: new Date(copy.loadedAt).toISOString(),
      })),
      unique_models: models,
      pods: pods.map((pod) => ({
        name: pod.name,
        ip: hostOf(pod.url),
        node_name: pod.node,
        ready: pod.ready,
        state: podState(pod, now),
        models: [...pod.loaded.keys()].sort(),
        slots_busy: options.slotsBusy?.(pod.name) ?? 0,
      })),
      queues: (options.queues?.() ?? []).map((queue) => ({
        model: queue.model,
        waiting: queue.waiting,
        serving: queue.serving,
        oldest_wait_ms: Math.round(queue.oldestWaitMs),
        answer_ms: queue.answerMs === undefined ? null : Math.round(queue.answerMs),
        copies: queue.copies,
      })),
    });
  });

  app.get("/router/plan", (c) => {
    const view = options.placement();
    if (!view) {
      return errorResponse(
        c.req.path,
        404,
        "no placement config: run with Kubernetes discovery or give --models-file",
      );
    }
    return c.json(view);
  });

  app.get("/router/pods", (c) => {
    const now = Date.now();
    return c.json({ pods: store.podList.value.map((pod) => podDetails(pod, now)) });
  });

  app.get("/router/models", (c) => {
    const loadedOn = store.loadedOn.value;
    const onDiskOn = store.onDiskOn.value;
    const models = [...store.modelNames.value].sort().map((name) => {
      const loaded = loadedOn.get(name) ?? [];
      const onDisk = onDiskOn.get(name) ?? [];
      return {
        name,
        pods: loaded.map((pod) => pod.name),
        nodes: loaded.map((pod) => pod.node),
        replicas: loaded.length,
        on_disk_pods: onDisk.map((pod) => pod.name),
        loading_pods: onDisk.filter((pod) => pod.loading.has(name)).map((pod) => pod.name),
      };
    });
    return c.json({ models });
  });

  app.post("/router/force_unload_all", async (c) => {
    const pods = store.podList.value.filter((pod) => pod.reachable);
    if (pods.length === 0) {
      return c.json({
        message: "No pods available",
        total_pods: 0,
        success_count: 0,
        results: [],
      });
    }
    const timeoutMs = options.forceUnloadTimeoutMs ?? 60_000;
    const results = await Promise.all(
      pods.map((pod) => forceUnload(pod, timeoutMs, c.req.raw.signal)),
    );
    for (const result of results) {
      if (result.success) store.markUnloaded(result.pod_name);
    }
    await Promise.all(pods.map((pod) => options.repoll(pod.name)));
    const succeeded = results.filter((r) => r.success).length;
    // An operator emptied the NPUs: that belongs in the log, with who asked (the request id).
    log.info("force unload of every model: {succeeded} of {total} pods", {
      succeeded,
      total: pods.length,
      failed: results.filter((r) => !r.success).map((r) => r.pod_name),
      requestId: requestIdOf(c.req.raw),
    });
    return c.json({
      message: `Force unload completed on ${succeeded}/${pods.length} pods`,
      total_pods: pods.length,
      success_count: succeeded,
      results,
    });
  });

  app.all("/router/*", (c) => {
    if (OPERATOR_PATHS.has(c.req.path)) {
      return errorResponse(c.req.path, 405, `${c.req.method} is not allowed on ${c.req.path}`);
    }
    return errorResponse(c.req.path, 404, `no such operator endpoint: ${c.req.path}`);
  });

  return app;
}

function podDetails(pod: PodRecord, now: number): Record<string, unknown> {
  return {
    name: pod.name,
    ip: hostOf(pod.url),
    url: pod.url,
    node_name: pod.node,
    ready: pod.ready,
    state: podState(pod, now),
    // Which RKLlama server it is, by its /api/version: how OpenAI requests are served there.
    version: pod.version || null,
    generation: pod.generation,
    models: [...pod.loaded.keys()].sort(),
    model_count: pod.loaded.size,
    on_disk: [...pod.onDisk.keys()].sort(),
    loading: [...pod.loading].map(([model, since]) => ({
      model,
      since: new Date(since).toISOString(),
    })),
    inflight: pod.runtime.inflight,
    ejected_until: pod.runtime.ejectedUntil > now
      ? new Date(pod.runtime.ejectedUntil).toISOString()
      : null,
    ejected_reason: isEjected(pod, now) ? pod.runtime.ejectedReason : null,
    last_poll: pod.lastPollAt > 0 ? new Date(pod.lastPollAt).toISOString() : null,
    last_error: pod.lastPollError || null,
  };
}

function hostOf(url: string): string {
  return new URL(url).hostname;
}

interface ForceUnloadResult {
  pod_name: string;
  node_name: string;
  success: boolean;
  error?: string;
  unsupported?: boolean;
  killed_tracked?: unknown;
  killed_orphaned?: unknown;
}

async function forceUnload(
  pod: PodRecord,
  timeoutMs: number,
  clientSignal: AbortSignal,
): Promise<ForceUnloadResult> {
  const result: ForceUnloadResult = { pod_name: pod.name, node_name: pod.node, success: false };
  try {
    const killed = await rkllama.forceUnloadAll(pod, { timeoutMs, signal: clientSignal });
    result.success = true;
    result.killed_tracked = killed.killedTracked;
    result.killed_orphaned = killed.killedOrphaned;
  } catch (error) {
    // A Flask-generation board has no such endpoint: not a failure of the router.
    if (error instanceof rkllama.BoardError && error.failure === "unsupported") {
      result.unsupported = true;
    }
    result.error = error instanceof Error ? error.message : String(error);
  }
  return result;
}

/** The parts of the placement view that belong in `/router/status`. */
function placementSummary(view: Record<string, unknown> | undefined): unknown {
  if (!view) return null;
  const { config, leader, running, recent } = view as {
    config: Record<string, unknown>;
    leader: unknown;
    running: unknown[];
    recent: unknown[];
  };
  return {
    config: { source: config.source, valid: config.valid, error: config.error },
    leader,
    running,
    recent: recent.slice(0, 10),
  };
}
