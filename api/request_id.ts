/**
 * @module
 * Request ids: a client's `X-Request-Id` is kept when it is a plain token, else a
 * new one is made; the proxy passes it to the pod, and every response carries it,
 * so one id follows a request through the router's logs and the pod's.
 */

const ids = new WeakMap<Request, string>();

/** A header value safe to log and to pass on: no spaces, quotes or control characters. */
const PLAIN_TOKEN = /^[A-Za-z0-9._:\-]{1,128}$/;

/** The id of a request given one by {@linkcode assignRequestId} (http/front_door.ts); "" otherwise. */
export function requestIdOf(request: Request): string {
  return ids.get(request) ?? "";
}

/** Gives `request` its id (the client's when it is a plain token, else a new one). */
export function assignRequestId(request: Request): string {
  const given = request.headers.get("x-request-id") ?? "";
  const id = PLAIN_TOKEN.test(given) ? given : crypto.randomUUID();
  ids.set(request, id);
  return id;
}

/** Gives `request` the id `id`: the front door's copy of a request keeps the original's id. */
export function giveRequestId(request: Request, id: string): void {
  ids.set(request, id);
}
