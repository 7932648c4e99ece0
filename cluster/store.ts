/**
 * @module
 * The one place that holds cluster state, as signals: the pods, what each has on
 * disk and loaded, and what the router is loading on them. Discovery writes pods
 * and models, the proxy marks cold loads; routes and admin endpoints read the
 * derived indexes. Per-request counters live in {@linkcode PodRuntime}, plain
 * numbers outside the reactive graph, so a request never triggers a recompute.
 */

import { computed, type ReadonlySignal, signal } from "@preact/signals-core";
import { backoffMs } from "../time/backoff.ts";

/** A model entry as a pod reported it in `/api/tags` or `/api/ps`, kept verbatim for aggregation. */
export type PodModelEntry = Readonly<Record<string, unknown>>;

/** Hot-path state of one pod, mutated in place by the proxy; deliberately not a signal. */
export interface PodRuntime {
  /** Requests sent to the pod whose response has not ended yet. */
  inflight: number;
  /**
   * Epoch ms before which the pod gets no new requests (passive health); after it,
   * the pod still waits for a poll that succeeds after `ejectedAt`.
   */
  ejectedUntil: number;
  /** Epoch ms of the last ejection (0: never). */
  ejectedAt: number;
  /** Why it was last ejected, for operators. */
  ejectedReason: string;
  /** Ejections since the pod last answered a request: each doubles the next one's length. */
  strikes: number;
  /**
   * Epoch ms the router last sent a request for each loaded model (or first saw
   * it loaded). RKLlama unloads a model after it has been idle for a while, and
   * the router must not trust a copy that may have just expired (see pick.ts).
   */
  lastSent: Map<string, number>;
}

/** Where a pod came from and whether its platform says it can serve. */
export interface PodIdentity {
  name: string;
  node: string;
  /** Base URL, e.g. `http://10.0.0.5:8080`. */
  url: string;
  /** Discovery's word: Kubernetes Ready condition, always true for static backends. */
  ready: boolean;
}

/** One pod as the store holds it: an immutable snapshot, replaced on every change. */
export interface PodRecord extends PodIdentity {
  /** Models on disk (`/api/tags`), by name. */
  onDisk: ReadonlyMap<string, PodModelEntry>;
  /**
   * Models `/v1/models` lists that `/api/tags` does not: image (`unet`), speech and
   * transcription models. They are routed to like models on disk, but are not
   * Ollama models, so `/api/tags` leaves them out.
   */
  otherModels: ReadonlySet<string>;
  /** Models loaded (`/api/ps`), by name. */
  loaded: ReadonlyMap<string, PodModelEntry>;
  /** Models the router is loading on the pod right now, with the epoch ms the load started. */
  loading: ReadonlyMap<string, number>;
  /** Has answered a poll at least once. */
  polled: boolean;
  /** Answered its last polls; false after too many failures in a row. */
  reachable: boolean;
  failedPolls: number;
  /**
   * Failed `--unreachable-after` polls in a row, whether or not it ever answered:
   * a pod that never answers is `unreachable`, not `pending` forever.
   */
  unreachable: boolean;
  lastPollAt: number;
  lastPollError: string;
  /**
   * An explicit load or unload the router is running on the pod, or "". A FastAPI
   * pod answers nothing meanwhile, polls included, so it gets no requests and its
   * failed polls do not count against it.
   */
  busy: string;
  /** What the pod's `/api/version` last said, or "" until it has said anything. */
  version: string;
  /** The RKLlama server generation, told by {@linkcode version} (see {@linkcode generationOf}). */
  generation: Generation;
  runtime: PodRuntime;
}

/**
 * The RKLlama server generation: `fastapi` (API version 0.0.54, whose OpenAI
 * streaming, `/v1/completions` and embeddings are broken), `flask` (0.0.70 on,
 * RKLlama's main, whose OpenAI endpoints work), or `unknown` before the pod has
 * told its version (or when it has none).
 */
export type Generation = "fastapi" | "flask" | "unknown";

/**
 * The generation of a pod whose `/api/version` says `version`: 0.0.70 and later is
 * the Flask generation; an earlier version is the FastAPI one (0.0.54), or an older
 * Flask server, which had fewer OpenAI endpoints still: either way one whose OpenAI
 * layer the router must stand in for.
 *
 * @example
 * ```ts
 * generationOf("0.0.54"); // "fastapi"
 * generationOf("0.0.74"); // "flask"
 * ```
 */
export function generationOf(version: string): Generation {
  const parts = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version.trim());
  if (!parts) return "unknown";
  const [major, minor, patch] = parts.slice(1).map(Number);
  const atLeast = major > 0 || minor > 0 || patch >= 70;
  return atLeast ? "flask" : "fastapi";
}

/** What one poll of one pod found. */
export type PollResult =
  | {
    pod: string;
    ok: true;
    at: number;
    onDisk: ReadonlyMap<string, PodModelEntry>;
    loaded: ReadonlyMap<string, PodModelEntry>;
    otherModels: ReadonlySet<string>;
    /** What `/api/version` said; undefined when it did not answer (the last word is kept). */
    version?: string;
  }
  | { pod: string; ok: false; at: number; error: string };

/** Ejections double in length at most this many times in a row (15 s grows to 4 min). */
export const MAX_EJECT_DOUBLINGS = 4;

/** True when the pod may get new requests at `now`. */
export function isRoutable(pod: PodRecord, now: number): boolean {
  return pod.ready && pod.reachable && pod.busy === "" && !isEjected(pod, now);
}

/**
 * True while an ejection holds: until its time is up and then until a poll has
 * shown the pod answering again (a pod that refused connections may still be
 * restarting when the time is up).
 */
export function isEjected(pod: PodRecord, now: number): boolean {
  return pod.runtime.ejectedUntil > now || pod.lastPollAt < pod.runtime.ejectedAt;
}

/** The routing state of a pod in words, for operators and `/router/pods`. */
export function podState(pod: PodRecord, now: number): string {
  if (!pod.ready) return "unready";
  if (!pod.polled && !pod.unreachable) return "pending";
  if (pod.busy !== "") return "loading";
  if (!pod.reachable) return "unreachable";
  if (isEjected(pod, now)) return "ejected";
  return "routable";
}

/** Where pods come from, and whether that source answers. */
export interface DiscoveryStatus {
  /** `static` (from `--backends`) or `kubernetes`. */
  mode: "static" | "kubernetes";
  /** The API server in use, for operators. */
  source: string;
  /** The last list or watch worked. */
  connected: boolean;
  /** Why the last attempt failed, or "". */
  error: string;
  /** Epoch ms of the last change of this status. */
  at: number;
}

/** The shared, signal-based cluster state. */
export class Store {
  readonly #pods = signal<ReadonlyMap<string, PodRecord>>(new Map());
  readonly #discovery = signal<DiscoveryStatus>({
    mode: "static",
    source: "--backends",
    connected: true,
    error: "",
    at: 0,
  });

  /** Where pods come from, and whether that source answers. */
  readonly discovery: ReadonlySignal<DiscoveryStatus> = this.#discovery;
  readonly #unreachableAfter: number;

  /** Pods by name. */
  readonly pods: ReadonlySignal<ReadonlyMap<string, PodRecord>> = this.#pods;

  /** Model → pods that have it loaded, in pod-name order. */
  readonly loadedOn: ReadonlySignal<ReadonlyMap<string, readonly PodRecord[]>> = computed(
    () => indexBy(this.#pods.value, (pod) => pod.loaded.keys()),
  );

  /** Model → pods that have it on disk (LLMs and other models), in pod-name order. */
  readonly onDiskOn: ReadonlySignal<ReadonlyMap<string, readonly PodRecord[]>> = computed(
    () => indexBy(this.#pods.value, (pod) => [...pod.onDisk.keys(), ...pod.otherModels]),
  );

  /** Every model name any pod has on disk or loaded. */
  readonly modelNames: ReadonlySignal<ReadonlySet<string>> = computed(
    () => new Set([...this.onDiskOn.value.keys(), ...this.loadedOn.value.keys()]),
  );

  readonly #pendingNodes = signal<ReadonlySet<string>>(new Set());

  /**
   * Nodes that run an RKLlama pod, including pods not in the store yet because
   * they have no IP (a DaemonSet rollout): a placement config may name them.
   */
  readonly nodeNames: ReadonlySignal<ReadonlySet<string>> = computed(() =>
    new Set(
      [...[...this.#pods.value.values()].map((pod) => pod.node), ...this.#pendingNodes.value]
        .filter((node) => node !== ""),
    )
  );

  /** Records the nodes of pods that discovery sees but cannot route to yet. */
  setPendingNodes(nodes: ReadonlySet<string>): void {
    const current = this.#pendingNodes.peek();
    if (current.size === nodes.size && [...nodes].every((node) => current.has(node))) return;
    this.#pendingNodes.value = nodes;
  }

  /** Pods in name order, for stable listings. */
  readonly podList: ReadonlySignal<readonly PodRecord[]> = computed(() =>
    [...this.#pods.value.values()].sort((a, b) => a.name.localeCompare(b.name))
  );

  /** @param unreachableAfter failed polls in a row after which a pod leaves routing */
  constructor(unreachableAfter = 3) {
    this.#unreachableAfter = unreachableAfter;
  }

  /** Records how discovery is doing (written by the discovery in use only). */
  setDiscovery(change: Partial<DiscoveryStatus>): void {
    this.#discovery.value = { ...this.#discovery.peek(), ...change };
  }

  /** Adds a pod or updates where it is and whether it is ready; keeps what it holds. */
  upsertPod(identity: PodIdentity): void {
    const pods = this.#pods.peek();
    const old = pods.get(identity.name);
    if (
      old && old.node === identity.node && old.url === identity.url &&
      old.ready === identity.ready
    ) return;
    const moved = old !== undefined && old.url !== identity.url;
    const record: PodRecord = old && !moved ? { ...old, ...identity } : {
      ...identity,
      onDisk: new Map(),
      otherModels: new Set(),
      loaded: new Map(),
      loading: new Map(),
      polled: false,
      reachable: false,
      failedPolls: 0,
      unreachable: false,
      lastPollAt: 0,
      lastPollError: "",
      busy: "",
      version: "",
      generation: "unknown",
      runtime: old?.runtime ??
        {
          inflight: 0,
          ejectedUntil: 0,
          ejectedAt: 0,
          ejectedReason: "",
          strikes: 0,
          lastSent: new Map(),
        },
    };
    this.#set(new Map(pods).set(identity.name, record));
  }

  /** Forgets a pod. */
  removePod(name: string): void {
    const pods = this.#pods.peek();
    if (!pods.has(name)) return;
    const next = new Map(pods);
    next.delete(name);
    this.#set(next);
    this.onRemove?.(name);
  }

  /** Told of every pod forgotten (for metrics); set by whoever owns the store. */
  onRemove: ((pod: string) => void) | undefined;

  /** Writes one poll round in a single update; results for pods no longer known are ignored. */
  applyPolls(results: readonly PollResult[]): void {
    if (results.length === 0) return;
    const pods = this.#pods.peek();
    const next = new Map(pods);
    for (const result of results) {
      const pod = next.get(result.pod);
      if (!pod) continue;
      if (result.ok) {
        noteLoaded(pod.runtime, result.loaded);
        // A model that shows up loaded has finished loading, whoever loaded it.
        const loading = new Map(
          [...pod.loading].filter(([model]) => !result.loaded.has(model)),
        );
        next.set(pod.name, {
          ...pod,
          onDisk: result.onDisk,
          otherModels: result.otherModels,
          loaded: result.loaded,
          loading,
          polled: true,
          reachable: true,
          failedPolls: 0,
          unreachable: false,
          lastPollAt: result.at,
          lastPollError: "",
          version: result.version ?? pod.version,
          generation: generationOf(result.version ?? pod.version),
        });
      } else if (pod.busy !== "") {
        next.set(pod.name, { ...pod, lastPollError: `${result.error} (while ${pod.busy})` });
      } else {
        const failedPolls = pod.failedPolls + 1;
        next.set(pod.name, {
          ...pod,
          failedPolls,
          reachable: pod.reachable && failedPolls < this.#unreachableAfter,
          unreachable: failedPolls >= this.#unreachableAfter,
          lastPollError: result.error,
        });
      }
    }
    this.#set(next);
  }

  /** Marks the pod busy with an explicit action (`description`), or not busy with "". */
  setBusy(podName: string, description: string): void {
    this.#update(podName, (pod) => pod.busy === description ? pod : { ...pod, busy: description });
  }

  /** Marks `model` as being loaded on the pod by a request the router sent. */
  markLoading(podName: string, model: string, since: number): void {
    this.#update(podName, (pod) => ({
      ...pod,
      loading: new Map(pod.loading).set(model, since),
    }));
  }

  /**
   * Ends a load the router started: on success the model counts as loaded at once
   * (the pod answered, so its worker is up) without waiting for the next poll.
   */
  finishLoading(podName: string, model: string, succeeded: boolean): void {
    this.#update(podName, (pod) => {
      if (!pod.loading.has(model) && (!succeeded || pod.loaded.has(model))) return pod;
      const loading = new Map(pod.loading);
      loading.delete(model);
      if (succeeded) pod.runtime.lastSent.set(model, Date.now());
      const loaded = succeeded && !pod.loaded.has(model)
        ? new Map(pod.loaded).set(model, pod.onDisk.get(model) ?? { name: model, model })
        : pod.loaded;
      return { ...pod, loading, loaded };
    });
  }

  /**
   * Forgets that the pod has `model` loaded (every model when undefined) once the
   * router has unloaded it, without waiting for the next poll: requests must not
   * follow a copy that is gone, or each would make the pod load it again at once.
   */
  markUnloaded(podName: string, model?: string): void {
    this.#update(podName, (pod) => {
      const gone = model === undefined ? [...pod.loaded.keys()] : [model];
      if (!gone.some((name) => pod.loaded.has(name))) return pod;
      const loaded = new Map(pod.loaded);
      for (const name of gone) {
        loaded.delete(name);
        pod.runtime.lastSent.delete(name);
      }
      return { ...pod, loaded };
    });
  }

  /** Told of every ejection (for logs and metrics); set by whoever owns the store. */
  onEject: ((pod: string, until: number, reason: string) => void) | undefined;

  /**
   * Takes the pod out of routing until `until` (epoch ms) and a poll after now has
   * succeeded (see {@linkcode isEjected}). What it had loaded may
   * be gone when it returns (a restarted container), so the first request for each
   * model afterwards goes alone (see pick.ts).
   */
  eject(podName: string, until: number, reason: string): void {
    const pod = this.#pods.peek().get(podName);
    if (!pod) return;
    pod.runtime.ejectedUntil = until;
    pod.runtime.ejectedAt = Date.now();
    pod.runtime.ejectedReason = reason;
    this.onEject?.(podName, until, reason);
    for (const model of pod.runtime.lastSent.keys()) pod.runtime.lastSent.set(model, 0);
  }

  /**
   * Ejects the pod for `baseMs`, doubled for each ejection since it last answered a
   * request (at most {@linkcode MAX_EJECT_DOUBLINGS} times): a pod that passes its
   * polls but fails every request is tried less and less often, not every `baseMs`.
   */
  ejectWithBackoff(podName: string, baseMs: number, reason: string, now = Date.now()): void {
    const runtime = this.#pods.peek().get(podName)?.runtime;
    if (!runtime) return;
    const ms = backoffMs(runtime.strikes, baseMs, baseMs * 2 ** MAX_EJECT_DOUBLINGS);
    runtime.strikes++;
    this.eject(podName, now + ms, reason);
  }

  /** The pod answered a request: its next ejection starts from the base length again. */
  answered(podName: string): void {
    const runtime = this.#pods.peek().get(podName)?.runtime;
    if (runtime) runtime.strikes = 0;
  }

  #update(podName: string, change: (pod: PodRecord) => PodRecord): void {
    const pods = this.#pods.peek();
    const pod = pods.get(podName);
    if (!pod) return;
    const changed = change(pod);
    if (changed !== pod) this.#set(new Map(pods).set(podName, changed));
  }

  #set(pods: ReadonlyMap<string, PodRecord>): void {
    this.#pods.value = pods;
  }
}

/** Starts the idle clock of newly loaded models; forgets those no longer loaded. */
function noteLoaded(runtime: PodRuntime, loaded: ReadonlyMap<string, PodModelEntry>): void {
  // A copy the router did not load may have been idle for any time already: its
  // first request goes alone (pick.ts), then the clock is the router's own.
  for (const model of loaded.keys()) {
    if (!runtime.lastSent.has(model)) runtime.lastSent.set(model, 0);
  }
  for (const model of runtime.lastSent.keys()) {
    if (!loaded.has(model)) runtime.lastSent.delete(model);
  }
}

function indexBy(
  pods: ReadonlyMap<string, PodRecord>,
  models: (pod: PodRecord) => Iterable<string>,
): ReadonlyMap<string, readonly PodRecord[]> {
  const index = new Map<string, PodRecord[]>();
  const sorted = [...pods.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const pod of sorted) {
    for (const model of models(pod)) {
      const list = index.get(model);
      if (list) list.push(pod);
      else index.set(model, [pod]);
    }
  }
  return index;
}
