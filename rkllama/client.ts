/**
 * @module
 * Every call the router makes to a board on its own account (not a client's request,
 * which upstream.ts forwards): polls (`/api/tags`, `/api/ps`, `/v1/models`,
 * `/api/version`), loads and unloads (with the Flask generation's `/load_model` and
 * `/unload_model`), and `/force_unload_all`. Each call has its timeout, reads an error
 * body only so far, and fails with one error type, {@linkcode BoardError}, that names
 * the pod, the call and what went wrong.
 */

import { freshConnections, podErrorMessage } from "./upstream.ts";
import { describeError } from "../obs/log.ts";

/** A board: its pod's name (for errors) and base URL. */
export interface Board {
  readonly name: string;
  readonly url: string;
}

/** How long a call may take, and the caller's own abort (a stop, a client gone). */
export interface CallOptions {
  timeoutMs: number;
  signal?: AbortSignal;
}

/**
 * One timeout shared by several calls made together (a poll's four): a timer and a
 * combined signal per call made a poll round over 500 pods a third slower
 * (bench/scale_bench.ts).
 */
export class SharedDeadline implements CallOptions {
  readonly timeoutMs: number;
  /** The caller's own signal. */
  readonly caller: AbortSignal | undefined;
  /** Fires at the timeout. */
  readonly timeout: AbortSignal;
  /** Fires at the timeout or when the caller aborts. */
  readonly signal: AbortSignal;

  constructor({ timeoutMs, signal }: CallOptions) {
    this.timeoutMs = timeoutMs;
    this.caller = signal;
    this.timeout = AbortSignal.timeout(timeoutMs);
    this.signal = signal ? AbortSignal.any([this.timeout, signal]) : this.timeout;
  }
}

/**
 * What went wrong: `status` the board answered an error (`status` is set),
 * `unsupported` it has no such endpoint (the Flask generation), `invalid` its answer
 * is not what the API says, `timeout` no answer in time, `aborted` the caller gave up,
 * `unreachable` no connection (or it broke).
 */
export type BoardFailure =
  | "status"
  | "unsupported"
  | "invalid"
  | "timeout"
  | "aborted"
  | "unreachable";

/** A call to a board that failed; the message is what the operator and the logs see. */
export class BoardError extends Error {
  override name = "BoardError";
  /** The pod called. */
  readonly pod: string;
  /** The call, as `METHOD /path`. */
  readonly call: string;
  readonly failure: BoardFailure;
  /** The board's HTTP status, when it answered. */
  readonly status: number | undefined;

  constructor(
    pod: string,
    call: string,
    failure: BoardFailure,
    message: string,
    status?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.pod = pod;
    this.call = call;
    this.failure = failure;
    this.status = status;
  }
}

/** A model as `/api/tags` or `/api/ps` lists it. */
export type ModelEntry = Readonly<Record<string, unknown>>;

/** Bytes of an error body read: enough for any message the router shows (300 characters). */
export const ERROR_BODY_BYTES = 64 * 1024;

/** What a board has on disk (`GET /api/tags`), by name. */
export function tags(board: Board, options: CallOptions): Promise<ReadonlyMap<string, ModelEntry>> {
  return modelList(board, "/api/tags", options);
}

/** What a board has loaded (`GET /api/ps`), by name. */
export function ps(board: Board, options: CallOptions): Promise<ReadonlyMap<string, ModelEntry>> {
  return modelList(board, "/api/ps", options);
}

/**
 * The models a board lists at `path` (`{"models": [...]}`), by name.
 *
 * @throws {BoardError} when the board does not answer 200 with a model list
 */
export function modelList(
  board: Board,
  path: string,
  options: CallOptions,
): Promise<ReadonlyMap<string, ModelEntry>> {
  return call(board, "GET", path, undefined, options, async (response, fail) => {
    if (!response.ok) {
      await response.body?.cancel();
      throw fail("status", `${path} answered ${response.status}`, response.status);
    }
    const list = (await json(response, fail) as { models?: unknown })?.models;
    if (!Array.isArray(list)) throw fail("invalid", `${path} did not list models`);
    const models = new Map<string, ModelEntry>();
    for (const entry of list) {
      if (typeof entry !== "object" || entry === null) continue;
      const name = (entry as { name?: unknown }).name ?? (entry as { model?: unknown }).model;
      if (typeof name === "string" && name !== "") models.set(name, entry as ModelEntry);
    }
    return models;
  });
}

/**
 * The model ids of a board's `GET /v1/models`, or none when it has no such list: only
 * image, speech and transcription models are taken from it, so a board without it
 * still serves its LLMs. Throws only when the board cannot be reached in time.
 */
export function openAIModels(board: Board, options: CallOptions): Promise<ReadonlySet<string>> {
  return call(board, "GET", "/v1/models", undefined, options, async (response) => {
    if (!response.ok) {
      await response.body?.cancel();
      return new Set<string>();
    }
    const data = (await response.json().catch(() => undefined) as { data?: unknown })?.data;
    if (!Array.isArray(data)) return new Set<string>();
    return new Set(
      data.map((entry) => (entry as { id?: unknown })?.id).filter((id): id is string =>
        typeof id === "string" && id !== ""
      ),
    );
  });
}

/**
 * The version a board's `GET /api/version` gives (`{"version": "0.0.54"}`), or
 * undefined when it gives none: the version only chooses how OpenAI requests are
 * served, so a board without it still serves. Throws only when it cannot be reached.
 */
export function version(board: Board, options: CallOptions): Promise<string | undefined> {
  return call(board, "GET", "/api/version", undefined, options, async (response) => {
    if (!response.ok) {
      await response.body?.cancel();
      return undefined;
    }
    const parsed = await response.json().catch(() => undefined) as { version?: unknown };
    return typeof parsed?.version === "string" ? parsed.version : undefined;
  });
}

/**
 * Loads `model` on the board (`POST /api/load`, or the Flask generation's
 * `/load_model`).
 *
 * @throws {BoardError} `status` with the board's own message (see podErrorMessage)
 */
export function load(board: Board, model: string, options: CallOptions): Promise<void> {
  return loadOrUnload(board, model, ["/api/load", "/load_model"], options);
}

/** Unloads `model` from the board (`POST /api/unload`, or `/unload_model`); see {@linkcode load}. */
export function unload(board: Board, model: string, options: CallOptions): Promise<void> {
  return loadOrUnload(board, model, ["/api/unload", "/unload_model"], options);
}

async function loadOrUnload(
  board: Board,
  model: string,
  [modern, legacy]: [string, string],
  options: CallOptions,
): Promise<void> {
  const answer = (fallback: boolean) => async (response: Response, fail: Fail) => {
    if (fallback && (response.status === 404 || response.status === 405)) {
      await response.body?.cancel();
      return false;
    }
    if (!response.ok) throw await statusError(board, response, fail);
    await response.text();
    return true;
  };
  if (await call(board, "POST", modern, { model }, options, answer(true))) return;
  await call(board, "POST", legacy, { model_name: model }, options, answer(false));
}

/** What `POST /force_unload_all` reports: the processes it ended. */
export interface ForceUnloaded {
  killedTracked: unknown;
  killedOrphaned: unknown;
}

/**
 * Ends every model process on the board (`POST /force_unload_all`, FastAPI
 * generation only).
 *
 * @throws {BoardError} `unsupported` on a board without the endpoint
 */
export function forceUnloadAll(board: Board, options: CallOptions): Promise<ForceUnloaded> {
  return call(board, "POST", "/force_unload_all", undefined, options, async (response, fail) => {
    if (response.status === 404 || response.status === 405) {
      await response.body?.cancel();
      throw fail(
        "unsupported",
        "this RKLlama version has no /force_unload_all",
        response.status,
      );
    }
    if (!response.ok) throw await statusError(board, response, fail);
    const body = await json(response, fail) as Record<string, unknown> | null;
    return {
      killedTracked: body?.killed_tracked ?? [],
      killedOrphaned: body?.killed_orphaned ?? [],
    };
  });
}

type Fail = (failure: BoardFailure, message: string, status?: number) => BoardError;

/**
 * One call: fetches `path` of the board and hands the answer to `read`, all under the
 * call's timeout and the caller's signal; any failure becomes a {@linkcode BoardError}.
 */
async function call<T>(
  board: Board,
  method: string,
  path: string,
  body: unknown,
  options: CallOptions,
  read: (response: Response, fail: Fail) => Promise<T>,
): Promise<T> {
  const name = `${method} ${path}`;
  const fail: Fail = (failure, message, status) =>
    new BoardError(board.name, name, failure, message, status);
  const deadline = options instanceof SharedDeadline ? options : new SharedDeadline(options);
  const { signal } = deadline;
  try {
    const response = await fetch(`${board.url}${path}`, {
      method,
      signal,
      // Not a kept connection a FastAPI board may leave unread (see freshConnections).
      client: freshConnections(),
      headers: body === undefined
        ? { accept: "application/json" }
        : { accept: "application/json", "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return await read(response, fail);
  } catch (error) {
    if (error instanceof BoardError) throw error;
    throw normalise(board.name, name, error, deadline);
  }
}

/** The error a fetch or a body read threw, as a {@linkcode BoardError}. */
function normalise(
  pod: string,
  call: string,
  error: unknown,
  { caller, timeout, timeoutMs }: SharedDeadline,
): BoardError {
  if (caller?.aborted) {
    return new BoardError(pod, call, "aborted", describeError(error), undefined, { cause: error });
  }
  if (timeout.aborted) {
    const message = `no answer within ${timeoutMs} ms`;
    return new BoardError(pod, call, "timeout", message, undefined, { cause: error });
  }
  return new BoardError(pod, call, "unreachable", describeError(error), undefined, {
    cause: error,
  });
}

/** The board's error answer, its message rewritten by podErrorMessage. */
async function statusError(board: Board, response: Response, fail: Fail): Promise<BoardError> {
  const text = await boundedText(response, ERROR_BODY_BYTES);
  return fail("status", podErrorMessage(board.name, response.status, text), response.status);
}

/** The answer's JSON body; a body that is not JSON is an `invalid` answer. */
async function json(response: Response, fail: Fail): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch (error) {
    throw fail("invalid", `its answer is not JSON: ${describeError(error)}`);
  }
}

/** The first `max` bytes of a body as text; the rest is not read. */
export async function boundedText(response: Response, max: number): Promise<string> {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < max) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(Math.min(size, max));
  let offset = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, bytes.length - offset);
    bytes.set(part, offset);
    offset += part.byteLength;
    if (offset >= bytes.length) break;
  }
  return new TextDecoder().decode(bytes);
}
