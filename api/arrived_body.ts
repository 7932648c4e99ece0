/**
 * @module
 * A request body the server already holds whole, handed to the proxy beside its
 * Request: `request.bytes()` on a Request built from bytes makes a stream of them
 * and reads it back, which was about a tenth of the server's own work on a small
 * request (http/server.ts; bench/edge.ts: about 5 µs of 60). The Request keeps
 * the same bytes as its body, for every other reader.
 */

const bodies = new WeakMap<Request, Uint8Array<ArrayBuffer>>();

/** Records that `request`'s whole body is `bytes` (the server calls this). */
export function holdArrivedBody(request: Request, bytes: Uint8Array<ArrayBuffer>): void {
  bodies.set(request, bytes);
}

/**
 * The whole body of `request` if the server had it when the request began, else
 * undefined (read `request.body` then). Given once: the caller owns it after.
 */
export function takeArrivedBody(request: Request): Uint8Array<ArrayBuffer> | undefined {
  const bytes = bodies.get(request);
  if (bytes !== undefined) bodies.delete(request);
  return bytes;
}
