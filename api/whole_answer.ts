/**
 * @module
 * A small answer the router already holds whole (a pod's non-streaming reply), as a
 * Response the server can write without reading it back. `new Response(bytes)` in
 * Deno copies the bytes, prepares a native response for `Deno.serve` (which the
 * router no longer uses), and makes a stream of them when the server looks at
 * `.body`, which `.bytes()` then reads back: about 15 µs of CPU a request
 * (http/server.ts; `bench/run.ts --profile`: 3.9% of busy samples in the
 * constructor, 2% in the stream and its read). A {@linkcode WholeAnswer} is a
 * Response with no body of its own until something other than the server reads
 * it, which then gets an ordinary Response's body, made then.
 */

/**
 * A Response whose body is `bytes`, handed to the server by
 * {@linkcode takeWholeAnswer}. Status and headers are the Response's own (the
 * front door and CORS change them as on any Response); every way to read the
 * body gives those bytes, as a plain Response would.
 */
export class WholeAnswer extends Response {
  #bytes: Uint8Array<ArrayBuffer> | undefined;
  #plain: Response | undefined;

  constructor(bytes: Uint8Array<ArrayBuffer>, init: ResponseInit) {
    super(null, init);
    this.#bytes = bytes;
  }

  /** The bytes, once, unless the body was read some other way first (see takeWholeAnswer). */
  take(): Uint8Array<ArrayBuffer> | undefined {
    const bytes = this.#bytes;
    this.#bytes = undefined;
    return bytes;
  }

  /** An ordinary Response with the body, made on the first read other than the server's. */
  #body(): Response {
    if (this.#plain) return this.#plain;
    const bytes = this.#bytes;
    this.#bytes = undefined;
    const init = { status: this.status, statusText: this.statusText, headers: this.headers };
    this.#plain = new Response(
      NULL_BODY.has(this.status) ? null : bytes ?? new Uint8Array(0),
      init,
    );
    // Taken by the server: a body already used, as on any Response that was read.
    if (bytes === undefined) this.#plain.body?.cancel();
    return this.#plain;
  }

  override get body(): ReadableStream<Uint8Array<ArrayBuffer>> | null {
    return this.#body().body;
  }
  override get bodyUsed(): boolean {
    return this.#bytes === undefined && (this.#plain === undefined || this.#plain.bodyUsed);
  }
  override arrayBuffer(): Promise<ArrayBuffer> {
    return this.#body().arrayBuffer();
  }
  override blob(): Promise<Blob> {
    return this.#body().blob();
  }
  override bytes(): Promise<Uint8Array<ArrayBuffer>> {
    return this.#body().bytes();
  }
  override formData(): Promise<FormData> {
    return this.#body().formData();
  }
  override json(): Promise<unknown> {
    return this.#body().json();
  }
  override text(): Promise<string> {
    return this.#body().text();
  }
  override clone(): Response {
    return this.#body().clone();
  }
}

/** Statuses whose Response may have no body (the pod's bytes are then none). */
const NULL_BODY = new Set([101, 204, 205, 304]);

/**
 * The whole body of `response` when it is a {@linkcode WholeAnswer} not read yet,
 * else undefined (read the Response then). Given once: the caller owns it after.
 */
export function takeWholeAnswer(response: Response): Uint8Array<ArrayBuffer> | undefined {
  return response instanceof WholeAnswer ? response.take() : undefined;
}
