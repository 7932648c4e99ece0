/**
 * @module
 * A simulated RKLlama pod served over real HTTP, so the router can be tested
 * without Rockchip hardware. It imitates the two server generations described
 * in RKLLAMA_API.md, FastAPI ("fa", the default) and Flask ("fl"), including
 * the behaviour the router has to work around: models auto-load inside the
 * request, two concurrent cold loads of one model leak a worker, FA runs one
 * inference at a time per pod, and FA freezes completely during an explicit
 * load.
 *
 * The pod's public socket is a small TCP relay in front of an internal
 * `Deno.serve`. The relay is what lets {@linkcode SimPod.kill} cut
 * connections abruptly (Deno.serve only shuts down gracefully), lets the pod
 * abort a response after its headers (FA's broken OpenAI stream), and tells a
 * handler the moment its client hangs up.
 */

import { boundaryOf, scanMultipart } from "../api/multipart_scan.ts";

/** A model directory on the simulated pod's disk. */
export interface SimModelSpec {
  /** Directory name: the model's only identity on a pod. */
  name: string;
  /** Model file size in bytes (default 2048). */
  size?: number;
  /** `details.parameter_size` (default: parsed from the name, as "1.5B", else "Unknown"). */
  parameterSize?: string;
  /**
   * `other` for image, speech and transcription models (a `unet`, whisper or piper
   * directory): RKLlama lists them in `/v1/models` but not in `/api/tags` or `/api/ps`.
   */
  kind?: "llm" | "other";
}

/** How to start a simulated pod. */
export interface SimPodOptions {
  /** Default `${hostname}:${port}`. */
  name?: string;
  /** Default "127.0.0.1"; tests use 127.0.0.x addresses. */
  hostname?: string;
  /** Default 0 (the OS picks). */
  port?: number;
  /** Server generation: FastAPI ("fa", default) or Flask ("fl"). */
  flavor?: "fa" | "fl";
  /** Models on disk. */
  models: (string | SimModelSpec)[];
  /** Models loaded at start (they must be on disk). */
  loaded?: string[];
  /** Time to load a model (default 50 ms). */
  loadDelayMs?: number;
  /**
   * RKLlama's `max_number_models_loaded_in_memory` (default FA 10, FL 9): each loaded
   * model takes one NPU domain id of that many, and a load when none is free fails
   * (FA 400 "Unexpected Error loading the model ...", FL "list index out of range").
   */
  maxLoaded?: number;
  /** Delay before each streamed token (default 5 ms). */
  tokenDelayMs?: number;
  /** Reply tokens (default ["Hello", " world", "!"]). */
  tokens?: string[];
  /**
   * FA bug: streaming OpenAI routes send SSE headers, then the connection aborts
   * (default: on for FA, as the real server does; off for FL).
   */
  brokenOpenAIStream?: boolean;
  /**
   * FL: how long a request for a model whose worker died (its streaming client left)
   * waits for RKLlama's monitor to notice, before the model is loaded again (60 s).
   */
  workerReapMs?: number;
}

/** Something the pod did or saw, recorded in order. */
export interface SimEvent {
  type:
    | "request"
    | "loaded"
    | "unloaded"
    | "generation-start"
    | "generation-end"
    | "aborted"
    /** FA: the rest of an abandoned answer went out at the start of another answer. */
    | "leaked"
    /** FL: a streaming client left and the model's worker died with it. */
    | "worker-died";
  method?: string;
  path?: string;
  /** On `request` events, the model exactly as the client named it (before namespace stripping). */
  model?: string;
  /** Epoch milliseconds, with sub-millisecond precision. */
  at: number;
  /** Request headers, names lower-cased (`request` events only). */
  headers?: Record<string, string>;
  /** Request body size (`request` events only). */
  bodyBytes?: number;
}

/** A running simulated pod; `await using` closes it. */
export interface SimPod extends AsyncDisposable {
  readonly name: string;
  readonly hostname: string;
  readonly port: number;
  /** "http://127.0.0.x:port" */
  readonly url: string;
  /** Everything recorded, in order (the pod's own array: read it, do not change it). */
  readonly events: SimEvent[];
  /** How many workers concurrent cold loads of one model have leaked so far (cumulative); tests assert 0. */
  readonly orphanedWorkers: number;
  /** The most generations that ever ran at once. */
  readonly maxConcurrentGenerations: number;
  /**
   * The most generation requests that ever ran or waited at once for one lock
   * (FA: the pod's; FL: a model's): more than one means requests were queued on
   * the pod, which a router with generation slots never does.
   */
  readonly maxQueuedOnPod: number;
  /** Names of the loaded models (a model still loading is not included). */
  loadedModels(): string[];
  /**
   * Resolves with the first recorded event (past or future) matching the
   * predicate. Rejects when the signal aborts, or when the pod stops before
   * such an event happens.
   */
  waitFor(
    match: (event: SimEvent) => boolean,
    options?: { signal?: AbortSignal },
  ): Promise<SimEvent>;
  /** While paused, generations that have started emit no tokens until resume(). */
  pause(): void;
  /** Lets paused generations continue. */
  resume(): void;
  /** Abrupt death: stop listening and cut every open connection/stream mid-way (no graceful drain). */
  kill(): Promise<void>;
  /** Stops the pod for test cleanup; safe to call after kill() and more than once. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------
// Constants taken from RKLlama

/** Fixed file mtime, so listings are deterministic. */
const MODIFIED_AT = "2025-01-02T03:04:05.000000Z";
const MODIFIED_EPOCH_SECONDS = 1735787045;
/** RKLlama reports this constant whatever the real load took. */
const LOAD_DURATION_NS = 100_000_000;
const IDLE_EXPIRY_MS = 30 * 60 * 1000;
const MISSING_ARGUMENT_FL =
  "join() argument must be str, bytes, or os.PathLike object, not 'NoneType'";
const ONE_PIXEL_PNG_BASE64 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
const AUDIO_CONTENT_TYPES: Record<string, string> = {
  mp3: "audio/mpeg",
  wav: "audio/wav",
  opus: "audio/opus",
  aac: "audio/aac",
  flac: "audio/flac",
  pcm: "audio/pcm",
};
const FLASK_ERRORS: Record<number, [string, string]> = {
  400: [
    "Bad Request",
    "The browser (or proxy) sent a request that this server could not understand.",
  ],
  404: [
    "Not Found",
    "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.",
  ],
  405: ["Method Not Allowed", "The method is not allowed for the requested URL."],
  500: [
    "Internal Server Error",
    "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.",
  ],
};

// ---------------------------------------------------------------------------
// Small async primitives; every wait is abortable so kill() never strands a handler

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Open or closed; waiters pass once it is open. */
class Gate {
  #closed = false;
  #wakers = new Set<() => void>();

  get isClosed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.#closed = true;
  }

  open(): void {
    this.#closed = false;
    const wakers = [...this.#wakers];
    this.#wakers.clear();
    for (const wake of wakers) wake();
  }

  /** Resolves when the gate is open; loops because another waiter may close it again first. */
  async waitOpen(signal: AbortSignal): Promise<void> {
    while (this.#closed) await this.#nextOpening(signal);
    signal.throwIfAborted();
  }

  #nextOpening(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#wakers.delete(wake);
        reject(signal.reason);
      };
      const wake = () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      this.#wakers.add(wake);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/** FIFO mutex: FA's global inference lock. */
class Mutex {
  #held = false;
  #queue: (() => void)[] = [];
  /** The most generations that ever held or waited for it at once. */
  maxDepth = 0;

  /** Resolves with a release function (safe to call twice). */
  acquire(signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(signal.reason);
    this.maxDepth = Math.max(this.maxDepth, (this.#held ? 1 : 0) + this.#queue.length + 1);
    if (!this.#held) {
      this.#held = true;
      return Promise.resolve(this.#releaser());
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        signal.removeEventListener("abort", onAbort);
        resolve(this.#releaser());
      };
      const onAbort = () => {
        const index = this.#queue.indexOf(grant);
        if (index >= 0) this.#queue.splice(index, 1);
        reject(signal.reason);
      };
      this.#queue.push(grant);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#queue.shift();
      if (next) next();
      else this.#held = false;
    };
  }
}

// ---------------------------------------------------------------------------
// The public socket: a TCP relay in front of the internal HTTP server

interface RelayedConnection {
  client: Deno.TcpConn;
  inner?: Deno.TcpConn;
  /** Aborts when either side goes away; a handler reads it as "my client left". */
  gone: AbortController;
  /** Set by a handler that wants its response cut right after the headers. */
  cutAfterNextWrite: boolean;
  done: Promise<void>;
}

class Relay {
  readonly #listener: Deno.TcpListener;
  readonly #inner: Deno.NetAddr;
  readonly #connections = new Set<RelayedConnection>();
  readonly #byInnerPort = new Map<number, RelayedConnection>();
  readonly #accepting: Promise<void>;
  #stopped = false;

  constructor(listener: Deno.TcpListener, inner: Deno.NetAddr) {
    this.#listener = listener;
    this.#inner = inner;
    this.#accepting = this.#accept();
  }

  get addr(): Deno.NetAddr {
    return this.#listener.addr;
  }

  /** The relayed connection whose inner socket has this local port. */
  connectionFor(innerPort: number): RelayedConnection | undefined {
    return this.#byInnerPort.get(innerPort);
  }

  /** Closes both sockets at once: the client sees a reset stream, not an ending. */
  cut(connection: RelayedConnection): void {
    if (connection.gone.signal.aborted) return;
    connection.gone.abort(new Error("connection closed"));
    try {
      connection.client.close();
    } catch { /* already closed */ }
    try {
      connection.inner?.close();
    } catch { /* already closed */ }
  }

  /** Stops listening and cuts every connection; resolves once all sockets are released. */
  async stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      try {
        this.#listener.close();
      } catch { /* already closed */ }
    }
    for (const connection of this.#connections) this.cut(connection);
    await this.#accepting;
    await Promise.all([...this.#connections].map((c) => c.done));
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) {
        if (this.#stopped) {
          client.close();
          continue;
        }
        const connection: RelayedConnection = {
          client,
          gone: new AbortController(),
          cutAfterNextWrite: false,
          done: Promise.resolve(),
        };
        this.#connections.add(connection);
        connection.done = this.#relay(connection).finally(() =>
          this.#connections.delete(connection)
        );
      }
    } catch {
      // Closing the listener ends the loop.
    }
  }

  async #relay(connection: RelayedConnection): Promise<void> {
    let innerPort: number | undefined;
    try {
      const inner = await Deno.connect({
        hostname: this.#inner.hostname,
        port: this.#inner.port,
      });
      connection.inner = inner;
      if (connection.gone.signal.aborted) {
        inner.close();
        return;
      }
      innerPort = inner.localAddr.port;
      this.#byInnerPort.set(innerPort, connection);
      // Token chunks are tiny; Nagle plus delayed ACKs would batch them.
      connection.client.setNoDelay(true);
      inner.setNoDelay(true);
      await Promise.all([
        this.#pipe(connection.client, inner, connection, false),
        this.#pipe(inner, connection.client, connection, true),
      ]);
    } catch {
      this.cut(connection);
    } finally {
      if (innerPort !== undefined) this.#byInnerPort.delete(innerPort);
    }
  }

  async #pipe(
    from: Deno.Conn,
    to: Deno.Conn,
    connection: RelayedConnection,
    towardsClient: boolean,
  ): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const count = await from.read(buffer);
        if (count === null) break;
        let written = 0;
        while (written < count) {
          written += await to.write(buffer.subarray(written, count));
        }
        if (towardsClient && connection.cutAfterNextWrite) break;
      }
    } catch {
      // A socket closed under us: the other pipe's cut() did it.
    }
    // HTTP clients do not half-close, so either side ending ends the connection.
    this.cut(connection);
  }
}

// ---------------------------------------------------------------------------
// Formatting helpers

/** RKLlama strips everything up to and including the first "/". */
function stripNamespace(model: string): string {
  const slash = model.indexOf("/");
  return slash >= 0 ? model.slice(slash + 1) : model;
}

/** Local time with microseconds, as Python's strftime gives it (no timezone conversion). */
function localTimestamp(date: Date, separator: "T" | " "): string {
  const pad = (value: number, width = 2) => String(value).padStart(width, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `${separator}${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` +
    `.${pad(date.getMilliseconds(), 3)}000`;
}

/** `created_at` in chat/generate: local time with a literal Z. */
function createdAt(): string {
  return localTimestamp(new Date(), "T") + "Z";
}

function asciiJsonString(text: string): string {
  return JSON.stringify(text).replace(
    /[\u0080-\uffff]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** Python's `json.dumps` defaults (", " and ": " separators, ASCII only): RKLlama's stream chunks. */
function pyDumps(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "string") return asciiJsonString(value);
  if (Array.isArray(value)) return `[${value.map(pyDumps).join(", ")}]`;
  if (typeof value === "object") {
    const members = Object.entries(value).map(([key, member]) =>
      `${asciiJsonString(key)}: ${pyDumps(member)}`
    );
    return `{${members.join(", ")}}`;
  }
  return JSON.stringify(value);
}

/** Flask's jsonify sorts keys. */
function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value).sort().map((
        key,
      ) => [key, sortKeys((value as Record<string, unknown>)[key])]),
    );
  }
  return value;
}

function parameterSizeFromName(name: string): string {
  const match = /(\d+(?:\.\d+)?)[bB](?![a-zA-Z])/.exec(name);
  return match ? `${match[1]}B` : "Unknown";
}

function quantizationFromName(name: string): string {
  const lower = name.toLowerCase();
  if (/w8a8_g/.test(lower)) return "Q8_K_M";
  if (/w4a16_g/.test(lower)) return "Q4_K_M";
  if (/w4a16/.test(lower)) return "Q4_0";
  // RKLlama says "Unknown" here, but real .rkllm file names nearly always carry w8a8.
  return "Q8_0";
}

function randomHex(length = 24): string {
  const bytes = crypto.getRandomValues(new Uint8Array(Math.ceil(length / 2)));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, length);
}

/** A small deterministic vector, so equal inputs embed equally. */
function embeddingFor(text: string): number[] {
  let hash = 2166136261;
  for (let i = 0; i < text.length; i++) {
    hash = Math.imul(hash ^ text.charCodeAt(i), 16777619);
  }
  return Array.from({ length: 8 }, () => {
    hash = Math.imul(hash ^ (hash >>> 15), 2246822507) ^
      Math.imul(hash ^ (hash >>> 13), 3266489909);
    return Number((((hash >>> 0) / 2 ** 32) * 2 - 1).toFixed(6));
  });
}

function wordCount(text: string): number {
  return text.split(/\s+/).filter((word) => word.length > 0).length;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function textOf(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part) => isRecord(part) && typeof part.text === "string" ? part.text : "")
      .join(" ");
  }
  return "";
}

// ---------------------------------------------------------------------------
// The pod

interface DiskModel {
  name: string;
  size: number;
  parameterSize: string;
  quantizationLevel: string;
  kind: "llm" | "other";
}

interface LoadedModel {
  loadedAt: Date;
  lastCall: Date;
  baseDomainId: number;
  loadedBy: string;
}

/** A load that failed the way RKLlama's loader fails; the message is RKLlama's. */
class LoadFailure extends Error {}

/** One request as the pod handles it. */
interface Exchange {
  request: Request;
  method: string;
  path: string;
  bytes: Uint8Array<ArrayBuffer>;
  text: string;
  /** Parsed JSON body; undefined when the body is empty, not JSON, or a form. */
  json: unknown;
  jsonInvalid: boolean;
  jsonErrorPosition: number;
  form?: FormData;
  /** Aborts when the client disconnects or the pod dies. */
  clientGone: AbortSignal;
  connection?: RelayedConnection;
}

type BodyResult = { ok: true; body: Record<string, unknown> } | {
  ok: false;
  response: Response;
};

type InferenceKind = "chat" | "generate" | "openai-chat" | "openai-completion";

interface GenerationResult {
  text: string;
  totalNs: number;
  promptEvalNs: number;
  evalNs: number;
  evalCount: number;
}

type Handler = (exchange: Exchange) => Response | Promise<Response>;

/** Builds the stream body for one inference route. */
interface Framer {
  contentType: string;
  token(token: string): string;
  end(result: GenerationResult): string;
}

class Pod implements SimPod {
  readonly hostname: string;
  #name = "";
  #port = 0;

  readonly #flavor: "fa" | "fl";
  readonly #loadDelayMs: number;
  readonly #maxLoaded: number;
  readonly #tokenDelayMs: number;
  readonly #tokens: string[];
  readonly #brokenOpenAIStream: boolean;
  readonly #workerReapMs: number;

  readonly #disk = new Map<string, DiskModel>();
  readonly #loaded = new Map<string, LoadedModel>();
  /** Loads in progress per model: more than one at a time is the worker leak. */
  readonly #loading = new Map<string, number>();
  readonly #events: SimEvent[] = [];
  readonly #waiters = new Set<
    {
      match: (event: SimEvent) => boolean;
      resolve: (event: SimEvent) => void;
      reject: (reason: unknown) => void;
    }
  >();
  #orphanedWorkers = 0;
  /**
   * FA: text an abandoned streaming answer produced after its client left; RKLlama's
   * worker queue hands it to the next answer of the model, before that answer's own.
   */
  readonly #leftover = new Map<string, string>();
  /** FL: models whose worker died when a streaming client left. */
  readonly #deadWorkers = new Set<string>();
  #activeGenerations = 0;
  #maxConcurrentGenerations = 0;

  /** FA's global inference lock: one generation at a time on the whole pod. */
  readonly #inferenceLock = new Mutex();
  /** FL's task queue per model worker: models run side by side, one request each at a time. */
  readonly #modelLocks = new Map<string, Mutex>();
  readonly #pauseGate = new Gate();
  /** Closed while an explicit FA load blocks the event loop. */
  readonly #freezeGate = new Gate();
  readonly #lifetime = new AbortController();
  readonly #routes: Map<string, Map<string, Handler>>;
  #dead = false;
  #stopping?: Promise<void>;
  #server!: Deno.HttpServer<Deno.NetAddr>;
  #relay!: Relay;

  constructor(options: SimPodOptions, hostname: string) {
    this.#flavor = options.flavor ?? "fa";
    this.#loadDelayMs = options.loadDelayMs ?? 50;
    this.#maxLoaded = options.maxLoaded ?? ((options.flavor ?? "fa") === "fa" ? 10 : 9);
    this.#tokenDelayMs = options.tokenDelayMs ?? 5;
    this.#tokens = options.tokens ?? ["Hello", " world", "!"];
    this.#brokenOpenAIStream = options.brokenOpenAIStream ?? (options.flavor ?? "fa") === "fa";
    this.#workerReapMs = options.workerReapMs ?? 60_000;
    this.hostname = hostname;
    for (const entry of options.models) {
      const spec: SimModelSpec = typeof entry === "string" ? { name: entry } : entry;
      this.#disk.set(spec.name, {
        name: spec.name,
        size: spec.size ?? 2048,
        parameterSize: spec.parameterSize ?? parameterSizeFromName(spec.name),
        quantizationLevel: quantizationFromName(spec.name),
        kind: spec.kind ?? "llm",
      });
    }
    const now = new Date();
    for (const model of options.loaded ?? []) {
      if (!this.#disk.has(model)) {
        throw new Error(`sim pod: loaded model "${model}" is not among its models`);
      }
      const baseDomainId = this.#freeDomainId();
      if (baseDomainId === undefined) throw new Error("sim pod: too many loaded models");
      this.#loaded.set(model, { loadedAt: now, lastCall: now, baseDomainId, loadedBy: "internal" });
    }
    this.#routes = this.#buildRoutes();
  }

  /** Binds the internal server, then the public relay. */
  async start(options: SimPodOptions): Promise<void> {
    this.#server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: () => {},
      onError: (error) => {
        if (!this.#dead) console.error(`sim pod ${this.name}:`, error);
        return new Response("Internal Server Error", {
          status: 500,
          headers: { "content-type": "text/plain; charset=utf-8" },
        });
      },
    }, (request, info) => this.#handle(request, info));
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: this.hostname, port: options.port ?? 0 });
    } catch (error) {
      await this.#server.shutdown();
      throw error;
    }
    this.#relay = new Relay(listener, this.#server.addr);
    this.#port = this.#relay.addr.port;
    this.#name = options.name ?? `${this.hostname}:${this.#port}`;
  }

  get name(): string {
    return this.#name;
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    const host = this.hostname.includes(":") ? `[${this.hostname}]` : this.hostname;
    return `http://${host}:${this.#port}`;
  }

  get events(): SimEvent[] {
    return this.#events;
  }

  get orphanedWorkers(): number {
    return this.#orphanedWorkers;
  }

  get maxConcurrentGenerations(): number {
    return this.#maxConcurrentGenerations;
  }

  get maxQueuedOnPod(): number {
    return Math.max(
      this.#inferenceLock.maxDepth,
      ...[...this.#modelLocks.values()].map((lock) => lock.maxDepth),
    );
  }

  loadedModels(): string[] {
    return [...this.#loaded.keys()];
  }

  waitFor(
    match: (event: SimEvent) => boolean,
    options: { signal?: AbortSignal } = {},
  ): Promise<SimEvent> {
    let past: SimEvent | undefined;
    try {
      past = this.#events.find(match);
    } catch (error) {
      return Promise.reject(error);
    }
    if (past) return Promise.resolve(past);
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#dead) return Promise.reject(new Error(`sim pod ${this.name} has stopped`));
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#waiters.delete(waiter);
        reject(signal?.reason);
      };
      const waiter = {
        match,
        resolve: (event: SimEvent) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(event);
        },
        reject: (reason: unknown) => {
          signal?.removeEventListener("abort", onAbort);
          reject(reason);
        },
      };
      this.#waiters.add(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  pause(): void {
    this.#pauseGate.close();
  }

  resume(): void {
    this.#pauseGate.open();
  }

  kill(): Promise<void> {
    return this.#stop();
  }

  close(): Promise<void> {
    return this.#stop();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.#stop();
  }

  #stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#dead = true;
      // Cut the sockets before anything else runs, so no handler gets to answer.
      const relayStopped = this.#relay.stop();
      this.#lifetime.abort(new Error(`sim pod ${this.name} stopped`));
      await relayStopped;
      await this.#server.shutdown();
      const error = new Error(`sim pod ${this.name} has stopped`);
      for (const waiter of this.#waiters) waiter.reject(error);
      this.#waiters.clear();
    })();
    return this.#stopping;
  }

  #record(event: Omit<SimEvent, "at">): void {
    if (this.#dead) return;
    const recorded: SimEvent = { ...event, at: performance.timeOrigin + performance.now() };
    this.#events.push(recorded);
    for (const waiter of this.#waiters) {
      let matched: boolean;
      try {
        matched = waiter.match(recorded);
      } catch (error) {
        this.#waiters.delete(waiter);
        waiter.reject(error);
        continue;
      }
      if (matched) {
        this.#waiters.delete(waiter);
        waiter.resolve(recorded);
      }
    }
  }

  // -------------------------------------------------------------------------
  // Request handling

  async #handle(
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ): Promise<Response> {
    const startedAt = performance.now();
    const connection = this.#relay.connectionFor(info.remoteAddr.port);
    const clientGone = connection
      ? AbortSignal.any([connection.gone.signal, this.#lifetime.signal])
      : this.#lifetime.signal;
    let exchange: Exchange;
    try {
      // A frozen FA server does not even read the request.
      await this.#freezeGate.waitOpen(this.#lifetime.signal);
      exchange = await this.#read(request, clientGone, connection);
    } catch (error) {
      // Nobody is left to answer if the client or the pod went away.
      if (clientGone.aborted) return new Response(null, { status: 500 });
      throw error;
    }
    this.#record({
      type: "request",
      method: exchange.method,
      path: exchange.path,
      model: this.#requestModel(exchange),
      headers: Object.fromEntries(request.headers),
      bodyBytes: exchange.bytes.length,
    });
    const response = await this.#dispatch(exchange);
    if (this.#flavor === "fa") {
      response.headers.set("x-process-time", String(performance.now() - startedAt));
      // FastAPI's middleware writes the request id twice.
      const id = this.#requestId(request);
      response.headers.set("x-request-id", id);
      response.headers.append("x-request-id", id);
    } else {
      // flask-cors, allowing every origin, on every answer; and Werkzeug's
      // development server takes one request per connection.
      response.headers.set("access-control-allow-origin", "*");
      response.headers.set("connection", "close");
    }
    return response;
  }

  async #read(
    request: Request,
    clientGone: AbortSignal,
    connection: RelayedConnection | undefined,
  ): Promise<Exchange> {
    const url = new URL(request.url);
    const bytes = new Uint8Array(await request.arrayBuffer());
    const contentType = request.headers.get("content-type") ?? "";
    const multipart = /^multipart\/form-data/i.test(contentType);
    // Decoding a large upload as text would hold the event loop the router shares.
    const text = multipart ? "" : new TextDecoder().decode(bytes);
    const exchange: Exchange = {
      request,
      method: request.method,
      path: url.pathname,
      bytes,
      get text() {
        return multipart ? new TextDecoder().decode(bytes) : text;
      },
      json: undefined,
      jsonInvalid: false,
      jsonErrorPosition: 0,
      clientGone,
      connection,
    };
    if (multipart) {
      try {
        exchange.form = bytes.length > LARGE_FORM
          ? await scannedForm(bytes, contentType)
          : await new Response(bytes, { headers: { "content-type": contentType } }).formData();
      } catch {
        // An unreadable form is a missing form to the routes.
      }
    } else if (bytes.length > 0) {
      try {
        exchange.json = JSON.parse(text);
      } catch (error) {
        exchange.jsonInvalid = true;
        const position = /position (\d+)/.exec(String(error));
        exchange.jsonErrorPosition = position ? Number(position[1]) : 0;
      }
    }
    return exchange;
  }

  #requestModel(exchange: Exchange): string | undefined {
    const fromPath = /^\/(?:v1\/)?files\/([^/]+)\//.exec(exchange.path) ??
      /^\/v1\/models\/(.+)$/.exec(exchange.path);
    if (fromPath) return decodeURIComponent(fromPath[1]);
    if (isRecord(exchange.json)) {
      for (const key of ["model", "name", "model_name"]) {
        const value = exchange.json[key];
        if (typeof value === "string") return value;
      }
    }
    const fromForm = exchange.form?.get("model");
    return typeof fromForm === "string" ? fromForm : undefined;
  }

  #requestId(request: Request): string {
    const given = request.headers.get("x-request-id") ?? "";
    const uuid4 = /^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$/i;
    return uuid4.test(given) ? given : crypto.randomUUID().replaceAll("-", "");
  }

  #dispatch(exchange: Exchange): Response | Promise<Response> {
    const { path, method } = exchange;
    const modelInfo = /^\/v1\/models\/(.+)$/.exec(path);
    if (modelInfo) {
      return method === "GET"
        ? this.#modelInfo(decodeURIComponent(modelInfo[1]))
        : this.#methodNotAllowed();
    }
    const file = /^\/(?:v1\/)?files\/([^/]+)\/images\/([^/]+)$/.exec(path);
    if (file) {
      return method === "GET"
        ? this.#imageFile(decodeURIComponent(file[1]), decodeURIComponent(file[2]))
        : this.#methodNotAllowed();
    }
    const byMethod = this.#routes.get(path);
    if (!byMethod) return this.#notFound();
    const handler = byMethod.get(method);
    return handler ? handler(exchange) : this.#methodNotAllowed();
  }

  #buildRoutes(): Map<string, Map<string, Handler>> {
    const fa = this.#flavor === "fa";
    const routes = new Map<string, Map<string, Handler>>();
    const add = (method: string, path: string, handler: Handler) => {
      const byMethod = routes.get(path) ?? new Map<string, Handler>();
      byMethod.set(method, handler);
      routes.set(path, byMethod);
    };
    add("GET", "/", () => this.#welcome());
    add("GET", "/api/version", () => this.#json({ version: fa ? "0.0.54" : "0.0.74" }));
    add("GET", "/api/tags", () => this.#tags());
    add("GET", "/api/ps", () => this.#ps());
    add("GET", "/models", () => this.#json({ models: [...this.#disk.keys()] }));
    add("GET", "/v1/models", () => this.#openAIModels());
    add("POST", "/api/show", (x) => this.#show(x));
    add("POST", "/load_model", (x) => this.#loadModelNative(x));
    add("POST", "/unload_model", (x) => this.#unloadModelNative(x));
    add("POST", "/unload_models", () => this.#unloadModels());
    add("POST", "/api/chat", (x) => this.#inference("chat", x));
    add("POST", "/api/generate", (x) => this.#inference("generate", x));
    add("POST", "/v1/chat/completions", (x) => this.#inference("openai-chat", x));
    add("POST", "/v1/completions", (x) => this.#inference("openai-completion", x));
    add("POST", "/api/embed", (x) => this.#embed(x, "ollama"));
    add("POST", "/api/embeddings", (x) => this.#embed(x, "ollama"));
    add("POST", "/v1/embeddings", (x) => this.#embed(x, "openai"));
    add("POST", "/v1/images/generations", (x) => this.#generateImage(x));
    add("POST", "/v1/audio/speech", (x) => this.#speech(x));
    add("POST", "/v1/audio/transcriptions", (x) => this.#transcription(x));
    if (fa) {
      add("GET", "/health", () => this.#json({ status: "ok" }));
      add("GET", "/health/ready", () =>
        this.#json({
          status: "ok",
          version: "1.2.3-4",
          checks: { worker_manager: true, models_path: true },
        }));
      add("POST", "/api/load", (x) => this.#apiLoad(x));
      add("POST", "/api/unload", (x) => this.#apiUnload(x));
      add("POST", "/force_unload_all", () => this.#forceUnloadAll());
    } else {
      add("GET", "/current_models", () => this.#ps());
    }
    return routes;
  }

  // -------------------------------------------------------------------------
  // Response helpers in each flavor's style

  #json(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
    const body = this.#flavor === "fl"
      ? JSON.stringify(sortKeys(value)) + "\n"
      : JSON.stringify(value);
    return new Response(body, {
      status,
      headers: { "content-type": "application/json", ...headers },
    });
  }

  /** An error the code raises on purpose: FA `{"detail"}`, FL `{"error"}`. */
  #error(status: number, message: string): Response {
    return this.#json(this.#flavor === "fa" ? { detail: message } : { error: message }, status);
  }

  #flaskHtml(status: number): Response {
    const [title, text] = FLASK_ERRORS[status] ?? FLASK_ERRORS[500];
    return new Response(
      `<!doctype html>\n<html lang=en>\n<title>${status} ${title}</title>\n<h1>${title}</h1>\n<p>${text}</p>\n`,
      { status, headers: { "content-type": "text/html; charset=utf-8" } },
    );
  }

  #plainServerError(): Response {
    return new Response("Internal Server Error", {
      status: 500,
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  }

  #notFound(): Response {
    return this.#flavor === "fa" ? this.#json({ detail: "Not Found" }, 404) : this.#flaskHtml(404);
  }

  #methodNotAllowed(): Response {
    return this.#flavor === "fa"
      ? this.#json({ detail: "Method Not Allowed" }, 405)
      : this.#flaskHtml(405);
  }

  /** FA's pydantic 422 for a missing field (FL has no equivalent). */
  #missingField(field: string, input: unknown): Response {
    return this.#json({
      detail: [{ type: "missing", loc: ["body", field], msg: "Field required", input }],
    }, 422);
  }

  /** The JSON object body, or the error each flavor gives for a bad one. */
  #jsonBody(exchange: Exchange): BodyResult {
    if (this.#flavor === "fl") {
      // get_json(force=True) ignores Content-Type; routes wrap it in try.
      if (exchange.jsonInvalid || exchange.bytes.length === 0) {
        return {
          ok: false,
          response: this.#error(500, `400 Bad Request: ${FLASK_ERRORS[400][1]}`),
        };
      }
      return { ok: true, body: isRecord(exchange.json) ? exchange.json : {} };
    }
    const contentType = exchange.request.headers.get("content-type") ?? "";
    const mediaType = contentType.split(";")[0].trim().toLowerCase();
    const jsonMedia = mediaType === "" || mediaType === "application/json" ||
      (mediaType.startsWith("application/") && mediaType.endsWith("+json"));
    const notAnObject = (input: unknown): BodyResult => ({
      ok: false,
      response: this.#json({
        detail: [{
          type: "model_attributes_type",
          loc: ["body"],
          msg: "Input should be a valid dictionary or object to extract fields from",
          input,
        }],
      }, 422),
    });
    if (!jsonMedia) return notAnObject(exchange.text);
    if (exchange.bytes.length === 0) {
      return {
        ok: false,
        response: this.#json({
          detail: [{ type: "missing", loc: ["body"], msg: "Field required", input: null }],
        }, 422),
      };
    }
    if (exchange.jsonInvalid) {
      return {
        ok: false,
        response: this.#json({
          detail: [{
            type: "json_invalid",
            loc: ["body", exchange.jsonErrorPosition],
            msg: "JSON decode error",
            input: {},
            ctx: { error: "Expecting value" },
          }],
        }, 422),
      };
    }
    if (!isRecord(exchange.json)) return notAnObject(exchange.json);
    return { ok: true, body: exchange.json };
  }

  // -------------------------------------------------------------------------
  // Listings

  #welcome(): Response {
    return this.#json({
      message: `Welcome to ${
        this.#flavor === "fa" ? "RKLlama" : "RKLLama"
      } with Ollama API compatibility!`,
      github: "https://github.com/notpunhnox/rkllama",
    });
  }

  #details(model: DiskModel, families: string[]): Record<string, unknown> {
    return {
      parent_model: "",
      format: "rkllm",
      family: "llama",
      families,
      parameter_size: model.parameterSize,
      quantization_level: model.quantizationLevel,
    };
  }

  #tags(): Response {
    const llms = [...this.#disk.values()].filter((model) => model.kind === "llm");
    const models = llms.map((model) => ({
      name: model.name,
      model: model.name,
      size: model.size,
      digest: "",
      details: this.#flavor === "fa" ? this.#details(model, []) : {
        format: "rkllm",
        family: "llama",
        parameter_size: model.parameterSize,
        quantization_level: model.quantizationLevel,
      },
      modified_at: MODIFIED_AT,
    }));
    return this.#json({ models });
  }

  #ps(): Response {
    const models = [];
    for (const [name, loaded] of this.#loaded) {
      const disk = this.#disk.get(name);
      if (!disk || disk.kind !== "llm") continue;
      const common = {
        name,
        model: name,
        size: disk.size,
        digest: "",
        details: this.#details(disk, ["llama"]),
        expires_at: localTimestamp(new Date(loaded.lastCall.getTime() + IDLE_EXPIRY_MS), " "),
        loaded_at: localTimestamp(loaded.loadedAt, " "),
      };
      models.push(
        this.#flavor === "fa"
          ? {
            ...common,
            base_domain_id: loaded.baseDomainId,
            last_call: localTimestamp(loaded.lastCall, " "),
            size_vram: null,
          }
          : {
            ...common,
            base_domain_id: [loaded.baseDomainId],
            last_call: localTimestamp(loaded.lastCall, " "),
            loaded_by: loaded.loadedBy,
          },
      );
    }
    return this.#json({ models });
  }

  #openAIModel(name: string): Record<string, unknown> {
    const base = {
      id: name,
      object: "model",
      created: MODIFIED_EPOCH_SECONDS,
      owned_by: "rkllama",
    };
    return this.#flavor === "fa" ? { ...base, permission: [], root: null, parent: null } : base;
  }

  #openAIModels(): Response {
    return this.#json({
      object: "list",
      data: [...this.#disk.keys()].map((name) => this.#openAIModel(name)),
    });
  }

  #modelInfo(id: string): Response {
    // RKLlama does not strip the namespace here.
    if (!this.#disk.has(id)) return this.#error(404, `Model '${id}' not found`);
    return this.#json(this.#openAIModel(id));
  }

  #show(exchange: Exchange): Response {
    const fa = this.#flavor === "fa";
    const parsed = this.#jsonBody(exchange);
    if (!parsed.ok) return fa ? parsed.response : this.#flaskHtml(500);
    const { body } = parsed;
    const given = fa ? body.model ?? body.name : body.name ?? body.model;
    if (typeof given !== "string") {
      return fa ? this.#missingField("model", body) : this.#flaskHtml(500);
    }
    const name = stripNamespace(given);
    if (fa && name === "") return this.#error(400, "Missing model name");
    const model = this.#disk.get(name);
    if (!model) return fa ? this.#error(404, `Model '${name}' not found`) : this.#flaskHtml(500);
    const template = "{{ .Prompt }}";
    const modelfile = `FROM="${name}.rkllm"\nHUGGINGFACE_PATH="sim/${name}"\n`;
    if (fa) {
      return this.#json({
        modelfile,
        parameters: model.parameterSize,
        template,
        details: this.#details(model, ["llama"]),
        model_info: {},
        license: "Unknown",
        system: "",
      });
    }
    return this.#json({
      capabilities: ["completion"],
      details: this.#details(model, ["llama"]),
      license: "Unknown",
      model_info: { "general.architecture": "llama", "general.name": name },
      modelfile,
      modified_at: MODIFIED_AT,
      name,
      parameters: model.parameterSize,
      size: model.size,
      system: "",
      template,
    });
  }

  // -------------------------------------------------------------------------
  // Loading and unloading

  #freeDomainId(): number | undefined {
    const used = new Set([...this.#loaded.values()].map((loaded) => loaded.baseDomainId));
    for (let id = this.#maxLoaded; id >= 1; id--) {
      if (!used.has(id)) return id;
    }
    return undefined;
  }

  /** Loads without any lock, as RKLlama does: a second concurrent load of a model leaks a worker. */
  async #load(name: string, loadedBy: string): Promise<void> {
    if (!this.#disk.has(name)) throw new LoadFailure(`Model directory '${name}' not found.`);
    const inProgress = this.#loading.get(name) ?? 0;
    if (inProgress > 0) this.#orphanedWorkers++;
    this.#loading.set(name, inProgress + 1);
    const loadedAt = new Date();
    try {
      await sleep(this.#loadDelayMs, this.#lifetime.signal);
    } finally {
      const left = (this.#loading.get(name) ?? 1) - 1;
      if (left > 0) this.#loading.set(name, left);
      else this.#loading.delete(name);
    }
    const baseDomainId = this.#loaded.get(name)?.baseDomainId ?? this.#freeDomainId();
    if (baseDomainId === undefined) {
      throw new LoadFailure(
        this.#flavor === "fa"
          ? `Unexpected Error loading the model ${name} into memory.`
          : "list index out of range",
      );
    }
    this.#loaded.set(name, { loadedAt, lastCall: loadedAt, baseDomainId, loadedBy });
    this.#record({ type: "loaded", model: name });
  }

  #loadedBy(exchange: Exchange): string {
    const headers = exchange.request.headers;
    return headers.get("x-loaded-by") ?? headers.get("user-agent") ?? "unknown";
  }

  /** An explicit load: on FA it blocks the event loop, so the whole pod freezes meanwhile. */
  async #explicitLoad(name: string, loadedBy: string): Promise<"already-loaded" | "loaded"> {
    if (this.#flavor === "fl") {
      if (this.#loaded.has(name)) return "already-loaded";
      await this.#load(name, loadedBy);
      return "loaded";
    }
    await this.#freezeGate.waitOpen(this.#lifetime.signal);
    if (this.#loaded.has(name)) return "already-loaded";
    this.#freezeGate.close();
    try {
      await this.#load(name, loadedBy);
    } finally {
      this.#freezeGate.open();
    }
    return "loaded";
  }

  #unload(name: string): void {
    if (this.#loaded.delete(name)) this.#record({ type: "unloaded", model: name });
  }

  async #apiLoad(exchange: Exchange): Promise<Response> {
    const parsed = this.#jsonBody(exchange);
    if (!parsed.ok) return parsed.response;
    const given = parsed.body.model ?? parsed.body.name;
    if (typeof given !== "string") return this.#missingField("model", parsed.body);
    const name = stripNamespace(given);
    try {
      const outcome = await this.#explicitLoad(name, this.#loadedBy(exchange));
      return this.#json({
        status: "success",
        message: outcome === "already-loaded" ? "Model already loaded" : null,
        model: name,
      });
    } catch (error) {
      if (error instanceof LoadFailure) return this.#error(400, error.message);
      throw error;
    }
  }

  #apiUnload(exchange: Exchange): Response {
    const parsed = this.#jsonBody(exchange);
    if (!parsed.ok) return parsed.response;
    const given = parsed.body.model ?? parsed.body.name;
    if (typeof given !== "string") return this.#missingField("model", parsed.body);
    const name = stripNamespace(given);
    if (!this.#loaded.has(name)) {
      return this.#json({ status: "success", message: "Model not loaded" });
    }
    this.#unload(name);
    return this.#json({ status: "success", message: null });
  }

  async #loadModelNative(exchange: Exchange): Promise<Response> {
    const fa = this.#flavor === "fa";
    const parsed = this.#jsonBody(exchange);
    if (!parsed.ok) return parsed.response;
    // No namespace stripping on this route.
    const name = parsed.body.model_name;
    if (typeof name !== "string" || (!fa && name === "")) {
      return fa
        ? this.#missingField("model_name", parsed.body)
        : this.#error(400, "Please enter the name of the model to be loaded.");
    }
    try {
      const outcome = await this.#explicitLoad(name, this.#loadedBy(exchange));
      if (outcome === "already-loaded") {
        const error = "A model is already loaded. Nothing to do.";
        return this.#json(fa ? { message: null, error } : { error });
      }
      const message = `Model ${name} loaded successfully.`;
      return this.#json(fa ? { message, error: null } : { message });
    } catch (error) {
      if (error instanceof LoadFailure) return this.#error(400, error.message);
      throw error;
    }
  }

  #unloadModelNative(exchange: Exchange): Response {
    const fa = this.#flavor === "fa";
    const parsed = this.#jsonBody(exchange);
    if (!parsed.ok) return parsed.response;
    const name = parsed.body.model_name;
    if (typeof name !== "string") {
      return fa
        ? this.#missingField("model_name", parsed.body)
        : this.#error(400, "Please enter the name of the model to be unloaded.");
    }
    if (!this.#loaded.has(name)) {
      return this.#error(
        400,
        fa ? `No model ${name} is currently loaded.` : `No model ${name} are currently loaded.`,
      );
    }
    this.#unload(name);
    return this.#json({ message: `Model ${name} successfully unloaded!` });
  }

  #unloadModels(): Response {
    // FL's handler references the stop function without calling it.
    if (this.#flavor === "fa") { for (const name of this.loadedModels()) this.#unload(name); }
    return this.#json({ message: "Models successfully unloaded!" });
  }

  #forceUnloadAll(): Response {
    const killed = this.loadedModels();
    for (const name of killed) this.#unload(name);
    return this.#json({
      message: "Force stopped all workers",
      killed_tracked: killed,
      killed_orphaned: [],
    });
  }

  // -------------------------------------------------------------------------
  // Inference

  /** Auto-loads inside the request, as every inference route does. */
  async #autoLoad(name: string, exchange: Exchange): Promise<void> {
    if (this.#deadWorkers.has(name)) {
      // FL: the request waits on the dead worker until the monitor reaps it.
      await sleep(this.#workerReapMs, this.#lifetime.signal);
      if (this.#deadWorkers.delete(name)) this.#unload(name);
    }
    if (!this.#loaded.has(name)) await this.#load(name, this.#loadedBy(exchange));
  }

  /** The lock a generation of model `name` queues on (FA: the pod's; FL: the model's). */
  #lockFor(name: string): Mutex {
    if (this.#flavor === "fa") return this.#inferenceLock;
    let lock = this.#modelLocks.get(name);
    if (!lock) this.#modelLocks.set(name, lock = new Mutex());
    return lock;
  }

  /** Records that the client left mid-request; the response is thrown away. */
  #clientLeft(exchange: Exchange, name: string): Response {
    if (!this.#dead) {
      this.#record({ type: "aborted", method: exchange.method, path: exchange.path, model: name });
    }
    return new Response(null, { status: 500 });
  }

  /** Emits the configured tokens while holding the caller's inference slot. */
  async #generate(
    name: string,
    path: string,
    signal: AbortSignal,
    onToken: (token: string) => void,
  ): Promise<GenerationResult> {
    const loaded = this.#loaded.get(name);
    if (loaded) loaded.lastCall = new Date();
    this.#activeGenerations++;
    this.#maxConcurrentGenerations = Math.max(
      this.#maxConcurrentGenerations,
      this.#activeGenerations,
    );
    this.#record({ type: "generation-start", path, model: name });
    const startedAt = performance.now();
    let firstTokenAt: number | undefined;
    let text = "";
    const leftover = this.#leftover.get(name);
    if (leftover !== undefined) {
      this.#leftover.delete(name);
      this.#record({ type: "leaked", path, model: name });
      text += leftover;
      onToken(leftover);
    }
    try {
      for (const token of this.#tokens) {
        await sleep(this.#tokenDelayMs, signal);
        await this.#pauseGate.waitOpen(signal);
        // A blocked FA event loop stalls streams that are already running, too.
        await this.#freezeGate.waitOpen(signal);
        firstTokenAt ??= performance.now();
        text += token;
        onToken(token);
      }
    } finally {
      this.#activeGenerations--;
    }
    this.#record({ type: "generation-end", path, model: name });
    const endedAt = performance.now();
    const toNs = (ms: number) => Math.round(ms * 1e6);
    const firstAt = firstTokenAt ?? endedAt;
    return {
      text,
      totalNs: toNs(endedAt - startedAt),
      promptEvalNs: toNs(firstAt - startedAt),
      evalNs: toNs(endedAt - firstAt),
      evalCount: this.#tokens.length,
    };
  }

  /** The six Ollama metrics; FL reports two of them in ms (RKLlama's unit bug). */
  #ollamaMetrics(result: GenerationResult, promptTokens: number): Record<string, number> {
    const fl = this.#flavor === "fl";
    return {
      total_duration: result.totalNs,
      load_duration: LOAD_DURATION_NS,
      prompt_eval_count: promptTokens,
      prompt_eval_duration: fl ? Math.round(result.promptEvalNs / 1e6) : result.promptEvalNs,
      eval_count: result.evalCount,
      eval_duration: fl ? Math.round(result.evalNs / 1e6) : result.evalNs,
    };
  }

  #openAIUsage(
    result: GenerationResult,
    promptTokens: number,
    extended: boolean,
  ): Record<string, number> {
    const usage = {
      prompt_tokens: promptTokens,
      completion_tokens: result.evalCount,
      total_tokens: promptTokens + result.evalCount,
    };
    if (!extended) return usage;
    // FL divides ms by 1e9 as if they were ns, hence the absurd rates.
    const evalSeconds = Math.max(result.evalNs / 1e6, 1) / 1e9;
    return {
      ...usage,
      tokens_per_second: Math.round(result.evalCount / evalSeconds * 100) / 100,
      prompt_eval_duration: result.promptEvalNs / 1e6 / 1e9,
      eval_duration: evalSeconds,
      total_duration: result.totalNs / 1e9,
      load_duration: LOAD_DURATION_NS / 1e9,
    };
  }

  #promptTokens(kind: InferenceKind, body: Record<string, unknown>): number {
    let text = "";
    if (kind === "chat" || kind === "openai-chat") {
      const messages = Array.isArray(body.messages) ? body.messages : [];
      text = messages.map((message) => isRecord(message) ? textOf(message.content) : "").join(" ");
    } else {
      text = Array.isArray(body.prompt) ? body.prompt.map(textOf).join("\n") : textOf(body.prompt);
    }
    return Math.max(1, wordCount(text));
  }

  async #inference(kind: InferenceKind, exchange: Exchange): Promise<Response> {
    const fa = this.#flavor === "fa";
    const parsed = this.#jsonBody(exchange);
    if (!parsed.ok) return parsed.response;
    const { body } = parsed;
    if (typeof body.model !== "string") {
      return fa ? this.#missingField("model", body) : this.#error(500, MISSING_ARGUMENT_FL);
    }
    const name = stripNamespace(body.model);
    const ollama = kind === "chat" || kind === "generate";
    const stream = typeof body.stream === "boolean" ? body.stream : ollama;
    if (kind === "generate") {
      if (fa && typeof body.prompt !== "string") return this.#missingField("prompt", body);
      if (!fa && !body.prompt) {
        // FL follows Ollama: an empty prompt unloads the model.
        this.#unload(name);
        return this.#json({ model: name, unload: true });
      }
    }
    if ((kind === "chat" || kind === "openai-chat") && fa && !Array.isArray(body.messages)) {
      return this.#missingField("messages", body);
    }
    // FA's /api/chat hands tools to the chat template as pydantic objects, which it refuses.
    if (kind === "chat" && fa && Array.isArray(body.tools) && body.tools.length > 0) {
      return this.#plainServerError();
    }
    // FA's /v1/completions handler fails on every request (an uncaught exception).
    if (kind === "openai-completion" && fa) return this.#plainServerError();
    try {
      await this.#autoLoad(name, exchange);
    } catch (error) {
      if (error instanceof LoadFailure) {
        return this.#error(500, `Failed to load model '${name}': ${error.message}`);
      }
      throw error;
    }
    if (exchange.clientGone.aborted) return this.#clientLeft(exchange, name);
    const promptTokens = this.#promptTokens(kind, body);
    if (stream) return await this.#streamed(kind, exchange, name, promptTokens);

    // A client that leaves does not stop a request that streams nothing: RKLlama
    // queues it, generates the answer and throws it away.
    let release: (() => void) | undefined;
    let result: GenerationResult;
    try {
      release = await this.#lockFor(name).acquire(this.#lifetime.signal);
      result = await this.#generate(name, exchange.path, this.#lifetime.signal, () => {});
    } finally {
      release?.();
    }
    if (exchange.clientGone.aborted) return this.#clientLeft(exchange, name);
    return this.#json(this.#completeReply(kind, name, result, promptTokens));
  }

  #completeReply(
    kind: InferenceKind,
    name: string,
    result: GenerationResult,
    promptTokens: number,
  ): Record<string, unknown> {
    const created = Math.floor(Date.now() / 1000);
    const extendedUsage = this.#flavor === "fl";
    switch (kind) {
      case "chat":
        return {
          model: name,
          created_at: createdAt(),
          message: { role: "assistant", content: result.text },
          done_reason: "stop",
          done: true,
          ...this.#ollamaMetrics(result, promptTokens),
        };
      case "generate":
        return {
          model: name,
          created_at: createdAt(),
          response: result.text,
          done_reason: "stop",
          done: true,
          ...this.#ollamaMetrics(result, promptTokens),
          context: [],
        };
      case "openai-chat":
        return {
          id: `chatcmpl-${randomHex()}`,
          object: "chat.completion",
          created,
          model: name,
          choices: [{
            index: 0,
            message: { role: "assistant", content: result.text },
            finish_reason: "stop",
          }],
          usage: this.#openAIUsage(result, promptTokens, extendedUsage),
        };
      case "openai-completion":
        return {
          id: `cmpl-${randomHex()}`,
          object: "text_completion",
          created,
          model: name,
          choices: [{ text: result.text, index: 0, logprobs: null, finish_reason: "stop" }],
          usage: this.#openAIUsage(result, promptTokens, false),
        };
    }
  }

  #framer(kind: InferenceKind, name: string, promptTokens: number): Framer {
    const ndjson = (value: unknown) => pyDumps(value) + "\n";
    const sse = (value: unknown) => `data: ${pyDumps(value)}\n\n`;
    const created = Math.floor(Date.now() / 1000);
    switch (kind) {
      case "chat":
      case "generate": {
        const content = (text: string) =>
          kind === "chat" ? { message: { role: "assistant", content: text } } : { response: text };
        return {
          contentType: "application/x-ndjson",
          token: (token) =>
            ndjson({ model: name, created_at: createdAt(), ...content(token), done: false }),
          end: (result) =>
            ndjson({
              model: name,
              created_at: createdAt(),
              ...content(""),
              done: true,
              done_reason: "stop",
              ...this.#ollamaMetrics(result, promptTokens),
            }),
        };
      }
      case "openai-chat":
        return {
          contentType: "text/event-stream; charset=utf-8",
          // RKLlama gives every token frame its own id.
          token: (token) =>
            sse({
              id: `chatcmpl-${randomHex()}`,
              object: "chat.completion.chunk",
              created,
              model: name,
              choices: [{
                index: 0,
                delta: { content: token, role: "assistant" },
                finish_reason: null,
              }],
            }),
          end: (result) => {
            const id = `chatcmpl-${randomHex()}`;
            return sse({
              id,
              object: "chat.completion.chunk",
              created,
              model: name,
              choices: [{
                index: 0,
                delta: { content: "", role: "assistant" },
                finish_reason: "stop",
              }],
            }) +
              sse({
                id,
                object: "chat.completion.chunk",
                created,
                model: name,
                choices: [],
                usage: this.#openAIUsage(result, promptTokens, true),
              }) +
              "data: [DONE]\n\n";
          },
        };
      case "openai-completion": {
        const frame = (id: string, choices: unknown[]) =>
          // "chat.completion.chunk" is what RKLlama sends here too.
          sse({ id, object: "chat.completion.chunk", created, model: name, choices });
        return {
          contentType: "text/event-stream; charset=utf-8",
          token: (token) =>
            frame(`cmpl-${randomHex()}`, [{ index: 0, text: token, finish_reason: null }]),
          end: () => {
            const id = `cmpl-${randomHex()}`;
            return frame(id, [{ index: 0, text: "", finish_reason: "stop" }]) + frame(id, []) +
              "data: [DONE]\n\n";
          },
        };
      }
    }
  }

  async #streamed(
    kind: InferenceKind,
    exchange: Exchange,
    name: string,
    promptTokens: number,
  ): Promise<Response> {
    const framer = this.#framer(kind, name, promptTokens);
    const headers = { "content-type": framer.contentType };
    const openAI = kind === "openai-chat" || kind === "openai-completion";
    if (openAI && this.#brokenOpenAIStream) {
      // FA's converter crashes after the headers are out; the connection just drops.
      if (exchange.connection) exchange.connection.cutAfterNextWrite = true;
      return new Response(
        new ReadableStream<Uint8Array>({
          start: (controller) => {
            if (!exchange.connection) controller.error(new Error("broken OpenAI stream"));
          },
        }),
        { headers },
      );
    }
    const cancelled = new AbortController();
    const signal = AbortSignal.any([cancelled.signal, exchange.clientGone]);
    let heldLock: (() => void) | undefined;
    if (this.#flavor === "fl") {
      // Werkzeug sends nothing until the generation produces output.
      try {
        heldLock = await this.#lockFor(name).acquire(signal);
      } catch (error) {
        if (signal.aborted) return this.#clientLeft(exchange, name);
        throw error;
      }
    }
    const encoder = new TextEncoder();
    const fa = this.#flavor === "fa";
    // What RKLlama does when a streaming client leaves mid-answer: FA's worker goes
    // on, and the rest of the answer comes out at the start of the model's next
    // answer; FL's worker dies, and the next request waits for it to be reaped.
    let generating = false;
    let left = false;
    signal.addEventListener("abort", () => {
      if (!generating || this.#dead) return;
      left = true;
      this.#clientLeft(exchange, name);
      if (!fa) {
        this.#deadWorkers.add(name);
        this.#record({ type: "worker-died", path: exchange.path, model: name });
      }
    }, { once: true });
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        const deliver = (token: string) => {
          if (!left) {
            controller.enqueue(encoder.encode(framer.token(token)));
          } else if (fa) {
            this.#leftover.set(name, (this.#leftover.get(name) ?? "") + token);
          } else {
            throw signal.reason;
          }
        };
        const run = async () => {
          let release = heldLock;
          try {
            // FA sent its headers already and only now queues for the lock.
            release ??= await this.#lockFor(name).acquire(signal);
            generating = true;
            const result = await this.#generate(
              name,
              exchange.path,
              this.#lifetime.signal,
              deliver,
            );
            // The answer's closing line is not text: it is not handed on.
            if (!left && !signal.aborted) controller.enqueue(encoder.encode(framer.end(result)));
            controller.close();
          } catch (error) {
            if (!signal.aborted) {
              console.error(`sim pod ${this.name}:`, error);
              controller.error(error);
              return;
            }
            if (!left) this.#clientLeft(exchange, name);
            try {
              controller.close();
            } catch { /* the stream was cancelled */ }
          } finally {
            // A connection closed after the answer (FL's Connection: close) is no client leaving.
            generating = false;
            release?.();
          }
        };
        void run();
      },
      cancel: () => cancelled.abort(new Error("client cancelled the stream")),
    });
    return new Response(body, { headers });
  }

  // -------------------------------------------------------------------------
  // Embeddings and media

  async #embed(exchange: Exchange, style: "ollama" | "openai"): Promise<Response> {
    const fa = this.#flavor === "fa";
    const parsed = this.#jsonBody(exchange);
    if (!parsed.ok) return parsed.response;
    const { body } = parsed;
    if (typeof body.model !== "string") {
      return fa ? this.#missingField("model", body) : this.#error(500, MISSING_ARGUMENT_FL);
    }
    const name = stripNamespace(body.model);
    const input = style === "ollama" ? body.input ?? body.prompt : body.input;
    const inputs = (Array.isArray(input) ? input : [input]).filter((item) =>
      typeof item === "string" && item.length > 0
    ) as string[];
    if (inputs.length === 0) {
      return style === "openai" && fa
        ? this.#missingField("input", body)
        : this.#error(400, "Missing input");
    }
    // FA hands the input to its chat template as if it were messages, which fails
    // for every input it accepts (a string or a list of strings).
    if (fa) return this.#plainServerError();
    const startedAt = performance.now();
    try {
      await this.#autoLoad(name, exchange);
    } catch (error) {
      if (error instanceof LoadFailure) {
        return this.#error(500, `Failed to load model '${name}': ${error.message}`);
      }
      throw error;
    }
    const vectors = inputs.map(embeddingFor);
    const promptTokens = inputs.reduce((sum, text) => sum + Math.max(1, wordCount(text)), 0);
    if (style === "openai") {
      // FL flattens a batch into a single embedding.
      return this.#json({
        object: "list",
        data: [{ object: "embedding", embedding: vectors.flat(), index: 0 }],
        model: name,
        usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
      });
    }
    return this.#json({
      model: name,
      embeddings: vectors,
      total_duration: Math.round((performance.now() - startedAt) * 1e6),
      load_duration: LOAD_DURATION_NS,
      prompt_eval_count: promptTokens,
    });
  }

  #generateImage(exchange: Exchange): Response {
    const fa = this.#flavor === "fa";
    const parsed = this.#jsonBody(exchange);
    if (!parsed.ok) return parsed.response;
    const { body } = parsed;
    if (typeof body.model !== "string") {
      return fa ? this.#plainServerError() : this.#error(500, MISSING_ARGUMENT_FL);
    }
    if (fa && typeof body.prompt !== "string") return this.#missingField("prompt", body);
    if (!fa && body.stream === true) {
      return new Response("Streaming not supported yet for image generation", {
        status: 400,
        headers: { "content-type": "text/html; charset=utf-8" },
      });
    }
    const name = stripNamespace(body.model);
    if (!this.#disk.has(name)) return this.#error(500, `Model directory '${name}' not found.`);
    const count = Math.min(10, Math.max(1, typeof body.n === "number" ? Math.floor(body.n) : 1));
    const stamp = Date.now();
    const data = Array.from(
      { length: count },
      (_, index) =>
        body.response_format === "b64_json"
          ? { b64_json: ONE_PIXEL_PNG_BASE64 }
          : { url: `/files/${name}/images/out_image_${stamp}${count > 1 ? `_${index}` : ""}.png` },
    );
    return this.#json({
      created: Math.floor(stamp / 1000),
      data,
      usage: {
        total_tokens: 0,
        input_tokens: 0,
        output_tokens: 0,
        input_tokens_details: { text_tokens: 0, image_tokens: 0 },
      },
    });
  }

  #imageFile(model: string, file: string): Response {
    if (!this.#disk.has(model)) {
      return this.#flavor === "fa" ? this.#error(404, "Image not found") : this.#flaskHtml(500);
    }
    const bytes = Uint8Array.from(atob(ONE_PIXEL_PNG_BASE64), (char) => char.charCodeAt(0));
    return new Response(bytes, {
      headers: {
        "content-type": "image/png",
        "content-disposition": `attachment; filename="${file}"`,
      },
    });
  }

  #speech(exchange: Exchange): Response {
    const fa = this.#flavor === "fa";
    const parsed = this.#jsonBody(exchange);
    if (!parsed.ok) return parsed.response;
    const { body } = parsed;
    if (typeof body.model !== "string") {
      return fa ? this.#missingField("model", body) : this.#error(500, MISSING_ARGUMENT_FL);
    }
    if (typeof body.input !== "string") {
      return fa ? this.#missingField("input", body) : this.#error(400, "Missing input");
    }
    const name = stripNamespace(body.model);
    if (!this.#disk.has(name)) return this.#error(500, `Model directory '${name}' not found.`);
    const format = typeof body.response_format === "string" ? body.response_format : "mp3";
    const bytes = new Uint8Array(1024 + body.input.length * 16);
    bytes.set(new TextEncoder().encode("ID3"));
    return new Response(bytes, {
      headers: {
        "content-type": AUDIO_CONTENT_TYPES[format] ?? "audio/mpeg",
        "accept-ranges": "bytes",
      },
    });
  }

  #transcription(exchange: Exchange): Response {
    const fa = this.#flavor === "fa";
    const form = exchange.form;
    const file = form?.get("file");
    const model = form?.get("model");
    if (!(file instanceof Blob)) {
      return fa ? this.#missingField("file", null) : this.#error(400, "file field missing");
    }
    if (typeof model !== "string") {
      return fa ? this.#missingField("model", null) : this.#error(500, MISSING_ARGUMENT_FL);
    }
    if (form?.get("stream") === "true") {
      return new Response("Streaming is not supported", {
        status: 400,
        headers: { "content-type": "text/plain; charset=utf-8" },
      });
    }
    const name = stripNamespace(model);
    if (!this.#disk.has(name)) return this.#error(500, `Model directory '${name}' not found.`);
    return this.#json({
      text: `transcribed ${file.size} bytes`,
      usage: {
        type: "tokens",
        input_tokens: 0,
        input_token_details: { text_tokens: 0, audio_tokens: 0 },
        output_tokens: 0,
        total_tokens: 0,
      },
    });
  }
}

/**
 * Forms larger than this are scanned (multipart_scan.ts), not parsed: the pod
 * shares the event loop with the router under test, and `formData()` of a 60 MiB
 * form holds it for about half a second. Smaller ones go through Deno's own
 * parser, so the tests check the router's forms against a parser it does not share.
 */
const LARGE_FORM = 1 << 20;

/** The fields the pod's routes read, as FormData, found by scanning the body. */
async function scannedForm(bytes: Uint8Array<ArrayBuffer>, contentType: string): Promise<FormData> {
  const form = new FormData();
  const parts = await scanMultipart(bytes, boundaryOf(contentType), ["model", "file", "stream"]);
  for (const part of parts) {
    const content = bytes.subarray(part.start, part.end);
    if (part.filename === undefined) form.append(part.name, new TextDecoder().decode(content));
    else form.append(part.name, new Blob([content]), part.filename);
  }
  return form;
}

/** Starts a simulated RKLlama pod listening on `options.hostname`:`options.port`. */
export async function startSimPod(options: SimPodOptions): Promise<SimPod> {
  const pod = new Pod(options, options.hostname ?? "127.0.0.1");
  await pod.start(options);
  return pod;
}
