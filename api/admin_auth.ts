/**
 * @module
 * The operator token (`--admin-token`): which requests change the cluster and so
 * need `Authorization: Bearer <token>`, and the check itself, in constant time.
 * Reading state (listings, status, inference) never needs it.
 */

import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { errorResponse } from "./errors.ts";
import { endpointOf, isRead } from "./endpoints.ts";
import { logger } from "../obs/log.ts";
import { requestIdOf } from "./request_id.ts";
import type { HeaderList } from "../rkllama/upstream.ts";

const log = logger("admin");

/**
 * True when a request with this method and path needs the admin token (when one
 * is set), as api/endpoints.ts says. The path is compared as the pod will read it: percent-decoded (FastAPI
 * routes `/api/%6Coad` to `/api/load`) and with repeated slashes merged (Flask does).
 */
export function needsAdmin(method: string, rawPath: string): boolean {
  let path = rawPath;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    // Not valid percent-encoding: no pod routes it anywhere else either.
  }
  path = path.replace(/\/{2,}/g, "/");
  const admin = endpointOf(path).admin;
  return admin === "always" || (admin === "writes" && !isRead(method));
}

/**
 * True when `authorization` (the header, or null) carries `Bearer <token>`. Both
 * sides are hashed first so the comparison takes the same time whatever the
 * length or the first differing byte.
 */
export function isAdmin(authorization: string | null, token: string): boolean {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? "");
  const given = createHash("sha256").update(match?.[1] ?? "").digest();
  const wanted = createHash("sha256").update(token).digest();
  return timingSafeEqual(given, wanted) && match !== null;
}

/**
 * Hono middleware: a 401 JSON error for requests that {@linkcode needsAdmin} and
 * lack the token; nothing at all when `token` is empty (no token configured).
 */
export function adminAuth(
  token: string,
  onRefused: (path: string) => void = () => {},
): MiddlewareHandler {
  return async (c, next) => {
    if (token === "" || !needsAdmin(c.req.method, c.req.path)) return await next();
    if (isAdmin(c.req.header("authorization") ?? null, token)) return await next();
    const given = c.req.header("authorization") !== undefined;
    // Refusals are logged (never the header itself) so that guessing shows.
    onRefused(c.req.path);
    log.warn("{method} {path} refused: {why}", {
      method: c.req.method,
      path: c.req.path.slice(0, 200),
      why: given ? "wrong admin token" : "no admin token",
      requestId: requestIdOf(c.req.raw),
    });
    return errorResponse(
      c.req.path,
      401,
      given
        ? "the admin token is wrong: send 'Authorization: Bearer <token>' with the router's --admin-token"
        : "this operation changes the cluster and needs the admin token: send 'Authorization: Bearer <token>'",
      { "www-authenticate": 'Bearer realm="rkllama-router"' },
    );
  };
}

/**
 * Removes from `headers` (in place) every header whose value holds `token`, in
 * whatever shape a client sent it (`Bearer TOKEN`, bare, `Token TOKEN`, two
 * Authorization headers joined, another header): the token is the router's, and
 * no board should learn it. A client's own key for the boards passes.
 */
export function dropToken(headers: HeaderList, token: string): void {
  for (let i = headers.length - 1; i >= 0; i--) {
    if (headers[i][1].includes(token)) headers.splice(i, 1);
  }
}
