/**
 * @module
 * Prometheus metrics of one router, through prom-client. Counters and histograms
 * move where things happen (the proxy at the end of each stream, the applier, the
 * watches); gauges about cluster state are read from the store when scraped, so
 * nothing is recomputed per request.
 */

import type { ModelDemand } from "../cluster/demand.ts";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import * as client from "prom-client";
import { podState, type Store } from "../cluster/store.ts";
import { endpointOf } from "../api/endpoints.ts";

/** Prefix of every metric the router itself defines. */
const PREFIX = "rkllama_router_";

/** Every value `podState` returns, so each state always has a series (0 when empty). */
const POD_STATES = ["routable", "loading", "ejected", "unreachable", "pending", "unready"];

/**
 * The `route` label of a path: itself when api/endpoints.ts gives it a label of its own, else
 * `other`, so a client sending random paths cannot create series.
 */
export function routeLabel(path: string): string {
  return endpointOf(path).metric === "path" ? path : "other";
}

/**
 * The `model` label: a model the cluster has, `unknown` for a name no pod has (it
 * could be anything a client typed), `none` for requests naming no model.
 */
export function modelLabel(model: string | undefined, named: boolean): string {
  if (model !== undefined) return model;
  return named ? "unknown" : "none";
}

/** One request the proxy finished, at the end of its response body. */
export interface FinishedRequest {
  model: string;
  /** The pod that answered, or `none` when the router answered itself. */
  pod: string;
  route: string;
  status: number;
  durationSeconds: number;
  /** Seconds to the pod's response headers; absent when no pod answered. */
  ttfbSeconds?: number;
}

/** The placement state the scrape reads; absent without placement. */
export interface PlacementGauges {
  configValid: boolean;
  leader: boolean;
  /** Desired replicas by model, from the config in force. */
  desired: ReadonlyMap<string, number>;
}

/** Seconds buckets from a fast cached answer up to a long generation or a cold load. */
const SECONDS_BUCKETS = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
  300,
  600,
];

/** What the metrics read from the scheduler's queue at each scrape. */
export interface QueueReadings {
  demand(): readonly ModelDemand[];
  busyOn(pod: string): number;
}

/** The router's metrics; one instance per running router. */
export class RouterMetrics {
  /** Every metric of this router, prom-client's process metrics included. */
  readonly registry: Registry;
  readonly #requests: Counter<"model" | "pod" | "route" | "code">;
  readonly #duration: Histogram<"model" | "route">;
  readonly #ttfb: Histogram<"model">;
  readonly #retries: Counter<"reason">;
  readonly #upstreamErrors: Counter<"pod" | "reason">;
  readonly #ejections: Counter<"pod">;
  readonly #abandoned: Counter<"pod" | "model">;
  readonly #abandonedSeconds: Counter<"pod" | "model">;
  readonly #reconcileActions: Counter<"action" | "result">;
  readonly #onDemandActions: Counter<"model" | "action">;
  readonly #watchRestarts: Counter<"resource" | "reason">;
  readonly #loopLag = new LoopLag();
  readonly #adminRefusals: Counter;
  readonly #queueWait: Histogram<"model">;
  readonly #queueRefusals: Counter<"model" | "reason">;

  /**
   * @param store read at each scrape for pod and replica gauges
   * @param placement read at each scrape; undefined while there is no placement
   * @param onDemandCopies read at each scrape: the copies loaded on demand, by model
   * @param queue the scheduler's queue and slots, read at each scrape
   */
  constructor(
    store: Store,
    placement: () => PlacementGauges | undefined,
    onDemandCopies: () => readonly { model: string }[] = () => [],
    queue?: QueueReadings,
  ) {
    const own = new Registry();
    const registers = [own];
    new Gauge({
      name: PREFIX + "queue_length",
      help: "Requests waiting in the router for a free generation slot, per model",
      labelNames: ["model"],
      registers,
      collect() {
        this.reset();
        for (const model of queue?.demand() ?? []) this.set({ model: model.model }, model.waiting);
      },
    });
    this.#queueWait = new Histogram({
      name: PREFIX + "queue_wait_seconds",
      help:
        "Time a request waited in the router for a generation slot before it was sent to a pod (0 when one was free)",
      labelNames: ["model"],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#queueRefusals = new Counter({
      name: PREFIX + "queue_refusals_total",
      help:
        "Requests that left the router's queue without a slot: full (--max-queue), timeout (--queue-timeout), left (the client went away)",
      labelNames: ["model", "reason"],
      registers,
    });
    new Gauge({
      name: PREFIX + "slots_busy",
      help:
        "Generation slots taken on each pod by this router (FastAPI boards have one, Flask boards one per model; see --slots)",
      labelNames: ["pod"],
      registers,
      collect() {
        this.reset();
        if (!queue) return;
        for (const pod of store.pods.peek().keys()) this.set({ pod }, queue.busyOn(pod));
      },
    });
    this.#requests = new Counter({
      name: PREFIX + "requests_total",
      help:
        "Requests routed, by model, the pod that answered (none: the router answered), route and HTTP status; counted when the response body ends",
      labelNames: ["model", "pod", "route", "code"],
      registers,
    });
    this.#duration = new Histogram({
      name: PREFIX + "request_duration_seconds",
      help: "Time from the request's arrival to the end of its response body (streams included)",
      labelNames: ["model", "route"],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#ttfb = new Histogram({
      name: PREFIX + "time_to_first_byte_seconds",
      help:
        "Time from sending a request to a pod to the first byte of its answer's body (a stream's first token; a cold model load included); successful answers only",
      labelNames: ["model"],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    new Gauge({
      name: PREFIX + "inflight_requests",
      help: "Requests sent to each pod whose response has not ended yet",
      labelNames: ["pod"],
      registers,
      collect() {
        this.reset();
        for (const pod of store.pods.peek().values()) {
          this.set({ pod: pod.name }, pod.runtime.inflight);
        }
      },
    });
    this.#retries = new Counter({
      name: PREFIX + "retries_total",
      help: "Requests sent again to another pod, by why the first attempt failed",
      labelNames: ["reason"],
      registers,
    });
    this.#upstreamErrors = new Counter({
      name: PREFIX + "upstream_errors_total",
      help:
        "Failures talking to pods: connect (no answer), timeout (no first byte in time), stream (cut mid-body), http_5xx (an error status)",
      labelNames: ["pod", "reason"],
      registers,
    });
    this.#abandoned = new Counter({
      name: PREFIX + "abandoned_generations_total",
      help:
        "Answers whose client left before their end, which the router read from the pod to the end and discarded (RKLlama does not stop a generation whose client is gone)",
      labelNames: ["pod", "model"],
      registers,
    });
    this.#abandonedSeconds = new Counter({
      name: PREFIX + "abandoned_pod_seconds_total",
      help: "Seconds pods spent on answers after their client left, until the answer ended",
      labelNames: ["pod", "model"],
      registers,
    });
    this.#ejections = new Counter({
      name: PREFIX + "pod_ejections_total",
      help: "Times a pod was taken out of routing for a while after failing",
      labelNames: ["pod"],
      registers,
    });
    new Gauge({
      name: PREFIX + "pods",
      help:
        "Pods by routing state: routable, loading (an explicit load/unload runs), ejected, unreachable, pending (no poll answered yet), unready",
      labelNames: ["state"],
      registers,
      collect() {
        const now = Date.now();
        const counts = new Map(POD_STATES.map((state) => [state, 0]));
        for (const pod of store.pods.peek().values()) {
          const state = podState(pod, now);
          counts.set(state, (counts.get(state) ?? 0) + 1);
        }
        for (const [state, count] of counts) this.set({ state }, count);
      },
    });
    new Gauge({
      name: PREFIX + "model_replicas",
      help:
        "Copies of each model: loaded (on pods, per their last poll), loading (by the router now), desired (by the placement config)",
      labelNames: ["model", "state"],
      registers,
      collect() {
        this.reset();
        const loaded = new Map<string, number>();
        const loading = new Map<string, number>();
        for (const pod of store.pods.peek().values()) {
          for (const model of pod.loaded.keys()) loaded.set(model, (loaded.get(model) ?? 0) + 1);
          for (const model of pod.loading.keys()) {
            loading.set(model, (loading.get(model) ?? 0) + 1);
          }
        }
        const desired = placement()?.desired ?? new Map<string, number>();
        const models = new Set([...loaded.keys(), ...loading.keys(), ...desired.keys()]);
        for (const model of models) {
          this.set({ model, state: "loaded" }, loaded.get(model) ?? 0);
          this.set({ model, state: "loading" }, loading.get(model) ?? 0);
          if (desired.has(model)) this.set({ model, state: "desired" }, desired.get(model)!);
        }
      },
    });
    this.#reconcileActions = new Counter({
      name: PREFIX + "reconcile_actions_total",
      help:
        "Loads and unloads the reconciler ran, by result: done, failed, refused (the pod said no), postponed",
      labelNames: ["action", "result"],
      registers,
    });
    this.#onDemandActions = new Counter({
      name: PREFIX + "on_demand_actions_total",
      help:
        "Loads of extra copies for long queues, and their unloads once idle (or to make room), started on demand, by model",
      labelNames: ["model", "action"],
      registers,
    });
    new Gauge({
      name: PREFIX + "on_demand_copies",
      help:
        "Copies loaded on demand (loaded or loading) that have not been unloaded again, by model",
      labelNames: ["model"],
      registers,
      collect() {
        this.reset();
        const counts = new Map<string, number>();
        for (const { model } of onDemandCopies()) counts.set(model, (counts.get(model) ?? 0) + 1);
        for (const [model, count] of counts) this.set({ model }, count);
      },
    });
    new Gauge({
      name: PREFIX + "config_valid",
      help: "0 when the newest placement config (models.yaml) was refused or is missing, else 1",
      registers,
      collect() {
        // Without placement (static, no --models-file) there is no config to refuse.
        this.set(placement()?.configValid ?? true ? 1 : 0);
      },
    });
    new Gauge({
      name: PREFIX + "leader",
      help: "1 when this replica holds the Lease and acts on pods (always 1 alone), else 0",
      registers,
      collect() {
        this.set(placement()?.leader ?? true ? 1 : 0);
      },
    });
    this.#watchRestarts = new Counter({
      name: PREFIX + "kube_watch_restarts_total",
      help:
        "Kubernetes watches started again after an error, an expired resourceVersion (410) or a stalled connection",
      labelNames: ["resource", "reason"],
      registers,
    });
    this.#adminRefusals = new Counter({
      name: PREFIX + "admin_refusals_total",
      help: "Requests refused with 401 for lacking the admin token, or carrying a wrong one",
      registers,
    });
    const loopLag = this.#loopLag;
    new Gauge({
      name: PREFIX + "event_loop_lag_seconds",
      help:
        "The longest a 100 ms timer fired late since the previous scrape: how long the event loop was blocked",
      registers,
      collect() {
        this.set(loopLag.takeWorstSeconds());
      },
    });
    new Gauge({
      name: "process_resident_memory_bytes",
      help: "Resident memory size in bytes",
      registers,
      collect() {
        this.set(Deno.memoryUsage().rss);
      },
    });
    // CPU and heap from prom-client's defaults (see DROPPED_DEFAULTS).
    const defaults = new Registry();
    client.collectDefaultMetrics({ register: defaults, eventLoopMonitoringPrecision: 20 });
    for (const name of DROPPED_DEFAULTS) defaults.removeSingleMetric(name);
    this.registry = Registry.merge([own, defaults]);
  }

  /** Records a request whose response body has ended (or that the router refused). */
  finished(request: FinishedRequest): void {
    this.#requests.inc({
      model: request.model,
      pod: request.pod,
      route: request.route,
      code: String(request.status),
    });
    this.#duration.observe({ model: request.model, route: request.route }, request.durationSeconds);
    // An error answer comes fast and says nothing about how soon a model answers.
    if (request.ttfbSeconds !== undefined && request.status < 400) {
      this.#ttfb.observe({ model: request.model }, request.ttfbSeconds);
    }
  }

  retried(reason: string): void {
    this.#retries.inc({ reason });
  }

  /**
   * An answer read to its end after its client left (see relayBody), and the
   * seconds the pod spent on it from then: pod time nobody saw.
   */
  abandoned(pod: string, model: string, seconds: number): void {
    this.#abandoned.inc({ pod, model });
    this.#abandonedSeconds.inc({ pod, model }, seconds);
  }

  /** A request left the scheduler's queue: sent to a pod after `waitedMs`, or refused. */
  queueLeft(model: string, how: "sent" | "timeout" | "left" | "full", waitedMs: number): void {
    if (how === "sent") this.#queueWait.observe({ model }, waitedMs / 1000);
    else this.#queueRefusals.inc({ model, reason: how });
  }

  upstreamError(pod: string, reason: "connect" | "timeout" | "stream" | "http_5xx"): void {
    this.#upstreamErrors.inc({ pod, reason });
  }

  ejected(pod: string): void {
    this.#ejections.inc({ pod });
  }

  /**
   * Drops every series labelled with a pod that is gone (deleted, or replaced by
   * a pod of another name), so series do not pile up as pods come and go.
   */
  async forgetPod(pod: string): Promise<void> {
    for (const found of this.registry.getMetricsAsArray()) {
      // Every metric prom-client makes has these; the registry types them loosely.
      const metric = found as unknown as Counter<"pod"> & { labelNames?: readonly string[] };
      if (!metric.labelNames?.includes("pod")) continue;
      const { values } = await metric.get();
      for (const { labels } of values) {
        if (labels.pod === pod) metric.remove(labels as { pod: string });
      }
    }
  }

  reconcileAction(action: string, result: string): void {
    this.#reconcileActions.inc({ action, result });
  }

  onDemandAction(model: string, action: "load" | "unload"): void {
    this.#onDemandActions.inc({ model, action });
  }

  watchRestarted(resource: string, reason: "error" | "expired" | "stalled"): void {
    this.#watchRestarts.inc({ resource, reason });
  }

  adminRefused(): void {
    this.#adminRefusals.inc();
  }

  /** Stops the lag measurement (at shutdown). */
  stop(): void {
    this.#loopLag.stop();
  }

  /** The exposition text for `GET /metrics`. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/**
 * prom-client defaults left out: the /proc readings the router may not make (they
 * would say 0), and gauges named `_total`, which promtool rejects (their siblings
 * without the suffix stay).
 */
const DROPPED_DEFAULTS = [
  "process_resident_memory_bytes",
  "process_virtual_memory_bytes",
  "process_heap_bytes",
  "process_open_fds",
  "process_max_fds",
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
  // Under Deno, prom-client's event loop lag stays near zero however long the loop
  // is blocked, and its GC histogram gets no samples: LoopLag measures the lag.
  "nodejs_eventloop_lag_seconds",
  "nodejs_eventloop_lag_min_seconds",
  "nodejs_eventloop_lag_max_seconds",
  "nodejs_eventloop_lag_mean_seconds",
  "nodejs_eventloop_lag_stddev_seconds",
  "nodejs_eventloop_lag_p50_seconds",
  "nodejs_eventloop_lag_p90_seconds",
  "nodejs_eventloop_lag_p99_seconds",
  "nodejs_gc_duration_seconds",
];

/** How late a timer fires: the event loop's lag, the worst since the last read. */
class LoopLag {
  static readonly PERIOD_MS = 100;
  #expected = performance.now() + LoopLag.PERIOD_MS;
  #worstMs = 0;
  readonly #timer = setInterval(() => {
    const now = performance.now();
    this.#worstMs = Math.max(this.#worstMs, now - this.#expected);
    this.#expected = now + LoopLag.PERIOD_MS;
  }, LoopLag.PERIOD_MS);

  constructor() {
    // The measurement alone must not keep the process running.
    Deno.unrefTimer(this.#timer);
  }

  /** The worst lag in seconds since the previous call, including a wait still running. */
  takeWorstSeconds(): number {
    const running = Math.max(0, performance.now() - this.#expected);
    const worst = Math.max(this.#worstMs, running);
    this.#worstMs = 0;
    return worst / 1000;
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
