/**
 * @module
 * Talking to one pod: forwarding a request with the right headers, and passing the
 * answer back as a stream that reports when it ends. Nothing here decides which pod.
 */

import { type Deadline, deadlines } from "./deadlines.ts";

/** Hop-by-hop headers (RFC 9110 §7.6.1): they never cross the router. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** Hop-by-hop headers plus those fetch sets itself on a request to a pod. */
const NOT_UPSTREAM = new Set([...HOP_BY_HOP, "host", "content-length", "accept-encoding"]);

/**
 * Header name-value pairs, names in lower case, as fetch() and Response take
 * them: a list is cheaper than a Headers object to build and to hand over, which
 * iterates it once more (bench/).
 */
export type HeaderList = [string, string][];

/** Headers for the pod: the client's, less hop-by-hop ones and those the router sets. */
export function upstreamHeaders(client: Headers): HeaderList {
  const headers = copyWithout(client, NOT_UPSTREAM);
  // Deno's fetch would otherwise ask for gzip and decode it: an extra cost on a
  // loopback-fast link, and a stream must reach the client as the pod sent it.
  headers.push(["accept-encoding", "identity"]);
  return headers;
}

/** Headers for the client: the pod's, less hop-by-hop ones. */
export function downstreamHeaders(upstream: Headers): HeaderList {
  return copyWithout(upstream, HOP_BY_HOP);
}

/** The value of header `name` (lower case) in `headers`, or undefined. */
export function headerOf(headers: HeaderList, name: string): string | undefined {
  for (const [key, value] of headers) if (key === name) return value;
  return undefined;
}

/** Sets header `name` (lower case) to `value`, replacing any there; undefined removes it. */
export function setHeader(headers: HeaderList, name: string, value: string | undefined): void {
  for (let i = headers.length - 1; i >= 0; i--) if (headers[i][0] === name) headers.splice(i, 1);
  if (value !== undefined) headers.push([name, value]);
}

/**
 * A copy of `from` without the `dropped` headers and those its Connection header
 * names. Copying only what passes costs a third of copying all and deleting, and
 * forEach a half of for-of over a Headers (measured with bench/); a junk name in
 * Connection cannot make it throw.
 */
function copyWithout(from: Headers, dropped: ReadonlySet<string>): HeaderList {
  const headers: HeaderList = [];
  let connection: string | undefined;
  from.forEach((value, name) => {
    if (name === "connection") connection = value;
    if (!dropped.has(name)) headers.push([name, value]);
  });
  if (connection === undefined) return headers;
  const listed = connection.toLowerCase().split(",").map((name) => name.trim());
  return headers.filter(([name]) => !listed.includes(name));
}

/**
 * How a relayed body ended; `firstByteAt` is the `performance.now()` of its first
 * byte (the first token of a stream), undefined when no byte came. `abandoned`: the
 * client left and the rest of the answer was read from the pod and thrown away
 * (`leftAt` is when the client left; `error` is set when the pod failed meanwhile).
 */
export type BodyEnd =
  & { bytes: number; firstByteAt: number | undefined }
  & (
    | { kind: "done" }
    | { kind: "cancelled" }
    | { kind: "failed"; error: unknown }
    | { kind: "abandoned"; leftAt: number; error?: unknown }
  );

/** The pod sent nothing for longer than `--stream-idle-timeout`. */
export class StreamIdle extends Error {
  override name = "StreamIdle";
}

/** How {@linkcode relayBody} relays one body. */
export interface RelayOptions {
  /** The body's content type: NDJSON and SSE streams get an error line on failure. */
  contentType: string;
  /** The error line's message for a failure of the sender. */
  describeFailure: (error: unknown) => string;
  /** Longest silence of the sender while a read waits (`--stream-idle-timeout`). */
  idleTimeoutMs: number;
  /** Called exactly once, when the body has ended whichever way. */
  onEnd: (end: BodyEnd) => void;
  /** Where the relay registers, so a shutdown can end it. */
  open?: OpenStreams;
  /**
   * What a client that leaves does to the sender: `drain` (a pod) reads the rest
   * and throws it away, `cancel` (another replica, which drains itself) cuts it.
   */
  whenClientLeaves: "drain" | "cancel";
}

/**
 * Relays `body` chunk by chunk without reading ahead (a slow client slows the pod,
 * nothing piles up in the router), and calls `onEnd` exactly once. If the pod fails
 * mid-stream, or sends nothing for `idleTimeoutMs`, an NDJSON or SSE stream gets a
 * last error line the Ollama and OpenAI clients understand, instead of a silently
 * cut connection. A stream that keeps sending is never cut.
 *
 * A client that leaves does not cut a pod's answer (`whenClientLeaves: "drain"`):
 * RKLlama does not stop a generation whose client is gone. FastAPI boards go on
 * generating and hand the rest to the next client's answer, or keep the inference
 * lock; Flask boards lose the model's worker. So the rest is read to its end, under
 * the same idle timeout, and the pod counts as busy until then.
 */
export function relayBody(
  body: ReadableStream<Uint8Array>,
  options: RelayOptions,
): ReadableStream<Uint8Array> {
  const { contentType, describeFailure, idleTimeoutMs, onEnd, open } = options;
  const reader = byteReader(body);
  let bytes = 0;
  let firstByteAt: number | undefined;
  let lastByte = 0x0a;
  let ended = false;
  let leftAt: number | undefined;
  // One shared check per stream, running only while a read waits for the pod (a
  // client that reads slowly is not the pod's silence), instead of a timer per chunk.
  let idle: Deadline | undefined;
  let silent: Error | undefined;
  // The pull whose read is still waiting when the client leaves: the drain reads on after it.
  let pulling: Promise<void> | undefined;
  // Ended from outside (the router shuts down): like a silent pod, with its reason.
  const forget = open?.add((error) => {
    silent = error;
    reader.cancel(error).catch(() => {});
  });
  const end = (result: BodyEnd) => {
    if (ended) return;
    ended = true;
    idle?.cancel();
    forget?.();
    onEnd(result);
  };
  /** The pod's next chunk, or the error that ended it (the idle timeout's, if it fired). */
  const next = async (): Promise<ReadableStreamReadResult<Uint8Array> | { error: unknown }> => {
    if (idle) {
      idle.restart();
    } else {
      idle = deadlines.start(idleTimeoutMs, () => {
        // The pod hangs: let go of it (this ends its connection and the pending
        // read) before telling the client.
        silent = new StreamIdle(`it sent nothing for ${idleTimeoutMs} ms (--stream-idle-timeout)`);
        reader.cancel(silent).catch(() => {});
      });
    }
    try {
      const chunk = await reader.read();
      if (chunk.done && silent) return { error: silent };
      if (!chunk.done) {
        if (bytes === 0 && chunk.value.byteLength > 0) firstByteAt = performance.now();
        bytes += chunk.value.byteLength;
        if (chunk.value.byteLength > 0) lastByte = chunk.value[chunk.value.byteLength - 1];
      }
      return chunk;
    } catch (error) {
      return { error: silent ?? error };
    } finally {
      idle.pause();
    }
  };
  /** After the client left: true once the pod's answer has ended (and `end` was called). */
  const endedWhileAbandoned = (read: ReadableStreamReadResult<Uint8Array> | { error: unknown }) => {
    if ("error" in read) {
      end({ kind: "abandoned", bytes, firstByteAt, leftAt: leftAt!, error: read.error });
      return true;
    }
    if (read.done) {
      end({ kind: "abandoned", bytes, firstByteAt, leftAt: leftAt!, error: silent });
      return true;
    }
    return false;
  };
  const drain = async () => {
    await pulling;
    while (!ended && !endedWhileAbandoned(await next()));
  };
  const fail = (controller: ReadableStreamDefaultController<Uint8Array>, error: unknown) => {
    end({ kind: "failed", bytes, firstByteAt, error });
    const message = error instanceof StreamEnded ? error.message : describeFailure(error);
    const trailer = errorTrailer(contentType, message, lastByte);
    if (trailer) {
      controller.enqueue(trailer);
      controller.close();
    } else {
      controller.error(error);
    }
  };
  const pull = async (controller: ReadableStreamDefaultController<Uint8Array>) => {
    const read = await next();
    if (leftAt !== undefined) {
      // The client left while this read waited; the drain goes on from here.
      endedWhileAbandoned(read);
      return;
    }
    if ("error" in read) return fail(controller, read.error);
    if (read.done) {
      end({ kind: "done", bytes, firstByteAt });
      controller.close();
      return;
    }
    controller.enqueue(read.value);
  };
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      pulling = pull(controller);
      return pulling;
    },
    cancel(reason) {
      if (ended) return;
      if (options.whenClientLeaves === "cancel") {
        end({ kind: "cancelled", bytes, firstByteAt });
        return reader.cancel(reason);
      }
      leftAt = performance.now();
      void drain();
    },
  }, { highWaterMark: 0 });
}

/**
 * Reads `body` to its end and throws it away, for an answer whose client left
 * before it began: the pod finishes its generation undisturbed (see relayBody).
 * Resolves with the bytes read and the error that ended it, if any; the idle
 * timeout applies, and `open` lets a shutdown end it.
 */
export function discardBody(
  body: ReadableStream<Uint8Array>,
  options: Pick<RelayOptions, "idleTimeoutMs" | "open" | "onEnd">,
  leftAt: number,
): void {
  const relay = relayBody(body, {
    ...options,
    contentType: "",
    describeFailure: String,
    whenClientLeaves: "drain",
    onEnd: (end) => options.onEnd(end.kind === "abandoned" ? { ...end, leftAt } : end),
  });
  // Cancelling a relay that has not been read from starts its drain at once.
  relay.cancel().catch(() => {});
}

/** A relay ended by the router itself (at shutdown): its message is the client's. */
export class StreamEnded extends Error {
  override name = "StreamEnded";
}

/**
 * The relays running, answers whose clients left included, so that a shutdown
 * waits for them and, once its time is up, ends each with an error line its
 * client understands, rather than a cut connection.
 */
export class OpenStreams {
  readonly #stops = new Set<(error: Error) => void>();
  #whenNone: PromiseWithResolvers<void> | undefined;

  /** Registers a relay's stop; returns the function that forgets it. */
  add(stop: (error: Error) => void): () => void {
    this.#stops.add(stop);
    return () => {
      this.#stops.delete(stop);
      if (this.#stops.size === 0) this.#whenNone?.resolve();
    };
  }

  /**
   * Resolves when no relay is left: a shutdown waits for abandoned answers too,
   * since cutting one would hurt the pod's next client (see relayBody).
   */
  async none(): Promise<void> {
    while (this.#stops.size > 0) {
      this.#whenNone ??= Promise.withResolvers();
      await this.#whenNone.promise;
      this.#whenNone = undefined;
    }
  }

  /** Ends every relay with `message` as its last (error) line; returns how many. */
  endAll(message: string): number {
    const stops = [...this.#stops];
    for (const stop of stops) stop(new StreamEnded(message));
    return stops.length;
  }
}

/**
 * A FastAPI-generation board (uvicorn) can leave a kept connection unread: the
 * model worker it forks inherits the server's open sockets, and a connection
 * left only in the worker is never read again (seen with the real server,
 * test:clients and test:rkllama). A request sent on it waits for ever while the
 * board answers every other connection. A fresh connection per call costs a TCP
 * handshake, next to a generation of seconds or a poll every few seconds; Flask
 * boards close every connection themselves. One client, shared by every call.
 */
export function freshConnections(): Deno.HttpClient {
  return fresh ??= Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
}
let fresh: Deno.HttpClient | undefined;

/** Bytes one read from a pod may bring (Deno's own reads take 64 KiB too). */
const READ_BYTES = 64 * 1024;

/**
 * Bytes the first read may bring. A buffer of READ_BYTES for every answer was
 * most of the cost of starting a relay (about 45 µs of a stream's first chunk,
 * issue 16), and memory outside the heap for every small answer under load; a
 * body that fills this buffer gets the large one for its next reads.
 */
const FIRST_READ_BYTES = 4 * 1024;

/**
 * Reads a pod's body into one buffer of its own, handing out each chunk as a
 * copy of just its bytes: fetch's default reader allocates a fresh 64 KiB buffer
 * for every read, which for a stream of small tokens was most of the relay's
 * cost per chunk (bench/). A stream that is not a byte stream is read as it is.
 */
function byteReader(body: ReadableStream<Uint8Array>): {
  read(): Promise<ReadableStreamReadResult<Uint8Array>>;
  cancel(reason?: unknown): Promise<void>;
} {
  let byob: ReadableStreamBYOBReader;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    return body.getReader();
  }
  let buffer: ArrayBuffer | undefined;
  return {
    async read() {
      const result = await byob.read(new Uint8Array(buffer ?? new ArrayBuffer(FIRST_READ_BYTES)));
      if (result.done) return { done: true, value: undefined };
      const full = result.value.byteLength === result.value.buffer.byteLength;
      buffer = full && result.value.byteLength < READ_BYTES
        ? new ArrayBuffer(READ_BYTES)
        : result.value.buffer;
      return { done: false, value: result.value.slice() };
    },
    cancel: (reason) => byob.cancel(reason),
  };
}

const encoder = new TextEncoder();

/**
 * True when a TCP connection to the host and port of `url` opens within `ms`
 * (closed at once). Tells a dead or unreachable pod from one that is slow to answer.
 */
export async function canConnect(url: string, ms: number): Promise<boolean> {
  const { hostname, port, protocol } = new URL(url);
  const connecting = Deno.connect({
    hostname: hostname.replace(/^\[|\]$/g, ""),
    port: Number(port || (protocol === "https:" ? 443 : 80)),
  });
  // Deno.connect takes no signal: a connection that opens too late is closed then.
  connecting.then((connection) => connection.close(), () => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([connecting.then(() => true, () => false), expired]);
  } finally {
    clearTimeout(timer);
  }
}

function errorTrailer(
  contentType: string,
  message: string,
  lastByte: number,
): Uint8Array | undefined {
  const type = contentType.split(";")[0].trim().toLowerCase();
  const newline = lastByte === 0x0a ? "" : "\n";
  if (type === "application/x-ndjson") {
    return encoder.encode(`${newline}${JSON.stringify({ error: message })}\n`);
  }
  if (type === "text/event-stream") {
    const frame = JSON.stringify({ error: { message, type: "server_error" } });
    return encoder.encode(`${newline}\ndata: ${frame}\n\n`);
  }
  return undefined;
}

/**
 * The error body of a pod, rewritten so Ollama and OpenAI clients can read it:
 * RKLlama answers `{"detail": ...}` (FastAPI), `{"error": ...}` (Flask), plain text
 * or an HTML page. Returns the message to show.
 */
export function podErrorMessage(pod: string, status: number, text: string): string {
  try {
    const parsed = JSON.parse(text);
    if (typeof parsed === "object" && parsed !== null) {
      const { error, detail } = parsed as { error?: unknown; detail?: unknown };
      if (typeof error === "string") return error;
      if (typeof error === "object" && error !== null) {
        const message = (error as { message?: unknown }).message;
        if (typeof message === "string") return message;
      }
      if (typeof detail === "string") return detail;
      if (Array.isArray(detail)) {
        // FastAPI's 422 list: [{loc: ["body", "model"], msg: "Field required"}, ...]
        return detail.map((item) => {
          const loc = Array.isArray(item?.loc) ? item.loc.join(".") : "";
          return loc ? `${loc}: ${item?.msg}` : String(item?.msg ?? JSON.stringify(item));
        }).join("; ");
      }
      if (detail !== undefined) return JSON.stringify(detail);
    }
  } catch {
    // Not JSON: plain text or an HTML error page.
  }
  const plain = text.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 300);
  return `pod ${pod} answered ${status}${plain ? `: ${plain}` : ""}`;
}
