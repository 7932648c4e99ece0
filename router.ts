/**
 * @module
 * The router's composition root: a config into the store and its workers, and the
 * front door (http/front_door.ts) on the server of http/server.ts. main.ts reads the
 * flags and loads this module after them, so a bad flag is refused before any of it
 * loads; the Kubernetes client loads only in Kubernetes mode.
 */

import { Hono } from "hono";
import type { RouterConfig } from "./config/flags.ts";
import { Store } from "./cluster/store.ts";
import { Poller } from "./cluster/poller.ts";
import { addStaticBackends } from "./cluster/static.ts";
import type { KubeConnection, PodWatch } from "./kube/kubernetes.ts";
import { type Placement, startPlacement } from "./placement/placement.ts";
import { type OnDemand, startOnDemand } from "./placement/on_demand_controller.ts";
import type { DemandSource } from "./cluster/demand.ts";
import { ColdGate } from "./proxy/cold_gate.ts";
import { Scheduler } from "./proxy/scheduler.ts";
import { proxyRoutes } from "./proxy/proxy.ts";
import { aggregateRoutes } from "./proxy/aggregate.ts";
import { adminRoutes } from "./admin/admin.ts";
import { healthRoutes } from "./http/health.ts";
import { ModelActivity } from "./status/model_activity.ts";
import { routerSnapshot, StatusFeed } from "./status/status_feed.ts";
import { eventRoutes } from "./status/events.ts";
import { renderSections, uiRoutes } from "./status/ui.tsx";
import { adminAuth } from "./api/admin_auth.ts";
import { ownPathMethods } from "./http/own_paths.ts";
import { frontDoor, unexpectedError } from "./http/front_door.ts";
import { serve } from "./http/server.ts";
import { logger } from "./obs/log.ts";
import { RouterMetrics } from "./obs/metrics.ts";

const log = logger("main");

/** A running router. */
export interface Router {
  /** `http://host:port` it listens on (the real port when `--port 0`). */
  url: string;
  store: Store;
  poller: Poller;
  /** Model placement, when there is a config to follow. */
  placement: Placement | undefined;
  /** Copies on demand, always. */
  onDemand: OnDemand;
  metrics: RouterMetrics;
  /** Makes `/health/ready` answer 503 from now on, so endpoints drop this replica. */
  drain(): void;
  /**
   * Stops accepting, lets requests in flight finish (for at most `timeoutMs`, when
   * given), stops polling. Resolves true when every request finished in time.
   */
  shutdown(timeoutMs?: number): Promise<boolean>;
}

/** Parts a caller may give instead of the router's own (tests). */
export interface RouterParts {
  /** The queues copies on demand follow; by default the router's own scheduler (tests give their own). */
  demand?: DemandSource;
}

/**
 * Starts the router described by `config` and resolves once it listens and the
 * first poll of the static backends has finished.
 */
export async function startRouter(config: RouterConfig, parts: RouterParts = {}): Promise<Router> {
  const store = new Store(config.unreachableAfter);
  const poller = new Poller(store, {
    intervalMs: config.pollIntervalMs,
    timeoutMs: config.pollTimeoutMs,
  });
  const gate = new ColdGate(store);
  // The poll that would show an idle expiry can be a whole interval late, plus slack.
  const staleAfterMs = Math.max(0, config.podIdleExpiryMs - config.pollIntervalMs - 30_000);
  const scheduler = new Scheduler({
    store,
    gate,
    slots: config.slots,
    maxLoaded: config.maxLoaded,
    maxQueue: config.maxQueue,
    queueTimeoutMs: config.queueTimeoutMs,
    staleAfterMs,
    onLeave: (model, how, waitedMs) => metrics.queueLeft(model, how, waitedMs),
  });
  // Placement starts once the server listens (its Lease publishes this replica's
  // URL); the routes and the metrics read it through this holder.
  const started: { placement?: Placement; onDemand?: OnDemand } = {};
  const metrics = new RouterMetrics(
    store,
    () => started.placement?.gauges(),
    () => started.onDemand?.controller.copies ?? [],
    scheduler,
  );
  store.onRemove = (pod) => void metrics.forgetPod(pod);
  store.onEject = (pod, until, reason) => {
    metrics.ejected(pod);
    log.warn("pod {pod} ejected for {ejectMs} ms: {reason}", {
      pod,
      ejectMs: until - Date.now(),
      reason,
    });
  };
  let podWatch: PodWatch | undefined;
  let connection: KubeConnection | undefined;
  if (config.backends.length > 0) {
    addStaticBackends(store, config.backends);
  } else {
    // Loaded here only: the client is most of the router's code, and static mode needs none of it.
    const { connectKube, PodWatch } = await import("./kube/kubernetes.ts");
    connection = connectKube(config.kubeApi, (name) => Deno.env.get(name), canRead);
    connection.onWatchRestart = (resource, reason) => metrics.watchRestarted(resource, reason);
    store.setDiscovery({ mode: "kubernetes", source: connection.source, connected: false });
    podWatch = new PodWatch(store, connection, {
      namespace: config.namespace,
      selector: config.selector,
      podPort: config.podPort,
      onNewPod: (pod) => void poller.repoll(pod),
    });
    log.info("discovering pods in namespace {namespace} with selector {selector} via {source}", {
      namespace: config.namespace,
      selector: config.selector,
      source: connection.source,
    });
    await podWatch.start();
  }

  await poller.pollAll();
  const activity = new ModelActivity();
  // The page asks for the token only when the router checks one (api/admin_auth.ts).
  const adminTokenRequired = config.adminToken !== "";
  const feed = new StatusFeed(
    routerSnapshot({
      store,
      placement: () => started.placement,
      onDemand: () => started.onDemand?.controller.copiesSignal.value ?? [],
      activity,
      adminTokenRequired,
      queue: scheduler,
    }),
  );

  let draining = false;
  const app = new Hono();
  app.use(adminAuth(config.adminToken, () => metrics.adminRefused()));
  app.use(ownPathMethods());
  app.route("/", healthRoutes(store, () => draining));
  app.route("/", uiRoutes({ feed, adminTokenRequired }));
  app.route("/", eventRoutes({ feed, render: renderSections }));
  app.get(
    "/metrics",
    async () =>
      new Response(await metrics.text(), { headers: { "content-type": metrics.contentType } }),
  );
  app.route(
    "/",
    adminRoutes({
      store,
      repoll: (pod) => poller.repoll(pod),
      placement: () => started.placement?.view(),
      queues: () => scheduler.demand(),
      slotsBusy: (pod) => scheduler.busyOn(pod),
      onDemand: () => started.onDemand?.controller.copies ?? [],
    }),
  );
  app.route("/", aggregateRoutes(store));
  const proxy = proxyRoutes({
    store,
    scheduler,
    repoll: (pod) => void poller.repoll(pod),
    maxBodyBytes: config.maxBodyBytes,
    maxBodyTotalBytes: Math.max(config.maxBodyTotalBytes, config.maxBodyBytes),
    ejectMs: config.ejectMs,
    firstByteTimeoutMs: config.firstByteTimeoutMs,
    connectTimeoutMs: config.connectTimeoutMs,
    streamIdleTimeoutMs: config.streamIdleTimeoutMs,
    bodyTimeoutMs: config.bodyTimeoutMs,
    retryAfterSeconds: Math.min(30, Math.max(1, Math.ceil(config.pollIntervalMs / 1000))),
    staleAfterMs,
    dispatcher: () => started.placement?.leaderUrl(),
    // Only models a pod has: a client's made-up name must not grow the counters.
    onAnswered: (model, ttfbMs) => {
      if (store.modelNames.peek().has(model)) activity.record(model, ttfbMs, Date.now());
    },
    metrics,
    adminToken: config.adminToken,
  });
  app.route("/", proxy.app);
  // Errors are the front door's to answer (http/front_door.ts), once for every request.
  app.onError((error) => {
    throw error;
  });
  const handler = frontDoor({
    app,
    forward: (request) => proxy.handle(request),
    allowedOrigins: config.allowedOrigins,
  });

  poller.start();
  const server = await serve({
    port: config.port,
    hostname: config.host,
    headerTimeoutMs: config.headerTimeoutMs,
    // The proxy answers a late body itself (408, --body-timeout); this is for the rest.
    requestTimeoutMs: config.headerTimeoutMs + config.bodyTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    maxConnections: config.maxConnections,
    onError: (error) => unexpectedError("", error),
  }, handler);
  const url = `http://${server.addr.hostname}:${server.addr.port}`;
  const wildcard = ["0.0.0.0", "::", "[::]"].includes(config.host);
  const placement = await startPlacement({
    store,
    config: { ...config, advertiseUrl: config.advertiseUrl || (wildcard ? "" : url) },
    connection,
    repoll: (pod) => poller.repoll(pod),
    onActionResult: (result) => metrics.reconcileAction(result.action.kind, result.outcome),
    onDemandCopies: () => started.onDemand?.controller.copies ?? [],
  });
  started.placement = placement;
  const onDemand = startOnDemand({
    store,
    config,
    demand: parts.demand ?? scheduler,
    placement,
    repoll: (pod) => poller.repoll(pod),
    onActionResult: (result) => metrics.reconcileAction(result.action.kind, result.outcome),
    onAction: (action) => metrics.onDemandAction(action.model, action.kind),
  });
  started.onDemand = onDemand;
  log.info("listening on {url}", {
    url,
    pods: store.pods.peek().size,
    // Whether operator writes and model management need --admin-token (never the token).
    adminToken: config.adminToken !== "",
  });
  return {
    url,
    store,
    poller,
    placement,
    onDemand,
    metrics,
    drain() {
      draining = true;
      // Keep-alive clients reconnect, through the Service, to a replica that is not draining.
      server.drain();
    },
    async shutdown(timeoutMs?: number) {
      draining = true;
      // Stop taking requests first; the rest (Lease release included) follows.
      // Event streams never end by themselves, so they are ended here (pages reconnect).
      // Answers whose clients left are still read from their pods: wait for them too.
      const closing = server.shutdown().then(() => proxy.streamsEnded());
      const stopping = withTimeout(closing, timeoutMs);
      feed.close();
      const finished = await stopping;
      if (!finished) {
        // Time is up: end the streams still running with an error line their clients
        // understand, and give those lines a moment to leave, rather than cut them.
        const ended = proxy.endStreams("the router is shutting down (--shutdown-timeout)");
        if (ended > 0) await withTimeout(closing, 1000);
      }
      await onDemand.stop();
      await placement?.stop();
      poller.stop();
      scheduler.stop();
      metrics.stop();
      await podWatch?.stop();
      return finished;
    },
  };
}

/** True when `promise` settles within `ms` (no limit when undefined), else false. */
async function withTimeout(promise: Promise<void>, ms: number | undefined): Promise<boolean> {
  if (ms === undefined) {
    await promise;
    return true;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** True when the file exists and this process may read it. */
function canRead(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}
