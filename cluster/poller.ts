/**
 * @module
 * Asks every pod what it has on disk (`GET /api/tags`, plus the image, speech and
 * transcription models only `GET /v1/models` lists), loaded (`GET /api/ps`), and
 * which server generation it is (`GET /api/version`, see store.ts), all
 * pods at once through a bounded pool, and writes each round to the store in one
 * update. Routing reads the store and never waits for a poll.
 */

import type { PollResult, Store } from "./store.ts";
import * as rkllama from "../rkllama/client.ts";
import { describeError, logger } from "../obs/log.ts";

const log = logger("poller");

/** How the poller paces itself. */
export interface PollerOptions {
  intervalMs: number;
  timeoutMs: number;
  /** Pods polled at the same time. */
  concurrency?: number;
}

/** Polls pods on a timer, and on demand after the router changed one. */
export class Poller {
  readonly #store: Store;
  readonly #options: Required<PollerOptions>;
  readonly #stopped = new AbortController();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #round: Promise<void> | undefined;
  #wasFailing = new Set<string>();

  constructor(store: Store, options: PollerOptions) {
    this.#store = store;
    this.#options = { concurrency: 32, ...options };
  }

  /** Polls every `intervalMs` (the first time after one interval) until {@linkcode Poller.stop}. */
  start(): void {
    const loop = async () => {
      this.#timer = undefined;
      const started = Date.now();
      await this.pollAll();
      if (this.#stopped.signal.aborted) return;
      const wait = Math.max(0, this.#options.intervalMs - (Date.now() - started));
      this.#timer = setTimeout(loop, wait);
    };
    this.#timer = setTimeout(loop, this.#options.intervalMs);
  }

  /**
   * One round over every known pod, started after any round in progress (whose
   * answers may predate what the caller wants to see); resolves when the store has
   * the results.
   */
  pollAll(): Promise<void> {
    const round = (this.#round ?? Promise.resolve()).then(() =>
      this.#pollPods([...this.#store.pods.peek().keys()])
    );
    this.#round = round;
    return round;
  }

  /** Polls one pod right away (after a load or unload the router did on it). */
  repoll(pod: string): Promise<void> {
    return this.#pollPods([pod]);
  }

  /** Stops the timer and abandons polls in flight. */
  stop(): void {
    this.#stopped.abort();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }

  async #pollPods(names: readonly string[]): Promise<void> {
    const results: PollResult[] = [];
    let next = 0;
    const worker = async () => {
      while (next < names.length && !this.#stopped.signal.aborted) {
        const name = names[next++];
        const pod = this.#store.pods.peek().get(name);
        if (pod) results.push(await this.#pollOne(name, pod.url));
      }
    };
    const workers = Math.min(this.#options.concurrency, names.length);
    await Promise.all(Array.from({ length: workers }, worker));
    if (this.#stopped.signal.aborted) return;
    this.#logTransitions(results);
    this.#store.applyPolls(results);
  }

  async #pollOne(name: string, url: string): Promise<PollResult> {
    const board = { name, url };
    const call = new rkllama.SharedDeadline({
      timeoutMs: this.#options.timeoutMs,
      signal: this.#stopped.signal,
    });
    try {
      const [tags, ps, openAI, version] = await Promise.all([
        rkllama.tags(board, call),
        rkllama.ps(board, call),
        rkllama.openAIModels(board, call),
        rkllama.version(board, call),
      ]);
      const otherModels = new Set([...openAI].filter((id) => !tags.has(id)));
      return {
        pod: name,
        ok: true,
        at: Date.now(),
        onDisk: tags,
        loaded: ps,
        otherModels,
        version,
      };
    } catch (error) {
      const message = error instanceof rkllama.BoardError ? error.message : describeError(error);
      return { pod: name, ok: false, at: Date.now(), error: message };
    }
  }

  #logTransitions(results: readonly PollResult[]): void {
    for (const result of results) {
      if (result.ok && this.#store.pods.peek().get(result.pod)?.polled === false) {
        // From now on the pod can take requests (when it is ready).
        log.info("pod {pod} answered its first poll: {models} models", {
          pod: result.pod,
          models: result.onDisk.size,
        });
      }
      if (!result.ok && !this.#wasFailing.has(result.pod)) {
        this.#wasFailing.add(result.pod);
        log.warn("poll of pod {pod} failed: {error}", { pod: result.pod, error: result.error });
      } else if (result.ok && this.#wasFailing.delete(result.pod)) {
        log.info("pod {pod} answers polls again", { pod: result.pod });
      }
    }
  }
}
