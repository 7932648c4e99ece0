/**
 * @module
 * The router against a real control plane (`deno task test:cluster`): etcd and an
 * unmodified kube-apiserver with RBAC (`test/control_plane.ts`, binaries from
 * `test/envtest/assets.sh`), `deploy/` applied to it, and two router processes run
 * with the start task's permissions, authenticated as the ServiceAccount of
 * `deploy/` with a token from the TokenRequest API:
 * - router A in-cluster style: `KUBERNETES_SERVICE_HOST`/`_PORT` and the token,
 *   CA and namespace in `/var/run/secrets/kubernetes.io/serviceaccount`, which a
 *   private mount namespace provides to that process only (root and `unshare`);
 * - router B through `--kube-api` and a `kubectl proxy` stand-in that adds the
 *   token (also router A's way when there is no `unshare`).
 *
 * Pods are Pod objects whose status the test writes as a kubelet would (status
 * subresource: Running, Ready, a 127.0.0.x pod IP where a simulated RKLlama pod
 * listens). The audit log shows every request the ServiceAccount made: none may be
 * refused, and every permission the Role grants must have been used.
 */

import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { startSimCluster } from "../sim/cluster.ts";
import type { SimPod } from "../sim/pod.ts";
import {
  ADMIN_TOKEN,
  ApiError,
  type AuditEvent,
  type ControlPlane,
  type KubeObject,
  startControlPlane,
} from "./control_plane.ts";

const ROOT = new URL("../", import.meta.url);
/** Where deploy/ goes; not its own namespace, so the namespace adjustment is tested too. */
const NS = "router-envtest";
const SA_USER = `system:serviceaccount:${NS}:rkllama-router`;
/** Longest wait for anything the router does after an API change. */
const STEP_MS = 30_000;
/** The router's Lease timings (kube/leader.ts): duration and retry period. */
const LEASE_MS = 15_000;
const RETRY_MS = 2_000;
const MERGE = "application/merge-patch+json";
const SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

// ---------------------------------------------------------------------------
// The binaries, or a clear skip

/** The directory with kube-apiserver and etcd, or why there is none. */
async function findAssets(): Promise<{ dir: string } | { skip: string }> {
  const output = await new Deno.Command("bash", {
    args: [new URL("./envtest/assets.sh", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const last = new TextDecoder().decode(output.stdout).trim().split("\n").at(-1) ?? "";
  if (!output.success) throw new Error(`test/envtest/assets.sh failed (exit ${output.code})`);
  return last.startsWith("skip:") ? { skip: last.slice(5).trim() } : { dir: last };
}

// ---------------------------------------------------------------------------
// deploy/, namespace-adjusted

/** The objects of deploy/kustomization.yaml's resources, moved to `namespace` as kustomize does. */
async function deployObjects(namespace: string): Promise<KubeObject[]> {
  const read = async (file: string) =>
    parseAllDocuments(await Deno.readTextFile(new URL(`deploy/${file}`, ROOT)))
      .map((document) => document.toJS()).filter((object) => object !== null) as KubeObject[];
  const [kustomization] = await read("kustomization.yaml");
  const objects = (await Promise.all((kustomization.resources as string[]).map(read))).flat();
  for (const object of objects) {
    object.metadata.namespace = namespace;
    for (const subject of object.subjects ?? []) {
      if (subject.kind === "ServiceAccount") subject.namespace = namespace;
    }
  }
  return objects;
}

/** The collection path of a namespaced object (every kind in deploy/ has a regular plural). */
function collectionPath(object: KubeObject): string {
  const group = object.apiVersion === "v1" ? "/api/v1" : `/apis/${object.apiVersion}`;
  return `${group}/namespaces/${object.metadata.namespace}/${object.kind.toLowerCase()}s`;
}

// ---------------------------------------------------------------------------
// Waiting on the API

/**
 * Resolves with the first object of the collection that satisfies `match`: from
 * a list, else from a watch started at the list's resourceVersion. Bounded by `ms`.
 */
async function objectReaches(
  kube: ControlPlane,
  collection: string,
  match: (object: KubeObject) => boolean,
  what: string,
  ms = STEP_MS,
): Promise<KubeObject> {
  const list = await kube.call(`GET`, collection);
  const found = (list.items as KubeObject[]).find(match);
  if (found) return found;
  const url = new URL(`${kube.url}${collection}`);
  url.searchParams.set("watch", "true");
  url.searchParams.set("resourceVersion", list.metadata.resourceVersion);
  url.searchParams.set("timeoutSeconds", String(Math.ceil(ms / 1000)));
  const signal = AbortSignal.timeout(ms);
  try {
    const response = await fetch(url, {
      client: kube.client,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      signal,
    });
    if (!response.ok) {
      throw new ApiError(response.status, await response.text(), `watching ${collection}`);
    }
    for await (const event of jsonLines(response.body!)) {
      if (event.type === "ERROR") throw new Error(`watch error: ${event.object?.message}`);
      if ((event.type === "ADDED" || event.type === "MODIFIED") && match(event.object)) {
        return event.object;
      }
    }
    throw new Error("the watch ended");
  } catch (error) {
    if (signal.aborted || String(error).includes("the watch ended")) {
      throw new Error(`${what}: not seen within ${ms} ms`);
    }
    throw error;
  }
}

async function* jsonLines(body: ReadableStream<Uint8Array>): AsyncGenerator<KubeObject> {
  let buffered = "";
  for await (const text of body.pipeThrough(new TextDecoderStream())) {
    buffered += text;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line.trim() !== "") yield JSON.parse(line);
    }
  }
}

// ---------------------------------------------------------------------------
// A kubectl proxy stand-in

/**
 * Plain HTTP on loopback to the API's HTTPS, adding `token`; bodies stream both ways.
 * Keeps the API server's warnings (deprecations, unknown fields) for the test to check.
 */
function startProxy(kube: ControlPlane, token: string) {
  const warnings: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const incoming = new URL(request.url);
    const headers = new Headers(request.headers);
    headers.set("authorization", `Bearer ${token}`);
    headers.set("accept-encoding", "identity");
    headers.delete("host");
    try {
      const upstream = await fetch(`${kube.url}${incoming.pathname}${incoming.search}`, {
        method: request.method,
        headers,
        body: request.body,
        client: kube.client,
        redirect: "manual",
      });
      const warning = upstream.headers.get("warning");
      if (warning) warnings.push(`${request.method} ${incoming.pathname}: ${warning}`);
      // A client that hangs up (the router ending a watch) cancels this body, and
      // with it the upstream response.
      return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
    } catch (error) {
      return new Response(`proxy: ${error}`, { status: 502 });
    }
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    warnings,
    close: () => server.shutdown(),
  };
}

// ---------------------------------------------------------------------------
// Router processes

/** One JSON log record of the router: these, and the record's own fields beside them. */
interface LogRecord {
  "@timestamp": string;
  level: string;
  message: string;
  logger: string;
  [field: string]: unknown;
}

/** The flags `deno task start` gives `deno run`: the ones the compiled binary gets. */
async function startTaskFlags(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const words: string[] = config.tasks.start.split(/\s+/);
  assert.deepEqual(words.slice(0, 2), ["deno", "run"]);
  assert.equal(words.at(-1), "main.ts");
  return words.slice(2, -1);
}

/** Whether this process may give a child its own mount namespace (root, unshare). */
async function canUnshare(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("unshare", {
      args: ["--mount", "--propagation", "private", "true"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

interface RouterProcess extends AsyncDisposable {
  identity: string;
  url: string;
  /** How it reaches the API: "in-cluster" or the proxy's URL. */
  source: string;
  records: LogRecord[];
  /**
   * Resolves with the first log record from index `from` of `records` on (past or
   * future) that matches; bounded by `ms`.
   */
  waitLog(
    match: (record: LogRecord) => boolean,
    what: string,
    options?: { from?: number; ms?: number },
  ): Promise<LogRecord>;
  kill(signal: Deno.Signal): void;
  status: Promise<Deno.CommandStatus>;
  /** What it wrote on stderr (nothing, normally). */
  stderr(): string;
}

/** How a router reaches the API: in-cluster files, or a proxy URL. */
type Access =
  | { kind: "in-cluster"; kube: ControlPlane; token: string }
  | { kind: "proxy"; url: string };

/** Runs main.ts as `deno task start` does, as the ServiceAccount. */
async function startRouterProcess(identity: string, access: Access): Promise<RouterProcess> {
  const env: Record<string, string> = {
    ROUTER_NAMESPACE: NS,
    ROUTER_IDENTITY: identity,
    ROUTER_PORT: "0",
    ROUTER_HOST: "127.0.0.1",
  };
  const deno = [
    Deno.execPath(),
    "run",
    ...await startTaskFlags(),
    new URL("main.ts", ROOT).pathname,
  ];
  let command: string[];
  let secrets: string | undefined;
  if (access.kind === "in-cluster") {
    // What the kubelet mounts into a pod, here for this process only: a tmpfs over
    // /run (which /var/run links to) in a private mount namespace.
    secrets = await Deno.makeTempDir({ prefix: "rkllama-envtest-sa-" });
    await Deno.writeTextFile(`${secrets}/token`, access.token);
    await Deno.writeTextFile(`${secrets}/ca.crt`, access.kube.ca);
    await Deno.writeTextFile(`${secrets}/namespace`, NS);
    env.KUBERNETES_SERVICE_HOST = "127.0.0.1";
    env.KUBERNETES_SERVICE_PORT = String(access.kube.port);
    command = [
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      `mount -t tmpfs tmpfs /run && mkdir -p ${SA_DIR} && cp "$0"/* ${SA_DIR} && exec "$@"`,
      secrets,
      ...deno,
    ];
  } else {
    env.ROUTER_KUBE_API = access.url;
    command = deno;
  }
  const child = new Deno.Command(command[0], {
    args: command.slice(1),
    env: { ...env, PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const records: LogRecord[] = [];
  const waiters = new Set<{ match: (r: LogRecord) => boolean; resolve: (r: LogRecord) => void }>();
  let stderr = "";
  const read = (async () => {
    for await (const line of textLines(child.stdout)) {
      let record: LogRecord;
      try {
        record = JSON.parse(line);
      } catch {
        stderr += `(stdout) ${line}\n`;
        continue;
      }
      records.push(record);
      for (const waiter of waiters) {
        if (waiter.match(record)) {
          waiters.delete(waiter);
          waiter.resolve(record);
        }
      }
    }
  })();
  const readErr = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) stderr += text;
  })();
  const exited = child.status.then(async (status) => {
    await Promise.all([read, readErr]);
    return status;
  });
  const waitLog = (
    match: (record: LogRecord) => boolean,
    what: string,
    { from = 0, ms = STEP_MS }: { from?: number; ms?: number } = {},
  ) => {
    const found = records.slice(from).find(match);
    if (found) return Promise.resolve(found);
    const { promise, resolve, reject } = Promise.withResolvers<LogRecord>();
    const waiter = { match, resolve };
    waiters.add(waiter);
    const timer = setTimeout(() => {
      waiters.delete(waiter);
      reject(new Error(`${identity}: ${what}: not within ${ms} ms; stderr: ${stderr}`));
    }, ms);
    exited.then(() => {
      if (!waiters.delete(waiter)) return;
      reject(new Error(`${identity} exited before: ${what}; stderr: ${stderr}`));
    });
    return promise.finally(() => clearTimeout(timer));
  };
  const kill = (signal: Deno.Signal) => {
    try {
      child.kill(signal);
    } catch { /* already gone */ }
  };
  const dispose = async () => {
    kill("SIGTERM");
    const timer = setTimeout(() => kill("SIGKILL"), 30_000);
    await exited;
    clearTimeout(timer);
    if (secrets) await Deno.remove(secrets, { recursive: true }).catch(() => {});
  };
  let listening: LogRecord;
  try {
    listening = await waitLog(
      (r) => typeof r.url === "string" && r.message.startsWith("listening"),
      "listening",
      { ms: 60_000 },
    );
  } catch (error) {
    await dispose();
    throw error;
  }
  return {
    identity,
    url: listening.url as string,
    source: access.kind === "in-cluster" ? "in-cluster" : access.url,
    records,
    waitLog,
    kill,
    status: exited,
    stderr: () => stderr,
    [Symbol.asyncDispose]: dispose,
  };
}

async function* textLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffered = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    buffered += text;
    const lines = buffered.split("\n");
    buffered = lines.pop()!;
    yield* lines;
  }
  if (buffered !== "") yield buffered;
}

// Messages quote their string values; the values themselves are fields of the record.
const leads = (identity: string) => (r: LogRecord) =>
  r.logger === "rkllama-router.leader" && r.identity === identity &&
  r.message.includes(" leads: ");
const podIs = (pod: string, state: "ready" | "not ready") => (r: LogRecord) =>
  r.pod === pod && r.state === state;
const podPolled = (pod: string) => (r: LogRecord) =>
  r.pod === pod && r.message.includes(" answered its first poll");
const podGone = (pod: string) => (r: LogRecord) => r.pod === pod && r.message.endsWith(" is gone");

// ---------------------------------------------------------------------------
// Pods as a kubelet would show them

function podManifest(pod: SimPod): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: pod.name, labels: { app: "rkllama" } },
    spec: {
      nodeName: `node-${pod.name}`,
      containers: [{
        name: "rkllama",
        image: "rkllama:test",
        ports: [{ name: "http", containerPort: pod.port, protocol: "TCP" }],
      }],
    },
  };
}

function podStatus(pod: SimPod, ready: boolean): KubeObject {
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  return {
    status: {
      phase: "Running",
      podIP: pod.hostname,
      podIPs: [{ ip: pod.hostname }],
      conditions: [{ type: "Ready", status: ready ? "True" : "False", lastTransitionTime: now }],
    },
  };
}

/** The promise, or a failure naming `what` after `ms`. */
async function withinMs<T>(promise: Promise<T>, what: string, ms = STEP_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function chat(router: RouterProcess, model: string): Promise<Response> {
  return await fetch(`${router.url}/api/chat`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], stream: false }),
  });
}

async function assertChats(router: RouterProcess, model: string): Promise<void> {
  const response = await chat(router, model);
  const text = await response.text();
  assert.equal(response.status, 200, `${router.identity}: chat with ${model}: ${text}`);
  assert.equal(JSON.parse(text).message.content, "Hello world!");
}

// ---------------------------------------------------------------------------
// RBAC from the audit log

/** One permission a Role grants, or a request needs: verb on group/resource[/name]. */
function permissionKey(verb: string, group: string, resource: string, name: string): string {
  return `${verb} ${group || "core"}/${resource}${name ? `/${name}` : ""}`;
}

/** What the Role grants, one key per verb, resource and name. */
function grants(role: KubeObject): string[] {
  return (role.rules as KubeObject[]).flatMap((rule) =>
    (rule.apiGroups as string[]).flatMap((group) =>
      (rule.resources as string[]).flatMap((resource) =>
        (rule.verbs as string[]).flatMap((verb) =>
          (rule.resourceNames as string[] | undefined ?? [""]).map((name) =>
            permissionKey(verb, group, resource, name)
          )
        )
      )
    )
  );
}

/**
 * The grant that allowed an audited request: a request for a named object (a get,
 * or a list or watch limited to one name by a field selector) matches a grant for
 * that name or for all names.
 */
function grantUsed(event: AuditEvent, granted: string[]): string | undefined {
  const ref = event.objectRef ?? {};
  const byName = decodeURIComponent(event.requestURI).match(/fieldSelector=metadata\.name=([^&]+)/);
  const name = ref.name ?? byName?.[1] ?? "";
  const named = permissionKey(event.verb, ref.apiGroup ?? "", ref.resource ?? "", name);
  const any = permissionKey(event.verb, ref.apiGroup ?? "", ref.resource ?? "", "");
  return granted.find((grant) => grant === named) ?? granted.find((grant) => grant === any);
}

// ---------------------------------------------------------------------------
// The test

const assets = await findAssets();

// CI sets REQUIRE_ENVTEST=1: there a skip is a failure.
const required = Deno.env.get("REQUIRE_ENVTEST") === "1";

Deno.test({
  name: "the router against a real kube-apiserver with RBAC, as deploy/'s ServiceAccount",
  ignore: "skip" in assets && !required,
  async fn(t) {
    if (!("dir" in assets)) throw new Error(`REQUIRE_ENVTEST=1, but ${assets.skip}`);
    await using kube = await startControlPlane(assets.dir);
    const ok = await scenarios(t, kube);
    if (!ok) console.error(`kube-apiserver log, last lines:\n${await kube.logTail(60)}`);
  },
});
if ("skip" in assets && !required) console.log(`test:cluster SKIPPED: ${assets.skip}`);

async function scenarios(t: Deno.TestContext, kube: ControlPlane): Promise<boolean> {
  const pods = `/api/v1/namespaces/${NS}/pods`;
  const configMaps = `/api/v1/namespaces/${NS}/configmaps`;
  const leases = `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`;
  const objects = await deployObjects(NS);
  const role = objects.find((o) => o.kind === "Role")!;
  const configMapName = objects.find((o) => o.kind === "ConfigMap")!.metadata.name;

  await using cluster = await startSimCluster({
    pods: [
      { models: ["qwen2.5-1.5b", "phi"] },
      { models: ["qwen2.5-1.5b"] },
      { models: ["gemma"], loaded: ["gemma"] },
    ],
    firstAddress: 41,
  });
  const [rk0, rk1, rk2] = cluster.pods;
  const publish = async (pod: SimPod) => {
    await kube.call("POST", pods, podManifest(pod));
    await kube.call("PATCH", `${pods}/${pod.name}/status`, podStatus(pod, true), MERGE);
  };
  const setReady = (pod: SimPod, ready: boolean) =>
    kube.call("PATCH", `${pods}/${pod.name}/status`, podStatus(pod, ready), MERGE);

  let token = "";
  const steps: boolean[] = [];
  const routers: RouterProcess[] = [];
  /** Routers killed or stopped: their logs still explain a failure. */
  const dead: RouterProcess[] = [];
  /** From the API server's stop until its /readyz answered 200 again. */
  const restart = { from: 0, to: 0 };
  const step = async (name: string, fn: () => Promise<void>) => {
    // After a failed step the rest would only fail for the same reason.
    if (steps.includes(false)) return;
    const passed = await t.step(name, fn);
    steps.push(passed);
    if (!passed) {
      for (const router of [...routers, ...dead]) {
        const tail = router.records.slice(-25).map((r) =>
          `${r["@timestamp"]} ${r.level} ${r.message}`
        );
        console.error(`${router.identity} logged last:\n${tail.join("\n")}`);
      }
    }
  };

  await step(
    "deploy/ applies, moved to another namespace, with strict field validation",
    async () => {
      await kube.call("POST", "/api/v1/namespaces", { metadata: { name: NS } });
      for (const object of objects) {
        await kube.call("POST", `${collectionPath(object)}?fieldValidation=Strict`, object);
      }
      const request = await kube.call(
        "POST",
        `/api/v1/namespaces/${NS}/serviceaccounts/rkllama-router/token`,
        {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: { expirationSeconds: 3600 },
        },
      );
      token = request.status.token;
      assert.match(token, /^ey/);
    },
  );
  if (steps.includes(false)) return false;

  await publish(rk0);
  await publish(rk1);
  const proxy = startProxy(kube, token);
  const inCluster = await canUnshare();
  try {
    routers.push(
      await startRouterProcess(
        "router-a",
        inCluster ? { kind: "in-cluster", kube, token } : { kind: "proxy", url: proxy.url },
      ),
    );
    routers.push(await startRouterProcess("router-b", { kind: "proxy", url: proxy.url }));
    const [a, b] = routers;
    let leader = a;
    let follower = b;

    await step(`two routers (A ${a.source}, B via --kube-api) list pods and route`, async () => {
      for (const router of routers) {
        const status = await (await fetch(`${router.url}/router/status`)).json();
        assert.equal(status.mode, "kubernetes");
        assert.equal(status.discovery.source, router.source);
        assert.equal(status.discovery.connected, true);
        assert.deepEqual(status.pods.map((p: { name: string }) => p.name).sort(), ["rk-0", "rk-1"]);
        await assertChats(router, "phi");
      }
    });

    await step("they elect one leader through a real Lease", async () => {
      const lease = await objectReaches(
        kube,
        `${leases}?fieldSelector=metadata.name%3Drkllama-router`,
        (l) => (l.spec?.holderIdentity ?? "") !== "",
        "a holder of the Lease",
      );
      [leader, follower] = lease.spec.holderIdentity === a.identity ? [a, b] : [b, a];
      assert.equal(lease.spec.holderIdentity, leader.identity);
      await leader.waitLog(leads(leader.identity), "the holder says it leads");
      // The Lease is held and renewed: the other cannot lead while it is.
      const plan = await (await fetch(`${follower.url}/router/plan`)).json();
      assert.equal(plan.leader.leader, false, JSON.stringify(plan.leader));
      assert.equal(follower.records.some(leads(follower.identity)), false);
    });

    await step("the leader follows deploy/'s ConfigMap, and an edit of it", async () => {
      // deploy/configmap.yaml: qwen2.5-1.5b, 2 replicas; rk-0 and rk-1 have it.
      for (const pod of [rk0, rk1]) {
        await withinMs(
          pod.waitFor((e) => e.type === "loaded" && e.model === "qwen2.5-1.5b"),
          `qwen2.5-1.5b loaded on ${pod.name}`,
        );
      }
      await kube.call(
        "PATCH",
        `${configMaps}/${configMapName}`,
        {
          data: {
            "models.yaml": "models:\n  qwen2.5-1.5b:\n    replicas: 2\n  phi:\n    replicas: 1\n",
          },
        },
        MERGE,
      );
      await withinMs(
        rk0.waitFor((e) => e.type === "loaded" && e.model === "phi"),
        "phi loaded on rk-0 after the edit",
      );
      assert.equal(follower.records.some((r) => r.logger === "rkllama-router.apply"), false);
    });

    await step("an invalid ConfigMap is refused with a Warning Event", async () => {
      const configMap = await kube.call(
        "PATCH",
        `${configMaps}/${configMapName}`,
        { data: { "models.yaml": "models:\n  phi:\n    replica: 1\n" } },
        MERGE,
      );
      const event = await objectReaches(
        kube,
        `/api/v1/namespaces/${NS}/events`,
        (e) => e.reason === "InvalidModelsConfig",
        "the InvalidModelsConfig Event",
      );
      assert.equal(event.type, "Warning");
      assert.match(event.message, /line 3: unknown key 'replica'/);
      assert.equal(event.involvedObject.uid, configMap.metadata.uid);
      const plan = await (await fetch(`${leader.url}/router/plan`)).json();
      assert.equal(plan.config.valid, false);
    });

    await step("discovery: a pod added, turning unready, deleted", async () => {
      await publish(rk2);
      for (const router of routers) {
        await router.waitLog(podIs("rk-2", "ready"), "rk-2 found ready");
        await router.waitLog(podPolled("rk-2"), "rk-2 polled");
        await assertChats(router, "gemma");
      }
      await setReady(rk2, false);
      for (const router of routers) {
        await router.waitLog(podIs("rk-2", "not ready"), "rk-2 not ready");
        const response = await chat(router, "gemma");
        const body = await response.json();
        assert.ok(response.status >= 400, `${router.identity}: gemma while rk-2 is not ready`);
        assert.equal(typeof body.error, "string");
      }
      const marks = routers.map((router) => router.records.length);
      await setReady(rk2, true);
      for (const [index, router] of routers.entries()) {
        await router.waitLog(podIs("rk-2", "ready"), "rk-2 ready again", { from: marks[index] });
      }
      // A pod on a node is deleted gracefully: it stays, terminating, until its kubelet
      // (there is none) confirms; a terminating pod gets no new requests.
      const deleting = await kube.call("DELETE", `${pods}/${rk2.name}`);
      assert.ok(deleting.metadata.deletionTimestamp);
      await kube.call("DELETE", `${pods}/${rk2.name}`, { gracePeriodSeconds: 0 });
      for (const router of routers) {
        await router.waitLog(podGone("rk-2"), "rk-2 gone");
        const tags = await (await fetch(`${router.url}/api/tags`)).json();
        assert.deepEqual(tags.models.map((m: { name: string }) => m.name), [
          "phi:latest",
          "qwen2.5-1.5b:latest",
        ]);
      }
    });

    await step("the leader killed, the other takes over when the Lease expires", async () => {
      const before = await kube.call("GET", `${leases}/rkllama-router`);
      const lastRenew = async () =>
        (await kube.call("GET", `${leases}/rkllama-router`)).spec.renewTime;
      leader.kill("SIGKILL");
      await leader[Symbol.asyncDispose]();
      const renewed = await lastRenew();
      const taken = await objectReaches(
        kube,
        `${leases}?fieldSelector=metadata.name%3Drkllama-router`,
        (l) => l.spec?.holderIdentity === follower.identity,
        "the takeover",
        LEASE_MS + 2 * RETRY_MS + STEP_MS,
      );
      await follower.waitLog(leads(follower.identity), "the other says it leads");
      // Not before the Lease expired (no two leaders): a whole lease duration after
      // the dead leader's last renewal, by the clocks of this one machine.
      const gap = Date.parse(taken.spec.acquireTime) - Date.parse(renewed);
      assert.ok(gap >= LEASE_MS, `taken over ${gap} ms after the last renewal`);
      assert.equal(taken.spec.leaseTransitions, (before.spec.leaseTransitions ?? 0) + 1);
      console.log(`takeover ${gap} ms after the dead leader's last renewal (lease ${LEASE_MS} ms)`);
      dead.push(...routers.splice(routers.indexOf(leader), 1));
      await assertChats(follower, "phi");
    });

    await step("the API server restarts; routing goes on and discovery resumes", async () => {
      const router = follower;
      const mark = router.records.length;
      // Requests one after another, from before the stop until after the start (at most
      // MAX_REQUESTS): every one must be answered by a board.
      const MAX_REQUESTS = 2_000;
      let traffic = true;
      const answered: number[] = [];
      const requests = (async () => {
        while (traffic && answered.length < MAX_REQUESTS) {
          const response = await chat(router, answered.length % 2 ? "phi" : "qwen2.5-1.5b");
          answered.push(response.status);
          await response.body?.cancel();
        }
      })();
      try {
        restart.from = Date.now();
        await kube.stopApiServer();
        await router.waitLog(
          (r) => r.what === "pods" && r.message.includes(" failed "),
          "discovery notices the API server is gone",
          { from: mark },
        );
        const status = await (await fetch(`${router.url}/router/status`)).json();
        assert.equal(status.discovery.connected, false);
        await kube.startApiServer();
        restart.to = Date.now();
      } finally {
        traffic = false;
        await requests;
      }
      console.log(`${answered.length} requests while the API server restarted`);
      assert.ok(answered.length > 0);
      assert.deepEqual(answered.filter((status) => status !== 200), []);
      await kube.call("DELETE", `${pods}/${rk2.name}`, { gracePeriodSeconds: 0 }).catch((error) => {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
      });
      const after = router.records.length;
      await publish(rk2);
      // The router waits up to its longest backoff before it tries the API again.
      await router.waitLog(podIs("rk-2", "ready"), "rk-2 found after the restart", {
        from: after,
        ms: 60_000,
      });
      await router.waitLog(podPolled("rk-2"), "rk-2 polled", { from: after });
      await assertChats(router, "gemma");
      // It leads again: it renewed the Lease it still holds (or never stopped leading).
      const follows = router.records.slice(mark).findIndex((r) =>
        r.logger === "rkllama-router.leader" && r.message.includes(" follows: ")
      );
      if (follows >= 0) {
        await router.waitLog(leads(router.identity), "leading again", { from: mark + follows });
      }
    });

    await step("the router stops on SIGTERM and releases the Lease", async () => {
      const router = follower;
      await router[Symbol.asyncDispose]();
      dead.push(...routers.splice(routers.indexOf(router), 1));
      assert.equal((await router.status).code, 0, router.stderr());
      assert.equal(router.stderr(), "");
      const lease = await kube.call("GET", `${leases}/rkllama-router`);
      assert.equal(lease.spec.holderIdentity, undefined);
      assert.deepEqual(proxy.warnings, [], "the API server warned of nothing");
    });
  } finally {
    for (const router of routers) await router[Symbol.asyncDispose]();
    await proxy.close();
  }

  await step(
    "the ServiceAccount was refused nothing and used every permission of the Role",
    async () => {
      const audit = (await kube.audit()).filter((e) => e.user.username === SA_USER);
      assert.ok(audit.length > 0, "the audit log has the ServiceAccount's requests");
      const allowed = (e: AuditEvent) =>
        e.annotations?.["authorization.k8s.io/decision"] === "allow";
      // A starting API server answers before it is ready, and refuses everything until
      // it has read the Roles (no 403 once /readyz says 200); the router tries again.
      const whileStarting = (e: AuditEvent) => {
        const at = Date.parse(e.requestReceivedTimestamp);
        return at >= restart.from && at <= restart.to;
      };
      const refused = audit.filter((e) => !allowed(e));
      const describe = (e: AuditEvent) => `${e.verb} ${e.requestURI} ${e.responseStatus?.code}`;
      assert.deepEqual(refused.filter((e) => !whileStarting(e)).map(describe), []);
      if (refused.length > 0) {
        console.log(`refused while the API server started: ${refused.map(describe).join(", ")}`);
      }
      const granted = grants(role);
      const used = new Set<string>();
      for (const event of audit.filter(allowed)) {
        const grant = grantUsed(event, granted);
        assert.ok(grant, `${event.verb} ${event.requestURI}: allowed by no rule of the Role`);
        used.add(grant);
      }
      assert.deepEqual(granted.filter((grant) => !used.has(grant)), [], "granted but never used");
    },
  );

  await step("RBAC is enforced: a Role without create on events makes the Event fail", async () => {
    const path = `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/roles/${role.metadata.name}`;
    const current = await kube.call("GET", path);
    current.rules = (current.rules as KubeObject[]).filter((r) => !r.resources.includes("events"));
    await kube.call("PUT", path, current);
    const proxy = startProxy(kube, token);
    try {
      // The ConfigMap is still invalid: the router reports it as soon as it reads it.
      await using router = await startRouterProcess("router-c", { kind: "proxy", url: proxy.url });
      const refused = await router.waitLog(
        (r) => r.message.startsWith("could not record an Event"),
        "the refused Event",
      );
      assert.match(String(refused.error), /403|forbidden/i);
    } finally {
      await proxy.close();
    }
    const audit = (await kube.audit()).filter((e) => e.user.username === SA_USER);
    assert.ok(
      audit.some((e) =>
        e.verb === "create" && e.objectRef?.resource === "events" &&
        e.annotations?.["authorization.k8s.io/decision"] === "forbid"
      ),
      "the audit log shows the refusal",
    );
  });
  return !steps.includes(false);
}
