/**
 * @module
 * Model routing: every path the router does not answer itself goes to the pod
 * chosen for the model the request names, and the pod's answer streams back as it
 * arrives. See `pick.ts` for the rule, `cold_gate.ts` for waiting on a load.
 */

import { Hono } from "hono";
import type { Store } from "../store.ts";
import { describeError as describe, logger } from "../log.ts";
import { type Choice, pick } from "./pick.ts";
import { ColdGate, QueueFull } from "./cold_gate.ts";
import { errorResponse } from "./errors.ts";
import { requestIdOf } from "./request_id.ts";
import {
  BadRequest,
  findModel,
  loadsModel,
  type ModelSource,
  needsModel,
  replaceTopLevelString,
  resolveModel,
  unloads,
} from "./model_name.ts";
import { downstreamHeaders, podErrorMessage, relayBody, upstreamHeaders } from "./upstream.ts";

const log = logger("proxy");

/** What the proxy needs from the rest of the router. */
export interface ProxyOptions {
  store: Store;
  gate: ColdGate;
  /** Asks for a fresh poll of a pod the router just changed (it loaded a model). */
  repoll: (pod: string) => void;
  maxBodyBytes: number;
  ejectMs: number;
  firstByteTimeoutMs: number;
  /** Seconds a client is told to wait in a 503's `Retry-After`. */
  retryAfterSeconds: number;
  /** See `PickInput.staleAfterMs` in pick.ts. */
  staleAfterMs: number;
  /**
   * The URL of the replica that makes cold loads, when that is another router
   * replica; undefined when this one makes them (it leads, or runs alone).
   */
  coldLoader?: () => string | undefined;
}

/**
 * Marks a request one replica passed to the leader, which must not pass it on again.
 * The cold gate is per process: two replicas could each send the first request for
 * a model to one pod, and RKLlama would start two workers. So only the leader sends
 * cold requests; the others hand theirs to it.
 */
const FORWARDED = "x-rkllama-router-forwarded";

/** Error bodies from pods are small; anything longer is cut to keep memory bounded. */
const MAX_ERROR_BODY = 64 * 1024;

/**
 * Answers up to this size with a declared length (every non-streaming reply) are
 * read whole and sent as bytes, which Deno writes natively: relaying them as a
 * stream costs a JavaScript round trip per chunk, about 100 µs a request (see
 * bench/). Streams (NDJSON, SSE) and larger bodies (model files) are relayed.
 */
const MAX_WHOLE_BODY = 64 * 1024;

/** A pod failure before any response byte, which makes the request safe to retry. */
class ConnectFailure extends Error {
  override name = "ConnectFailure";
}

/** The pod took longer than `--first-byte-timeout` to answer. */
class FirstByteTimeout extends Error {
  override name = "FirstByteTimeout";
}

/** The Hono app that forwards every request it receives to a pod. */
export function proxyRoutes(options: ProxyOptions): Hono {
  const app = new Hono();
  const proxy = new Proxy(options);
  app.all("*", (c) => proxy.handle(c.req.raw));
  return app;
}

class Proxy {
  readonly #options: ProxyOptions;
  #turn = 0;

  constructor(options: ProxyOptions) {
    this.#options = options;
  }

  async handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    let body: Uint8Array<ArrayBuffer> | null;
    let source: ModelSource;
    try {
      body = await readBody(request, this.#options.maxBodyBytes);
      source = await findModel(path, request.headers.get("content-type") ?? "", body);
    } catch (error) {
      if (error instanceof BadRequest) return errorResponse(path, error.status, error.message);
      if (request.signal.aborted) return errorResponse(path, 499, "the client went away");
      throw error;
    }
    if (source.from === "none" && needsModel(path)) {
      return errorResponse(path, 400, "model is required");
    }
    const { store } = this.#options;
    let model: string | undefined;
    if (source.from !== "none") {
      model = resolveModel(source.value, store.modelNames.value);
      if (model === undefined) return this.#unknownModel(path, source.value);
    }
    const exclude = new Set<string>();
    for (let attempt = 1;; attempt++) {
      let choice = this.#choose(model, exclude);
      if (
        choice.kind === "follow" &&
        (!loadsModel(path) || !this.#options.gate.has(choice.pod.name, model!))
      ) {
        // A request that loads nothing (/api/show, /files/...) need not wait for the
        // load; nor is there anything to wait on for a load no request started.
        choice = { kind: "loaded", pod: choice.pod };
      }
      if (choice.kind === "follow") {
        try {
          await this.#options.gate.wait(choice.pod.name, model!, request.signal);
        } catch (error) {
          if (error instanceof QueueFull) return this.#unavailable(path, error.message);
          return errorResponse(path, 499, "the client went away");
        }
        attempt--;
        continue;
      }
      if (choice.kind === "not_found") return this.#unknownModel(path, model!);
      if (choice.kind === "unavailable") return this.#unavailable(path, choice.reason);
      const pod = choice.pod;
      if (choice.kind === "cold" && loadsModel(path) && !request.headers.has(FORWARDED)) {
        const leader = this.#options.coldLoader?.();
        if (leader) {
          const answer = await this.#toLeader(request, url, body, leader);
          if (answer) return answer;
        }
      }
      const endLoad = choice.kind === "cold" && loadsModel(path)
        ? this.#options.gate.begin(pod.name, model!)
        : undefined;
      try {
        return await this.#forward(request, url, source, body, pod.name, pod.url, model, endLoad);
      } catch (error) {
        endLoad?.(false);
        if (error instanceof FirstByteTimeout) {
          this.#options.store.eject(pod.name, Date.now() + this.#options.ejectMs, error.message);
          return errorResponse(path, 504, error.message);
        }
        if (!(error instanceof ConnectFailure)) throw error;
        if (request.signal.aborted) return errorResponse(path, 499, "the client went away");
        this.#options.store.eject(pod.name, Date.now() + this.#options.ejectMs, error.message);
        log.warn("pod {pod} failed before answering; ejected for {ejectMs} ms", {
          pod: pod.name,
          ejectMs: this.#options.ejectMs,
          error: error.message,
          attempt,
        });
        exclude.add(pod.name);
        if (attempt >= 2) {
          return errorResponse(path, 502, `no pod could take the request: ${error.message}`);
        }
      }
    }
  }

  #choose(model: string | undefined, exclude: ReadonlySet<string>): Choice {
    const { store } = this.#options;
    return pick({
      model,
      pods: store.podList.value,
      loadedOn: model === undefined ? [] : store.loadedOn.value.get(model) ?? [],
      onDiskOn: model === undefined ? [] : store.onDiskOn.value.get(model) ?? [],
      now: Date.now(),
      exclude,
      turn: this.#turn++,
      staleAfterMs: this.#options.staleAfterMs,
    });
  }

  async #forward(
    request: Request,
    url: URL,
    source: ModelSource,
    body: Uint8Array<ArrayBuffer> | null,
    podName: string,
    podUrl: string,
    model: string | undefined,
    endLoad: ((succeeded: boolean) => void) | undefined,
  ): Promise<Response> {
    const headers = upstreamHeaders(request.headers);
    const requestId = requestIdOf(request);
    if (requestId) headers.set("x-request-id", requestId);
    let path = url.pathname;
    let outgoing: BodyInit | null = body;
    if (model !== undefined && source.from !== "none" && source.value !== model) {
      ({ path, outgoing } = await rewriteModel(source, model, path, body, headers));
    } else if (
      (source.from === "json" || (source.from === "none" && source.json)) &&
      !isJsonLabelled(headers)
    ) {
      // `curl -d '{...}'` labels JSON as a form, fetch() as text/plain; FastAPI pods
      // refuse both with 422, Flask pods ignore the label. Say what it is.
      headers.set("content-type", "application/json");
    }
    const target = podUrl + path + url.search;
    const abort = new AbortController();
    const timer = setTimeout(
      () =>
        abort.abort(
          new FirstByteTimeout(
            `pod ${podName} sent no response within ${this.#options.firstByteTimeoutMs} ms`,
          ),
        ),
      this.#options.firstByteTimeoutMs,
    );
    // A cold request keeps going when its client leaves before the answer: the pod
    // goes on loading regardless, and the followers must stay held until it is done.
    const followClient = () => abort.abort(request.signal.reason);
    if (!endLoad) request.signal.addEventListener("abort", followClient, { once: true });
    const runtime = this.#options.store.pods.peek().get(podName)?.runtime;
    if (runtime) {
      runtime.inflight++;
      // A cold request starts the idle clock once it is answered (finishLoading).
      if (model !== undefined && !endLoad) runtime.lastSent.set(model, Date.now());
    }
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      if (runtime) runtime.inflight--;
      request.signal.removeEventListener("abort", followClient);
    };
    const started = performance.now();
    let upstream: Response;
    try {
      upstream = await fetch(target, {
        method: request.method,
        headers,
        body: outgoing,
        redirect: "manual",
        signal: abort.signal,
      });
    } catch (error) {
      settle();
      if (abort.signal.reason instanceof FirstByteTimeout) throw abort.signal.reason;
      if (request.signal.aborted) throw new ConnectFailure("the client went away");
      throw new ConnectFailure(`pod ${podName} did not answer: ${describe(error)}`);
    } finally {
      clearTimeout(timer);
    }
    endLoad?.(upstream.ok);
    if (endLoad) {
      this.#options.repoll(podName);
      if (request.signal.aborted) {
        settle();
        await upstream.body?.cancel();
        return errorResponse(url.pathname, 499, "the client went away");
      }
      request.signal.addEventListener("abort", followClient, { once: true });
    }
    const unloaded = unloads(url.pathname);
    if (upstream.ok && unloaded !== "none") {
      this.#options.store.markUnloaded(podName, unloaded === "all" ? undefined : model);
      this.#options.repoll(podName);
    }
    const responseHeaders = downstreamHeaders(upstream.headers);
    const ttfbMs = Math.round(performance.now() - started);
    const logRequest = (bytes: number, outcome: string) =>
      log.info("{method} {path} {status} via {pod}", {
        method: request.method,
        path: url.pathname,
        model,
        pod: podName,
        status: upstream.status,
        outcome,
        durationMs: Math.round(performance.now() - started),
        ttfbMs,
        bytes,
        requestId,
      });
    if (upstream.status >= 400 && isApiPath(url.pathname)) {
      const text = await readLimited(upstream.body, MAX_ERROR_BODY);
      settle();
      logRequest(text.length, "error");
      return errorResponse(
        url.pathname,
        upstream.status,
        podErrorMessage(podName, upstream.status, text),
        pickHeaders(responseHeaders, ["x-request-id", "retry-after"]),
      );
    }
    if (!upstream.body) {
      settle();
      logRequest(0, "done");
      return new Response(null, { status: upstream.status, headers: responseHeaders });
    }
    const declared = upstream.headers.get("content-length");
    if (declared !== null && Number(declared) <= MAX_WHOLE_BODY) {
      let whole: Uint8Array<ArrayBuffer>;
      try {
        whole = await upstream.bytes();
      } catch (error) {
        settle();
        logRequest(0, "failed");
        log.warn("answer from pod {pod} failed before its end", {
          pod: podName,
          model,
          path: url.pathname,
          error: describe(error),
        });
        if (request.signal.aborted) return errorResponse(url.pathname, 499, "the client went away");
        return errorResponse(
          url.pathname,
          502,
          `pod ${podName} failed while answering: ${describe(error)}`,
        );
      }
      settle();
      logRequest(whole.byteLength, "done");
      return new Response(whole, {
        status: upstream.status,
        statusText: upstream.statusText,
        headers: responseHeaders,
      });
    }
    const relayed = relayBody(
      upstream.body,
      upstream.headers.get("content-type") ?? "",
      (error) => `pod ${podName} failed mid-stream: ${describe(error)}`,
      (end) => {
        settle();
        logRequest(end.bytes, end.kind);
        if (end.kind === "failed") {
          log.warn("stream from pod {pod} failed after {bytes} bytes", {
            pod: podName,
            model,
            path: url.pathname,
            bytes: end.bytes,
            error: describe(end.error),
          });
        }
      },
    );
    return new Response(relayed, {
      status: upstream.status,
      statusText: upstream.statusText,
      headers: responseHeaders,
    });
  }

  /** Hands a cold request to the leading replica; undefined if it cannot be reached. */
  async #toLeader(
    request: Request,
    url: URL,
    body: Uint8Array<ArrayBuffer> | null,
    leader: string,
  ): Promise<Response | undefined> {
    const headers = upstreamHeaders(request.headers);
    headers.set(FORWARDED, "1");
    let answer: Response;
    try {
      answer = await fetch(leader + url.pathname + url.search, {
        method: request.method,
        headers,
        body,
        redirect: "manual",
        signal: request.signal,
      });
    } catch (error) {
      if (request.signal.aborted) return errorResponse(url.pathname, 499, "the client went away");
      log.warn("the leading replica {leader} cannot be reached ({error}); loading here", {
        leader,
        error: describe(error),
      });
      return undefined;
    }
    if (!answer.body) {
      return new Response(null, {
        status: answer.status,
        headers: downstreamHeaders(answer.headers),
      });
    }
    const relayed = relayBody(
      answer.body,
      answer.headers.get("content-type") ?? "",
      (error) => `the leading replica failed mid-stream: ${describe(error)}`,
      () => {},
    );
    return new Response(relayed, {
      status: answer.status,
      statusText: answer.statusText,
      headers: downstreamHeaders(answer.headers),
    });
  }

  #unknownModel(path: string, requested: string): Response {
    const { store } = this.#options;
    if (store.podList.value.length === 0) {
      return this.#unavailable(path, "no RKLlama pods have been discovered yet");
    }
    if (!store.podList.value.some((pod) => pod.polled)) {
      return this.#unavailable(path, "no RKLlama pod has reported its models yet");
    }
    const names = [...store.modelNames.value].sort();
    const shown = names.slice(0, 20).join(", ") + (names.length > 20 ? ", ..." : "");
    const hint = names.length > 0 ? `; available: ${shown}` : "; no pod has any model on disk";
    return errorResponse(path, 404, `model '${requested}' not found${hint}`);
  }

  #unavailable(path: string, reason: string): Response {
    return errorResponse(path, 503, reason, {
      "retry-after": String(this.#options.retryAfterSeconds),
    });
  }
}

/**
 * Sends the pod the name it knows (it does not resolve `:latest`) while keeping
 * every other byte of the body as the client sent it.
 */
async function rewriteModel(
  source: ModelSource,
  model: string,
  path: string,
  body: Uint8Array<ArrayBuffer> | null,
  headers: Headers,
): Promise<{ path: string; outgoing: BodyInit | null }> {
  if (source.from === "path") {
    return { path: source.prefix + encodeURIComponent(model) + source.rest, outgoing: body };
  }
  if (source.from === "form" && body) {
    // A multipart body is rebuilt with the field changed; fetch writes a new boundary.
    const form = await new Response(body, {
      headers: { "content-type": headers.get("content-type") ?? "" },
    }).formData();
    form.set("model", model);
    headers.delete("content-type");
    return { path, outgoing: form };
  }
  if (source.from === "json" && body) {
    const text = new TextDecoder().decode(body);
    const replaced = replaceTopLevelString(text, source.key, model);
    if (replaced !== undefined) {
      if (!isJsonLabelled(headers)) headers.set("content-type", "application/json");
      return { path, outgoing: replaced };
    }
  }
  return { path, outgoing: body };
}

function isJsonLabelled(headers: Headers): boolean {
  const type = (headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  return type === "application/json" || type.endsWith("+json");
}

/** Ollama and OpenAI paths, whose clients read `{"error": ...}` bodies. */
function isApiPath(path: string): boolean {
  return path.startsWith("/api/") || path.startsWith("/v1/");
}

function pickHeaders(headers: Headers, names: readonly string[]): Headers {
  const picked = new Headers();
  for (const name of names) {
    const value = headers.get(name);
    if (value !== null) picked.set(name, value);
  }
  return picked;
}

/**
 * The whole request body, or null when there is none.
 *
 * @throws {BadRequest} 413 once it grows past `limit` bytes
 */
async function readBody(request: Request, limit: number): Promise<Uint8Array<ArrayBuffer> | null> {
  if (!request.body) return null;
  const tooLarge = () =>
    new BadRequest(413, `the request body is larger than the limit of ${limit} bytes`);
  const declared = Number(request.headers.get("content-length") ?? "NaN");
  if (declared > limit) {
    await request.body.cancel();
    throw tooLarge();
  }
  // The server holds a body to its declared length: read it in one go.
  if (declared >= 0) return await request.bytes();
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  for await (const chunk of request.body) {
    size += chunk.byteLength;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  if (chunks.length === 1) return chunks[0];
  const whole = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    whole.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return whole;
}

async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
): Promise<string> {
  if (!body) return "";
  const decoder = new TextDecoder();
  let text = "";
  try {
    for await (const chunk of body) {
      text += decoder.decode(chunk, { stream: true });
      if (text.length >= limit) break;
    }
  } catch {
    // A pod that fails while sending its error: show what arrived.
  }
  return text.slice(0, limit);
}
