/**
 * @module
 * Reading a request's body before it is sent to a board: whole (the model is read
 * from it, and a failed board may need it again), within `--max-body`, in
 * `--body-timeout`, and within the bytes all requests may hold at once
 * (`--max-body-total`).
 */

import { BadRequest } from "../api/model_name.ts";
import { type BodyReader, takeArrivedBody, takeBodyReader } from "../api/arrived_body.ts";
import { type Deadline, deadlines } from "../rkllama/deadlines.ts";

/**
 * Request bodies held at once across requests: each costs several times its size
 * while in flight, so many large uploads together could exhaust memory. Requests
 * past the budget are refused, not queued.
 */
export class BodyBudget {
  #held = 0;
  readonly #limit: number;

  constructor(limit: number) {
    this.#limit = limit;
  }

  /** @throws {BodiesFull} when `bytes` more would pass the budget */
  take(bytes: number): void {
    if (this.#held + bytes > this.#limit) {
      throw new BodiesFull(
        `the router holds ${this.#held} bytes of request bodies already, the most it takes at once (--max-body-total); retry shortly`,
      );
    }
    this.#held += bytes;
  }

  release(bytes: number): void {
    this.#held -= bytes;
  }
}

/** The body would pass `--max-body-total`. */
export class BodiesFull extends Error {
  override name = "BodiesFull";
}

/** Reads `body` to its end and drops it, for at most `timeoutMs`. */
async function discard(body: ReadableStream<Uint8Array>, timeoutMs: number): Promise<void> {
  const reader = body.getReader();
  const deadline = deadlines.start(timeoutMs, () => void reader.cancel().catch(() => {}));
  try {
    while (!(await reader.read()).done);
  } catch {
    // Cut short by the client: the answer closes the connection.
  } finally {
    deadline.cancel();
  }
}

/**
 * The whole request body, or null when there is none; its bytes are taken from
 * `budget`, and the caller gives them back when the request ends.
 *
 * @throws {BadRequest} 413 once it grows past `limit` bytes, 408 when it has not
 * all arrived within `timeoutMs` (a client trickling a body would hold a slot)
 * @throws {BodiesFull} when the budget has no room for it
 */
export async function readBody(
  request: Request,
  limit: number,
  timeoutMs: number,
  budget: BodyBudget,
): Promise<Uint8Array<ArrayBuffer> | null> {
  const declared = Number(request.headers.get("content-length") ?? "NaN");
  if (declared > 0 && declared <= limit) {
    return await readDeclared(request, declared, timeoutMs, budget);
  }
  if (!request.body) return null;
  const tooLarge = () =>
    new BadRequest(413, `the request body is larger than the limit of ${limit} bytes`);
  if (declared > limit) {
    // A body up to twice the limit is read and dropped, so that a client still
    // sending it can read the 413 (as nginx lingers); a larger one is not read on:
    // the server closes a connection whose request it answers before its end.
    if (declared <= 2 * limit) await discard(request.body, timeoutMs);
    throw tooLarge();
  }
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  const reader = request.body.getReader();
  // On expiry the pending read ends as if the body had (cancel resolves it).
  let expired = false;
  const deadline = deadlines.start(timeoutMs, () => {
    expired = true;
    reader.cancel().catch(() => {});
  });
  try {
    for (;;) {
      const chunk = await reader.read();
      if (expired) {
        throw new BadRequest(408, `the request body did not arrive within ${timeoutMs} ms`);
      }
      if (chunk.done) break;
      if (size + chunk.value.byteLength > limit) throw tooLarge();
      budget.take(chunk.value.byteLength);
      size += chunk.value.byteLength;
      chunks.push(chunk.value as Uint8Array<ArrayBuffer>);
    }
  } catch (error) {
    budget.release(size);
    reader.cancel().catch(() => {});
    throw error;
  } finally {
    deadline.cancel();
  }
  return chunks.length === 1 ? chunks[0] : joined(chunks, size);
}

/** `pieces` in one buffer of `length` bytes, their sum. */
function joined(pieces: readonly Uint8Array[], length: number): Uint8Array<ArrayBuffer> {
  const whole = new Uint8Array(length);
  let at = 0;
  for (const piece of pieces) {
    whole.set(piece, at);
    at += piece.byteLength;
  }
  return whole;
}

/**
 * A body of a declared length within the limit, read whole by Deno: without a
 * stream and a read per chunk in JavaScript, which cost about 10 µs a request
 * (bench/). Its length is taken from the budget before it is read.
 */
async function readDeclared(
  request: Request,
  declared: number,
  timeoutMs: number,
  budget: BodyBudget,
): Promise<Uint8Array<ArrayBuffer>> {
  budget.take(declared);
  const arrived = takeArrivedBody(request);
  if (arrived !== undefined) {
    // Whole with its head (most small requests): nothing to wait for or time.
    budget.release(declared - arrived.byteLength);
    return arrived;
  }
  let deadline: Deadline | undefined;
  const expired = new Promise<never>((_, reject) => {
    deadline = deadlines.start(
      timeoutMs,
      () => reject(new BadRequest(408, `the request body did not arrive within ${timeoutMs} ms`)),
    );
  });
  const reader = declared > WHOLE_READ_MAX ? takeBodyReader(request) : undefined;
  const reading = reader !== undefined
    ? readStraight(reader, new Uint8Array(declared))
    : declared <= WHOLE_READ_MAX
    ? request.bytes()
    : readInto(request.body!, new Uint8Array(declared));
  let body: Uint8Array<ArrayBuffer>;
  try {
    body = await Promise.race([reading, expired]);
  } catch (error) {
    // A body that never comes is let go with the connection, once answered.
    reading.catch(() => {});
    budget.release(declared);
    throw error;
  } finally {
    deadline!.cancel();
  }
  // HTTP/1.1 framing makes them equal; the budget holds what is really held.
  budget.release(declared - body.byteLength);
  return body;
}

/**
 * Declared bodies up to this size are read by `request.bytes()`, the fastest way;
 * larger ones into a buffer of their declared size: `bytes()` held about 8 times
 * a large body's size while reading it (12 bodies of 5 MiB at once: RSS peak
 * 517 MiB, against 165 MiB read this way; issue 16).
 */
const WHOLE_READ_MAX = 64 * 1024;

/**
 * Reads a body straight from the connection into `buffer`, its declared length.
 *
 * @throws {BadRequest} 400 when the body is not the length it declared
 */
async function readStraight(
  read: BodyReader,
  buffer: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer>> {
  const at = await read(buffer);
  return at === buffer.byteLength ? buffer : buffer.subarray(0, at);
}

/**
 * Reads `body` into `buffer`, which is its declared length.
 *
 * @throws {BadRequest} 400 when the body is not the length it declared
 */
async function readInto(
  body: ReadableStream<Uint8Array>,
  buffer: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer>> {
  let at = 0;
  for await (const chunk of body) {
    if (at + chunk.byteLength > buffer.byteLength) {
      throw new BadRequest(400, "the request body is longer than its Content-Length");
    }
    buffer.set(chunk, at);
    at += chunk.byteLength;
  }
  return at === buffer.byteLength ? buffer : buffer.subarray(0, at);
}

/**
 * Bodies past this size go to a board as a stream of views of the held buffer,
 * not as the buffer itself: fetch() copies a byte body once in JavaScript and
 * again on its way to the socket, and keeps both until the answer (12 bodies of
 * 5 MiB at once: about 310 MiB for 60 MiB of bodies, against about 15 MiB as a
 * stream; issue 16). Smaller bodies stay whole, the fastest way for the small
 * requests that are most of the traffic.
 */
const STREAM_OVER = 64 * 1024;

/** The piece of a held body handed to fetch() at a time. */
const STREAM_CHUNK = 64 * 1024;

/**
 * What to give fetch() to send `body`: the bytes, or past {@linkcode STREAM_OVER}
 * a stream over them that copies nothing, sent chunked (every RKLlama server,
 * FastAPI's and Flask's, reads a chunked body). The buffer stays the caller's,
 * whole, for a retry on another board. A body given as pieces (views of the held
 * buffer around changed bytes) is sent as their concatenation, so changing a few
 * bytes of a large body copies none of it.
 */
export function toSend<T extends BodyInit | null>(
  body: T | readonly Uint8Array<ArrayBuffer>[],
): T | Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> {
  if (Array.isArray(body)) {
    const pieces = body as readonly Uint8Array<ArrayBuffer>[];
    const length = pieces.reduce((sum, piece) => sum + piece.byteLength, 0);
    return length <= STREAM_OVER ? joined(pieces, length) : streamOver(pieces);
  }
  if (!(body instanceof Uint8Array) || body.byteLength <= STREAM_OVER) return body as T;
  return streamOver([body]);
}

function streamOver(pieces: readonly Uint8Array[]): ReadableStream<Uint8Array> {
  let piece = 0;
  let at = 0;
  // Not a byte stream: that would detach (transfer) the buffer behind each chunk.
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      while (piece < pieces.length && at >= pieces[piece].byteLength) {
        piece++;
        at = 0;
      }
      if (piece === pieces.length) return controller.close();
      controller.enqueue(pieces[piece].subarray(at, at + STREAM_CHUNK));
      at += STREAM_CHUNK;
    },
  }, { highWaterMark: 0 });
}
