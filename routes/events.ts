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

/** What the events endpoint needs. */
export interface EventOptions {
  feed: StatusFeed;
  /** Renders the page's sections (id → HTML) for `?view=html`. */
  render: (snapshot: StatusSnapshot) => Record<string, string>;
  /** Comment lines at this interval keep proxies from closing a quiet stream (default 15 s). */
  heartbeatMs?: number;
  /** The reconnect delay suggested to browsers, in ms (default 3 s). */
  retryMs?: number;
}

const encoder = new TextEncoder();

/** The Hono app for `/router/events`. */
export function eventRoutes(options: EventOptions): Hono {
  const app = new Hono();
  app.get("/router/events", (c) => {
    const html = c.req.query("view") === "html";
    let close = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const send = (text: string) => {
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
            ? JSON.stringify({ now, sections: options.render(snapshot) })
            : `{"now":${now},${json.slice(1)}`;
          send(`event: ${html ? "html" : "status"}\ndata: ${data}\n\n`);
        }, () => close());
        const heartbeat = setInterval(
          () => send(": keep-alive\n\n"),
          options.heartbeatMs ?? 15_000,
        );
        let closed = false;
        close = () => {
          if (closed) return;
          closed = true;
          clearInterval(heartbeat);
          unsubscribe();
          c.req.raw.signal.removeEventListener("abort", close);
          try {
            controller.close();
          } catch {
            // Already closed or errored by the client leaving.
          }
        };
        c.req.raw.signal.addEventListener("abort", close);
      },
      cancel() {
        close();
      },
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        // nginx buffers responses by default, which would hold events back.
        "x-accel-buffering": "no",
      },
    });
  });
  return app;
}
