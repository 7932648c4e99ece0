/**
 * @module
 * A fake Kubernetes API server over real HTTP, so the router's Kubernetes
 * discovery can be tested with the official `@kubernetes/client-node` client,
 * unchanged, and without a cluster. It serves pods, configmaps and events
 * (core/v1) and leases (coordination.k8s.io/v1): list, watch, get, create,
 * replace, patch and delete, with label and field selectors, one global
 * resourceVersion, optimistic concurrency and errors as `Status` objects.
 *
 * Watches behave like the real API server's watch cache: a watch from a
 * resourceVersion replays every change after it, an unset or "0" version
 * starts with a synthetic ADDED per existing object, an object leaving a
 * watch's selector arrives as DELETED, and a version older than the kept
 * history gets a 200 response whose only event is an ERROR carrying a 410
 * `Expired` Status.
 *
 * Tests change objects directly ({@linkcode FakeKube.apply}, which emits watch
 * events) and break things on purpose: close every watch, expire every
 * resourceVersion handed out so far, or take the server away.
 *
 * Not modelled: authentication, pagination (`limit` is ignored), graceful pod
 * deletion (DELETE removes at once; build a pod with `deleting: true` to show
 * a terminating one), server-side apply, and namespaces as objects.
 */

/** The resources the fake serves, by their URL plural. */
export type KubeResource = "pods" | "configmaps" | "events" | "leases";

/** `metadata` of a Kubernetes object; the fake fills uid, resourceVersion and creationTimestamp. */
export interface KubeObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [field: string]: unknown;
}

/** Any Kubernetes object, as JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: KubeObjectMeta;
  [field: string]: unknown;
}

/** One HTTP request the fake received. */
export interface KubeRequest {
  method: string;
  /** URL path, e.g. `/api/v1/namespaces/default/pods`. */
  path: string;
  /** Query parameters, e.g. `{ watch: "true", resourceVersion: "12" }`. */
  query: Record<string, string>;
  /** The parsed JSON body, when there was one. */
  body?: unknown;
  /** Epoch milliseconds. */
  at: number;
}

/** How to start the fake. */
export interface FakeKubeOptions {
  /** Default "127.0.0.1". */
  hostname?: string;
  /** Default 0 (the OS picks). */
  port?: number;
  /**
   * When set, every watch that asked for bookmarks (`allowWatchBookmarks=true`)
   * gets a BOOKMARK this often, as the real server sends about once a minute.
   * Default: none, except by {@linkcode FakeKube.bookmark}.
   */
  bookmarkIntervalMs?: number;
  /** How many changes watches can replay before older resourceVersions expire (default 10000). */
  historyLimit?: number;
}

/** How an outage looks to clients. */
export type OutageMode =
  /** The server stops listening: connections are refused, as when the API server is down. */
  | "refused"
  /** The server answers every request with a 503 `ServiceUnavailable` Status, as a load balancer does. */
  | "unavailable";

/** A running fake API server; `await using` closes it. */
export interface FakeKube extends AsyncDisposable {
  /** "http://127.0.0.1:PORT", for a kubeconfig cluster `server` (with `skipTLSVerify: true`). */
  readonly url: string;
  readonly port: number;
  /** The current global resourceVersion (the one a list would return). */
  readonly resourceVersion: string;
  /** How many watch streams are open now. */
  readonly openWatches: number;
  /** Every request received, in order (the fake's own array: read it, do not change it). */
  readonly requests: readonly KubeRequest[];
  /**
   * Creates or replaces an object server-side, ignoring its resourceVersion,
   * and emits ADDED or MODIFIED to the watches. The namespace defaults to
   * "default". Returns the stored object.
   */
  apply(resource: KubeResource, object: KubeObject): KubeObject;
  /**
   * Changes a stored object by a JSON merge patch (RFC 7386: `null` removes a
   * field, arrays are replaced whole) and emits MODIFIED. Throws when the
   * object does not exist.
   */
  patch(resource: KubeResource, namespace: string, name: string, patch: unknown): KubeObject;
  /** Deletes an object server-side and emits DELETED; false when there was none. */
  remove(resource: KubeResource, namespace: string, name: string): boolean;
  /** A copy of a stored object. */
  get(resource: KubeResource, namespace: string, name: string): KubeObject | undefined;
  /** Copies of the stored objects, of one namespace or all, sorted by namespace then name. */
  list(resource: KubeResource, namespace?: string): KubeObject[];
  /**
   * Resolves with the first request (past or future) matching the predicate;
   * `since` skips the requests already recorded before that index (pass
   * `kube.requests.length` to wait for a new one). Rejects when the signal
   * aborts or the fake closes first.
   */
  waitForRequest(
    match: (request: KubeRequest) => boolean,
    options?: { since?: number; signal?: AbortSignal },
  ): Promise<KubeRequest>;
  /**
   * Takes the API away until {@linkcode FakeKube.restore}: every open watch
   * ends cleanly, as in a graceful API server shutdown, then new requests are
   * refused (default) or answered 503. Call {@linkcode FakeKube.cutWatches}
   * first to imitate a crash instead.
   */
  outage(mode?: OutageMode): Promise<void>;
  /** Ends an outage; the server listens on the same port again. */
  restore(): Promise<void>;
  /**
   * Makes every resourceVersion handed out so far too old, as an API server
   * restart or an etcd compaction does: a watch from one of them gets a 410
   * `Expired` ERROR event. Open watches stay open; call
   * {@linkcode FakeKube.closeWatches} as well to imitate a restart.
   */
  expireResourceVersions(): void;
  /** Ends every open watch cleanly, as the server does when a watch times out. */
  closeWatches(): void;
  /**
   * Drops the connection of every open watch mid-stream, as a crashed server
   * or a broken network does. Beware: under Deno, client-node's `Watch` never
   * notices (its done callback is not called, not even by its own inactivity
   * timeout), so only a client-side watchdog recovers.
   */
  cutWatches(): void;
  /** Sends a BOOKMARK to every open watch that asked for bookmarks. */
  bookmark(): void;
  /** Stops the server; safe to call more than once. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------
// Resources

interface ResourceInfo {
  group: string;
  kind: string;
  /** How the API names the resource in messages: `pods`, `leases.coordination.k8s.io`. */
  qualified: string;
  /** DELETE answers with the deleted object (pods) rather than a Success Status. */
  deleteReturnsObject: boolean;
  /** Field selectors the real API server supports besides metadata.name and metadata.namespace. */
  fields: readonly string[];
}

const COORDINATION = "coordination.k8s.io";

const RESOURCES: Record<KubeResource, ResourceInfo> = {
  pods: {
    group: "",
    kind: "Pod",
    qualified: "pods",
    deleteReturnsObject: true,
    fields: [
      "spec.nodeName",
      "spec.restartPolicy",
      "spec.schedulerName",
      "spec.serviceAccountName",
      "spec.hostNetwork",
      "status.phase",
      "status.podIP",
      "status.nominatedNodeName",
    ],
  },
  configmaps: {
    group: "",
    kind: "ConfigMap",
    qualified: "configmaps",
    deleteReturnsObject: false,
    fields: [],
  },
  events: {
    group: "",
    kind: "Event",
    qualified: "events",
    deleteReturnsObject: false,
    fields: [
      "involvedObject.kind",
      "involvedObject.namespace",
      "involvedObject.name",
      "involvedObject.uid",
      "involvedObject.apiVersion",
      "involvedObject.resourceVersion",
      "involvedObject.fieldPath",
      "reason",
      "reportingComponent",
      "source",
      "type",
    ],
  },
  leases: {
    group: COORDINATION,
    kind: "Lease",
    qualified: `leases.${COORDINATION}`,
    deleteReturnsObject: false,
    fields: [],
  },
};

function apiVersionOf(info: ResourceInfo): string {
  return info.group === "" ? "v1" : `${info.group}/v1`;
}

function isResource(name: string, group: string): name is KubeResource {
  return Object.hasOwn(RESOURCES, name) && RESOURCES[name as KubeResource].group === group;
}

// ---------------------------------------------------------------------------
// Object helpers for tests

/** How to build a pod object with {@linkcode podObject}. */
export interface PodObjectOptions {
  name: string;
  /** Default "default". */
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** `status.podIP`; without it the pod has no address yet, like a pending pod. */
  ip?: string;
  /** `spec.nodeName`. */
  node?: string;
  /** The Ready condition (default true). */
  ready?: boolean;
  /** `status.phase` (default "Running"). */
  phase?: string;
  /** When given, the container declares this port, named "http". */
  port?: number;
  /** Sets `deletionTimestamp`, as a pod being terminated has. */
  deleting?: boolean;
}

/** A Pod object with one container, shaped as the API server returns it. */
export function podObject(options: PodObjectOptions): KubeObject {
  const ready = options.ready ?? true;
  const metadata: KubeObjectMeta = {
    name: options.name,
    namespace: options.namespace ?? "default",
    labels: { ...options.labels },
  };
  if (options.annotations) metadata.annotations = { ...options.annotations };
  if (options.deleting) {
    metadata.deletionTimestamp = timestamp();
    metadata.deletionGracePeriodSeconds = 30;
  }
  const status: Record<string, unknown> = {
    phase: options.phase ?? "Running",
    conditions: [{ type: "Ready", status: ready ? "True" : "False" }],
  };
  if (options.ip) {
    status.podIP = options.ip;
    status.podIPs = [{ ip: options.ip }];
  }
  const container: Record<string, unknown> = { name: "rkllama", image: "rkllama:latest" };
  if (options.port !== undefined) {
    container.ports = [{ name: "http", containerPort: options.port, protocol: "TCP" }];
  }
  const spec: Record<string, unknown> = { containers: [container] };
  if (options.node) spec.nodeName = options.node;
  return { apiVersion: "v1", kind: "Pod", metadata, spec, status };
}

/** A ConfigMap object (namespace default "default"). */
export function configMapObject(
  name: string,
  data: Record<string, string>,
  namespace = "default",
): KubeObject {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace }, data: { ...data } };
}

// ---------------------------------------------------------------------------
// Errors as Status objects

class StatusError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly details?: Record<string, unknown>;

  constructor(code: number, reason: string, message: string, details?: Record<string, unknown>) {
    super(message);
    this.code = code;
    this.reason = reason;
    this.details = details;
  }

  toStatus(): KubeObject {
    const status: KubeObject = {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: this.message,
      reason: this.reason,
      code: this.code,
    };
    if (this.details) status.details = this.details;
    return status;
  }
}

function details(info: ResourceInfo, name: string): Record<string, unknown> {
  const result: Record<string, unknown> = { name, kind: info.qualified.split(".")[0] };
  if (info.group) result.group = info.group;
  return result;
}

function notFound(info: ResourceInfo, name: string): StatusError {
  return new StatusError(
    404,
    "NotFound",
    `${info.qualified} "${name}" not found`,
    details(info, name),
  );
}

function conflict(info: ResourceInfo, name: string, why: string): StatusError {
  return new StatusError(
    409,
    "Conflict",
    `Operation cannot be fulfilled on ${info.qualified} "${name}": ${why}`,
    details(info, name),
  );
}

const MODIFIED_CONFLICT =
  "the object has been modified; please apply your changes to the latest version and try again";

function badRequest(message: string): StatusError {
  return new StatusError(400, "BadRequest", message);
}

function statusResponse(error: StatusError): Response {
  return Response.json(error.toStatus(), { status: error.code });
}

// ---------------------------------------------------------------------------
// Selectors

interface LabelRequirement {
  key: string;
  op: "=" | "!=" | "exists" | "!exists" | "in" | "notin";
  values: string[];
}

/** Splits on commas that are not inside `in (...)` value lists. */
function splitTerms(text: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let start = 0;
  for (let index = 0; index < text.length; index++) {
    const char = text[index];
    if (char === "(") depth++;
    else if (char === ")") depth--;
    else if (char === "," && depth === 0) {
      terms.push(text.slice(start, index));
      start = index + 1;
    }
  }
  terms.push(text.slice(start));
  return terms.map((term) => term.trim()).filter((term) => term !== "");
}

const LABEL_KEY = String.raw`[A-Za-z0-9][-A-Za-z0-9_./]*`;
const LABEL_VALUE = String.raw`[-A-Za-z0-9_.]*`;
const SET_TERM = new RegExp(String.raw`^(${LABEL_KEY})\s+(in|notin)\s*\(([^()]*)\)$`);
const EQUALITY_TERM = new RegExp(String.raw`^(${LABEL_KEY})\s*(==|=|!=)\s*(${LABEL_VALUE})$`);
const EXISTS_TERM = new RegExp(String.raw`^(!?)\s*(${LABEL_KEY})$`);

function parseLabelSelector(text: string): LabelRequirement[] {
  return splitTerms(text).map((term) => {
    let match = SET_TERM.exec(term);
    if (match) {
      const values = match[3].split(",").map((value) => value.trim());
      return { key: match[1], op: match[2] as "in" | "notin", values };
    }
    match = EQUALITY_TERM.exec(term);
    if (match) {
      return { key: match[1], op: match[2] === "!=" ? "!=" : "=", values: [match[3]] };
    }
    match = EXISTS_TERM.exec(term);
    if (match) return { key: match[2], op: match[1] ? "!exists" : "exists", values: [] };
    throw badRequest(`unable to parse requirement: invalid label selector term "${term}"`);
  });
}

function labelsMatch(requirements: LabelRequirement[], object: KubeObject): boolean {
  const labels = object.metadata?.labels ?? {};
  return requirements.every(({ key, op, values }) => {
    const has = Object.hasOwn(labels, key);
    switch (op) {
      case "=":
      case "in":
        return has && values.includes(labels[key]);
      case "!=":
      case "notin":
        return !has || !values.includes(labels[key]);
      case "exists":
        return has;
      case "!exists":
        return !has;
    }
  });
}

interface FieldRequirement {
  path: string;
  negated: boolean;
  value: string;
}

function parseFieldSelector(text: string, info: ResourceInfo): FieldRequirement[] {
  return splitTerms(text).map((term) => {
    const match = /^([^=!]+)(==|=|!=)(.*)$/.exec(term);
    if (!match) throw badRequest(`invalid field selector: "${term}"`);
    const path = match[1].trim();
    if (
      path !== "metadata.name" && path !== "metadata.namespace" && !info.fields.includes(path)
    ) {
      throw badRequest(`field label not supported: ${path}`);
    }
    return { path, negated: match[2] === "!=", value: match[3].trim() };
  });
}

function fieldValue(object: KubeObject, path: string): string {
  // Events select on the component of `source`, under the plain name.
  const resolved = path === "source" ? "source.component" : path;
  let value: unknown = object;
  for (const part of resolved.split(".")) {
    value = isRecord(value) ? value[part] : undefined;
  }
  if (path === "spec.hostNetwork") return String(value ?? false);
  return value === undefined || value === null ? "" : String(value);
}

function fieldsMatch(requirements: FieldRequirement[], object: KubeObject): boolean {
  return requirements.every(({ path, negated, value }) =>
    (fieldValue(object, path) === value) !== negated
  );
}

// ---------------------------------------------------------------------------
// Patches

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * RFC 7386 JSON merge patch; client-node's strategic merge patches are treated
 * the same way. Parts of `target` the patch does not touch are shared, so pass
 * a copy of a stored object.
 */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isRecord(patch)) return structuredClone(patch);
  const result: Record<string, unknown> = isRecord(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, index) => deepEqual(item, b[index]));
  }
  if (isRecord(a) && isRecord(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length &&
      keys.every((key) => Object.hasOwn(b, key) && deepEqual(a[key], b[key]));
  }
  return false;
}

function invalidPatch(message: string): StatusError {
  return new StatusError(422, "Invalid", `the server rejected our request: ${message}`);
}

function pointerTokens(pointer: unknown): string[] {
  if (typeof pointer !== "string" || (pointer !== "" && !pointer.startsWith("/"))) {
    throw invalidPatch(`invalid JSON pointer ${JSON.stringify(pointer)}`);
  }
  if (pointer === "") return [];
  return pointer.slice(1).split("/").map((token) =>
    token.replaceAll("~1", "/").replaceAll("~0", "~")
  );
}

/** The container that holds the last token of a pointer, and that token. */
function parentOf(document: unknown, tokens: string[]): [unknown, string] {
  let parent = document;
  for (const token of tokens.slice(0, -1)) {
    if (Array.isArray(parent)) parent = parent[Number(token)];
    else if (isRecord(parent)) parent = parent[token];
    else parent = undefined;
    if (parent === undefined) throw invalidPatch(`path "/${tokens.join("/")}" does not exist`);
  }
  return [parent, tokens[tokens.length - 1]];
}

function arrayIndex(array: unknown[], token: string, forInsert: boolean): number {
  if (forInsert && token === "-") return array.length;
  const index = /^(0|[1-9][0-9]*)$/.test(token) ? Number(token) : -1;
  if (index < 0 || index > array.length || (!forInsert && index === array.length)) {
    throw invalidPatch(`array index "${token}" is out of range`);
  }
  return index;
}

function pointerGet(document: unknown, tokens: string[]): unknown {
  if (tokens.length === 0) return document;
  const [parent, token] = parentOf(document, tokens);
  if (Array.isArray(parent)) return parent[arrayIndex(parent, token, false)];
  if (isRecord(parent) && Object.hasOwn(parent, token)) return parent[token];
  throw invalidPatch(`path "/${tokens.join("/")}" does not exist`);
}

function pointerAdd(document: unknown, tokens: string[], value: unknown): unknown {
  if (tokens.length === 0) return value;
  const [parent, token] = parentOf(document, tokens);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, token, true), 0, value);
  else if (isRecord(parent)) parent[token] = value;
  else throw invalidPatch(`cannot add at "/${tokens.join("/")}"`);
  return document;
}

function pointerRemove(document: unknown, tokens: string[]): unknown {
  pointerGet(document, tokens);
  if (tokens.length === 0) return undefined;
  const [parent, token] = parentOf(document, tokens);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, token, false), 1);
  else delete (parent as Record<string, unknown>)[token];
  return document;
}

/** RFC 6902 JSON patch: client-node 2.x sends this content type unless told otherwise. */
function jsonPatch(target: unknown, operations: unknown): unknown {
  if (!Array.isArray(operations)) throw badRequest("a JSON patch must be an array of operations");
  let document = structuredClone(target);
  for (const operation of operations) {
    if (!isRecord(operation)) throw badRequest("a JSON patch operation must be an object");
    const path = pointerTokens(operation.path);
    switch (operation.op) {
      case "add":
        document = pointerAdd(document, path, structuredClone(operation.value));
        break;
      case "remove":
        document = pointerRemove(document, path);
        break;
      case "replace": {
        // Remove first: it fails, as replace must, when the path does not exist.
        const removed = pointerRemove(document, path);
        document = pointerAdd(removed, path, structuredClone(operation.value));
        break;
      }
      case "move": {
        const from = pointerTokens(operation.from);
        const value = pointerGet(document, from);
        document = pointerAdd(pointerRemove(document, from), path, value);
        break;
      }
      case "copy": {
        const value = structuredClone(pointerGet(document, pointerTokens(operation.from)));
        document = pointerAdd(document, path, value);
        break;
      }
      case "test":
        if (!deepEqual(pointerGet(document, path), operation.value)) {
          throw invalidPatch(`test failed at "${operation.path}"`);
        }
        break;
      default:
        throw badRequest(`unknown JSON patch operation ${JSON.stringify(operation.op)}`);
    }
  }
  return document;
}

// ---------------------------------------------------------------------------
// The server

/** RFC 3339 with whole seconds, as the API server writes `metav1.Time`. */
function timestamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
}

const NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789";

/** Five characters from the alphabet the API server draws `generateName` suffixes from. */
function randomSuffix(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(5));
  const letters = [...bytes].map((byte) =>
    NAME_SUFFIX_ALPHABET[byte % NAME_SUFFIX_ALPHABET.length]
  );
  return letters.join("");
}

function key(resource: KubeResource, namespace: string, name: string): string {
  return `${resource}/${namespace}/${name}`;
}

type ChangeType = "ADDED" | "MODIFIED" | "DELETED";

interface Change {
  revision: number;
  resource: KubeResource;
  type: ChangeType;
  object: KubeObject;
  /** The object before a MODIFIED change, to tell which watches it entered or left. */
  previous?: KubeObject;
}

interface Watcher {
  resource: KubeResource;
  namespace?: string;
  labels: LabelRequirement[];
  fields: FieldRequirement[];
  bookmarks: boolean;
  controller: ReadableStreamDefaultController<Uint8Array>;
  /** Stops the watch's timers. */
  stopTimers: (() => void)[];
  ended: boolean;
}

interface RequestWaiter {
  match: (request: KubeRequest) => boolean;
  since: number;
  resolve: (request: KubeRequest) => void;
  reject: (reason: unknown) => void;
}

const encoder = new TextEncoder();

class FakeKubeServer implements FakeKube {
  readonly requests: KubeRequest[] = [];
  readonly #hostname: string;
  readonly #bookmarkIntervalMs: number | undefined;
  readonly #historyLimit: number;
  readonly #objects = new Map<string, KubeObject>();
  readonly #watchers = new Set<Watcher>();
  readonly #waiters = new Set<RequestWaiter>();
  #history: Change[] = [];
  #revision = 0;
  /** A watch from a revision below this one cannot be replayed: 410. */
  #oldestWatchable = 0;
  #server: Deno.HttpServer<Deno.NetAddr> | undefined;
  #port = 0;
  #unavailable = false;
  #closed = false;

  constructor(hostname: string, options: FakeKubeOptions) {
    this.#hostname = hostname;
    this.#bookmarkIntervalMs = options.bookmarkIntervalMs;
    this.#historyLimit = options.historyLimit ?? 10_000;
  }

  listen(port: number): void {
    this.#server = Deno.serve(
      {
        hostname: this.#hostname,
        port,
        onListen: () => {},
        // Only a cut watch stream gets here (#handle answers every other error), and it is meant.
        onError: () => statusResponse(new StatusError(500, "InternalError", "stream cut")),
      },
      (request) => this.#handle(request),
    );
    this.#port = this.#server.addr.port;
  }

  get url(): string {
    const host = this.#hostname.includes(":") ? `[${this.#hostname}]` : this.#hostname;
    return `http://${host}:${this.#port}`;
  }

  get port(): number {
    return this.#port;
  }

  get resourceVersion(): string {
    return String(this.#revision);
  }

  get openWatches(): number {
    return this.#watchers.size;
  }

  // --- test controls -------------------------------------------------------

  apply(resource: KubeResource, object: KubeObject): KubeObject {
    const info = RESOURCES[resource];
    const stored = structuredClone(object);
    const metadata = stored.metadata ??= {};
    if (!metadata.name) throw new Error(`fake kube: a ${info.kind} needs metadata.name`);
    metadata.namespace ||= "default";
    const previous = this.#objects.get(key(resource, metadata.namespace, metadata.name));
    if (previous) {
      metadata.uid = previous.metadata!.uid;
      metadata.creationTimestamp = previous.metadata!.creationTimestamp;
      return this.#commit(resource, "MODIFIED", stored, previous);
    }
    this.#fillNew(info, stored);
    return this.#commit(resource, "ADDED", stored);
  }

  patch(resource: KubeResource, namespace: string, name: string, patch: unknown): KubeObject {
    const previous = this.#objects.get(key(resource, namespace, name));
    if (!previous) throw new Error(`fake kube: no ${resource} ${namespace}/${name}`);
    const next = mergePatch(structuredClone(previous), patch) as KubeObject;
    return this.#commit(resource, "MODIFIED", this.#keepIdentity(next, previous), previous);
  }

  remove(resource: KubeResource, namespace: string, name: string): boolean {
    const previous = this.#objects.get(key(resource, namespace, name));
    if (!previous) return false;
    this.#commit(resource, "DELETED", structuredClone(previous));
    return true;
  }

  get(resource: KubeResource, namespace: string, name: string): KubeObject | undefined {
    const object = this.#objects.get(key(resource, namespace, name));
    return object && structuredClone(object);
  }

  list(resource: KubeResource, namespace?: string): KubeObject[] {
    return this.#select(resource, namespace, [], []).map((object) => structuredClone(object));
  }

  waitForRequest(
    match: (request: KubeRequest) => boolean,
    options: { since?: number; signal?: AbortSignal } = {},
  ): Promise<KubeRequest> {
    const since = options.since ?? 0;
    const found = this.requests.slice(since).find(match);
    if (found) return Promise.resolve(found);
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#closed) return Promise.reject(new Error("fake kube closed"));
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#waiters.delete(waiter);
        reject(signal!.reason);
      };
      const waiter: RequestWaiter = {
        match,
        since,
        resolve: (request) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(request);
        },
        reject: (reason) => {
          signal?.removeEventListener("abort", onAbort);
          reject(reason);
        },
      };
      this.#waiters.add(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  async outage(mode: OutageMode = "refused"): Promise<void> {
    this.closeWatches();
    if (mode === "unavailable") {
      this.#unavailable = true;
      return;
    }
    const server = this.#server;
    this.#server = undefined;
    await server?.shutdown();
  }

  restore(): Promise<void> {
    this.#unavailable = false;
    if (!this.#server && !this.#closed) this.listen(this.#port);
    return Promise.resolve();
  }

  expireResourceVersions(): void {
    // A revision no object has: even a client that saw every change now holds an old one.
    this.#revision++;
    this.#oldestWatchable = this.#revision;
    this.#history = [];
  }

  closeWatches(): void {
    for (const watcher of [...this.#watchers]) this.#endWatch(watcher, false);
  }

  cutWatches(): void {
    for (const watcher of [...this.#watchers]) this.#endWatch(watcher, true);
  }

  bookmark(): void {
    for (const watcher of this.#watchers) {
      if (watcher.bookmarks) this.#sendBookmark(watcher);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.closeWatches();
    for (const waiter of [...this.#waiters]) waiter.reject(new Error("fake kube closed"));
    this.#waiters.clear();
    const server = this.#server;
    this.#server = undefined;
    await server?.shutdown();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // --- the store -----------------------------------------------------------

  #fillNew(info: ResourceInfo, object: KubeObject): void {
    object.apiVersion = apiVersionOf(info);
    object.kind = info.kind;
    const metadata = object.metadata!;
    metadata.uid = crypto.randomUUID();
    metadata.creationTimestamp = timestamp();
  }

  /** What a client may not change through an update. */
  #keepIdentity(next: KubeObject, previous: KubeObject): KubeObject {
    const metadata: KubeObjectMeta = isRecord(next.metadata) ? next.metadata : {};
    next.metadata = metadata;
    next.apiVersion = previous.apiVersion;
    next.kind = previous.kind;
    metadata.name = previous.metadata!.name;
    metadata.namespace = previous.metadata!.namespace;
    metadata.uid = previous.metadata!.uid;
    metadata.creationTimestamp = previous.metadata!.creationTimestamp;
    return next;
  }

  /** Stores a change under a new revision and tells the watches; returns a copy. */
  #commit(
    resource: KubeResource,
    type: ChangeType,
    object: KubeObject,
    previous?: KubeObject,
  ): KubeObject {
    const info = RESOURCES[resource];
    object.apiVersion = apiVersionOf(info);
    object.kind = info.kind;
    const metadata = object.metadata!;
    this.#revision++;
    metadata.resourceVersion = String(this.#revision);
    const objectKey = key(resource, metadata.namespace!, metadata.name!);
    if (type === "DELETED") this.#objects.delete(objectKey);
    else this.#objects.set(objectKey, object);
    const change: Change = { revision: this.#revision, resource, type, object, previous };
    this.#history.push(change);
    if (this.#history.length > this.#historyLimit) {
      const dropped = this.#history.splice(0, this.#history.length - this.#historyLimit);
      this.#oldestWatchable = dropped[dropped.length - 1].revision;
    }
    for (const watcher of [...this.#watchers]) this.#deliver(watcher, change);
    return structuredClone(object);
  }

  #select(
    resource: KubeResource,
    namespace: string | undefined,
    labels: LabelRequirement[],
    fields: FieldRequirement[],
  ): KubeObject[] {
    const found: KubeObject[] = [];
    for (const [objectKey, object] of this.#objects) {
      if (!objectKey.startsWith(`${resource}/`)) continue;
      if (namespace !== undefined && object.metadata!.namespace !== namespace) continue;
      if (labelsMatch(labels, object) && fieldsMatch(fields, object)) found.push(object);
    }
    return found.sort((a, b) =>
      a.metadata!.namespace!.localeCompare(b.metadata!.namespace!) ||
      a.metadata!.name!.localeCompare(b.metadata!.name!)
    );
  }

  // --- watches -------------------------------------------------------------

  #matches(watcher: Watcher, object: KubeObject | undefined): boolean {
    if (!object) return false;
    if (watcher.namespace !== undefined && object.metadata?.namespace !== watcher.namespace) {
      return false;
    }
    return labelsMatch(watcher.labels, object) && fieldsMatch(watcher.fields, object);
  }

  /** As the watch cache does: an object entering a selector is ADDED, one leaving it DELETED. */
  #deliver(watcher: Watcher, change: Change): void {
    if (change.resource !== watcher.resource) return;
    const now = this.#matches(watcher, change.object);
    if (change.type !== "MODIFIED") {
      if (now) this.#send(watcher, change.type, change.object);
      return;
    }
    const before = this.#matches(watcher, change.previous);
    if (now) this.#send(watcher, before ? "MODIFIED" : "ADDED", change.object);
    else if (before) {
      const last = structuredClone(change.previous!);
      last.metadata!.resourceVersion = change.object.metadata!.resourceVersion;
      this.#send(watcher, "DELETED", last);
    }
  }

  #send(watcher: Watcher, type: string, object: KubeObject): void {
    if (watcher.ended) return;
    try {
      watcher.controller.enqueue(encoder.encode(JSON.stringify({ type, object }) + "\n"));
    } catch {
      // The client went away between its cancel and our bookkeeping.
      this.#endWatch(watcher, false);
    }
  }

  #sendBookmark(watcher: Watcher): void {
    const info = RESOURCES[watcher.resource];
    this.#send(watcher, "BOOKMARK", {
      kind: info.kind,
      apiVersion: apiVersionOf(info),
      metadata: { resourceVersion: String(this.#revision) },
    });
  }

  /** Ends a watch stream: cleanly (the final chunk is sent) or cut, as a dropped connection. */
  #endWatch(watcher: Watcher, cut: boolean): void {
    if (watcher.ended) return;
    watcher.ended = true;
    this.#watchers.delete(watcher);
    for (const stop of watcher.stopTimers) stop();
    try {
      if (cut) watcher.controller.error(new Error("fake kube: connection cut"));
      else watcher.controller.close();
    } catch {
      // Already cancelled by the client.
    }
  }

  #watch(
    resource: KubeResource,
    namespace: string | undefined,
    query: Record<string, string>,
  ): Response {
    const info = RESOURCES[resource];
    const labels = parseLabelSelector(query.labelSelector ?? "");
    const fields = parseFieldSelector(query.fieldSelector ?? "", info);
    const from = query.resourceVersion ?? "";
    const fromRevision = from === "" ? 0 : Number(from);
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 0) {
      throw badRequest(`invalid resource version: "${from}"`);
    }
    let timeoutSeconds = 0;
    if (query.timeoutSeconds !== undefined) {
      timeoutSeconds = Number(query.timeoutSeconds);
      if (!Number.isFinite(timeoutSeconds) || timeoutSeconds < 0) {
        throw badRequest(`invalid timeoutSeconds: "${query.timeoutSeconds}"`);
      }
    }
    let watcher!: Watcher;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        watcher = {
          resource,
          namespace,
          labels,
          fields,
          bookmarks: query.allowWatchBookmarks === "true",
          controller,
          stopTimers: [],
          ended: false,
        };
      },
      cancel: () => this.#endWatch(watcher, false),
    });
    this.#watchers.add(watcher);
    if (fromRevision !== 0 && fromRevision < this.#oldestWatchable) {
      // The real server answers 200 and reports the expiry as the stream's only event.
      const expired = new StatusError(
        410,
        "Expired",
        `too old resource version: ${fromRevision} (${this.#oldestWatchable})`,
      );
      this.#send(watcher, "ERROR", expired.toStatus());
      this.#endWatch(watcher, false);
    } else {
      if (fromRevision === 0) {
        for (const object of this.#select(resource, namespace, labels, fields)) {
          this.#send(watcher, "ADDED", object);
        }
      } else {
        for (const change of this.#history) {
          if (change.revision > fromRevision) this.#deliver(watcher, change);
        }
      }
      if (timeoutSeconds > 0) {
        const timer = setTimeout(() => this.#endWatch(watcher, false), timeoutSeconds * 1000);
        watcher.stopTimers.push(() => clearTimeout(timer));
      }
      if (watcher.bookmarks && this.#bookmarkIntervalMs) {
        const timer = setInterval(() => this.#sendBookmark(watcher), this.#bookmarkIntervalMs);
        watcher.stopTimers.push(() => clearInterval(timer));
      }
    }
    return new Response(body, {
      headers: {
        "content-type": "application/json",
        // Deno.serve compresses JSON bodies unless told not to; events must go out one by one.
        "cache-control": "no-cache, no-transform",
      },
    });
  }

  // --- HTTP ----------------------------------------------------------------

  async #handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    let body: unknown;
    let bodyError: StatusError | undefined;
    const text = request.body ? await request.text() : "";
    if (text !== "") {
      try {
        body = JSON.parse(text);
      } catch {
        bodyError = badRequest("the request body is not valid JSON");
      }
    }
    const record: KubeRequest = {
      method: request.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      at: Date.now(),
    };
    if (body !== undefined) record.body = body;
    this.#record(record);
    if (this.#unavailable) {
      return statusResponse(
        new StatusError(503, "ServiceUnavailable", "the API server is unavailable (fake outage)"),
      );
    }
    try {
      if (bodyError) throw bodyError;
      return this.#route(request, url, record.query, body);
    } catch (error) {
      if (error instanceof StatusError) return statusResponse(error);
      const message = error instanceof Error ? error.message : String(error);
      return statusResponse(new StatusError(500, "InternalError", message));
    }
  }

  #record(request: KubeRequest): void {
    const index = this.requests.push(request) - 1;
    for (const waiter of [...this.#waiters]) {
      if (index >= waiter.since && waiter.match(request)) {
        this.#waiters.delete(waiter);
        waiter.resolve(request);
      }
    }
  }

  #route(
    request: Request,
    url: URL,
    query: Record<string, string>,
    body: unknown,
  ): Response {
    const parts = url.pathname.split("/").filter((part) => part !== "").map(decodeURIComponent);
    if (parts.length === 1 && ["healthz", "livez", "readyz"].includes(parts[0])) {
      return new Response("ok", { headers: { "content-type": "text/plain" } });
    }
    if (parts.length === 1 && parts[0] === "version") {
      return Response.json({ major: "1", minor: "31", gitVersion: "v1.31.0-fake" });
    }
    let group: string;
    let rest: string[];
    if (parts[0] === "api" && parts[1] === "v1") {
      group = "";
      rest = parts.slice(2);
    } else if (parts[0] === "apis" && parts[1] === COORDINATION && parts[2] === "v1") {
      group = COORDINATION;
      rest = parts.slice(3);
    } else {
      throw new StatusError(404, "NotFound", "the server could not find the requested resource");
    }
    let namespace: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const [resource, name, ...extra] = rest;
    if (!resource || !isResource(resource, group) || extra.length > 0) {
      throw new StatusError(404, "NotFound", "the server could not find the requested resource");
    }
    const method = request.method;
    if (name === undefined) {
      if (method === "GET") {
        if (query.watch === "true" || query.watch === "1") {
          return this.#watch(resource, namespace, query);
        }
        return this.#listResponse(resource, namespace, query);
      }
      if (method === "POST" && namespace !== undefined) {
        return this.#create(resource, namespace, body, query);
      }
    } else if (namespace !== undefined) {
      switch (method) {
        case "GET":
          return this.#getResponse(resource, namespace, name);
        case "PUT":
          return this.#replace(resource, namespace, name, body, query);
        case "PATCH":
          return this.#patch(
            resource,
            namespace,
            name,
            body,
            request.headers.get("content-type") ?? "",
            query,
          );
        case "DELETE":
          return this.#delete(resource, namespace, name, body, query);
      }
    }
    throw new StatusError(
      405,
      "MethodNotAllowed",
      `the server does not allow this method on the requested resource`,
    );
  }

  #existing(resource: KubeResource, namespace: string, name: string): KubeObject {
    const object = this.#objects.get(key(resource, namespace, name));
    if (!object) throw notFound(RESOURCES[resource], name);
    return object;
  }

  #listResponse(
    resource: KubeResource,
    namespace: string | undefined,
    query: Record<string, string>,
  ): Response {
    const info = RESOURCES[resource];
    const labels = parseLabelSelector(query.labelSelector ?? "");
    const fields = parseFieldSelector(query.fieldSelector ?? "", info);
    // Items of a real list carry no kind or apiVersion; only the list does.
    const items = this.#select(resource, namespace, labels, fields).map((object) => {
      const { kind: _kind, apiVersion: _apiVersion, ...rest } = object;
      return rest;
    });
    return Response.json({
      kind: `${info.kind}List`,
      apiVersion: apiVersionOf(info),
      metadata: { resourceVersion: String(this.#revision) },
      items,
    });
  }

  #getResponse(resource: KubeResource, namespace: string, name: string): Response {
    return Response.json(this.#existing(resource, namespace, name));
  }

  #create(
    resource: KubeResource,
    namespace: string,
    body: unknown,
    query: Record<string, string>,
  ): Response {
    const info = RESOURCES[resource];
    if (!isRecord(body)) throw badRequest(`a ${info.kind} must be a JSON object`);
    const object = structuredClone(body) as KubeObject;
    const metadata: KubeObjectMeta = isRecord(object.metadata) ? object.metadata : {};
    object.metadata = metadata;
    if (metadata.namespace && metadata.namespace !== namespace) {
      throw badRequest(
        "the namespace of the provided object does not match the namespace sent on the request",
      );
    }
    metadata.namespace = namespace;
    if (!metadata.name && metadata.generateName) {
      metadata.name = `${metadata.generateName}${randomSuffix()}`;
    }
    if (!metadata.name) {
      throw new StatusError(
        422,
        "Invalid",
        `${info.kind} "" is invalid: metadata.name: Required value: name or generateName is required`,
      );
    }
    if (metadata.resourceVersion) {
      // etcd's own wording, passed through as an internal error by the real server.
      throw new StatusError(
        500,
        "InternalError",
        "resourceVersion should not be set on objects to be created",
      );
    }
    if (this.#objects.has(key(resource, namespace, metadata.name))) {
      throw new StatusError(
        409,
        "AlreadyExists",
        `${info.qualified} "${metadata.name}" already exists`,
        details(info, metadata.name),
      );
    }
    this.#fillNew(info, object);
    if (query.dryRun) return Response.json(object, { status: 201 });
    return Response.json(this.#commit(resource, "ADDED", object), { status: 201 });
  }

  #replace(
    resource: KubeResource,
    namespace: string,
    name: string,
    body: unknown,
    query: Record<string, string>,
  ): Response {
    const info = RESOURCES[resource];
    if (!isRecord(body)) throw badRequest(`a ${info.kind} must be a JSON object`);
    const object = structuredClone(body) as KubeObject;
    const metadata = isRecord(object.metadata) ? object.metadata : {};
    if (metadata.name !== name) {
      throw badRequest(
        `the name of the object (${
          metadata.name ?? ""
        }) does not match the name on the URL (${name})`,
      );
    }
    if (metadata.namespace && metadata.namespace !== namespace) {
      throw badRequest(
        "the namespace of the provided object does not match the namespace sent on the request",
      );
    }
    const previous = this.#existing(resource, namespace, name);
    return this.#update(resource, object, previous, query);
  }

  #patch(
    resource: KubeResource,
    namespace: string,
    name: string,
    body: unknown,
    contentType: string,
    query: Record<string, string>,
  ): Response {
    const mediaType = contentType.split(";")[0].trim().toLowerCase();
    const previous = this.#existing(resource, namespace, name);
    let next: unknown;
    if (mediaType === "application/json-patch+json") {
      next = jsonPatch(previous, body);
    } else if (
      mediaType === "application/merge-patch+json" ||
      mediaType === "application/strategic-merge-patch+json"
    ) {
      if (!isRecord(body)) throw badRequest("a merge patch must be a JSON object");
      next = mergePatch(structuredClone(previous), body);
    } else {
      throw new StatusError(
        415,
        "UnsupportedMediaType",
        `the body of the request was in an unknown format - accepted media types include: ` +
          `application/json-patch+json, application/merge-patch+json, ` +
          `application/strategic-merge-patch+json`,
      );
    }
    if (!isRecord(next)) throw invalidPatch("the patched object is not a JSON object");
    return this.#update(resource, next as KubeObject, previous, query);
  }

  /** A PUT or PATCH result: a resourceVersion it carries must still be current. */
  #update(
    resource: KubeResource,
    object: KubeObject,
    previous: KubeObject,
    query: Record<string, string>,
  ): Response {
    const info = RESOURCES[resource];
    const wanted = isRecord(object.metadata) ? object.metadata.resourceVersion : undefined;
    if (wanted !== undefined && wanted !== "" && wanted !== previous.metadata!.resourceVersion) {
      throw conflict(info, previous.metadata!.name!, MODIFIED_CONFLICT);
    }
    const next = this.#keepIdentity(object, previous);
    // Only the API server's own deletion sets deletionTimestamp; updates cannot change it.
    if (previous.metadata!.deletionTimestamp) {
      next.metadata!.deletionTimestamp = previous.metadata!.deletionTimestamp;
    } else delete next.metadata!.deletionTimestamp;
    if (query.dryRun) return Response.json(next);
    return Response.json(this.#commit(resource, "MODIFIED", next, previous));
  }

  #delete(
    resource: KubeResource,
    namespace: string,
    name: string,
    body: unknown,
    query: Record<string, string>,
  ): Response {
    const info = RESOURCES[resource];
    const previous = this.#existing(resource, namespace, name);
    const preconditions = isRecord(body) && isRecord(body.preconditions) ? body.preconditions : {};
    const uid = previous.metadata!.uid;
    const resourceVersion = previous.metadata!.resourceVersion;
    if (preconditions.uid && preconditions.uid !== uid) {
      throw conflict(
        info,
        name,
        `Precondition failed: UID in precondition: ${preconditions.uid}, UID in object meta: ${uid}`,
      );
    }
    if (preconditions.resourceVersion && preconditions.resourceVersion !== resourceVersion) {
      throw conflict(
        info,
        name,
        `Precondition failed: ResourceVersion in precondition: ${preconditions.resourceVersion}, ` +
          `ResourceVersion in object meta: ${resourceVersion}`,
      );
    }
    const deleted = query.dryRun
      ? structuredClone(previous)
      : this.#commit(resource, "DELETED", structuredClone(previous));
    if (info.deleteReturnsObject) return Response.json(deleted);
    return Response.json({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Success",
      details: { ...details(info, name), uid },
    });
  }
}

/** Starts a fake Kubernetes API server on 127.0.0.1 (port 0 by default). */
export function startFakeKube(options: FakeKubeOptions = {}): Promise<FakeKube> {
  const kube = new FakeKubeServer(options.hostname ?? "127.0.0.1", options);
  kube.listen(options.port ?? 0);
  return Promise.resolve(kube);
}
