/**
 * @module
 * Model routing: every path the router does not answer itself goes to the pod
 * chosen for the model the request names, and the pod's answer streams back as it
 * arrives. See `pick.ts` for the rule, `cold_gate.ts` for waiting on a load.
 */

import { Hono } from "hono";
import type { Store } from "../cluster/store.ts";
import { describeError as describe, logger } from "../obs/log.ts";
import { type Choice, pick } from "./pick.ts";
import type { Scheduler } from "./scheduler.ts";
import type { PodRecord } from "../cluster/store.ts";
import { errorResponse } from "../api/errors.ts";
import { requestIdOf } from "../api/request_id.ts";
import { WholeAnswer } from "../api/whole_answer.ts";
import {
  BadRequest,
  findModel,
  loadsModel,
  type ModelSource,
  needsModel,
  replaceFormModel,
  replaceJsonModel,
  resolveModel,
  runsOnWithoutClient,
  unloads,
} from "../api/model_name.ts";
import {
  type BodyEnd,
  canConnect,
  discardBody,
  downstreamHeaders,
  freshConnections,
  type HeaderList,
  headerOf,
  OpenStreams,
  podErrorMessage,
  relayBody,
  setHeader,
  StreamEnded,
  StreamIdle,
  upstreamHeaders,
} from "../rkllama/upstream.ts";
import { modelLabel, routeLabel, type RouterMetrics } from "../obs/metrics.ts";
import { dropToken } from "../api/admin_auth.ts";
import { BodiesFull, BodyBudget, readBody, toSend } from "./request_body.ts";
import { deadlines } from "../rkllama/deadlines.ts";
import { mayTranslate, type Translation, translationFor, unsupportedOn } from "./openai_compat.ts";

const log = logger("proxy");

/** What the proxy needs from the rest of the router. */
export interface ProxyOptions {
  store: Store;
  /** The queue in front of the pods' generation slots. */
  scheduler: Scheduler;
  /** Asks for a fresh poll of a pod the router just changed (it loaded a model). */
  repoll: (pod: string) => void;
  maxBodyBytes: number;
  /** Bytes of request bodies held at once, across requests (see `--max-body-total`). */
  maxBodyTotalBytes: number;
  ejectMs: number;
  firstByteTimeoutMs: number;
  /** See `--connect-timeout`; a pod not connectable this long is given up on. */
  connectTimeoutMs: number;
  /** See `--stream-idle-timeout`. */
  streamIdleTimeoutMs: number;
  /** See `--body-timeout`. */
  bodyTimeoutMs: number;
  /** Seconds a client is told to wait in a 503's `Retry-After`. */
  retryAfterSeconds: number;
  /** See `PickInput.staleAfterMs` in pick.ts. */
  staleAfterMs: number;
  /**
   * The URL of the replica that hands out generation slots, when that is another
   * router replica; undefined when this one does (it leads, or runs alone).
   */
  dispatcher?: () => string | undefined;
  metrics?: RouterMetrics;
  /** Told of every answer from a pod for a named model, with its time to first byte. */
  onAnswered?: (model: string, ttfbMs: number) => void;
  /** `--admin-token`: never passed on to a pod (another replica needs it, and gets it). */
  adminToken?: string;
}

/** What one request became, filled in as it goes, for its log line and metrics. */
interface Outcome {
  /** `performance.now()` when the request arrived. */
  arrived: number;
  /** The model as the cluster knows it, once resolved. */
  model?: string;
  /** Whether the request named a model at all. */
  named: boolean;
  /** The last pod tried. */
  pod?: string;
  /** Set once the log line and metrics are taken care of (at the end of the body). */
  recorded: boolean;
  /** How the last pod tried failed, when the router answers for it: timeout, failed, cancelled. */
  end?: string;
}

/** One pod a request is sent to, and what sending it there holds. */
interface Attempt {
  pod: PodRecord;
  /** Ends the load this request makes the pod do (cold): true once the pod answered. */
  endLoad?: (succeeded: boolean) => void;
  /** Frees the generation slot the request holds (see scheduler.ts). */
  release?: () => void;
}

/**
 * Marks a request one replica passed to the leader, which must not pass it on again.
 * Slots and the cold gate are per process: two replicas could each send a board
 * a generation when it has room for one (it would queue the second, bound to that
 * board), or each send the first request for a model to one board (RKLlama would
 * start two workers). So only the leader hands out slots; the others pass every
 * request that takes one to it, which costs one more hop on loopback or the pod
 * network (well under a millisecond) and no coordination protocol.
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

/**
 * Pods one request may be tried on. A request is tried again, on another pod, only
 * when its pod failed before sending a single response byte (refused, reset or
 * closed the connection, or could not be connected to in time), so the client has
 * seen nothing and gets one answer. The pod may have started the generation before
 * it died; a generation is not idempotent, but a dead pod's generation is lost
 * anyway, and the client would send the same request again. A pod that is merely
 * slow (first-byte timeout) is not retried elsewhere: it may still be working.
 */
const MAX_ATTEMPTS = 3;

/** Methods passed to pods; others are refused here with a JSON 405. */
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** A pod failure before any response byte, which makes the request safe to retry. */
class ConnectFailure extends Error {
  override name = "ConnectFailure";
}

/** The pod took longer than `--first-byte-timeout` to answer. */
class FirstByteTimeout extends Error {
  override name = "FirstByteTimeout";
}

/** Forwarding to pods: a Hono app for every request, and the same without Hono. */
export interface ProxyRoutes {
  /** The Hono app that forwards every request it receives to a pod. */
  app: Hono;
  /** Forwards a request (given its id already, see request_id.ts) to a pod. */
  handle(request: Request): Promise<Response>;
  /** Ends every stream being relayed with `message` as its error line; returns how many. */
  endStreams(message: string): number;
  /** Resolves when no stream is being relayed, nor read for a client that left. */
  streamsEnded(): Promise<void>;
}

export function proxyRoutes(options: ProxyOptions): ProxyRoutes {
  const app = new Hono();
  const proxy = new Forwarder(options);
  app.all("*", (c) => proxy.handle(c.req.raw));
  return {
    app,
    handle: (request) => proxy.handle(request),
    endStreams: (message) => proxy.endStreams(message),
    streamsEnded: () => proxy.streamsEnded(),
  };
}

class Forwarder {
  readonly #options: ProxyOptions;
  readonly #openStreams = new OpenStreams();
  #turn = 0;
  readonly #bodies: BodyBudget;

  constructor(options: ProxyOptions) {
    this.#options = options;
    this.#bodies = new BodyBudget(options.maxBodyTotalBytes);
  }

  endStreams(message: string): number {
    return this.#openStreams.endAll(message);
  }

  streamsEnded(): Promise<void> {
    return this.#openStreams.none();
  }

  async handle(request: Request): Promise<Response> {
    const outcome: Outcome = { arrived: performance.now(), named: false, recorded: false };
    const url = new URL(request.url);
    let held = 0;
    let response: Response;
    try {
      response = await this.#route(request, url, outcome, (bytes) => held = bytes);
    } finally {
      this.#bodies.release(held);
    }
    if (!outcome.recorded) {
      // The router answered itself (a refusal, or the pod never answered).
      // A pod that timed out or failed is named; a refusal came from the router alone.
      this.#record(request, url, outcome, {
        pod: outcome.end ? outcome.pod ?? "none" : "none",
        status: response.status,
        end: outcome.end ?? "refused",
      });
    }
    return response;
  }

  async #route(
    request: Request,
    url: URL,
    outcome: Outcome,
    holding: (bytes: number) => void,
  ): Promise<Response> {
    const path = url.pathname;
    if (!METHODS.has(request.method)) {
      await request.body?.cancel();
      return errorResponse(path, 405, `the method ${request.method} is not supported`, {
        allow: [...METHODS].join(", "),
      });
    }
    let body: Uint8Array<ArrayBuffer> | null;
    let source: ModelSource;
    try {
      body = await readBody(
        request,
        this.#options.maxBodyBytes,
        this.#options.bodyTimeoutMs,
        this.#bodies,
      );
      holding(body?.byteLength ?? 0);
      source = await findModel(path, request.headers.get("content-type") ?? "", body);
    } catch (error) {
      if (error instanceof BodiesFull) return this.#unavailable(path, error.message);
      if (error instanceof BadRequest) {
        // A body the router stopped reading closes its connection (http/server.ts).
        return errorResponse(path, error.status, error.message);
      }
      if (request.signal.aborted) return errorResponse(path, 499, "the client went away");
      throw error;
    }
    if (source.from === "none" && needsModel(path)) {
      return errorResponse(path, 400, "model is required");
    }
    const { store } = this.#options;
    let model: string | undefined;
    if (source.from !== "none") {
      outcome.named = true;
      model = resolveModel(source.value, store.modelNames.value);
      if (model === undefined) return this.#unknownModel(path, source.value);
      outcome.model = model;
    }
    const exclude = new Set<string>();
    if (model !== undefined) {
      const refusal = this.#leaveOutUnable(path, model, exclude);
      if (refusal) return errorResponse(path, 501, refusal);
    }
    // A request that makes a pod generate or load takes a generation slot; on a
    // replica that does not lead, it goes to the leader, whose queue covers every
    // replica's requests.
    const slotted = model !== undefined && loadsModel(path);
    if (slotted && !request.headers.has(FORWARDED)) {
      const leader = this.#options.dispatcher?.();
      if (leader) {
        const answer = await this.#toLeader(request, url, body, leader, outcome);
        if (answer) return answer;
      }
    }
    for (let tries = 1;; tries++) {
      const next = slotted
        ? await this.#slot(path, model!, exclude, request.signal)
        : this.#anyPod(path, model, exclude);
      if (next instanceof Response) return next;
      const failed = await this.#attempt(request, url, source, body, next, outcome);
      if (failed instanceof Response) return failed;
      exclude.add(next.pod.name);
      if (tries >= MAX_ATTEMPTS) {
        return errorResponse(path, 502, `no pod could take the request: ${failed.message}`);
      }
      this.#options.metrics?.retried("connect");
    }
  }

  /**
   * A free generation slot from the scheduler's queue (waiting for one as long as
   * it takes), or the answer to give instead.
   */
  async #slot(
    path: string,
    model: string,
    exclude: ReadonlySet<string>,
    signal: AbortSignal,
  ): Promise<Attempt | Response> {
    let granted = this.#options.scheduler.acquire(model, exclude, signal);
    if (granted instanceof Promise) granted = await granted;
    switch (granted.kind) {
      case "not_found":
        return this.#unknownModel(path, model);
      case "unavailable":
      case "busy":
        return this.#unavailable(path, granted.reason);
      case "left":
        return errorResponse(path, 499, "the client went away");
    }
    if (signal.aborted) {
      // Gone while its slot was being handed over: nothing was sent, the slot goes on.
      granted.endLoad?.(false);
      granted.release();
      return errorResponse(path, 499, "the client went away");
    }
    return granted;
  }

  /**
   * Any pod for a request that takes no slot (/api/show, /files/..., no model):
   * it need not wait for a load, any pod that has the model can answer it.
   */
  #anyPod(
    path: string,
    model: string | undefined,
    exclude: ReadonlySet<string>,
  ): Attempt | Response {
    const choice = this.#choose(model, exclude);
    if (choice.kind === "not_found") return this.#unknownModel(path, model!);
    if (choice.kind === "unavailable") return this.#unavailable(path, choice.reason);
    return { pod: choice.pod };
  }

  /**
   * Sends the request to one pod: its answer, or the failure to try another pod
   * with (the pod failed before sending a byte, and the client is still there).
   */
  async #attempt(
    request: Request,
    url: URL,
    source: ModelSource,
    body: Uint8Array<ArrayBuffer> | null,
    attempt: Attempt,
    outcome: Outcome,
  ): Promise<Response | ConnectFailure> {
    const path = url.pathname;
    const { pod } = attempt;
    outcome.pod = pod.name;
    try {
      return await this.#forward(request, url, source, body, attempt, outcome);
    } catch (error) {
      attempt.endLoad?.(false);
      if (error instanceof FirstByteTimeout) {
        outcome.end = "timeout";
        this.#options.metrics?.upstreamError(pod.name, "timeout");
        this.#options.store.ejectWithBackoff(pod.name, this.#options.ejectMs, error.message);
        return errorResponse(path, 504, error.message);
      }
      if (!(error instanceof ConnectFailure)) throw error;
      outcome.end = "failed";
      this.#options.metrics?.upstreamError(pod.name, "connect");
      this.#options.store.ejectWithBackoff(pod.name, this.#options.ejectMs, error.message);
      // Nobody is left to answer: no other pod is tried.
      if (request.signal.aborted) return errorResponse(path, 499, "the client went away");
      return error;
    }
  }

  /**
   * Adds to `exclude` the pods holding `model` that cannot serve `path` at all
   * (embeddings on the FastAPI generation); says why when no other pod holds it.
   */
  #leaveOutUnable(path: string, model: string, exclude: Set<string>): string | undefined {
    // Most paths are served by every generation: nothing to look at.
    if (!unsupportedOn(path, "fastapi")) return undefined;
    const { store } = this.#options;
    const holders = [
      ...(store.loadedOn.value.get(model) ?? []),
      ...(store.onDiskOn.value.get(model) ?? []),
    ];
    const unable = holders.filter((pod) => unsupportedOn(path, pod.generation));
    if (unable.length === 0) return undefined;
    for (const pod of unable) exclude.add(pod.name);
    if (holders.some((pod) => !exclude.has(pod.name))) return undefined;
    const names = [...new Set(unable.map((pod) => pod.name))].join(", ");
    return `model '${model}' is only on FastAPI-generation RKLlama boards (${names}), whose embeddings always fail; put it on a Flask-generation board (RKLlama API 0.0.70 or later) to embed with it`;
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
    attempt: Attempt,
    outcome: Outcome,
  ): Promise<Response> {
    const { model } = outcome;
    const { name: podName, url: podUrl } = attempt.pod;
    const { endLoad } = attempt;
    const headers = upstreamHeaders(request.headers);
    const { adminToken } = this.#options;
    if (adminToken) dropToken(headers, adminToken);
    const requestId = requestIdOf(request);
    if (requestId) setHeader(headers, "x-request-id", requestId);
    let path = url.pathname;
    let outgoing: BodyInit | Uint8Array<ArrayBuffer>[] | null = body;
    if (model !== undefined && source.from !== "none" && source.value !== model) {
      ({ path, outgoing } = rewriteModel(source, model, path, body, headers));
    } else if (
      (source.from === "json" || (source.from === "none" && source.json)) &&
      !isJsonLabelled(headers)
    ) {
      // `curl -d '{...}'` labels JSON as a form, fetch() as text/plain; FastAPI pods
      // refuse both with 422, Flask pods ignore the label. Say what it is.
      setHeader(headers, "content-type", "application/json");
    }
    let translation: Translation | undefined;
    const record = this.#options.store.pods.peek().get(podName);
    const generation = record?.generation ?? "unknown";
    if (model !== undefined && source.from === "json" && body && mayTranslate(path, generation)) {
      // The board's own endpoint is broken or answers in another shape: the router
      // speaks it for the board, through its Ollama endpoints (openai_compat.ts).
      try {
        if (source.values > MAX_TRANSLATED_VALUES) {
          throw new BadRequest(
            413,
            `the router rewrites ${path} requests for RKLlama boards, and reads at most ${MAX_TRANSLATED_VALUES} JSON values in one; this body has ${source.values}`,
          );
        }
        translation = translationFor(path, generation, JSON.parse(lenient.decode(body)), model);
      } catch (error) {
        if (!(error instanceof BadRequest)) throw error;
        endLoad?.(false);
        attempt.release?.();
        return errorResponse(url.pathname, error.status, error.message);
      }
      if (translation) {
        path = translation.path;
        outgoing = translation.body;
        setHeader(headers, "content-type", "application/json");
      }
    }
    const target = podUrl + path + url.search;
    const abort = new AbortController();
    const firstByte = deadlines.start(
      this.#options.firstByteTimeoutMs,
      () =>
        abort.abort(
          new FirstByteTimeout(
            `pod ${podName} sent no response within ${this.#options.firstByteTimeoutMs} ms`,
          ),
        ),
    );
    // A client that leaves does not cancel the pod's work: RKLlama goes on with a
    // generation whose client is gone and hurts the next one (see relayBody). The
    // answer is read to its end and thrown away; only when the client left is noted.
    // (A listener, not AbortSignal.any: that was 2% of the CPU under load.)
    let leftAt: number | undefined;
    const noteLeaving = () => leftAt ??= performance.now();
    if (request.signal.aborted) noteLeaving();
    else request.signal.addEventListener("abort", noteLeaving, { once: true });
    // fetch() has no connect timeout, and a powered-off board leaves the SYN
    // unanswered for minutes: if no answer came within the connect timeout, a fresh
    // connection tells a dead pod from a slow one.
    const probe = deadlines.start(this.#options.connectTimeoutMs, async () => {
      if (abort.signal.aborted) return;
      const connectable = await canConnect(podUrl, this.#options.connectTimeoutMs);
      if (!connectable && !abort.signal.aborted) {
        abort.abort(
          new ConnectFailure(
            `pod ${podName} could not be connected to within ${this.#options.connectTimeoutMs} ms`,
          ),
        );
      }
    });
    const runtime = record?.runtime;
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
      attempt.release?.();
      request.signal.removeEventListener("abort", noteLeaving);
    };
    const started = performance.now();
    let upstream: Response;
    try {
      upstream = await fetch(target, {
        method: request.method,
        headers,
        body: toSend(outgoing),
        redirect: "manual",
        signal: abort.signal,
        // Flask boards close every connection themselves.
        client: generation === "fastapi" ? freshConnections() : undefined,
      });
    } catch (error) {
      settle();
      if (abort.signal.reason instanceof FirstByteTimeout) throw abort.signal.reason;
      if (abort.signal.reason instanceof ConnectFailure) throw abort.signal.reason;
      throw new ConnectFailure(`pod ${podName} did not answer: ${describe(error)}`);
    } finally {
      firstByte.cancel();
      probe.cancel();
    }
    if (translation) {
      try {
        upstream = await translation.answer(upstream);
      } catch (error) {
        settle();
        throw error;
      }
    }
    if (upstream.status < 500) this.#options.store.answered(podName);
    endLoad?.(upstream.ok);
    if (endLoad) this.#options.repoll(podName);
    const unloaded = unloads(url.pathname);
    if (upstream.ok && unloaded !== "none") {
      this.#options.store.markUnloaded(podName, unloaded === "all" ? undefined : model);
      this.#options.repoll(podName);
    }
    const responseHeaders = downstreamHeaders(upstream.headers);
    const headersAt = performance.now();
    outcome.recorded = true;
    if (upstream.status >= 500) this.#options.metrics?.upstreamError(podName, "http_5xx");
    // Time to first byte runs to the first body byte: a stream's headers can come
    // before its first token, which is what a user waits for.
    const logRequest = (bytes: number, end: string, firstByteAt = headersAt) =>
      this.#record(request, url, outcome, {
        pod: podName,
        status: upstream.status,
        end,
        bytes,
        ttfbMs: firstByteAt - started,
      });
    const relayEnded = (end: BodyEnd) => {
      settle();
      if (end.kind === "abandoned") {
        this.#abandoned(podName, model, end.leftAt);
        logRequest(end.bytes, "abandoned", end.firstByteAt);
      } else {
        logRequest(end.bytes, end.kind, end.firstByteAt);
      }
      const error = end.kind === "failed" || end.kind === "abandoned" ? end.error : undefined;
      if (error !== undefined && !(error instanceof StreamEnded)) {
        this.#options.metrics?.upstreamError(podName, "stream");
        log.warn("stream from pod {pod} failed after {bytes} bytes", {
          pod: podName,
          model,
          path: url.pathname,
          bytes: end.bytes,
          error: describe(error),
        });
      }
    };
    const whenClientLeaves = runsOnWithoutClient(url.pathname) ? "drain" : "cancel";
    if (leftAt !== undefined && upstream.body) {
      if (whenClientLeaves === "cancel") {
        settle();
        logRequest(0, "cancelled");
        await upstream.body.cancel();
        return errorResponse(url.pathname, 499, "the client went away");
      }
      // Gone before the answer began: read it all the same, for the pod's sake.
      discardBody(upstream.body, {
        idleTimeoutMs: this.#options.streamIdleTimeoutMs,
        open: this.#openStreams,
        onEnd: relayEnded,
      }, leftAt);
      return errorResponse(url.pathname, 499, "the client went away");
    }
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
      // Aborting the fetch ends the body read too.
      const idleMs = this.#options.streamIdleTimeoutMs;
      const stalled = deadlines.start(
        idleMs,
        () =>
          abort.abort(new StreamIdle(`it sent nothing for ${idleMs} ms (--stream-idle-timeout)`)),
      );
      let whole: Uint8Array<ArrayBuffer>;
      try {
        whole = await upstream.bytes();
      } catch (error) {
        settle();
        this.#options.metrics?.upstreamError(podName, "stream");
        log.warn("answer from pod {pod} failed before its end", {
          pod: podName,
          model,
          path: url.pathname,
          error: describe(error),
        });
        if (leftAt !== undefined) {
          this.#abandoned(podName, model, leftAt);
          logRequest(0, "abandoned");
          return errorResponse(url.pathname, 499, "the client went away");
        }
        logRequest(0, "failed");
        return errorResponse(
          url.pathname,
          502,
          `pod ${podName} failed while answering: ${describe(error)}`,
        );
      } finally {
        stalled.cancel();
      }
      settle();
      if (leftAt !== undefined) {
        this.#abandoned(podName, model, leftAt);
        logRequest(whole.byteLength, "abandoned");
        return errorResponse(url.pathname, 499, "the client went away");
      }
      logRequest(whole.byteLength, "done");
      return new WholeAnswer(whole, {
        status: upstream.status,
        statusText: upstream.statusText,
        headers: responseHeaders,
      });
    }
    const relayed = relayBody(upstream.body, {
      contentType: upstream.headers.get("content-type") ?? "",
      describeFailure: (error) => `pod ${podName} failed mid-stream: ${describe(error)}`,
      idleTimeoutMs: this.#options.streamIdleTimeoutMs,
      onEnd: relayEnded,
      open: this.#openStreams,
      whenClientLeaves,
    });
    return new Response(relayed, {
      status: upstream.status,
      statusText: upstream.statusText,
      headers: responseHeaders,
    });
  }

  /** Counts an answer read to its end after its client left, and the pod time it cost. */
  #abandoned(pod: string, model: string | undefined, leftAt: number): void {
    this.#options.metrics?.abandoned(
      pod,
      modelLabel(model, model !== undefined),
      (performance.now() - leftAt) / 1000,
    );
  }

  /**
   * Hands a request that takes a slot to the leading replica; undefined if it
   * cannot be reached (this replica then dispatches it itself).
   */
  async #toLeader(
    request: Request,
    url: URL,
    body: Uint8Array<ArrayBuffer> | null,
    leader: string,
    outcome: Outcome,
  ): Promise<Response | undefined> {
    const headers = upstreamHeaders(request.headers);
    setHeader(headers, FORWARDED, "1");
    const sent = performance.now();
    let answer: Response;
    try {
      answer = await fetch(leader + url.pathname + url.search, {
        method: request.method,
        headers,
        body: toSend(body),
        redirect: "manual",
        signal: request.signal,
      });
    } catch (error) {
      if (request.signal.aborted) return errorResponse(url.pathname, 499, "the client went away");
      log.warn("the leading replica {leader} cannot be reached ({error}); dispatching here", {
        leader,
        error: describe(error),
      });
      return undefined;
    }
    const headersAt = performance.now();
    outcome.recorded = true;
    // The leader counts the pod's side; here the pod is "leader".
    const finished = (bytes: number, end: string, firstByteAt = headersAt) =>
      this.#record(request, url, outcome, {
        pod: "leader",
        status: answer.status,
        end,
        bytes,
        ttfbMs: firstByteAt - sent,
      });
    if (!answer.body) {
      finished(0, "done");
      return new Response(null, {
        status: answer.status,
        headers: downstreamHeaders(answer.headers),
      });
    }
    // The leader reads a pod's answer to its end if this replica's client leaves.
    const relayed = relayBody(answer.body, {
      contentType: answer.headers.get("content-type") ?? "",
      describeFailure: (error) => `the leading replica failed mid-stream: ${describe(error)}`,
      idleTimeoutMs: this.#options.streamIdleTimeoutMs,
      onEnd: (end) => finished(end.bytes, end.kind, end.firstByteAt),
      open: this.#openStreams,
      whenClientLeaves: "cancel",
    });
    return new Response(relayed, {
      status: answer.status,
      statusText: answer.statusText,
      headers: downstreamHeaders(answer.headers),
    });
  }

  /** The request's metrics and its one log line, once its answer has ended. */
  #record(
    request: Request,
    url: URL,
    outcome: Outcome,
    result: { pod: string; status: number; end: string; bytes?: number; ttfbMs?: number },
  ): void {
    const durationMs = performance.now() - outcome.arrived;
    if (outcome.model !== undefined && result.ttfbMs !== undefined) {
      this.#options.onAnswered?.(outcome.model, result.ttfbMs);
    }
    this.#options.metrics?.finished({
      model: modelLabel(outcome.model, outcome.named),
      pod: result.pod,
      route: routeLabel(url.pathname),
      status: result.status,
      durationSeconds: durationMs / 1000,
      ttfbSeconds: result.ttfbMs === undefined ? undefined : result.ttfbMs / 1000,
    });
    log.info("{method} {path} {status} via {pod}", {
      method: request.method,
      path: url.pathname,
      model: outcome.model,
      pod: result.pod,
      status: result.status,
      outcome: result.status >= 400 && result.end === "done" ? "error" : result.end,
      durationMs: Math.round(durationMs),
      ttfbMs: result.ttfbMs === undefined ? undefined : Math.round(result.ttfbMs),
      bytes: result.bytes,
      requestId: requestIdOf(request),
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
    // A name can be as long as the body: the error need not echo megabytes.
    const name = requested.length > 200 ? `${requested.slice(0, 200)}...` : requested;
    return errorResponse(path, 404, `model '${name}' not found${hint}`);
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
function rewriteModel(
  source: ModelSource,
  model: string,
  path: string,
  body: Uint8Array<ArrayBuffer> | null,
  headers: HeaderList,
): { path: string; outgoing: BodyInit | Uint8Array<ArrayBuffer>[] | null } {
  if (source.from === "path") {
    return { path: source.prefix + encodeURIComponent(model) + source.rest, outgoing: body };
  }
  if (source.from === "form" && body) {
    return { path, outgoing: replaceFormModel(body, source, model) };
  }
  if (source.from === "json" && body) {
    if (!isJsonLabelled(headers)) setHeader(headers, "content-type", "application/json");
    return { path, outgoing: replaceJsonModel(body, source, model) };
  }
  return { path, outgoing: body };
}

/**
 * The most JSON values a request the router translates (openai_compat.ts) may
 * hold. Translating parses the whole body on the event loop, about 40 ns a value:
 * a 64 MiB body of small numbers held every other request for 1.3 s (issue 16).
 * A million values (about 40 ms) is far more than any chat a board can take.
 */
export const MAX_TRANSLATED_VALUES = 1_000_000;

const lenient = new TextDecoder();

function isJsonLabelled(headers: HeaderList): boolean {
  const type = (headerOf(headers, "content-type") ?? "").split(";")[0].trim().toLowerCase();
  return type === "application/json" || type.endsWith("+json");
}

/** Ollama and OpenAI paths, whose clients read `{"error": ...}` bodies. */
function isApiPath(path: string): boolean {
  return path.startsWith("/api/") || path.startsWith("/v1/");
}

function pickHeaders(headers: HeaderList, names: readonly string[]): HeaderList {
  return headers.filter(([name]) => names.includes(name));
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
