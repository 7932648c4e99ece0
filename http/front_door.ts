/**
 * @module
 * The one front door: every request the server takes goes through {@linkcode frontDoor}, which
 * gives it its request id, applies CORS, makes its path canonical, sends it on, and turns any
 * error thrown on the way into one JSON 500, each in this one place.
 *
 * One shortcut, measured: a `POST` to an inference path of api/endpoints.ts, spelled exactly so
 * (already canonical, no path of the router's own, no admin token), goes to `forward` without
 * Hono's routing, context and middleware, which cost more than a tenth of the router's CPU on a
 * small request (`deno task bench`).
 */

import type { Hono } from "hono";
import { errorResponse } from "../api/errors.ts";
import { isInference } from "../api/endpoints.ts";
import { assignRequestId, giveRequestId } from "../api/request_id.ts";
import { logger } from "../obs/log.ts";
import { canonicalUrl, pathOf } from "./canonical_url.ts";
import { corsHandler } from "./cors.ts";

const log = logger("main");

/** What the front door sends requests on to. */
export interface FrontDoorOptions {
  /** The router's own paths, with the proxy as its last route; it must rethrow errors. */
  app: Hono;
  /** Forwards a request to a board: the inference shortcut. */
  forward: (request: Request) => Promise<Response>;
  /** `--allowed-origins` (http/cors.ts). */
  allowedOrigins: readonly string[];
}

/** The handler of every request. */
export function frontDoor(options: FrontDoorOptions): (request: Request) => Promise<Response> {
  const { app, forward } = options;
  // Browsers first: a preflight needs no model, and a page from an origin not
  // allowed reaches nothing.
  const cors = corsHandler(options.allowedOrigins);
  const route = (request: Request, id: string): Response | Promise<Response> => {
    if (isInference(request.method, pathOf(request.url))) return forward(request);
    // Over HTTP/2, `*` (but for OPTIONS) arrives with no path at all: not a URL.
    if (!URL.canParse(request.url)) {
      return errorResponse("/", 400, "the request target must be a path, such as /api/tags");
    }
    // Routing, the admin check and the proxy all see the path the pod will see.
    const canonical = canonicalUrl(request.url);
    if (canonical === undefined) return app.fetch(request);
    const rewritten = new Request(canonical, {
      method: request.method,
      headers: request.headers,
      body: request.body,
      signal: request.signal,
    });
    giveRequestId(rewritten, id);
    return app.fetch(rewritten);
  };
  return async (request) => {
    const id = assignRequestId(request);
    let response: Response;
    try {
      response = await cors(request, () => route(request, id));
    } catch (error) {
      response = unexpectedError(pathOf(request.url), error);
    }
    response.headers.set("x-request-id", id);
    return response;
  };
}

/** A JSON 500 for an error nothing else handled, logged with its path. */
export function unexpectedError(path: string, error: unknown): Response {
  const message = error instanceof Error ? error.message : String(error);
  log.error("unexpected error on {path}: {error}", { path, error: String(error) });
  return errorResponse(path, 500, `internal router error: ${message}`);
}
