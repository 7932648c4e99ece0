/**
 * @module
 * Paths the router answers itself take only the methods it answers them to; any
 * other method is a JSON 405 here, instead of falling through to the proxy, which
 * would send `POST /api/tags` or `DELETE /metrics` to one arbitrary board.
 */

import type { MiddlewareHandler } from "hono";
import { errorResponse } from "../api/errors.ts";
import { ENDPOINTS, isRead } from "../api/endpoints.ts";

/**
 * The router's own read-only paths: api/endpoints.ts's rows it answers on every method
 * (`/router/*` has its own 405s and 404s in admin.ts).
 */
const READ_ONLY: ReadonlySet<string> = new Set(
  ENDPOINTS.filter((row) =>
    row.answeredBy === "router" && !row.prefix && !row.path.startsWith("/router/")
  ).map((row) => row.path),
);

/** Hono middleware: 405 with `Allow: GET, HEAD` for writes to those paths. */
export function ownPathMethods(): MiddlewareHandler {
  return async (c, next) => {
    const method = c.req.method;
    // OPTIONS still reaches a board, which answers browsers' CORS preflights as before.
    if (isRead(method) || !READ_ONLY.has(c.req.path)) return await next();
    return errorResponse(c.req.path, 405, `${method} is not allowed on ${c.req.path}; use GET`, {
      allow: "GET, HEAD",
    });
  };
}
