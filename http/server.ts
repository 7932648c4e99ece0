/**
 * @module
 * The router's HTTP/1.1 server: a `(request: Request) => Promise<Response>` handler
 * served over `node:http`, so that the sockets are the router's to close. Deno.serve
 * has no header timeout, keeps a connection whatever `Connection: close` says, and
 * keeps idle keep-alive connections for ever (issue 16); node:http times out a head
 * and a whole request (408 and close), closes idle connections, and closes a
 * connection after a response that says `connection: close`.
 *
 * HTTP/1.1 only: node:http speaks no HTTP/2, so an h2c client (prior knowledge)
 * gets a 400 and a closed connection, and must use HTTP/1.1 (every Ollama and
 * OpenAI client does by default).
 */

import {
  createServer as createHttpServer,
  type IncomingMessage,
  METHODS,
  type ServerResponse,
} from "node:http";
import type { Socket } from "node:net";
import { type BodyReader, holdArrivedBody, holdBodyReader } from "../api/arrived_body.ts";
import { takeWholeAnswer } from "../api/whole_answer.ts";

/** How {@linkcode serve} listens and how long it waits for clients. */
export interface ServeOptions {
  hostname: string;
  port: number;
  /** Longest wait for a request's line and headers, from the connection or the previous response. */
  headerTimeoutMs: number;
  /**
   * Longest a whole request may take to arrive. The handler times bodies out itself
   * (with its own message); this closes a connection whose request it does not read.
   */
  requestTimeoutMs: number;
  /** Longest a keep-alive connection may sit idle between requests. */
  idleTimeoutMs: number;
  /** Connections open at once; past it a new one gets a 503 and is closed. */
  maxConnections: number;
  /** The answer when the handler throws (it should not). */
  onError: (error: unknown) => Response;
}

/** A running server. */
export interface HttpServer {
  /** Where it listens (the real port when asked for port 0). */
  readonly addr: { hostname: string; port: number };
  /** Connections open now. */
  readonly connections: number;
  /**
   * From now on every response closes its connection, and idle keep-alive
   * connections are closed at once: clients reconnect, through the Service, to a
   * replica that is not draining. New connections are still taken.
   */
  drain(): void;
  /**
   * Stops accepting, drains, and resolves once every connection has closed (each
   * after its current response; the handler's responses are waited for).
   */
  shutdown(): Promise<void>;
}

/** A request line whose target is neither a path nor an absolute URL (e.g. `*`). */
const BAD_TARGET = "the request target must be a path, such as /api/tags";

/**
 * Serves `handler` on `options.hostname:options.port`; resolves once it listens.
 *
 * @throws {Deno.errors.AddrInUse} when the address is taken
 */
export async function serve(
  options: ServeOptions,
  handler: (request: Request) => Response | Promise<Response>,
): Promise<HttpServer> {
  let draining = false;
  const sockets = new Set<Socket>();
  const checkEveryMs = Math.max(
    10,
    Math.min(1000, options.headerTimeoutMs / 4, options.requestTimeoutMs / 4),
  );
  const http = createHttpServer({
    headersTimeout: options.headerTimeoutMs,
    requestTimeout: options.requestTimeoutMs,
    // How often node:http checks the two above (by default every 30 s).
    connectionsCheckingInterval: checkEveryMs,
    // As Deno.serve did: an HTTP/1.0 client may send none (the URL then names this address).
    requireHostHeader: false,
  });
  // Idle keep-alive connections are closed by sweep() below: node:http's own
  // keepAliveTimeout starts a timer after every response and stops it at the next
  // request, about 5 µs a request under load (1.2% of the profile's busy time).
  http.keepAliveTimeout = 0;
  // Connections past the cap are still parsed, but only to be answered 503 at
  // once (see refuse()), and a second of silence closes them.
  const refused = new WeakSet<Socket>();
  const silent = new WeakSet<Socket>();
  http.on("connection", (socket: Socket) => {
    if (sockets.size >= options.maxConnections) {
      refused.add(socket);
      socket.setTimeout(REFUSED_IDLE_MS);
      return;
    }
    sockets.add(socket);
    // The server's noDelay option does not reach the sockets under Deno: without
    // this, Nagle's algorithm held a stream's small chunks back for the client's
    // delayed ACK (16 streams: chunk delay p50 2.2 ms, p99 40 ms; with it 0.7 ms, 6 ms).
    socket.setNoDelay(true);
    // node:http times a head from its first byte: a connection that never sends
    // one is timed here, a little later than node:http's own check of a head
    // that started (which answers 408), and closed without an answer, as nginx does.
    socket.setTimeout(options.headerTimeoutMs + checkEveryMs + 100);
    silent.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      idle.delete(socket);
      if (sockets.size === 0) noneLeft?.resolve();
    });
  });
  // Requests open per connection: node:http's closeIdleConnections() under Deno
  // leaves a keep-alive connection that carried a stream and then another request
  // open (a shutdown then waited for --header-timeout), so idle is counted here.
  const open = new Map<Socket, number>();
  // Connections with no request open: since when, and how many bytes they had read then.
  const idle = new Map<Socket, { since: number; bytesRead: number }>();
  http.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    open.set(socket, (open.get(socket) ?? 0) + 1);
    idle.delete(socket);
    res.once("close", () => {
      const left = (open.get(socket) ?? 1) - 1;
      if (left > 0) return void open.set(socket, left);
      open.delete(socket);
      if (!socket.destroyed) {
        idle.set(socket, { since: performance.now(), bytesRead: socket.bytesRead });
      }
    });
    if (silent.delete(req.socket)) req.socket.setTimeout(0);
    if (refused.has(req.socket)) return refuse(res, options.maxConnections);
    // node:http parses all it has read before this microtask runs: a body that
    // came with its head has then arrived whole (see arrived()).
    queueMicrotask(() => void answer(req, res, handler, options, () => draining));
  });
  http.on("clientError", (error: Error & { code?: string }, socket: Socket) => {
    // node:http would write a bare status line: give the client a JSON reason.
    if (!socket.writable) return socket.destroy();
    const [status, message] = clientErrorAnswer(error);
    socket.end(rawResponse(status, message));
  });
  let noneLeft: PromiseWithResolvers<void> | undefined;
  await new Promise<void>((resolve, reject) => {
    http.once("error", (error: Error & { code?: string }) => {
      reject(error.code === "EADDRINUSE" ? new Deno.errors.AddrInUse(error.message) : error);
    });
    http.listen(options.port, options.hostname, () => resolve());
  });
  const address = http.address() as { address: string; port: number };
  // --idle-timeout, checked a few times per timeout (at least once a second).
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const [socket, { since, bytesRead }] of idle) {
      // A request has begun arriving: node:http's header timeout times it now.
      if (socket.bytesRead !== bytesRead) idle.delete(socket);
      else if (now - since >= options.idleTimeoutMs) socket.destroy();
    }
  }, Math.max(10, Math.min(1000, options.idleTimeoutMs / 4)));
  let closing: Promise<void> | undefined;

  const drain = () => {
    draining = true;
    http.closeIdleConnections();
    for (const socket of sockets) if (!open.has(socket)) socket.destroy();
  };
  return {
    addr: { hostname: address.address, port: address.port },
    get connections() {
      return sockets.size;
    },
    drain,
    shutdown() {
      closing ??= (async () => {
        clearInterval(sweep);
        const closed = new Promise<void>((resolve) => http.close(() => resolve()));
        drain();
        if (sockets.size > 0) {
          noneLeft = Promise.withResolvers();
          await noneLeft.promise;
        }
        await closed;
      })();
      return closing;
    },
  };
}

/**
 * A Request whose `signal` is the server's own (aborted when the client leaves).
 * `new Request(url, { signal })` makes another signal that follows the one given,
 * with a WeakRef each way, which doubled the cost of making a Request: about 9 µs
 * of 18, most of it garbage collection (deno bench). Deno's own readers of a
 * Request's inner signal (`fetch(request)`, `new Request(request)`) would get one
 * that never aborts: the router passes `request.signal` itself, as `clone()` does.
 */
class ServerRequest extends Request {
  readonly #signal: AbortSignal;

  constructor(url: string, init: RequestInit, signal: AbortSignal) {
    super(url, init);
    this.#signal = signal;
  }

  override get signal(): AbortSignal {
    return this.#signal;
  }

  override clone(): Request {
    return new Request(super.clone(), { signal: this.#signal });
  }
}

/** Runs the handler on one request and writes its response. */
async function answer(
  req: IncomingMessage,
  res: ServerResponse,
  handler: (request: Request) => Response | Promise<Response>,
  options: ServeOptions,
  draining: () => boolean,
): Promise<void> {
  const aborter = new AbortController();
  // The response ended or the connection went: before its end, the client left.
  res.once("close", () => {
    if (!res.writableFinished) aborter.abort(new DOMException("the client left", "AbortError"));
  });
  const request = toRequest(req, aborter.signal);
  let response: Response;
  if (request === undefined) {
    response = Response.json({ error: BAD_TARGET }, { status: 400 });
  } else {
    try {
      response = await handler(request);
    } catch (error) {
      response = options.onError(error);
    }
  }
  await send(req, res, response, draining());
}

/** The Web request for `req`, or undefined when its target is no URL. */
function toRequest(req: IncomingMessage, signal: AbortSignal): Request | undefined {
  const target = req.url ?? "";
  const raw = req.rawHeaders;
  let host = "";
  let framed = false;
  const headers: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const value = raw[i + 1];
    // Not req.headers: node:http builds that object on first use.
    if (name.length === 4 && host === "" && name.toLowerCase() === "host") host = value;
    else if (name.length === 14 && name.toLowerCase() === "content-length") {
      framed ||= value !== "0";
    } else if (name.length === 17 && name.toLowerCase() === "transfer-encoding") framed = true;
    headers.push([name, value]);
  }
  let url: string;
  if (target.startsWith("/")) {
    if (host === "") {
      const local = req.socket.localAddress ?? "localhost";
      host = local.includes(":") ? `[${local}]` : local;
    }
    url = `http://${host}${target}`;
  } else if (/^https?:\/\//i.test(target)) {
    url = target;
  } else {
    return undefined;
  }
  const method = req.method ?? "GET";
  let body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null = null;
  let reader: BodyReader | undefined;
  if (framed && method !== "GET" && method !== "HEAD") {
    if (req.complete) body = arrived(req);
    else ({ stream: body, readInto: reader } = arriving(req));
  }
  let request: Request;
  try {
    request = new ServerRequest(url, { method, headers, body }, signal);
  } catch {
    return undefined;
  }
  if (body instanceof Uint8Array) holdArrivedBody(request, body);
  else if (reader !== undefined) holdBodyReader(request, reader);
  return request;
}

/**
 * A body that had all arrived with its head (most small requests), as one array:
 * a Request reads that at once, where a stream costs a read per chunk in
 * JavaScript and its objects (bench/: about 10 µs a request).
 */
function arrived(req: IncomingMessage): Uint8Array<ArrayBuffer> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (let chunk: Uint8Array | null; (chunk = req.read()) !== null;) {
    chunks.push(chunk);
    size += chunk.byteLength;
  }
  // Lets node:http see the body's end (nothing is left to read).
  req.resume();
  if (chunks.length === 1) return owned(chunks[0]);
  const whole = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    whole.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return whole;
}

/**
 * `chunk`, or a copy of it when it is a view of a larger buffer, which holding it
 * would keep whole. Under Deno 2.9 node:http's body chunks are buffers of their
 * own, so no copy is made: a large upload cost a copy of every chunk for nothing.
 */
function owned(chunk: Uint8Array): Uint8Array<ArrayBuffer> {
  // A plain Uint8Array over the same bytes either way, not node's Buffer subclass.
  return chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength &&
      chunk.buffer instanceof ArrayBuffer
    ? new Uint8Array(chunk.buffer)
    : new Uint8Array(chunk);
}

/**
 * Gives `chunk`'s memory back now, once it has been copied: a chunk of its own
 * buffer (as node:http's are under Deno 2.9) is detached, which frees it at once
 * instead of at the next garbage collection, which V8 starts only after tens of
 * MiB of such buffers: 64 KiB chunks freed late were left as holes in the
 * allocator's arenas (30 s after 6 bursts of 20 concurrent 5 MiB chats, RSS
 * 145-162 MiB, against 73-74 MiB with this; 68 MiB before them).
 */
function release(chunk: Uint8Array): void {
  const buffer = chunk.buffer;
  if (chunk.byteOffset !== 0 || chunk.byteLength !== buffer.byteLength) return;
  if (!(buffer instanceof ArrayBuffer) || buffer.detached) return;
  try {
    buffer.transfer(0);
  } catch {
    // Not detachable (held by the runtime): left to the collector.
  }
}

/**
 * A body still arriving, two ways, of which the handler uses one: `stream`, which
 * reads from the socket only as fast as the handler reads it; or `readInto`,
 * which copies each chunk straight into the caller's buffer (see
 * api/arrived_body.ts). Neither reads anything until it is used.
 */
function arriving(
  req: IncomingMessage,
): { stream: ReadableStream<Uint8Array>; readInto: BodyReader } {
  let taken = false;
  const take = () => {
    if (taken) throw new Error("the request body is being read already");
    taken = true;
  };
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (!taken) {
        take();
        req.on("data", (chunk: Uint8Array) => {
          controller.enqueue(owned(chunk));
          if ((controller.desiredSize ?? 0) <= 0) req.pause();
        });
        req.once("end", () => controller.close());
        req.once("error", (error) => controller.error(error));
        req.once("aborted", () => controller.error(new Error("the client left")));
      }
      req.resume();
    },
    cancel() {
      // The handler wants no more of it: node:http reads on and drops the rest
      // while it answers (or closes the connection: see send()).
      req.resume();
    },
  }, { highWaterMark: 0 });
  const readInto = (buffer: Uint8Array<ArrayBuffer>) =>
    new Promise<number>((resolve, reject) => {
      take();
      let at = 0;
      req.on("data", (chunk: Uint8Array) => {
        // HTTP/1.1 framing keeps a body within its declared length; a body past
        // it is dropped rather than written out of bounds.
        const room = buffer.byteLength - at;
        buffer.set(chunk.byteLength <= room ? chunk : chunk.subarray(0, room), at);
        at += Math.min(chunk.byteLength, room);
        release(chunk);
      });
      req.once("end", () => resolve(at));
      req.once("error", reject);
      req.once("aborted", () => reject(new Error("the client left")));
    });
  return { stream, readInto };
}

/**
 * Writes `response` chunk by chunk, each as it comes: a stream is never held back.
 * A client that leaves cancels the body (the relay decides what that means); a
 * body that fails cuts the connection once what came before it is sent, so the
 * client sees an incomplete answer.
 */
async function send(
  req: IncomingMessage,
  res: ServerResponse,
  response: Response,
  draining: boolean,
): Promise<void> {
  const headers: string[] = [];
  let length = -1;
  response.headers.forEach((value, name) => {
    if (name === "content-length") length = Number(value);
    headers.push(name, value);
  });
  // A response before its request's end (a 408, a 413) leaves a body on the wire
  // that node:http would read on: close instead. So does a draining server.
  if (draining || !req.complete) headers.push("connection", "close");
  const whole = takeWholeAnswer(response);
  if (whole !== undefined) {
    // A pod's small answer, held whole by the proxy: one write (api/whole_answer.ts).
    if (head(res, response.status, headers)) res.end(whole);
    return;
  }
  const body = response.body;
  // (A HEAD answer's body is read for its length; node:http sends none of it.)
  if (body === null) {
    if (head(res, response.status, headers)) res.end();
    return;
  }
  if (length >= 0 && length <= WHOLE_MAX) {
    // A small answer of known length (a pod's whole answer) in one write, not a
    // write for the head, one per chunk and one for the end: bench/.
    let bytes: Uint8Array;
    try {
      bytes = await response.bytes();
    } catch {
      return void res.destroy();
    }
    if (head(res, response.status, headers)) res.end(bytes);
    return;
  }
  const reader = body.getReader();
  let left = false;
  // Read but not written yet (a body that fails right after it still sends it).
  let unsent: Uint8Array | undefined;
  res.once("close", () => {
    if (res.writableFinished) return;
    left = true;
    reader.cancel(new DOMException("the client left", "AbortError")).catch(() => {});
  });
  try {
    // A body the router made (JSON, text) gives its one chunk and its end within
    // a few microtasks; a pod's stream cannot, as its next chunk needs the network.
    // The first is sent whole with its length (one write, no chunked framing);
    // for the second, the head goes at once and each chunk as it comes.
    let pending = soon(reader.read());
    let read = await pending.settled;
    if (read?.done) {
      if (length < 0) headers.push("content-length", "0");
      if (head(res, response.status, headers)) res.end();
      return;
    }
    if (read !== undefined) {
      unsent = read.value;
      pending = soon(reader.read());
      const next = await pending.settled;
      if (next?.done) {
        if (length < 0) headers.push("content-length", String(read.value.byteLength));
        if (head(res, response.status, headers)) res.end(read.value);
        return;
      }
    }
    if (!head(res, response.status, headers)) return void reader.cancel().catch(() => {});
    if (read === undefined) {
      // The client learns at once that an answer has begun (a pod's headers).
      res.flushHeaders();
    } else {
      unsent = undefined;
      if (!res.write(read.value)) await writable(res);
    }
    for (;;) {
      read = await pending.read;
      if (left) return;
      if (read.done) break;
      if (!res.write(read.value)) await writable(res);
      pending = soon(reader.read());
    }
    res.end();
  } catch {
    if (left) return;
    if (!res.headersSent && !head(res, response.status, headers)) return;
    if (unsent) res.write(unsent);
    // Ends the socket once what was written has gone: no closing chunk, so the
    // client knows the answer is incomplete.
    res.socket?.destroySoon();
  }
}

/**
 * `read`, and `settled`: its result if it settles within a few microtask turns
 * (see send()), else undefined; it rejects if the read failed by then.
 */
function soon(read: Promise<ReadableStreamReadResult<Uint8Array>>): {
  read: Promise<ReadableStreamReadResult<Uint8Array>>;
  settled: Promise<ReadableStreamReadResult<Uint8Array> | undefined>;
} {
  let result: ReadableStreamReadResult<Uint8Array> | undefined;
  let failed = false;
  let error: unknown;
  read.then((value) => result = value, (reason) => {
    failed = true;
    error = reason;
  });
  const settled = (async () => {
    for (let turn = 0; turn < PEEK_TURNS && result === undefined && !failed; turn++) await null;
    if (failed) throw error;
    return result;
  })();
  return { read, settled };
}

/**
 * Writes the head; false when node:http refuses a header (a pod's odd value),
 * in which case the client gets a 502 instead.
 */
function head(res: ServerResponse, status: number, headers: string[]): boolean {
  try {
    res.writeHead(status, headers);
    return true;
  } catch (error) {
    res.writeHead(502, ["content-type", "application/json", "connection", "close"]);
    res.end(JSON.stringify({ error: `the answer's headers cannot be sent: ${error}` }));
    return false;
  }
}

/** Microtask turns a body may take to show its end after its first chunk (see send()). */
const PEEK_TURNS = 8;

/** Bodies of a declared length up to this are read whole and sent in one write. */
const WHOLE_MAX = 64 * 1024;

/** Resolves when `res` can take more (or has closed). */
function writable(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.once("drain", done);
    res.once("close", done);
  });
}

/** Status and message for a request node:http could not parse or wait for. */
function clientErrorAnswer(
  error: Error & { code?: string; rawPacket?: Uint8Array },
): [number, string] {
  if (error.code === "ERR_HTTP_REQUEST_TIMEOUT") {
    return [408, "the request did not arrive in time (--header-timeout, --body-timeout)"];
  }
  if (error.code === "HPE_HEADER_OVERFLOW") {
    return [431, "the request's headers are larger than 16 KiB"];
  }
  // Under Deno, node:http's parser reports every other error as HPE_ERROR: tell
  // the usual ones apart by the request line.
  const line = new TextDecoder("latin1").decode(error.rawPacket?.subarray(0, 200));
  if (line.startsWith("PRI * HTTP/2")) {
    return [400, "this router speaks HTTP/1.1, not HTTP/2: send requests over HTTP/1.1"];
  }
  const method = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) \S+ HTTP\/1\.[01]\r?\n/.exec(line)?.[1];
  if (method !== undefined && !METHODS.includes(method)) {
    // The parser knows the registered methods only.
    return [405, `the method ${method.slice(0, 20)} is not supported`];
  }
  return [400, "the request cannot be read as HTTP/1.1"];
}

/** A whole response as bytes, for a socket node:http no longer answers on. */
function rawResponse(status: number, message: string): string {
  const body = JSON.stringify({ error: message });
  const reason = {
    400: "Bad Request",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
  }[status] ?? "Error";
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${
    new TextEncoder().encode(body).byteLength
  }\r\nconnection: close\r\n\r\n${body}`;
}

/** How long a connection past the cap may stay silent before it is closed. */
const REFUSED_IDLE_MS = 1000;

/**
 * Answers a request on a connection past the cap with a 503, and closes the
 * connection. A 503 tells a client what happened (and a load balancer to try
 * another replica), where a connection refused or reset looks like a dead router;
 * node:http, past its own `maxConnections`, resets. The request's head is read
 * for it (within a second), so that the answer is not lost to a reset.
 */
function refuse(res: ServerResponse, max: number): void {
  const body = JSON.stringify({
    error: `the router has ${max} connections open (--max-connections); try again shortly`,
  });
  res.writeHead(503, [
    "content-type",
    "application/json",
    "retry-after",
    "1",
    "connection",
    "close",
    "content-length",
    String(body.length),
  ]);
  res.end(body);
}
