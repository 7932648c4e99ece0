/**
 * @module
 * The router against a real kube-apiserver (k8s.io/kubernetes, unmodified, with
 * an embedded etcd: `test/apiserver/`), not the fake one in `sim/kube.ts`. Build
 * the server once with `test/apiserver/build.sh`.
 *
 * The same scenario runs twice, once per way the router can reach the API:
 * - through `$KUBECONFIG` (client-node's own TLS with the generated CA, and the
 *   bearer token), the way a developer runs it against a cluster;
 * - through `--kube-api http://...`, a `kubectl proxy` stand-in written here that
 *   adds the token and streams watch responses through unbuffered.
 */

import assert from "node:assert/strict";
import { effect, type ReadonlySignal } from "@preact/signals-core";
import { parse as parseYaml } from "yaml";
import { parseConfig } from "../config.ts";
import { type Router, startRouter } from "../main.ts";
import { postJson, storeReaches } from "../sim/fixture.ts";
import { startSimCluster } from "../sim/cluster.ts";
import type { SimPod } from "../sim/pod.ts";

const BINARY = new URL("./apiserver/bin/apiserver", import.meta.url).pathname;
const TOKEN = "test-token";
/** Longest wait for anything the router does after an API change. */
const STEP_MS = 20_000;

// ---------------------------------------------------------------------------
// The API server

/** A kube-apiserver started from `test/apiserver/bin/apiserver`. */
interface RealKube extends AsyncDisposable {
  /** `https://127.0.0.1:PORT` */
  url: string;
  kubeconfig: string;
  /** PEM of the CA that signed the serving certificate. */
  ca: string;
  /** A Deno HTTP client that trusts `ca`. */
  client: Deno.HttpClient;
  /** Calls the API with the admin token; throws the API's own message on an error status. */
  call<T = KubeObject>(method: string, path: string, body?: unknown, type?: string): Promise<T>;
  /** The last lines of the server's log. */
  logTail(lines?: number): Promise<string>;
}

// deno-lint-ignore no-explicit-any
type KubeObject = Record<string, any>;

/** An error status from the API server, with its Status message. */
class ApiError extends Error {
  constructor(readonly status: number, readonly body: string, what: string) {
    let message = body;
    try {
      message = JSON.parse(body).message ?? body;
    } catch { /* not a Status */ }
    super(`${what}: HTTP ${status}: ${message}`);
  }
}

async function startRealKube(): Promise<RealKube> {
  try {
    await Deno.stat(BINARY);
  } catch {
    throw new Error(
      `${BINARY} is missing: run test/apiserver/build.sh first (needs Go >= 1.26 and the Go module proxy)`,
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "real-kube-test-" });
  const kubeconfig = `${dir}/kubeconfig`;
  const logFile = `${dir}/apiserver.log`;
  const child = new Deno.Command(BINARY, {
    args: ["-kubeconfig", kubeconfig, "-log-file", logFile, "-exit-with-stdin"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // Closing stdin stops the server too, should this process die without SIGTERM.
  const stdin = child.stdin.getWriter();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const logTail = async (count = 40) => {
    try {
      return (await Deno.readTextFile(logFile)).trimEnd().split("\n").slice(-count).join("\n");
    } catch (error) {
      return `(no log: ${error})`;
    }
  };
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    const killer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 40_000);
    const status = await child.status;
    clearTimeout(killer);
    // Only now: an end of stdin while stopping would count as a second signal.
    await stdin.close().catch(() => {});
    await drained;
    await Deno.remove(dir, { recursive: true });
    return status;
  };

  // Read stdout until READY (the server prints nothing else), then to its end.
  let url = "";
  let seen = "";
  const ready = Promise.withResolvers<void>();
  const drained = (async () => {
    for (;;) {
      const { value, done } = await lines.read();
      if (done) break;
      seen += value;
      const match = seen.match(/^READY (https:\/\/\S+)$/m);
      if (match && !url) {
        url = match[1];
        ready.resolve();
      }
    }
    ready.reject(new Error(`the API server exited before READY; stdout: ${seen.trim()}`));
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      ready.promise,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("the API server not READY after 180 s")),
          180_000,
        );
      }),
    ]);
  } catch (error) {
    const status = await stop().catch(() => undefined);
    throw new Error(
      `${(error as Error).message} (exit ${status?.code}); its log ends:\n${await logTail()}`,
    );
  } finally {
    clearTimeout(timer);
  }

  const config = parseYaml(await Deno.readTextFile(kubeconfig));
  const ca = atob(config.clusters[0].cluster["certificate-authority-data"]);
  const client = Deno.createHttpClient({ caCerts: [ca] });
  const call = async <T>(method: string, path: string, body?: unknown, type?: string) => {
    const response = await fetch(`${url}${path}`, {
      method,
      client,
      headers: {
        authorization: `Bearer ${TOKEN}`,
        accept: "application/json",
        ...(body === undefined ? {} : { "content-type": type ?? "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new ApiError(response.status, text, `${method} ${path}`);
    return JSON.parse(text) as T;
  };
  return {
    url,
    kubeconfig,
    ca,
    client,
    call,
    logTail,
    async [Symbol.asyncDispose]() {
      client.close();
      const status = await stop();
      assert.equal(status.code, 0, "the API server did not stop cleanly on SIGTERM");
    },
  };
}

/**
 * Resolves with the first object of the collection that satisfies `match`: from
 * a list, else from a watch started at the list's resourceVersion. Bounded by `ms`.
 */
async function objectReaches(
  kube: RealKube,
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
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), ms);
  try {
    const response = await fetch(url, {
      client: kube.client,
      headers: { authorization: `Bearer ${TOKEN}` },
      signal: timeout.signal,
    });
    if (!response.ok) {
      throw new ApiError(response.status, await response.text(), `watching ${collection}`);
    }
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += value;
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const event = JSON.parse(buffered.slice(0, newline));
          buffered = buffered.slice(newline + 1);
          if (event.type === "ERROR") throw new Error(`watch error: ${event.object?.message}`);
          if ((event.type === "ADDED" || event.type === "MODIFIED") && match(event.object)) {
            return event.object;
          }
        }
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
    throw new Error("the watch ended");
  } catch (error) {
    if (timeout.signal.aborted || String(error).includes("the watch ended")) {
      throw new Error(`${what}: not seen within ${ms} ms`);
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// A kubectl proxy stand-in

/** What the API server refused, or warned about, through the proxy. */
interface ProxyRecord {
  method: string;
  path: string;
  status: number;
  message: string;
}

/** Plain HTTP on loopback to the API's HTTPS, adding the token; bodies stream both ways. */
function startProxy(kube: RealKube): {
  url: string;
  refused: ProxyRecord[];
  warnings: ProxyRecord[];
  close(): Promise<void>;
} {
  const refused: ProxyRecord[] = [];
  const warnings: ProxyRecord[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const incoming = new URL(request.url);
    const path = `${incoming.pathname}${incoming.search}`;
    const headers = new Headers(request.headers);
    headers.set("authorization", `Bearer ${TOKEN}`);
    headers.set("accept-encoding", "identity");
    headers.delete("host");
    let upstream: Response;
    try {
      upstream = await fetch(`${kube.url}${path}`, {
        method: request.method,
        headers,
        body: request.body,
        client: kube.client,
        redirect: "manual",
      });
    } catch (error) {
      return new Response(`proxy: ${error}`, { status: 502 });
    }
    const warning = upstream.headers.get("warning");
    if (warning) {
      warnings.push({ method: request.method, path, status: upstream.status, message: warning });
    }
    if (upstream.status >= 400) {
      const text = await upstream.text();
      let message = text;
      try {
        message = JSON.parse(text).message ?? text;
      } catch { /* not a Status */ }
      refused.push({ method: request.method, path, status: upstream.status, message });
      return new Response(text, { status: upstream.status, headers: upstream.headers });
    }
    // A client that hangs up (the router ending a watch) cancels this body, and
    // with it the upstream response.
    return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    refused,
    warnings,
    close: () => server.shutdown(),
  };
}

// ---------------------------------------------------------------------------
// Helpers

/** The promise, or a failure naming `what` (and `detail()`) after `ms`. */
async function within<T>(
  promise: Promise<T>,
  what: string,
  detail: () => unknown = () => "",
  ms = STEP_MS,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const extra = detail();
          reject(
            new Error(`${what}: not within ${ms} ms${extra ? `; ${JSON.stringify(extra)}` : ""}`),
          );
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once discovery reports a list newer than `after`; fails on a failed reconnect. */
function relisted(store: Router["store"], after: number): Promise<void> {
  const reached = Promise.withResolvers<void>();
  const dispose = effect(() => {
    const discovery = store.discovery.value;
    if (!discovery.connected) {
      reached.reject(new Error(`discovery lost the API: ${discovery.error}`));
    } else if ((discovery.at ?? 0) > after) reached.resolve();
  });
  return reached.promise.finally(dispose);
}

function becomes(value: ReadonlySignal<boolean>, wanted: boolean): Promise<void> {
  const reached = Promise.withResolvers<void>();
  const dispose = effect(() => {
    if (value.value === wanted) reached.resolve();
  });
  return reached.promise.finally(dispose);
}

/** A Pod object for a simulated pod, as a Deployment's pod would look to the router. */
function podManifest(pod: SimPod): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: pod.name, labels: { app: "rkllama" } },
    spec: {
      nodeName: pod.name,
      containers: [{
        name: "rkllama",
        image: "rkllama:test",
        ports: [{ name: "http", containerPort: pod.port, protocol: "TCP" }],
      }],
    },
  };
}

/** What a kubelet would write: Running, the pod IP, and the Ready condition. */
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

const MERGE = "application/merge-patch+json";
const CHAT = { messages: [{ role: "user", content: "hi" }], stream: false };

// ---------------------------------------------------------------------------
// The scenario

type Connect = "kubeconfig" | "proxy";

async function scenario(t: Deno.TestContext, kube: RealKube, connect: Connect, first: number) {
  const ns = `via-${connect}`;
  const identity = `router-via-${connect}`;
  await kube.call("POST", "/api/v1/namespaces", { metadata: { name: ns } });
  const pods = `/api/v1/namespaces/${ns}/pods`;
  const configMaps = `/api/v1/namespaces/${ns}/configmaps`;
  const leasePath = `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/rkllama-router`;
  await using cluster = await startSimCluster({
    pods: [{ models: ["qwen", "phi"], loaded: ["phi"] }, { models: ["qwen"] }],
    firstAddress: first,
  });
  const [rk0, rk1] = cluster.pods;
  const publish = async (pod: SimPod) => {
    await kube.call("POST", pods, podManifest(pod));
    await kube.call("PATCH", `${pods}/${pod.name}/status`, podStatus(pod, true), MERGE);
  };

  // rk-0 exists before the router starts (seen in its first list), rk-1 after (a watch event).
  await publish(rk0);

  const proxy = connect === "proxy" ? startProxy(kube) : undefined;
  const parsed = parseConfig([
    ...(proxy ? ["--kube-api", proxy.url] : []),
    ...["--namespace", ns, "--identity", identity],
    ...["--port", "0", "--host", "127.0.0.1", "--poll-interval", "1h"],
  ], () => undefined);
  if (parsed.help) throw new Error("unreachable");
  assert.equal(parsed.config.kubeApi, proxy ? proxy.url : "");
  let router: Router;
  const saved = ["KUBECONFIG", "KUBERNETES_SERVICE_HOST"].map((name) => [name, Deno.env.get(name)]);
  try {
    // The router picks its connection once, at start (connectKube with Deno.env.get).
    Deno.env.set("KUBECONFIG", kube.kubeconfig);
    Deno.env.delete("KUBERNETES_SERVICE_HOST");
    router = await startRouter(parsed.config);
  } finally {
    for (const [name, value] of saved) {
      if (value === undefined) Deno.env.delete(name!);
      else Deno.env.set(name!, value);
    }
  }
  const { store } = router;
  const status = async () => await (await fetch(`${router.url}/router/status`)).json();
  const plan = async () => await (await fetch(`${router.url}/router/plan`)).json();

  try {
    await t.step("the router lists and watches pods and routes to them", async () => {
      const routerStatus = await status();
      assert.equal(routerStatus.mode, "kubernetes");
      assert.equal(
        routerStatus.discovery.source,
        proxy ? proxy.url : `kubeconfig ${kube.kubeconfig}`,
      );
      await publish(rk1);
      await within(
        storeReaches(
          store,
          (s) => s.podList.value.length === 2 && s.podList.value.every((p) => p.polled && p.ready),
        ),
        "both pods discovered, ready and polled",
        () => ({ discovery: store.discovery.peek(), pods: store.podList.peek() }),
      );
      const record = store.pods.peek().get(rk1.name)!;
      assert.equal(record.url, rk1.url);
      assert.equal(record.node, rk1.name);
      assert.equal(store.discovery.peek().connected, true);

      const tags = await (await fetch(`${router.url}/api/tags`)).json();
      assert.deepEqual(tags.models.map((m: { name: string }) => m.name), ["phi", "qwen"]);
      const chat = await postJson(`${router.url}/api/chat`, { model: "phi", ...CHAT });
      assert.equal(chat.status, 200);
      assert.equal((await chat.json()).message.content, "Hello world!");
      await within(
        rk0.waitFor((e) => e.type === "request" && e.path === "/api/chat"),
        "rk-0 got the chat",
      );
    });

    await t.step(
      "the ConfigMap's models are loaded by the leader, which holds the Lease",
      async () => {
        await kube.call("POST", configMaps, {
          metadata: { name: "rkllama-model-config" },
          data: { "models.yaml": "models:\n  qwen:\n    replicas: 1\n" },
        });
        await within(
          becomes(router.placement!.leading, true),
          "the router leads",
          () => router.placement!.view().leader,
        );
        const loaded = await within(
          Promise.race(
            cluster.pods.map((pod) =>
              pod.waitFor((e) => e.type === "loaded" && e.model === "qwen").then(() => pod)
            ),
          ),
          "qwen loaded on a pod",
          () => router.placement!.view(),
        );
        await router.placement!.applier.idle();
        const loads = cluster.pods.flatMap((pod) =>
          pod.events.filter((e) => e.type === "loaded" && e.model === "qwen")
        );
        assert.equal(loads.length, 1, `qwen loaded once (on ${loaded.name})`);

        const lease = await kube.call("GET", leasePath);
        assert.equal(lease.spec.holderIdentity, identity);
        assert.equal(lease.spec.leaseDurationSeconds, 15);
        assert.match(lease.spec.renewTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
        assert.match(lease.spec.acquireTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
        // A renewal (a replace of the object read back) is accepted too.
        const renewed = await objectReaches(
          kube,
          `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases?fieldSelector=metadata.name%3Drkllama-router`,
          (l) => l.spec.renewTime !== lease.spec.renewTime,
          "a renewal of the Lease",
        );
        assert.equal(renewed.spec.holderIdentity, identity);
        assert.equal(renewed.spec.acquireTime, lease.spec.acquireTime);
        assert.equal((router.placement!.view().leader as { error: string }).error, "");
      },
    );

    await t.step("readiness changes and deletions reach the store", async () => {
      await kube.call("PATCH", `${pods}/${rk1.name}/status`, podStatus(rk1, false), MERGE);
      await within(
        storeReaches(store, (s) => s.pods.value.get(rk1.name)?.ready === false),
        "rk-1 not ready",
      );
      await kube.call("PATCH", `${pods}/${rk1.name}/status`, podStatus(rk1, true), MERGE);
      await within(
        storeReaches(store, (s) => s.pods.value.get(rk1.name)?.ready === true),
        "rk-1 ready again",
      );
      // A pod on a node is deleted gracefully: it stays, with a deletionTimestamp,
      // until its kubelet (there is none here) confirms.
      const deleting = await kube.call("DELETE", `${pods}/${rk1.name}`);
      assert.ok(deleting.metadata.deletionTimestamp, "graceful deletion keeps the pod");
      await within(
        storeReaches(store, (s) => s.pods.value.get(rk1.name)?.ready === false),
        "rk-1 terminating, so not ready",
      );
      assert.ok(store.pods.peek().has(rk1.name));
      await kube.call("DELETE", `${pods}/${rk1.name}`, { gracePeriodSeconds: 0 });
      await within(storeReaches(store, (s) => !s.pods.value.has(rk1.name)), "rk-1 removed");
      assert.deepEqual([...store.pods.peek().keys()], [rk0.name]);
    });

    await t.step("an invalid ConfigMap is refused with a Warning Event", async () => {
      const configMap = await kube.call(
        "PATCH",
        `${configMaps}/rkllama-model-config`,
        { data: { "models.yaml": "models:\n  qwen:\n    replica: 1\n" } },
        MERGE,
      );
      const event = await objectReaches(
        kube,
        `/api/v1/namespaces/${ns}/events`,
        (e) => e.reason === "InvalidModelsConfig",
        "the InvalidModelsConfig Event (the router logs why the API refused it)",
      );
      assert.equal(event.type, "Warning");
      assert.match(event.message, /line 3: unknown key 'replica'/);
      assert.equal(event.involvedObject.kind, "ConfigMap");
      assert.equal(event.involvedObject.name, "rkllama-model-config");
      assert.equal(event.involvedObject.namespace, ns);
      assert.equal(event.involvedObject.uid, configMap.metadata.uid);
      assert.equal(event.source.component, "rkllama-router");
      assert.equal(event.count, 1);
      assert.match(event.metadata.name, /^rkllama-model-config\./);
      const after = await plan();
      assert.equal(after.config.valid, false);
      assert.deepEqual(after.config.models.map((m: { name: string }) => m.name), ["qwen"]);
    });

    await t.step(
      "a watch the API server ends (timeoutSeconds) is followed by a list and a new watch",
      async () => {
        // The router asks for 25 s watches; the real server ends them on time.
        const listedAt = store.discovery.peek().at ?? 0;
        await within(
          relisted(store, listedAt),
          "a new list after the first watch ended",
          () => store.discovery.peek(),
          45_000,
        );
        assert.equal(store.discovery.peek().error ?? "", "");
        // The new watch delivers changes.
        await publish(rk1);
        await within(
          storeReaches(store, (s) => s.pods.value.get(rk1.name)?.ready === true),
          "rk-1 back through the new watch",
        );
      },
    );
  } finally {
    await router.shutdown();
    await proxy?.close();
  }

  await t.step("on shutdown the leader releases the Lease", async () => {
    const lease = await kube.call("GET", leasePath);
    assert.equal(lease.spec.holderIdentity, undefined);
    assert.equal(lease.spec.leaseDurationSeconds, 1);
  });

  if (proxy) {
    await t.step("the API server refused nothing the router sent, and warned of nothing", () => {
      // Reading the Lease before it exists is how the election starts.
      const unexpected = proxy.refused.filter((r) =>
        !(r.status === 404 && r.method === "GET" && r.path.endsWith("/leases/rkllama-router"))
      );
      assert.deepEqual(unexpected, []);
      assert.deepEqual(proxy.warnings, []);
    });
  }
}

Deno.test("the router against a real kube-apiserver", async (t) => {
  await using kube = await startRealKube();
  const results: boolean[] = [];
  results.push(
    await t.step(
      "via $KUBECONFIG (client-node's TLS and token)",
      (t) => scenario(t, kube, "kubeconfig", 11),
    ),
  );
  results.push(
    await t.step(
      "via --kube-api and a kubectl proxy stand-in",
      (t) => scenario(t, kube, "proxy", 21),
    ),
  );
  if (results.includes(false)) {
    console.error(`kube-apiserver log, last lines:\n${await kube.logTail(60)}`);
  }
});
