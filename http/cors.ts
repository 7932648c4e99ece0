/**
 * @module
 * Browsers: CORS as Ollama does it (`OLLAMA_ORIGINS`, gin-contrib/cors). Origins
 * given by `--allowed-origins` may call the router from pages they serve; a
 * preflight (`OPTIONS`) is answered here and never needs a model; a request from
 * any other origin is refused with 403, so a web page cannot drive the router from
 * a visitor's browser. The boards' own CORS headers (both generations allow every
 * origin) never reach the client: the router decides.
 */

import { errorResponse } from "../api/errors.ts";

/** Methods a browser may use towards the router (those the proxy passes on). */
const METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/** How long a browser may keep a preflight's answer (Ollama's gin-contrib/cors: 12 h). */
const MAX_AGE_SECONDS = String(12 * 3600);

/** Headers a page may read from an answer besides the CORS-safelisted ones. */
const EXPOSED = "x-request-id, retry-after";

/** Answers a request: `next` is the router without CORS. */
export type CorsHandler = (
  request: Request,
  next: () => Response | Promise<Response>,
) => Response | Promise<Response>;

/**
 * CORS for `allowed` origins (`*` for any; `*` inside an origin matches anything
 * there, as in `http://localhost:*`). Requests without an `Origin`, or from the
 * router's own origin, go to `next` untouched and at no cost (no promise added);
 * `OPTIONS` is answered here in every case.
 *
 * @example
 * ```ts
 * const cors = corsHandler(["https://chat.example.com"]);
 * Deno.serve((request) => cors(request, () => app.fetch(request)));
 * ```
 */
export function corsHandler(allowed: readonly string[]): CorsHandler {
  const allows = originMatcher(allowed);
  return (request, next) => {
    const origin = request.headers.get("origin");
    if (origin === null || sameOrigin(request, origin)) {
      return request.method === "OPTIONS" ? optionsAnswer(request) : next();
    }
    return crossOrigin(request, origin, allows(origin), allowed.includes("*"), next);
  };
}

async function crossOrigin(
  request: Request,
  origin: string,
  allowed: boolean,
  anyOrigin: boolean,
  next: () => Response | Promise<Response>,
): Promise<Response> {
  const path = new URL(request.url).pathname;
  if (!allowed) {
    await request.body?.cancel();
    return errorResponse(
      path,
      403,
      `the origin '${origin}' may not call this router; allow it with --allowed-origins (ROUTER_ALLOWED_ORIGINS)`,
    );
  }
  const allowOrigin = anyOrigin ? "*" : origin;
  if (request.method === "OPTIONS") {
    const answer = optionsAnswer(request);
    if (request.headers.has("access-control-request-method")) {
      answer.headers.set("access-control-allow-origin", allowOrigin);
      answer.headers.set("access-control-allow-methods", METHODS);
      answer.headers.set(
        "access-control-allow-headers",
        request.headers.get("access-control-request-headers") ?? "authorization, content-type",
      );
      answer.headers.set("access-control-max-age", MAX_AGE_SECONDS);
      answer.headers.set(
        "vary",
        "origin, access-control-request-method, access-control-request-headers",
      );
    }
    return answer;
  }
  const response = mutable(await next());
  for (const name of [...response.headers.keys()]) {
    if (name.startsWith("access-control-")) response.headers.delete(name);
  }
  response.headers.set("access-control-allow-origin", allowOrigin);
  response.headers.set("access-control-expose-headers", EXPOSED);
  return response;
}

/** `OPTIONS` without CORS: what may be sent here. No model, no board. */
function optionsAnswer(request: Request): Response {
  request.body?.cancel().catch(() => {});
  return new Response(null, { status: 204, headers: { allow: METHODS } });
}

/**
 * A page of the router itself (the status page) sends its own origin on `POST`:
 * that is no cross-origin request (gin-contrib/cors skips it too). Behind a
 * proxy the page's host may arrive as `X-Forwarded-Host`.
 */
function sameOrigin(request: Request, origin: string): boolean {
  const host = origin.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
  return host === request.headers.get("host") ||
    host === request.headers.get("x-forwarded-host");
}

/** A test for origins: exact, `*` for all, or with `*` standing for any text. */
export function originMatcher(allowed: readonly string[]): (origin: string) => boolean {
  if (allowed.includes("*")) return () => true;
  const exact = new Set(allowed.filter((o) => !o.includes("*")).map((o) => o.toLowerCase()));
  const patterns = allowed.filter((o) => o.includes("*")).map((o) =>
    new RegExp(
      `^${o.split("*").map((piece) => piece.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`,
      "i",
    )
  );
  return (origin) =>
    exact.has(origin.toLowerCase()) || patterns.some((pattern) => pattern.test(origin));
}

/** The response, told to vary by origin, as a copy when its headers cannot change (fetch's). */
function mutable(response: Response): Response {
  try {
    response.headers.append("vary", "origin");
    return response;
  } catch {
    const copy = new Response(response.body, response);
    copy.headers.append("vary", "origin");
    return copy;
  }
}
