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

/** Reads a body still arriving into `buffer`, its declared length; resolves to the bytes read. */
export type BodyReader = (buffer: Uint8Array<ArrayBuffer>) => Promise<number>;

const readers = new WeakMap<Request, BodyReader>();

/**
 * Records how to read `request`'s body, still arriving, straight from the
 * connection into one buffer (the server calls this): through `request.body`,
 * every chunk was copied once more on its way, and a large upload cost about
 * 2.5 times its size instead of 2 (issue 16).
 */
export function holdBodyReader(request: Request, read: BodyReader): void {
  readers.set(request, read);
}

/**
 * How to read `request`'s body straight into a buffer, or undefined (read
 * `request.body` then). Given once; only while nothing has read `request.body`.
 */
export function takeBodyReader(request: Request): BodyReader | undefined {
  const read = readers.get(request);
  if (read !== undefined) readers.delete(request);
  return read;
}
