/**
 * @module
 * The router's entry point: flags into a config, the store and its workers, the
 * Hono routes on `Deno.serve`, and a clean stop on SIGTERM or SIGINT.
 */

import { Hono } from "hono";
import { ConfigError, helpText, parseConfig, type RouterConfig } from "./config.ts";
import { Store } from "./store.ts";
import { Poller } from "./discovery/poller.ts";
import { addStaticBackends } from "./discovery/static.ts";
import { connectKube, type KubeConnection, PodWatch } from "./discovery/kubernetes.ts";
import { type Placement, startPlacement } from "./reconcile/placement.ts";
import { ColdGate } from "./routes/cold_gate.ts";
import { proxyRoutes } from "./routes/proxy.ts";
import { aggregateRoutes } from "./routes/aggregate.ts";
import { adminRoutes } from "./routes/admin.ts";
import { healthRoutes } from "./routes/health.ts";
import { ModelActivity } from "./routes/model_activity.ts";
import { routerSnapshot, StatusFeed } from "./routes/status_feed.ts";
import { eventRoutes } from "./routes/events.ts";
import { renderSections, uiRoutes } from "./routes/ui.tsx";
import { errorResponse } from "./routes/errors.ts";
import { assignRequestId, requestIds } from "./routes/request_id.ts";
import { adminAuth } from "./routes/admin_auth.ts";
import { canonicalUrl } from "./routes/canonical_url.ts";
import { ownPathMethods } from "./routes/own_paths.ts";
import { corsHandler } from "./routes/cors.ts";
import { logger, setupLogging } from "./log.ts";
import { RouterMetrics } from "./metrics.ts";

const log = logger("main");

/** A running router. */
export interface Router {
  /** `http://host:port` it listens on (the real port when `--port 0`). */
  url: string;
  store: Store;
  poller: Poller;
  /** Model placement, when there is a config to follow. */
  placement: Placement | undefined;
  metrics: RouterMetrics;
  /** Makes `/health/ready` answer 503 from now on, so endpoints drop this replica. */
  drain(): void;
  /**
   * Stops accepting, lets requests in flight finish (for at most `timeoutMs`, when
   * given), stops polling. Resolves true when every request finished in time.
   */
  shutdown(timeoutMs?: number): Promise<boolean>;
}

/**
 * Starts the router described by `config` and resolves once it listens and the
 * first poll of the static backends has finished.
 */
export async function startRouter(config: RouterConfig): Promise<Router> {
  const store = new Store(config.unreachableAfter);
  const poller = new Poller(store, {
    intervalMs: config.pollIntervalMs,
    timeoutMs: config.pollTimeoutMs,
  });
  const gate = new ColdGate(store, config.maxQueue);
  // Placement starts once the server listens (its Lease publishes this replica's
  // URL); the routes and the metrics read it through this holder.
  const started: { placement?: Placement } = {};
  const metrics = new RouterMetrics(store, () => started.placement?.gauges());
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
  // The page asks for the token only when the router checks one (routes/admin_auth.ts).
  const adminTokenRequired = config.adminToken !== "";
  const feed = new StatusFeed(
    routerSnapshot({ store, placement: () => started.placement, activity, adminTokenRequired }),
  );

  let draining = false;
  const app = new Hono();
  app.use(requestIds());
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
    }),
  );
  app.route("/", aggregateRoutes(store));
  const proxy = proxyRoutes({
    store,
    gate,
    repoll: (pod) => void poller.repoll(pod),
    maxBodyBytes: config.maxBodyBytes,
    maxBodyTotalBytes: Math.max(config.maxBodyTotalBytes, config.maxBodyBytes),
    ejectMs: config.ejectMs,
    firstByteTimeoutMs: config.firstByteTimeoutMs,
    connectTimeoutMs: config.connectTimeoutMs,
    streamIdleTimeoutMs: config.streamIdleTimeoutMs,
    bodyTimeoutMs: config.bodyTimeoutMs,
    retryAfterSeconds: Math.min(30, Math.max(1, Math.ceil(config.pollIntervalMs / 1000))),
    // The poll that would show the expiry can be a whole interval late, plus slack.
    staleAfterMs: Math.max(0, config.podIdleExpiryMs - config.pollIntervalMs - 30_000),
    coldLoader: () => started.placement?.coldLoader(),
    // Only models a pod has: a client's made-up name must not grow the counters.
    onAnswered: (model, ttfbMs) => {
      if (store.modelNames.peek().has(model)) activity.record(model, ttfbMs, Date.now());
    },
    metrics,
    adminToken: config.adminToken,
  });
  app.route("/", proxy.app);
  const unexpected = (path: string, error: Error) => {
    log.error("unexpected error on {path}: {error}", { path, error: String(error) });
    return errorResponse(path, 500, `internal router error: ${error.message}`);
  };
  app.onError((error, c) => unexpected(c.req.path, error));
  // Inference requests go to the proxy directly, as Hono would send them, with
  // the request id its middleware gives (they need no admin token, and are no
  // path of the router's own): Hono's share of a small request was more than a
  // tenth of the router's CPU (bench/).
  const proxied = async (request: Request) => {
    const id = assignRequestId(request);
    let response: Response;
    try {
      response = await proxy.handle(request);
    } catch (error) {
      response = unexpected(new URL(request.url).pathname, error as Error);
    }
    response.headers.set("x-request-id", id);
    return response;
  };

  poller.start();
  const route = (request: Request, info: Deno.ServeHandlerInfo) => {
    // An inference path exactly as written is already as the pod will see it.
    if (proxy.isInference(request)) return proxied(request);
    // Routing, the admin check and the proxy all see the path the pod will see.
    const canonical = canonicalUrl(request.url);
    if (canonical === undefined) return app.fetch(request, info);
    return app.fetch(
      new Request(canonical, {
        method: request.method,
        headers: request.headers,
        body: request.body,
        signal: request.signal,
      }),
      info,
    );
  };
  // Browsers first: a preflight needs no model, and a page from an origin not
  // allowed reaches nothing (routes/cors.ts).
  const cors = corsHandler(config.allowedOrigins);
  const server = Deno.serve({
    port: config.port,
    hostname: config.host,
    onListen: () => {},
  }, (request, info) => cors(request, () => route(request, info)));
  const url = `http://${server.addr.hostname}:${server.addr.port}`;
  const wildcard = ["0.0.0.0", "::", "[::]"].includes(config.host);
  const placement = await startPlacement({
    store,
    config: { ...config, advertiseUrl: config.advertiseUrl || (wildcard ? "" : url) },
    connection,
    repoll: (pod) => poller.repoll(pod),
    onActionResult: (result) => metrics.reconcileAction(result.action.kind, result.outcome),
  });
  started.placement = placement;
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
    metrics,
    drain() {
      draining = true;
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
      await placement?.stop();
      poller.stop();
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

async function main(args: string[]): Promise<void> {
  let config: RouterConfig;
  try {
    const parsed = parseConfig(args, (name) => Deno.env.get(name));
    if (parsed.help) {
      console.log(helpText());
      return;
    }
    config = parsed.config;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`rkllama-router: ${error.message} (see --help)`);
    Deno.exit(2);
  }
  if (
    config.modelsFile !== "" &&
    Deno.permissions.querySync({ name: "read", path: config.modelsFile }).state !== "granted"
  ) {
    console.error(
      `rkllama-router: --models-file: may not read '${config.modelsFile}'; the router reads files only under /etc/rkllama-router (put it there), or run it with 'deno task dev', which may read anywhere`,
    );
    Deno.exit(2);
  }
  await setupLogging(config.logLevel, config.logFormat);
  let router: Router;
  try {
    router = await startRouter(config);
  } catch (error) {
    if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    console.error(
      `rkllama-router: ${config.host}:${config.port} is already in use; choose another with --port`,
    );
    Deno.exit(2);
  }
  // Explicit listeners, so this works as PID 1 in a container too, where the
  // kernel gives SIGTERM no default action.
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.warn("{signal} again: exiting at once", { signal });
      Deno.exit(1);
    }
    stopping = true;
    router.drain();
    log.info(
      "{signal}: draining; /health/ready answers 503, new connections are refused in {drainDelayMs} ms, then requests in flight get up to {shutdownTimeoutMs} ms to finish",
      { signal, drainDelayMs: config.drainDelayMs, shutdownTimeoutMs: config.shutdownTimeoutMs },
    );
    await new Promise((resolve) => setTimeout(resolve, config.drainDelayMs));
    const shutdown = router.shutdown(config.shutdownTimeoutMs);
    log.info("drain delay over: no new connections; waiting for requests in flight");
    const finished = await shutdown;
    if (finished) log.info("every request finished; exiting");
    else log.warn("requests still in flight after --shutdown-timeout are cut; exiting");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
}

if (import.meta.main) await main(Deno.args);
