/**
 * @module
 * `GET /router/events`: the status snapshot as Server-Sent Events, one `status`
 * event on connect and one per change. With `?view=html` the events are `html`
 * instead, carrying the status page's sections already rendered, so the page has
 * one renderer (the server's) and applies them as they come.
 */

import { Hono } from "hono";
import type { StatusFeed } from "./status_feed.ts";
import type { StatusSnapshot } from "./status_snapshot.ts";
import { logger } from "../obs/log.ts";

const log = logger("events");

/** What the events endpoint needs. */
export interface EventOptions {
  feed: StatusFeed;
  /** Renders the page's sections (id → HTML) for `?view=html`. */
  render: (snapshot: StatusSnapshot) => Record<string, string>;
  /** Comment lines at this interval keep proxies from closing a quiet stream (default 15 s). */
  heartbeatMs?: number;
  /** The reconnect delay suggested to browsers, in ms (default 3 s). */
  retryMs?: number;
  /** Events queued for a client that does not read before it is dropped (default 8). */
  maxBacklog?: number;
}

const encoder = new TextEncoder();

/**
 * The Hono app for `/router/events`. The stream is written by hand rather than with
 * Hono's `streamSSE` (4.13): that sets `Transfer-Encoding` and `Connection` on the
 * response, hop-by-hop headers the router never sends otherwise (RFC 9110 §7.6.1;
 * HTTP/2 forbids them), and puts a TransformStream and a second ReadableStream
 * between the events and the response, where one stream's `desiredSize` is what
 * tells here that a client stopped reading.
 */
export function eventRoutes(options: EventOptions): Hono {
  const app = new Hono();
  app.get("/router/events", (c) => {
    const headers = {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      // nginx buffers responses by default, which would hold events back.
      "x-accel-buffering": "no",
    };
    // Hono answers HEAD with this GET route and drops the body unread: a stream
    // made for it would hold its feed subscription forever.
    if (c.req.method === "HEAD") return new Response(null, { headers });
    const html = c.req.query("view") === "html";
    const maxBacklog = options.maxBacklog ?? 8;
    let close = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        let closed = false;
        const send = (text: string) => {
          if (closed) return;
          // A client that stops reading (a stalled or suspended tab) would have
          // every event queued here for it: past a few, it is dropped instead, and
          // gets a fresh snapshot when it reconnects.
          if ((controller.desiredSize ?? 0) < -maxBacklog) {
            log.info("dropped an event stream whose client stopped reading it", {
              queued: -(controller.desiredSize ?? 0),
            });
            close();
            return;
          }
          try {
            controller.enqueue(encoder.encode(text));
          } catch {
            close();
          }
        };
        send(`retry: ${options.retryMs ?? 3000}\n\n`);
        const unsubscribe = options.feed.subscribe((snapshot, json) => {
          // `now` lets the page count load times on the router's clock, not the browser's.
          const now = Date.now();
          const data = html
            ? JSON.stringify({
              now,
              adminTokenRequired: snapshot.adminTokenRequired,
              sections: options.render(snapshot),
            })
            : `{"now":${now},${json.slice(1)}`;
          send(`event: ${html ? "html" : "status"}\ndata: ${data}\n\n`);
        }, () => close());
        const heartbeat = setInterval(
          () => send(": keep-alive\n\n"),
          options.heartbeatMs ?? 15_000,
        );
        close = () => {
          if (closed) return;
          closed = true;
          clearInterval(heartbeat);
          unsubscribe();
          c.req.raw.signal.removeEventListener("abort", onAbort);
          try {
            // Also after a drop: erroring the stream would make Deno print the error,
            // and no more than the backlog stays queued.
            controller.close();
          } catch {
            // Already closed or errored by the client leaving.
          }
        };
        const onAbort = () => close();
        c.req.raw.signal.addEventListener("abort", onAbort);
      },
      cancel() {
        close();
      },
    });
    return new Response(body, { headers });
  });
  return app;
}
