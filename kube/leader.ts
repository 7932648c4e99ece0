/**
 * @module
 * Leader election on a `coordination.k8s.io/v1` Lease, with client-go's rules:
 * the holder renews every retry period; it stops counting itself leader as soon
 * as a renewal has not succeeded within the renew deadline, or it sees another
 * holder; a candidate takes the Lease only once the holder's record has not
 * changed for a whole lease duration, measured on its own clock (so clock skew
 * between replicas does not matter); every write carries the resourceVersion
 * read, so two candidates cannot both win. On stop the leader releases the Lease.
 */

import * as k8s from "@kubernetes/client-node";
import { type ReadonlySignal, signal } from "@preact/signals-core";
import type { KubeConnection } from "./kubernetes.ts";
import { withDeadline } from "./list_watch.ts";
import { describeError as describe, logger } from "../obs/log.ts";

const log = logger("leader");

/** Timings, as in client-go's LeaderElectionConfig. */
export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** Where other replicas reach this one, published on the Lease while it leads ("" for none). */
  advertiseUrl?: string;
}

/** The Lease annotation that carries the leader's URL. */
export const LEADER_URL_ANNOTATION = "rkllama-router/url";

/** Takes part in the election until stopped. */
export class LeaderElector {
  readonly #api: k8s.CoordinationV1Api;
  readonly #options: Required<LeaderOptions>;
  readonly #leading = signal(false);
  readonly #stopped = new AbortController();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastRenew = 0;
  #observed: { record: string; at: number } = { record: "", at: 0 };
  #holder = "";
  #lastError = "";
  #round: Promise<void> | undefined;
  #roundNumber = 0;
  #leaderUrl = "";

  constructor(connection: KubeConnection, options: LeaderOptions) {
    this.#api = connection.config.makeApiClient(k8s.CoordinationV1Api);
    this.#options = {
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      advertiseUrl: "",
      ...options,
    };
  }

  /** True while this replica holds the Lease and renewed it within the renew deadline. */
  isLeader(): boolean {
    if (this.#leading.peek() && Date.now() - this.#lastRenew > this.#options.renewDeadlineMs) {
      this.#setLeading(false, "renewal overdue");
    }
    return this.#leading.peek();
  }

  /** A signal of {@linkcode LeaderElector.isLeader}, for whoever reacts to changes. */
  get leading(): ReadonlySignal<boolean> {
    return this.#leading;
  }

  /**
   * The leader's URL as it published it, when another replica leads and has not
   * let its Lease lapse; else "".
   */
  get leaderUrl(): string {
    // Holding the Lease without a recent renewal (the API was away) is no one else leading.
    if (this.#leading.peek() || this.#holder === "" || this.#holder === this.#options.identity) {
      return "";
    }
    if (this.#leaderUrl === "") return "";
    return this.#leaderUrl === this.#options.advertiseUrl ? "" : this.#leaderUrl;
  }

  #annotations(): Record<string, string> {
    return this.#options.advertiseUrl === ""
      ? {}
      : { [LEADER_URL_ANNOTATION]: this.#options.advertiseUrl };
  }

  /** Who holds the Lease as last seen, and the last error talking to the API. */
  get status(): { identity: string; holder: string; leader: boolean; error: string } {
    return {
      identity: this.#options.identity,
      holder: this.#holder,
      leader: this.isLeader(),
      error: this.#lastError,
    };
  }

  /** Tries now, then every retry period. */
  start(): void {
    const loop = async () => {
      this.#round = this.tryOnce();
      await this.#round;
      if (!this.#stopped.signal.aborted) {
        this.#timer = setTimeout(loop, this.#options.retryPeriodMs);
      }
    };
    loop();
  }

  /** Stops taking part; a leader gives the Lease up so another replica takes over at once. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    clearTimeout(this.#timer);
    await this.#round;
    if (!this.#leading.peek()) return;
    this.#setLeading(false, "stopping");
    try {
      await withDeadline(this.#release(), this.#options.renewDeadlineMs, "releasing the Lease");
    } catch (error) {
      log.warn("could not release the Lease: {error}", { error: describe(error) });
    }
  }

  async #release(): Promise<void> {
    const lease = await this.#read();
    if (lease?.spec?.holderIdentity !== this.#options.identity) return;
    lease.spec = { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1 };
    await this.#api.replaceNamespacedLease({
      namespace: this.#options.namespace,
      name: this.#options.name,
      body: lease,
    });
    log.info("released the Lease {name}", { name: this.#options.name });
  }

  /** One election round: create, renew or take over the Lease, or follow. */
  async tryOnce(): Promise<void> {
    // A call that hangs (client-node on a dropped connection) must not stall the
    // election: past the renew deadline the round is abandoned, and if its answer
    // comes later it is ignored (the round number has moved on).
    const round = ++this.#roundNumber;
    try {
      await withDeadline(
        this.#electionRound(round),
        this.#options.renewDeadlineMs,
        "a Lease call",
      );
    } catch (error) {
      this.#lastError = describe(error);
    }
  }

  async #electionRound(round: number): Promise<void> {
    const { namespace, name, identity } = this.#options;
    const durationSeconds = Math.max(1, Math.round(this.#options.leaseDurationMs / 1000));
    try {
      const lease = await this.#read();
      const now = new k8s.V1MicroTime();
      if (!lease) {
        await this.#api.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace, annotations: this.#annotations() },
            spec: {
              holderIdentity: identity,
              leaseDurationSeconds: durationSeconds,
              acquireTime: now,
              renewTime: now,
              leaseTransitions: 0,
            },
          },
        });
        this.#won(round);
        return;
      }
      const spec = lease.spec ?? {};
      const holder = spec.holderIdentity ?? "";
      this.#holder = holder;
      this.#leaderUrl = lease.metadata?.annotations?.[LEADER_URL_ANNOTATION] ?? "";
      lease.metadata = {
        ...lease.metadata,
        annotations: { ...lease.metadata?.annotations, ...this.#annotations() },
      };
      const record = JSON.stringify([holder, spec.renewTime, spec.leaseDurationSeconds]);
      if (record !== this.#observed.record) this.#observed = { record, at: Date.now() };
      if (holder === identity) {
        lease.spec = { ...spec, renewTime: now, leaseDurationSeconds: durationSeconds };
        await this.#api.replaceNamespacedLease({ namespace, name, body: lease });
        this.#won(round);
        return;
      }
      const heldFor = (spec.leaseDurationSeconds ?? durationSeconds) * 1000;
      const expired = holder === "" || Date.now() - this.#observed.at > heldFor;
      if (!expired) {
        this.#setLeading(false, `held by ${holder}`);
        this.#lastError = "";
        return;
      }
      lease.spec = {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds: durationSeconds,
        acquireTime: now,
        renewTime: now,
        leaseTransitions: (spec.leaseTransitions ?? 0) + 1,
      };
      await this.#api.replaceNamespacedLease({ namespace, name, body: lease });
      this.#won(round);
    } catch (error) {
      // A conflict means another replica wrote first: it leads, this one follows.
      this.#lastError = describe(error);
      if (this.#leading.peek() && Date.now() - this.#lastRenew > this.#options.renewDeadlineMs) {
        this.#setLeading(false, this.#lastError);
      }
    }
  }

  async #read(): Promise<k8s.V1Lease | undefined> {
    try {
      return await this.#api.readNamespacedLease({
        namespace: this.#options.namespace,
        name: this.#options.name,
      });
    } catch (error) {
      if ((error as { code?: number }).code === 404) return undefined;
      throw error;
    }
  }

  #won(round: number): void {
    if (round !== this.#roundNumber || this.#stopped.signal.aborted) return;
    this.#lastRenew = Date.now();
    this.#holder = this.#options.identity;
    this.#leaderUrl = this.#options.advertiseUrl;
    this.#lastError = "";
    this.#setLeading(true, "holds the Lease");
  }

  #setLeading(leading: boolean, why: string): void {
    if (this.#leading.peek() === leading) return;
    this.#leading.value = leading;
    log.info(leading ? "{identity} leads: {why}" : "{identity} follows: {why}", {
      identity: this.#options.identity,
      why,
    });
  }
}
