/**
 * @module
 * A real Kubernetes control plane for `test/cluster_test.ts`, as controller-runtime's
 * envtest runs one: `etcd` and an unmodified `kube-apiserver` (from
 * `test/envtest/assets.sh`) on loopback, no kubelet and no controllers. The API
 * server authorizes with Node,RBAC, signs service-account tokens with a key made
 * here, trusts one static admin token (group system:masters) and writes an audit
 * log of every request a service account makes.
 */

/** The admin's bearer token (system:masters: RBAC does not apply to it). */
export const ADMIN_TOKEN = "envtest-admin-token";

/** How long the API server may take to answer /readyz 200 (seconds on a quiet machine). */
const READY_TIMEOUT_MS = 180_000;

// deno-lint-ignore no-explicit-any
export type KubeObject = Record<string, any>;

/** An error status from the API server, with its Status message. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly body: string, what: string) {
    let message = body;
    try {
      message = JSON.parse(body).message ?? body;
    } catch { /* not a Status */ }
    super(`${what}: HTTP ${status}: ${message}`);
  }
}

/** One record of the audit log (audit.k8s.io/v1 Event, the fields used here). */
export interface AuditEvent {
  stage: string;
  requestReceivedTimestamp: string;
  verb: string;
  requestURI: string;
  user: { username: string };
  objectRef?: { resource?: string; namespace?: string; name?: string; apiGroup?: string };
  responseStatus?: { code?: number };
  annotations?: Record<string, string>;
}

/** A running control plane; `await using` stops it and removes its files. */
export interface ControlPlane extends AsyncDisposable {
  /** `https://127.0.0.1:PORT` */
  url: string;
  port: number;
  /** PEM of the CA that signed the API server's serving certificate. */
  ca: string;
  /** A Deno HTTP client that trusts `ca`. */
  client: Deno.HttpClient;
  /** Calls the API as admin; throws the API's own message on an error status. */
  call<T = KubeObject>(method: string, path: string, body?: unknown, type?: string): Promise<T>;
  /** Stops the API server (etcd keeps running) and resolves once it exited. */
  stopApiServer(): Promise<void>;
  /** Starts the API server again, same port, certificates and keys; resolves once ready. */
  startApiServer(): Promise<void>;
  /** Every audit event so far (only requests of service accounts are audited). */
  audit(): Promise<AuditEvent[]>;
  /** The last lines of the API server's log. */
  logTail(lines?: number): Promise<string>;
}

/** A loopback port free at this moment (the server binds it soon after). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

function pem(type: string, der: ArrayBuffer): string {
  const base64 = btoa(String.fromCharCode(...new Uint8Array(der)));
  const lines = base64.match(/.{1,64}/g)!.join("\n");
  return `-----BEGIN ${type}-----\n${lines}\n-----END ${type}-----\n`;
}

/** A process whose stdout and stderr go to a file, stoppable with a bounded wait. */
async function spawnLogged(binary: string, args: string[], logFile: string) {
  const open = () => Deno.open(logFile, { write: true, create: true, append: true });
  const [out, err] = [await open(), await open()];
  const child = new Deno.Command(binary, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const written = Promise.all([
    child.stdout.pipeTo(out.writable),
    child.stderr.pipeTo(err.writable),
  ]);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    const killer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 30_000);
    const status = await child.status;
    clearTimeout(killer);
    await written.catch(() => {});
    return status;
  };
  return { child, stop };
}

/**
 * Starts etcd and kube-apiserver from `assets` (a directory holding both) and
 * resolves once /readyz answers 200.
 */
export async function startControlPlane(assets: string): Promise<ControlPlane> {
  const dir = await Deno.makeTempDir({ prefix: "rkllama-envtest-" });
  const [etcdClient, etcdPeer, port] = [freePort(), freePort(), freePort()];

  // The service-account signing key: the API server signs TokenRequest tokens with it.
  const keys = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    ["sign", "verify"],
  );
  await Deno.writeTextFile(
    `${dir}/sa.key`,
    pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey)),
  );
  await Deno.writeTextFile(
    `${dir}/sa.pub`,
    pem("PUBLIC KEY", await crypto.subtle.exportKey("spki", keys.publicKey)),
  );
  await Deno.writeTextFile(
    `${dir}/tokens.csv`,
    `${ADMIN_TOKEN},envtest-admin,envtest-admin,"system:masters"\n`,
  );
  // Metadata of every request a service account makes: which verb on what, and the
  // authorizer's decision. Nobody else's requests (the admin's, the server's own).
  await Deno.writeTextFile(
    `${dir}/audit-policy.yaml`,
    [
      "apiVersion: audit.k8s.io/v1",
      "kind: Policy",
      "omitStages: [RequestReceived]",
      "rules:",
      "  - level: Metadata",
      '    userGroups: ["system:serviceaccounts"]',
      "  - level: None",
      "",
    ].join("\n"),
  );

  const etcd = await spawnLogged(`${assets}/etcd`, [
    "--name=envtest",
    `--data-dir=${dir}/etcd`,
    `--listen-client-urls=http://127.0.0.1:${etcdClient}`,
    `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
    `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
    `--initial-cluster=envtest=http://127.0.0.1:${etcdPeer}`,
    // Throwaway data: durability buys nothing and fsync costs seconds on slow disks.
    "--unsafe-no-fsync",
    "--log-level=warn",
  ], `${dir}/etcd.log`);

  const apiServerArgs = [
    `--etcd-servers=http://127.0.0.1:${etcdClient}`,
    "--bind-address=127.0.0.1",
    "--advertise-address=127.0.0.1",
    `--secure-port=${port}`,
    // The server makes a CA and a serving certificate for 127.0.0.1 here, and reuses
    // them when it starts again.
    `--cert-dir=${dir}/certs`,
    `--token-auth-file=${dir}/tokens.csv`,
    "--anonymous-auth=false",
    "--authorization-mode=Node,RBAC",
    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
    `--service-account-key-file=${dir}/sa.pub`,
    `--service-account-signing-key-file=${dir}/sa.key`,
    "--service-cluster-ip-range=10.96.0.0/24",
    // No controller-manager creates namespaces' default ServiceAccount, which this
    // admission plugin insists on for every pod.
    "--disable-admission-plugins=ServiceAccount",
    // The kubernetes Service's endpoints may not be a loopback address.
    "--endpoint-reconciler-type=none",
    `--audit-policy-file=${dir}/audit-policy.yaml`,
    `--audit-log-path=${dir}/audit.log`,
    "--audit-log-mode=blocking",
    "--enable-priority-and-fairness=false",
    "--profiling=false",
    "--v=1",
  ];
  let apiServer: Awaited<ReturnType<typeof spawnLogged>> | undefined;
  let client: Deno.HttpClient | undefined;
  let ca = "";
  const url = `https://127.0.0.1:${port}`;

  const logTail = async (count = 40) => {
    try {
      const text = await Deno.readTextFile(`${dir}/apiserver.log`);
      return text.trimEnd().split("\n").slice(-count).join("\n");
    } catch (error) {
      return `(no log: ${error})`;
    }
  };

  /**
   * Asks /readyz until it answers 200. The API server announces readiness no other
   * way (envtest does the same), so this one wait polls, bounded in time.
   */
  const waitReady = async (child: Deno.ChildProcess) => {
    let exited = false;
    child.status.then(() => exited = true);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let last = "no answer yet";
    for (let attempt = 0;; attempt++) {
      if (exited) {
        throw new Error(`kube-apiserver exited before ready; its log ends:\n${await logTail()}`);
      }
      if (Date.now() > deadline) {
        throw new Error(
          `kube-apiserver not ready after ${READY_TIMEOUT_MS} ms: ${last}\n${await logTail()}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(50 * 2 ** attempt, 500)));
      try {
        // The CA appears in the cert dir before the server listens.
        if (!client) {
          const chain = await Deno.readTextFile(`${dir}/certs/apiserver.crt`);
          // The file holds the serving certificate, then the CA that signed it.
          const blocks = chain.match(
            /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g,
          );
          if (!blocks || blocks.length < 2) throw new Error("no CA in the cert dir yet");
          ca = blocks.at(-1)!;
          client = Deno.createHttpClient({ caCerts: [ca] });
        }
        const response = await fetch(`${url}/readyz`, {
          client,
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
          signal: AbortSignal.timeout(5_000),
        });
        const body = await response.text();
        if (response.ok) return;
        last = `HTTP ${response.status}: ${
          body.trim().split("\n").filter((l) => l.includes("failed")).join("; ")
        }`;
      } catch (error) {
        last = String(error);
      }
    }
  };

  const startApiServer = async () => {
    apiServer = await spawnLogged(
      `${assets}/kube-apiserver`,
      apiServerArgs,
      `${dir}/apiserver.log`,
    );
    await waitReady(apiServer.child);
  };
  const stopApiServer = async () => {
    const status = await apiServer?.stop();
    apiServer = undefined;
    if (status && !status.success && status.signal !== "SIGTERM") {
      throw new Error(
        `kube-apiserver exited with ${status.code}; its log ends:\n${await logTail()}`,
      );
    }
  };
  const dispose = async () => {
    client?.close();
    await apiServer?.stop();
    await etcd.stop();
    await Deno.remove(dir, { recursive: true });
  };

  try {
    await startApiServer();
  } catch (error) {
    await dispose();
    throw error;
  }

  const call = async <T>(method: string, path: string, body?: unknown, type?: string) => {
    const response = await fetch(`${url}${path}`, {
      method,
      client,
      headers: {
        authorization: `Bearer ${ADMIN_TOKEN}`,
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
    port,
    get ca() {
      return ca;
    },
    get client() {
      return client!;
    },
    call,
    stopApiServer,
    startApiServer,
    async audit() {
      const text = await Deno.readTextFile(`${dir}/audit.log`).catch(() => "");
      return text.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line));
    },
    logTail,
    [Symbol.asyncDispose]: dispose,
  };
}
