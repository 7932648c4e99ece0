/**
 * @module
 * The informer loop every Kubernetes watch here uses: list, then watch from the
 * list's resourceVersion, and whenever the watch ends (server timeout, error,
 * 410 Gone, API outage) list again, after a growing delay if it failed. Listing on
 * every reconnect is what makes a missed deletion impossible: the list is the
 * whole truth, events between lists are only a head start.
 */

import * as k8s from "@kubernetes/client-node";
import { describeError as describe, logger } from "../obs/log.ts";
import { backoffMs } from "../time/backoff.ts";

const log = logger("kubernetes");

/**
 * How long one watch lasts before the server ends it and the loop lists again.
 * client-node gives up on a watch silent for 30 s, and a quiet namespace sends
 * nothing for minutes; ending each watch first keeps the reconnects clean.
 */
const WATCH_SECONDS = 25;

/** The first wait before listing again after a failure; it doubles up to `maxBackoffMs`. */
const RECONNECT_BASE_MS = 250;

/** Longest wait for one list. */
const LIST_TIMEOUT_MS = 30_000;

/**
 * How long past its server-side timeout a watch may stay open. Under Deno,
 * client-node's watch never reports a connection that broke (its HTTP client's
 * body does not fail on a drop or an abort), so this watchdog is what ends it.
 */
const WATCH_GRACE_MS = 10_000;

/**
 * Why a watch started again, other than its normal timeout: an error, an expired
 * resourceVersion (410 Gone), or a connection that went silent.
 */
export type WatchRestart = "error" | "expired" | "stalled";

/** One kind of object to list and watch. */
export interface ListWatchSource<T> {
  /** Named in logs: "pods", "configmap rkllama-model-config". */
  what: string;
  list(): Promise<{ items: T[]; metadata?: { resourceVersion?: string } }>;
  /** The collection's URL path, e.g. `/api/v1/namespaces/default/pods`. */
  watchPath: string;
  /** Selectors, the same as the list's. */
  watchQuery: Record<string, string | undefined>;
  /** The complete current state, after every list. */
  onList(items: T[]): void;
  onEvent(phase: "ADDED" | "MODIFIED" | "DELETED", object: T): void;
  /** Whether the API answers, and why not. */
  onStatus(connected: boolean, error: string): void;
}

/** Runs one list-then-watch loop until stopped. */
export class ListWatchLoop<T> {
  readonly #config: k8s.KubeConfig;
  readonly #source: ListWatchSource<T>;
  readonly #maxBackoffMs: number;
  readonly #onRestart: (reason: WatchRestart) => void;
  readonly #stopped = new AbortController();
  #watch: AbortController | undefined;
  #running: Promise<void> | undefined;
  #restarts = 0;

  constructor(
    config: k8s.KubeConfig,
    source: ListWatchSource<T>,
    options: { maxBackoffMs?: number; onRestart?: (reason: WatchRestart) => void } = {},
  ) {
    this.#config = config;
    this.#source = source;
    // Kept short so discovery is back within seconds of an API outage's end; a
    // list every 10 s per watch is no load for an API server.
    this.#maxBackoffMs = options.maxBackoffMs ?? 10_000;
    this.#onRestart = options.onRestart ?? (() => {});
  }

  /** Times the loop had to start again after an error. */
  get restarts(): number {
    return this.#restarts;
  }

  /** Starts the loop; resolves after the first list (or its failure). */
  start(): Promise<void> {
    const firstList = Promise.withResolvers<void>();
    this.#running = this.#run(() => firstList.resolve());
    return firstList.promise;
  }

  /** Ends the loop and waits for it. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    this.#watch?.abort();
    await this.#running;
  }

  async #run(listed: () => void): Promise<void> {
    const watcher = new k8s.Watch(this.#config);
    // Failures (or watches that ended at once) in a row.
    let attempt = 0;
    while (!this.#stopped.signal.aborted) {
      let failure: unknown;
      try {
        const list = await withDeadline(
          this.#source.list(),
          LIST_TIMEOUT_MS,
          `listing ${this.#source.what}`,
          this.#stopped.signal,
        );
        if (list === undefined) break;
        if (this.#stopped.signal.aborted) break;
        this.#source.onList(list.items);
        this.#source.onStatus(true, "");
        listed();
        const watchStarted = Date.now();
        failure = await this.#watchFrom(watcher, list.metadata?.resourceVersion ?? "");
        if (failure === undefined && Date.now() - watchStarted > 1000) attempt = 0;
      } catch (error) {
        failure = error;
      }
      listed();
      if (this.#stopped.signal.aborted) break;
      const backoff = backoffMs(attempt, RECONNECT_BASE_MS, this.#maxBackoffMs);
      if (failure !== undefined) {
        this.#restarts++;
        this.#onRestart("error");
        const message = describe(failure);
        this.#source.onStatus(false, message);
        log.warn("watch of {what} failed ({error}); retrying in {backoffMs} ms", {
          what: this.#source.what,
          error: message,
          backoffMs: backoff,
        });
      }
      // A watch that ends at once, again and again, must not become a tight loop.
      if (failure !== undefined || attempt > 0) await delay(backoff, this.#stopped.signal);
      attempt++;
    }
  }

  /** Resolves when the watch ends: undefined when it ended normally, else why. */
  async #watchFrom(watcher: k8s.Watch, resourceVersion: string): Promise<unknown> {
    const ended = Promise.withResolvers<unknown>();
    let expired = false;
    this.#watch = await watcher.watch(
      this.#source.watchPath,
      {
        ...this.#source.watchQuery,
        resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: WATCH_SECONDS,
      },
      (phase: string, object: T & { code?: number; message?: string }) => {
        if (phase === "ERROR") {
          // Usually 410 Gone: the resourceVersion is too old (the API server restarted
          // or compacted); a fresh list is the cure, so this is a normal end.
          expired = true;
          this.#onRestart("expired");
          log.info("watch of {what} expired ({code}); listing again", {
            what: this.#source.what,
            code: object.code,
          });
          ended.resolve(undefined);
          this.#watch?.abort();
          return;
        }
        if (phase === "ADDED" || phase === "MODIFIED" || phase === "DELETED") {
          this.#source.onEvent(phase, object);
        }
      },
      (error: unknown) => ended.resolve(error ?? undefined),
    );
    if (this.#stopped.signal.aborted) this.#watch.abort();
    const result = await withDeadline(
      ended.promise,
      WATCH_SECONDS * 1000 + WATCH_GRACE_MS,
      `watching ${this.#source.what}`,
      this.#stopped.signal,
    ).catch((error) => {
      // The watchdog fired: drop the silent connection and list again.
      this.#watch?.abort();
      this.#onRestart("stalled");
      log.info("{error}; listing again", { error: describe(error) });
      return undefined;
    });
    if (expired || this.#stopped.signal.aborted || isTimeout(result)) return undefined;
    return result;
  }
}

/**
 * The promise's value, or undefined once `stop` aborts; rejects when `ms` pass
 * first. client-node calls can hang on a dropped connection under Deno, and a
 * signal cannot reach into them, so the caller stops waiting instead.
 */
export async function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  stop?: AbortSignal,
): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onStop: (() => void) | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  const stopped = new Promise<undefined>((resolve) => {
    onStop = () => resolve(undefined);
    if (stop?.aborted) onStop();
    stop?.addEventListener("abort", onStop, { once: true });
  });
  try {
    return await Promise.race([promise, expired, stopped]);
  } finally {
    clearTimeout(timer);
    if (onStop) stop?.removeEventListener("abort", onStop);
  }
}

function isTimeout(error: unknown): boolean {
  return error instanceof Error && error.name === "TimeoutError";
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
