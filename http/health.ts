/**
 * @module
 * Probes for the router's own pod: `/health` says the process answers,
 * `/health/ready` says it can route (at least one pod takes requests) and is not
 * shutting down; and `/`, which Ollama clients probe.
 */

import { Hono } from "hono";
import { isRoutable, type Store } from "../cluster/store.ts";

/**
 * The Hono app for `/health` and `/health/ready`; `draining` says the router got
 * SIGTERM, which makes it unready at once while it still serves.
 */
export function healthRoutes(store: Store, draining: () => boolean = () => false): Hono {
  const app = new Hono();
  // Ollama's own answer at `/`: the ollama CLI probes `HEAD /` before every command,
  // and a FastAPI pod would answer 405 to HEAD there.
  app.get("/", (c) => c.text("Ollama is running"));
  app.get("/health", (c) => c.json({ status: "ok" }));
  app.get("/health/ready", (c) => {
    const now = Date.now();
    const pods = store.podList.value;
    const routable = pods.filter((pod) => isRoutable(pod, now)).length;
    if (draining()) {
      return c.json({ status: "shutting down", pods: pods.length, routable_pods: routable }, 503);
    }
    if (routable === 0) {
      return c.json(
        {
          status: pods.length === 0 ? "no pods discovered" : "no pod can take requests",
          pods: pods.length,
          routable_pods: 0,
        },
        503,
      );
    }
    return c.json({ status: "ok", pods: pods.length, routable_pods: routable });
  });
  return app;
}
