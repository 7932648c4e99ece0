/**
 * @module
 * Keeps `deploy/` (the kustomize base), the example RKLlama DaemonSet and the
 * Dockerfile honest against the code: every manifest parses into fields the
 * Kubernetes API knows, names and selectors line up, the Role allows exactly the
 * API calls the router makes, every variable the Deployment sets is a flag, the
 * probes answer, and the image is compiled with the start task's permissions.
 */

import assert from "node:assert/strict";
import * as k8s from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { envName, FLAGS, parseConfig, type RouterConfig } from "./config/flags.ts";
import { parseModelsConfig } from "./config/models.ts";
import { startKubeWorld, startWorld } from "./sim/fixture.ts";
import { configMapObject, type KubeRequest } from "./sim/kube.ts";
import { startBackend, startRouter } from "./bench/processes.ts";

const ROOT = new URL("./", import.meta.url);

/** Where each kind of object lives in the API, and its client-node model for the field check. */
const KINDS: Record<string, { apiVersion: string; model: string }> = {
  ServiceAccount: { apiVersion: "v1", model: "V1ServiceAccount" },
  ConfigMap: { apiVersion: "v1", model: "V1ConfigMap" },
  Service: { apiVersion: "v1", model: "V1Service" },
  Role: { apiVersion: "rbac.authorization.k8s.io/v1", model: "V1Role" },
  RoleBinding: { apiVersion: "rbac.authorization.k8s.io/v1", model: "V1RoleBinding" },
  Deployment: { apiVersion: "apps/v1", model: "V1Deployment" },
  DaemonSet: { apiVersion: "apps/v1", model: "V1DaemonSet" },
  PodDisruptionBudget: { apiVersion: "policy/v1", model: "V1PodDisruptionBudget" },
};

/** One RBAC permission: a verb on a resource of an API group. */
interface Permission {
  group: string;
  resource: string;
  verb: string;
}

/**
 * Every Kubernetes API method the router's code calls, and the permission it needs.
 * A call found in the code but missing here fails the test: add it here and a rule to
 * deploy/role.yaml. Watches are found by their URL paths instead.
 */
const API_CALLS: Record<string, Permission> = {
  listNamespacedPod: { group: "", resource: "pods", verb: "list" },
  listNamespacedConfigMap: { group: "", resource: "configmaps", verb: "list" },
  createNamespacedEvent: { group: "", resource: "events", verb: "create" },
  readNamespacedLease: { group: "coordination.k8s.io", resource: "leases", verb: "get" },
  createNamespacedLease: { group: "coordination.k8s.io", resource: "leases", verb: "create" },
  replaceNamespacedLease: { group: "coordination.k8s.io", resource: "leases", verb: "update" },
};

/** The client-node API classes the code may use, by the API group they talk to. */
const API_CLASSES: Record<string, string> = {
  CoreV1Api: "",
  CoordinationV1Api: "coordination.k8s.io",
};

/** `deno compile` flags that shape the file written, not what the program may do. */
const COMPILE_ONLY_FLAGS = new Set(["--exclude-unused-npm"]);
const COMPILE_TARGETS: Record<string, string> = {
  "compile:amd64": "x86_64-unknown-linux-gnu",
  "compile:arm64": "aarch64-unknown-linux-gnu",
};

/** The glibc pieces a Linux Deno binary links (ldd), and nothing more. */
const GLIBC_FILES = [
  "ld-linux-*.so.*",
  "libc.so.6",
  "libm.so.6",
  "libgcc_s.so.1",
  "libdl.so.2",
  "libpthread.so.0",
  "librt.so.1",
];

// ---------------------------------------------------------------------------
// Reading the files

interface Kustomization {
  namespace: string;
  resources: string[];
  labels?: { pairs: Record<string, string>; includeSelectors?: boolean }[];
  images?: { name: string; newName?: string; newTag?: string }[];
}

interface Manifest {
  file: string;
  object: { apiVersion: string; kind: string; metadata: { name: string } };
}

function readText(path: string): Promise<string> {
  return Deno.readTextFile(new URL(path, ROOT));
}

/** Every YAML document in a file, refusing syntax errors and duplicate keys. */
async function readYaml(path: string): Promise<unknown[]> {
  const documents = parseAllDocuments(await readText(path));
  assert.ok(Array.isArray(documents), `${path} holds no YAML document`);
  return documents.map((document, index) => {
    assert.deepEqual(document.errors.map(String), [], `${path}, document ${index + 1}`);
    return document.toJS();
  }).filter((object) => object !== null);
}

async function readKustomization(): Promise<Kustomization> {
  const [kustomization] = await readYaml("deploy/kustomization.yaml");
  return kustomization as Kustomization;
}

/** The objects the kustomize base is made of, with the file each comes from. */
async function readBase(): Promise<Manifest[]> {
  const kustomization = await readKustomization();
  const manifests: Manifest[] = [];
  for (const file of kustomization.resources) {
    for (const object of await readYaml(`deploy/${file}`)) {
      manifests.push({ file, object: object as Manifest["object"] });
    }
  }
  return manifests;
}

function only<T>(manifests: Manifest[], kind: string): T {
  const found = manifests.filter((m) => m.object.kind === kind);
  assert.equal(found.length, 1, `expected one ${kind}, found ${found.length}`);
  return found[0].object as T;
}

async function readExample(): Promise<Manifest[]> {
  const file = "examples/rkllama-daemonset.yaml";
  return (await readYaml(`deploy/${file}`)).map((object) => ({
    file,
    object: object as Manifest["object"],
  }));
}

/** The router's one container in the Deployment. */
function routerContainer(deployment: k8s.V1Deployment): k8s.V1Container {
  const containers = deployment.spec!.template.spec!.containers;
  assert.equal(containers.length, 1, "the router pod has one container");
  return containers[0];
}

/**
 * The router's config as the Deployment's variables and args make it, with the
 * Downward API fields filled with sample values, and `$(VAR)` expanded as the
 * kubelet does.
 */
function deployedConfig(deployment: k8s.V1Deployment, namespace: string): RouterConfig {
  const container = routerContainer(deployment);
  const downward: Record<string, string> = {
    "metadata.namespace": namespace,
    "metadata.name": "rkllama-router-5d4f8b7c9-x2x7q",
    "status.podIP": "10.42.0.17",
  };
  const values = new Map<string, string>();
  for (const variable of container.env ?? []) {
    const fieldPath = variable.valueFrom?.fieldRef?.fieldPath;
    const value = fieldPath !== undefined ? downward[fieldPath] : (variable.value ?? "").replaceAll(
      /\$\((\w+)\)/g,
      (_: string, name: string) => values.get(name) ?? "",
    );
    assert.ok(value !== undefined, `${variable.name}: no sample value for ${fieldPath}`);
    values.set(variable.name, value);
  }
  const parsed = parseConfig(container.args ?? [], (name) => values.get(name));
  assert.equal(parsed.help, false);
  return (parsed as { config: RouterConfig }).config;
}

// ---------------------------------------------------------------------------
// Checks that need more than a line

/**
 * Fields of `value` that a Kubernetes object of client-node's model `type` does not
 * have, or of the wrong type: a misspelt key in a manifest is ignored by the API
 * server's non-strict decoding, so it has to be caught here.
 */
function schemaProblems(value: unknown, type: string, path: string): string[] {
  if (value === null || value === undefined) return [];
  const list = /^Array<(.+)>$/.exec(type);
  if (list) {
    if (!Array.isArray(value)) return [`${path}: expected a list`];
    return value.flatMap((item, index) => schemaProblems(item, list[1], `${path}[${index}]`));
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  const isObject = typeof value === "object" && !Array.isArray(value);
  if (map) {
    if (!isObject) return [`${path}: expected a map`];
    return Object.entries(value).flatMap(([key, item]) =>
      schemaProblems(item, map[1], `${path}.${key}`)
    );
  }
  const wrong = (
    expected: string,
  ) => [`${path}: expected ${expected}, got ${JSON.stringify(value)}`];
  switch (type) {
    case "string":
    case "Date":
      return typeof value === "string" ? [] : wrong("a string");
    case "number":
      return typeof value === "number" ? [] : wrong("a number");
    case "boolean":
      return typeof value === "boolean" ? [] : wrong("true or false");
    case "IntOrString":
      return typeof value === "number" || typeof value === "string"
        ? []
        : wrong("a number or string");
    case "any":
    case "object":
      return [];
  }
  const model = (k8s as unknown as Record<string, unknown>)[type] as
    | { getAttributeTypeMap?: () => { baseName: string; type: string }[] }
    | undefined;
  if (typeof model?.getAttributeTypeMap !== "function") return [`${path}: unknown type ${type}`];
  if (!isObject) return wrong("an object");
  const fields = new Map(model.getAttributeTypeMap().map((field) => [field.baseName, field.type]));
  return Object.entries(value).flatMap(([key, item]) => {
    const fieldType = fields.get(key);
    if (fieldType === undefined) return [`${path}.${key}: ${type} has no such field`];
    return schemaProblems(item, fieldType, `${path}.${key}`);
  });
}

/** Whether every `key=value` of a label selector holds for the labels. */
function selects(selector: string, labels: Record<string, string>): boolean {
  return selector.split(",").every((requirement) => {
    const match = /^\s*([\w./-]+)\s*==?\s*([\w.-]*)\s*$/.exec(requirement);
    assert.ok(match, `selector '${selector}': only key=value requirements are checked here`);
    return labels[match[1]] === match[2];
  });
}

function isSubset(part: Record<string, string>, whole: Record<string, string>): boolean {
  return Object.entries(part).every(([key, value]) => whole[key] === value);
}

/** A Role's rules as one permission per group, resource and verb, with the names they allow. */
function expandRules(role: k8s.V1Role): (Permission & { names: string[] })[] {
  return (role.rules ?? []).flatMap((rule) =>
    (rule.apiGroups ?? []).flatMap((group) =>
      (rule.resources ?? []).flatMap((resource) =>
        rule.verbs.map((verb) => ({ group, resource, verb, names: rule.resourceNames ?? [] }))
      )
    )
  );
}

/** The RBAC request attributes of one HTTP request to the API server, as the API server derives them. */
function requestAttributes(request: KubeRequest): Permission & { name: string } {
  const match =
    /^\/(?:api\/v1|apis\/([^/]+)\/[^/]+)\/namespaces\/[^/]+\/([^/]+)(?:\/([^/]+))?(?:\/([^/]+))?$/
      .exec(request.path);
  assert.ok(match, `${request.method} ${request.path} is not a namespaced call a Role can allow`);
  const [, group = "", resource, name = "", subresource] = match;
  const watch = request.query.watch === "true" || request.query.watch === "1";
  const verb = {
    GET: name !== "" ? "get" : watch ? "watch" : "list",
    POST: "create",
    PUT: "update",
    PATCH: "patch",
    DELETE: name !== "" ? "delete" : "deletecollection",
  }[request.method];
  assert.ok(verb, `${request.method} ${request.path}: unexpected method`);
  // A list or watch of one object by `fieldSelector=metadata.name=X` is authorized as on X.
  const byName = /^metadata\.name==?([^,]+)$/.exec(request.query.fieldSelector ?? "");
  return {
    group,
    resource: subresource ? `${resource}/${subresource}` : resource,
    verb,
    name: name !== "" ? name : (verb === "list" || verb === "watch") && byName ? byName[1] : "",
  };
}

/** RBAC's decision for one request. */
function roleAllows(role: k8s.V1Role, request: Permission & { name: string }): boolean {
  const has = (list: string[] | undefined, value: string) =>
    (list ?? []).includes(value) || (list ?? []).includes("*");
  return (role.rules ?? []).some((rule) =>
    has(rule.apiGroups, request.group) && has(rule.resources, request.resource) &&
    has(rule.verbs, request.verb) &&
    ((rule.resourceNames ?? []).length === 0 || rule.resourceNames!.includes(request.name))
  );
}

/** The repository's own modules that `main.ts` imports, as paths from the root. */
async function shippedModules(): Promise<string[]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "main.ts"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const info = JSON.parse(new TextDecoder().decode(output.stdout));
  return (info.modules as { specifier: string }[])
    .map((module) => module.specifier)
    .filter((specifier) => specifier.startsWith(ROOT.href))
    .map((specifier) => specifier.slice(ROOT.href.length));
}

/** The Kubernetes permissions the shipped code needs, found by reading it. */
async function permissionsInCode(): Promise<{ needed: Permission[]; problems: string[] }> {
  const needed: Permission[] = [];
  const problems: string[] = [];
  const unused = new Set(Object.keys(API_CALLS));
  for (const path of await shippedModules()) {
    const text = await readText(path);
    const classes = [...text.matchAll(/makeApiClient\(\s*k8s\.(\w+)\s*\)/g)].map((m) => m[1]);
    for (const name of classes) {
      if (!(name in API_CLASSES)) {
        problems.push(`${path} uses k8s.${name}, which the test does not know`);
      }
    }
    const groups = new Set(classes.map((name) => API_CLASSES[name]));
    for (const [, method] of text.matchAll(/\.(\w+ForAllNamespaces)\s*\(/g)) {
      problems.push(`${path} calls ${method}: that needs a ClusterRole`);
    }
    const calls =
      /\.((?:list|read|create|replace|patch|delete|deleteCollection)Namespaced\w+)\s*\(/g;
    for (const [, method] of text.matchAll(calls)) {
      const permission = API_CALLS[method];
      if (!permission) {
        problems.push(
          `${path} calls ${method}: add it to API_CALLS and a rule to deploy/role.yaml`,
        );
        continue;
      }
      if (!groups.has(permission.group)) {
        problems.push(`${path} calls ${method} on an API other than API_CALLS says`);
      }
      unused.delete(method);
      needed.push(permission);
    }
    const watches =
      /(["'`])\/(?:api\/v1|apis\/([\w.]+)\/v\w+)\/namespaces\/\$\{[^}]+\}\/([a-z]+)\1/g;
    for (const [, , group = "", resource] of text.matchAll(watches)) {
      needed.push({ group, resource, verb: "watch" });
    }
  }
  for (const method of unused) {
    problems.push(`API_CALLS lists ${method}, which the code no longer calls`);
  }
  return { needed, problems };
}

// ---------------------------------------------------------------------------
// The Dockerfile

interface Stage {
  name: string;
  image: string;
  platform: string;
  instructions: { keyword: string; args: string }[];
}

/** Global ARGs and stages of a Dockerfile, with continuation lines joined. */
function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const lines: string[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("#") || (pending === "" && line === "")) continue;
    if (line.endsWith("\\")) {
      pending += line.slice(0, -1) + " ";
      continue;
    }
    lines.push((pending + line).trim());
    pending = "";
  }
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of lines) {
    const [, keyword, rest] = /^(\S+)\s*(.*)$/.exec(line)!;
    if (keyword === "FROM") {
      const from = /^(?:--platform=(\S+)\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      assert.ok(from, `cannot read FROM ${rest}`);
      stages.push({
        platform: from[1] ?? "",
        image: from[2],
        name: from[3] ?? "",
        instructions: [],
      });
    } else if (stages.length === 0) {
      const arg = /^ARG\s+(\w+)=(\S+)$/.exec(line);
      assert.ok(arg, `before the first FROM only ARG NAME=VALUE is expected: ${line}`);
      args.set(arg[1], arg[2]);
    } else {
      stages.at(-1)!.instructions.push({ keyword, args: rest });
    }
  }
  return { args, stages };
}

/** `deno.json`'s tasks, each split into words. */
async function tasks(): Promise<Record<string, string[]>> {
  const config = JSON.parse(await readText("deno.json"));
  return Object.fromEntries(
    Object.entries(config.tasks as Record<string, string>).map(([name, task]) => [
      name,
      task.trim().split(/\s+/),
    ]),
  );
}

/** A compile task's flags, without the ones that only shape the output, plus its target and output. */
function compileTask(words: string[]): { flags: string[]; target: string; output: string } {
  assert.deepEqual(words.slice(0, 2), ["deno", "compile"]);
  assert.equal(words.at(-1), "main.ts");
  const flags: string[] = [];
  let target = "";
  let output = "";
  const rest = words.slice(2, -1);
  for (let i = 0; i < rest.length; i++) {
    const [flag, inline] = rest[i].split(/=(.*)/s);
    const value = () => inline ?? rest[++i];
    if (flag === "--target") target = value();
    else if (flag === "--output" || flag === "-o") output = value();
    else if (!COMPILE_ONLY_FLAGS.has(flag)) flags.push(rest[i]);
  }
  return { flags, target, output };
}

/** Regular expressions for the wildcards of `.dockerignore` patterns (Go's filepath.Match, plus `**`). */
const GLOB_PIECES = new Map([["**/", "(?:.*/)?"], ["**", ".*"], ["*", "[^/]*"], ["?", "[^/]"]]);

/** Whether `.dockerignore` keeps a path (relative to the context) out of the build. */
function dockerIgnores(patterns: string[], path: string): boolean {
  const parts = path.split("/");
  const prefixes = parts.map((_, index) => parts.slice(0, index + 1).join("/"));
  let ignored = false;
  for (const line of patterns) {
    const exception = line.startsWith("!");
    const pattern = (exception ? line.slice(1) : line).replace(/^\/+/, "");
    const source = pattern.split(/(\*\*\/|\*\*|\*|\?)/).map((piece) =>
      GLOB_PIECES.get(piece) ?? piece.replace(/[.+^${}()|[\]\\]/g, "\\$&")
    ).join("");
    const regex = new RegExp(`^${source}$`);
    if (prefixes.some((prefix) => regex.test(prefix))) ignored = !exception;
  }
  return ignored;
}

/** `kubectl kustomize` or `kustomize build`, whichever is installed. */
async function kustomizeCommand(): Promise<string[] | undefined> {
  const candidates = [
    { probe: ["kubectl", "version", "--client"], command: ["kubectl", "kustomize"] },
    { probe: ["kustomize", "version"], command: ["kustomize", "build"] },
  ];
  for (const { probe, command } of candidates) {
    try {
      const status = await new Deno.Command(probe[0], {
        args: probe.slice(1),
        stdout: "null",
        stderr: "null",
      }).output();
      if (status.success) return command;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return undefined;
}

const kustomize = await kustomizeCommand();
if (kustomize === undefined) {
  console.warn(
    "deploy_test.ts: neither kubectl nor kustomize is installed, so deploy/ is not rendered " +
      "(the test 'kustomize renders deploy/...' is ignored)",
  );
}

// ---------------------------------------------------------------------------
// The tests

Deno.test("every manifest parses, with the right apiVersion and only fields the Kubernetes API has", async () => {
  for (const { file, object } of [...await readBase(), ...await readExample()]) {
    const kind = KINDS[object.kind];
    assert.ok(kind, `${file}: the test does not know kind ${object.kind}`);
    assert.equal(object.apiVersion, kind.apiVersion, `${file}: ${object.kind}`);
    assert.deepEqual(schemaProblems(object, kind.model, `${file} ${object.kind}`), []);
  }
});

Deno.test("kustomization.yaml lists every file in deploy/ but the examples and the README section", async () => {
  const files: string[] = [];
  for await (const entry of Deno.readDir(new URL("deploy/", ROOT))) {
    if (entry.isFile && !["kustomization.yaml", "README-deploy.md"].includes(entry.name)) {
      files.push(entry.name);
    } else if (entry.isDirectory) {
      assert.equal(entry.name, "examples", "deploy/ has no other folder");
    }
  }
  const kustomization = await readKustomization();
  assert.deepEqual([...kustomization.resources].sort(), files.sort());
  assert.equal(kustomization.namespace, "rkllama");
});

Deno.test("selectors use only labels that never change and match the router's pods", async () => {
  const base = await readBase();
  const kustomization = await readKustomization();
  const deployment = only<k8s.V1Deployment>(base, "Deployment");
  const selector = deployment.spec!.selector;
  const podLabels = deployment.spec!.template.metadata!.labels!;
  assert.equal(selector.matchExpressions, undefined);
  assert.deepEqual(selector.matchLabels, {
    "app.kubernetes.io/name": "rkllama-router",
    "app.kubernetes.io/instance": "rkllama-router",
  });
  assert.ok(isSubset(selector.matchLabels!, podLabels), "the selector selects the pod template");
  const service = only<k8s.V1Service>(base, "Service");
  assert.deepEqual(service.spec!.selector, selector.matchLabels);
  const budget = only<k8s.V1PodDisruptionBudget>(base, "PodDisruptionBudget");
  assert.deepEqual(budget.spec!.selector, { matchLabels: selector.matchLabels });
  for (const spread of deployment.spec!.template.spec!.topologySpreadConstraints ?? []) {
    assert.ok(isSubset(spread.labelSelector!.matchLabels!, podLabels));
  }
  // Labels added by kustomize stay off selectors; the version label follows the image tag.
  for (const labels of kustomization.labels ?? []) {
    assert.notEqual(labels.includeSelectors, true, "kustomize labels must not reach selectors");
    const version = labels.pairs["app.kubernetes.io/version"];
    if (version !== undefined) {
      const image = kustomization.images?.find((i) => i.name === routerContainer(deployment).image);
      assert.equal(version, image?.newTag, "app.kubernetes.io/version equals the image tag");
    }
  }
  // The router must not discover itself as an RKLlama pod.
  const config = deployedConfig(deployment, kustomization.namespace);
  assert.equal(selects(config.selector, podLabels), false);
});

Deno.test("the ServiceAccount, Role and RoleBinding line up and the Deployment runs as that ServiceAccount", async () => {
  const base = await readBase();
  const kustomization = await readKustomization();
  const account = only<k8s.V1ServiceAccount>(base, "ServiceAccount");
  const role = only<k8s.V1Role>(base, "Role");
  const binding = only<k8s.V1RoleBinding>(base, "RoleBinding");
  const deployment = only<k8s.V1Deployment>(base, "Deployment");
  assert.deepEqual(binding.roleRef, {
    apiGroup: "rbac.authorization.k8s.io",
    kind: "Role",
    name: role.metadata!.name,
  });
  assert.deepEqual(binding.subjects, [
    { kind: "ServiceAccount", name: account.metadata!.name, namespace: kustomization.namespace },
  ]);
  const pod = deployment.spec!.template.spec!;
  assert.equal(pod.serviceAccountName, account.metadata!.name);
  assert.notEqual(pod.automountServiceAccountToken, false, "the router needs its token");
  assert.notEqual(account.automountServiceAccountToken, false);
});

Deno.test("the Role allows every Kubernetes call the code makes, and nothing more", async () => {
  const base = await readBase();
  const role = only<k8s.V1Role>(base, "Role");
  const config = deployedConfig(only(base, "Deployment"), "rkllama");
  const { needed, problems } = await permissionsInCode();
  assert.deepEqual(problems, []);
  const key = (p: Permission) => `${p.verb} ${p.group || "core"}/${p.resource}`;
  const neededKeys = new Set(needed.map(key));
  assert.deepEqual([...neededKeys].sort(), [
    "create coordination.k8s.io/leases",
    "create core/events",
    "get coordination.k8s.io/leases",
    "list core/configmaps",
    "list core/pods",
    "update coordination.k8s.io/leases",
    "watch core/configmaps",
    "watch core/pods",
  ]);
  const granted = expandRules(role);
  for (const permission of needed) {
    assert.ok(granted.some((g) => key(g) === key(permission)), `the Role lacks ${key(permission)}`);
  }
  for (const grant of granted) {
    assert.ok(
      neededKeys.has(key(grant)),
      `the Role allows ${key(grant)}, which the code never does`,
    );
  }
  // resourceNames name exactly the objects the deployed router uses.
  const namesFor: Record<string, string> = {
    configmaps: config.configMap,
    leases: config.leaseName,
  };
  for (const grant of granted.filter((g) => g.names.length > 0)) {
    assert.deepEqual(grant.names, [namesFor[grant.resource]], key(grant));
    assert.notEqual(grant.verb, "create", "resourceNames never match a create");
  }
});

Deno.test("a router in Kubernetes mode makes only requests the Role allows", async () => {
  const base = await readBase();
  const role = only<k8s.V1Role>(base, "Role");
  const config = deployedConfig(only(base, "Deployment"), "default");
  const world = await startKubeWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] }, {
    overrides: { configMap: config.configMap, leaseName: config.leaseName },
  });
  const requests = world.kube.requests;
  const waitFor = (method: string, path: RegExp) =>
    world.kube.waitForRequest((r) => r.method === method && path.test(r.path), {
      signal: AbortSignal.timeout(20_000),
    });
  try {
    await waitFor("POST", /\/leases$/);
    // A refused models.yaml makes the router record a Warning Event.
    world.kube.apply(
      "configmaps",
      configMapObject(config.configMap, { "models.yaml": "models:\n  qwen:\n    replica: 1\n" }),
    );
    await waitFor("POST", /\/events$/);
    await waitFor("PUT", /\/leases\//);
  } finally {
    // Shutting down releases the Lease: that request is checked too.
    await world[Symbol.asyncDispose]();
  }
  const seen = new Set<string>();
  for (const request of requests) {
    const attributes = requestAttributes(request);
    seen.add(`${attributes.verb} ${attributes.resource}`);
    assert.ok(
      roleAllows(role, attributes),
      `the Role does not allow ${request.method} ${request.path} ${JSON.stringify(request.query)}`,
    );
  }
  // Every kind of call was made, so the check above covered them all.
  assert.deepEqual([...seen].sort(), [
    "create events",
    "create leases",
    "get leases",
    "list configmaps",
    "list pods",
    "update leases",
    "watch configmaps",
    "watch pods",
  ]);
});

Deno.test("the router's port, probes and Service target exist, and the probe paths answer", async () => {
  const base = await readBase();
  const deployment = only<k8s.V1Deployment>(base, "Deployment");
  const container = routerContainer(deployment);
  const config = deployedConfig(deployment, "rkllama");
  const port = container.ports?.find((p) => p.name === "http");
  assert.ok(port, "the router container names its port http");
  assert.equal(
    port.containerPort,
    config.port,
    "the container port is the port the router listens on",
  );
  const service = only<k8s.V1Service>(base, "Service");
  const [servicePort] = service.spec!.ports!;
  assert.equal(servicePort.targetPort, "http");
  assert.equal(servicePort.port, 11434, "Ollama's port, which Ollama clients default to");
  assert.equal(new URL(config.advertiseUrl).port, String(config.port));
  const annotations = deployment.spec!.template.metadata!.annotations!;
  assert.deepEqual(annotations, {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": String(config.port),
    "prometheus.io/path": "/metrics",
  });

  const probes = {
    startup: container.startupProbe,
    liveness: container.livenessProbe,
    readiness: container.readinessProbe,
  };
  for (const [kind, probe] of Object.entries(probes)) {
    assert.ok(probe?.httpGet, `the router has an HTTP ${kind} probe`);
    assert.ok([port.name, port.containerPort].includes(probe.httpGet.port), `${kind} probe port`);
  }
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] }, {
    unreachableAfter: 1,
  });
  const [pod] = world.cluster.pods;
  const status = async (probe: k8s.V1Probe | undefined) => {
    const response = await fetch(`${world.url}${probe!.httpGet!.path}`);
    await response.body?.cancel();
    return response.status;
  };
  // With a pod that can take requests every probe passes.
  for (const probe of Object.values(probes)) assert.equal(await status(probe), 200);
  // Without one, readiness fails and the others still pass.
  await pod.kill();
  await world.router.poller.repoll(pod.name);
  assert.equal(await status(probes.readiness), 503);
  assert.equal(await status(probes.liveness), 200);
  assert.equal(await status(probes.startup), 200);
  // The router answered them itself: none reached the pod.
  const probePaths = Object.values(probes).map((probe) => probe!.httpGet!.path);
  assert.equal(pod.events.some((e) => e.type === "request" && probePaths.includes(e.path)), false);
});

Deno.test("every variable the Deployment sets is a router flag, with the Downward API for namespace and name", async () => {
  const deployment = only<k8s.V1Deployment>(await readBase(), "Deployment");
  const env = routerContainer(deployment).env ?? [];
  const flagVariables = new Set(FLAGS.map((spec) => envName(spec.flag)));
  for (const [index, variable] of env.entries()) {
    if (flagVariables.has(variable.name)) continue;
    // A helper is fine only as the $(NAME) of a later ROUTER_* value.
    const usedBy = env.slice(index + 1).filter((later) =>
      flagVariables.has(later.name) && later.value?.includes(`$(${variable.name})`)
    );
    assert.ok(usedBy.length > 0, `${variable.name} is not a router flag and no flag uses it`);
  }
  const fieldOf = (name: string) =>
    env.find((variable) => variable.name === name)?.valueFrom?.fieldRef?.fieldPath;
  assert.equal(fieldOf("ROUTER_NAMESPACE"), "metadata.namespace");
  assert.equal(fieldOf("ROUTER_IDENTITY"), "metadata.name");
  // Every value is one the router accepts.
  deployedConfig(deployment, "rkllama");
});

Deno.test("the router pod runs as a non-root user on a read-only root filesystem with no privileges", async () => {
  const deployment = only<k8s.V1Deployment>(await readBase(), "Deployment");
  const pod = deployment.spec!.template.spec!;
  const container = routerContainer(deployment);
  const context = { ...pod.securityContext, ...container.securityContext };
  assert.equal(context.runAsNonRoot, true);
  assert.ok(Number.isInteger(context.runAsUser) && context.runAsUser! > 0, "a numeric user");
  assert.equal(context.readOnlyRootFilesystem, true);
  assert.equal(context.allowPrivilegeEscalation, false);
  assert.notEqual(context.privileged, true);
  assert.deepEqual(context.capabilities, { drop: ["ALL"] });
  assert.deepEqual(context.seccompProfile, { type: "RuntimeDefault" });
  // The image's user is the same one.
  const { stages } = parseDockerfile(await readText("Dockerfile"));
  const user = stages.at(-1)!.instructions.find((i) => i.keyword === "USER")?.args;
  assert.equal(user, `${context.runAsUser}:${context.runAsGroup}`);
  // /tmp is the only writable place (the compiled binary's code cache).
  const tmp = container.volumeMounts?.find((mount) => mount.mountPath === "/tmp");
  assert.ok(tmp && pod.volumes?.find((v) => v.name === tmp.name)?.emptyDir, "an emptyDir at /tmp");
  // Service variables off: a Service named "router" would set ROUTER_PORT.
  assert.equal(pod.enableServiceLinks, false);
});

Deno.test("replicas, rollout, grace period and disruption budget fit together", async () => {
  const base = await readBase();
  const deployment = only<k8s.V1Deployment>(base, "Deployment");
  const config = deployedConfig(deployment, "rkllama") as unknown as Record<string, unknown>;
  assert.equal(deployment.spec!.replicas, 2);
  assert.equal(deployment.spec!.strategy?.rollingUpdate?.maxUnavailable, 0);
  // The drain flags come with issue 6; until then their planned defaults count.
  const flagMs = (flag: string, fallback: number) => {
    const spec = FLAGS.find((s) => s.flag === flag);
    return spec ? config[spec.key] as number : fallback;
  };
  const leaseReleaseMs = 10_000;
  const neededMs = flagMs("drain-delay", 5_000) + flagMs("shutdown-timeout", 60_000) +
    leaseReleaseMs;
  const graceSeconds = deployment.spec!.template.spec!.terminationGracePeriodSeconds!;
  assert.ok(graceSeconds * 1000 >= neededMs, `${graceSeconds} s < ${neededMs} ms`);
  const budget = only<k8s.V1PodDisruptionBudget>(base, "PodDisruptionBudget");
  assert.equal(budget.spec!.maxUnavailable, 1);
  assert.equal(budget.spec!.minAvailable, undefined);
  assert.equal(budget.spec!.unhealthyPodEvictionPolicy, "AlwaysAllow");
});

Deno.test("the example ConfigMap is the one the router reads, and its models.yaml is valid", async () => {
  const base = await readBase();
  const config = deployedConfig(only(base, "Deployment"), "rkllama");
  const configMap = only<k8s.V1ConfigMap>(base, "ConfigMap");
  assert.equal(configMap.metadata!.name, config.configMap);
  const result = parseModelsConfig(configMap.data!["models.yaml"]);
  assert.ok(result.ok, result.ok ? "" : result.error);
  assert.ok(result.config.models.length > 0);
});

Deno.test("the example RKLlama DaemonSet is found by the router, survives loads and keeps models loaded as long as the router expects", async () => {
  const config = deployedConfig(only(await readBase(), "Deployment"), "rkllama");
  const example = await readExample();
  const daemonSet = only<k8s.V1DaemonSet>(example, "DaemonSet");
  const template = daemonSet.spec!.template;
  const labels = template.metadata!.labels!;
  assert.ok(isSubset(daemonSet.spec!.selector.matchLabels!, labels));
  assert.ok(selects(config.selector, labels), `the router's selector ${config.selector}`);
  assert.equal(daemonSet.metadata!.namespace, undefined, "applied in the router's namespace");
  const [container] = template.spec!.containers;
  const port = container.ports?.find((p) => p.name === "http");
  assert.ok(port, "discovery takes the port named http");
  // Liveness by TCP: HTTP probes fail while a FastAPI-generation pod loads a model.
  const liveness = container.livenessProbe!;
  assert.ok(liveness.tcpSocket, "TCP liveness");
  assert.equal(liveness.httpGet ?? liveness.exec ?? liveness.grpc, undefined);
  assert.ok([port.name, port.containerPort].includes(liveness.tcpSocket.port));
  assert.ok(container.readinessProbe, "a readiness probe");
  assert.ok(
    container.securityContext?.privileged === true ||
      Object.keys(container.resources?.limits ?? {}).some((name) => name.includes("npu")),
    "access to the NPU",
  );
  // /etc/rkllama/rkllama.ini comes from the ConfigMap in the same file.
  const mount = container.volumeMounts!.find((m) => m.mountPath === "/etc/rkllama")!;
  assert.ok(mount, "a volume at /etc/rkllama");
  const volume = template.spec!.volumes!.find((v) => v.name === mount.name)!;
  const iniMap = example.find((m) =>
    m.object.kind === "ConfigMap" && m.object.metadata.name === volume.configMap?.name
  )?.object as k8s.V1ConfigMap | undefined;
  const ini = iniMap?.data?.["rkllama.ini"];
  assert.ok(ini, "the mounted ConfigMap has rkllama.ini");
  const model = iniSection(ini, "model");
  const minutes = Number(model.get("max_minutes_loaded_in_memory"));
  assert.ok(minutes > 30, "the idle expiry is raised above RKLlama's 30 minutes");
  assert.equal(config.podIdleExpiryMs, minutes * 60_000, "ROUTER_POD_IDLE_EXPIRY matches");
  const server = iniSection(ini, "server");
  if (server.has("port")) assert.equal(Number(server.get("port")), port.containerPort);
});

/** The `key = value` pairs of one section of an INI file. */
function iniSection(text: string, section: string): Map<string, string> {
  const values = new Map<string, string>();
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) current = header[1].trim();
    else if (current === section) {
      const [key, ...value] = line.split("=");
      values.set(key.trim(), value.join("=").trim());
    }
  }
  return values;
}

Deno.test("the compile tasks give the binary exactly the start task's flags", async () => {
  const all = await tasks();
  const start = all.start;
  assert.deepEqual(start.slice(0, 2), ["deno", "run"]);
  assert.equal(start.at(-1), "main.ts");
  const startFlags = start.slice(2, -1);
  assert.ok(startFlags.includes("--unstable-no-legacy-abort"));
  assert.ok(all.compile, "deno.json has a compile task");
  const host = compileTask(all.compile);
  assert.deepEqual([...host.flags].sort(), [...startFlags].sort(), "compile");
  assert.equal(host.target, "");
  const outputs = new Set([host.output]);
  for (const [name, target] of Object.entries(COMPILE_TARGETS)) {
    assert.ok(all[name], `deno.json has a ${name} task`);
    const cross = compileTask(all[name]);
    assert.deepEqual([...cross.flags].sort(), [...startFlags].sort(), name);
    assert.equal(cross.target, target, name);
    outputs.add(cross.output);
  }
  assert.equal(outputs.size, 3, "each task writes its own file");
});

Deno.test("the Dockerfile cross-compiles with those tasks, without emulation, onto an empty image", async () => {
  const { args, stages } = parseDockerfile(await readText("Dockerfile"));
  const ciDeno = /deno@(\d+\.\d+\.\d+)/.exec(await readText(".ci/run"))?.[1];
  assert.equal(args.get("DENO_VERSION"), ciDeno, "the same Deno as CI");
  const stage = (name: string) => stages.find((s) => s.name === name)!;
  const build = stage("build");
  assert.equal(build.image, "denoland/deno:${DENO_VERSION}");
  for (const s of stages) {
    if (s.instructions.some((i) => i.keyword === "RUN")) {
      assert.equal(s.platform, "$BUILDPLATFORM", `stage ${s.name} runs natively`);
    }
  }
  assert.ok(stages.some((s) => s.platform === "$TARGETPLATFORM"), "the target's glibc");
  // The flags live in deno.json only.
  const runs = build.instructions.filter((i) => i.keyword === "RUN").map((i) => i.args);
  assert.ok(runs.includes("deno task compile:${TARGETARCH}"));
  assert.ok(!runs.some((run) => /deno\s+compile/.test(run)), "no deno compile of its own");
  const workdir = build.instructions.find((i) => i.keyword === "WORKDIR")!.args;

  const final = stages.at(-1)!;
  assert.equal(final.image, "scratch");
  const copies = final.instructions.filter((i) => i.keyword === "COPY").map((i) =>
    /^--from=(\S+)\s+(\S+)\s+(\S+)$/.exec(i.args)!
  );
  assert.deepEqual(copies.map((c) => c[1]).sort(), ["build", "rootfs"]);
  const [, , binarySource, binary] = copies.find((c) => c[1] === "build")!;
  const all = await tasks();
  for (const name of Object.keys(COMPILE_TARGETS)) {
    const { output } = compileTask(all[name]);
    const arch = name.split(":")[1];
    assert.equal(binarySource.replace("${TARGETARCH}", arch), `${workdir}/${output}`, name);
  }
  const entrypoint = final.instructions.find((i) => i.keyword === "ENTRYPOINT")!.args;
  assert.deepEqual(JSON.parse(entrypoint), [binary]);
  const deployment = only<k8s.V1Deployment>(await readBase(), "Deployment");
  const expose = final.instructions.find((i) => i.keyword === "EXPOSE")!.args;
  assert.equal(Number(expose), routerContainer(deployment).ports![0].containerPort);
  assert.match(final.instructions.find((i) => i.keyword === "USER")!.args, /^[1-9]\d*:\d+$/);

  // Only the glibc pieces the binary links come from the target's Debian.
  const glibc = stage("rootfs").instructions.find((i) =>
    i.keyword === "COPY" && i.args.startsWith("--from=target-glibc")
  )!.args.split(/\s+/).slice(1, -1);
  assert.deepEqual(
    glibc.map((path) => path.split("/").at(-1)).sort(),
    [...GLIBC_FILES].sort(),
  );
});

Deno.test(".dockerignore keeps out nothing the binary is compiled from", async () => {
  const patterns = (await readText(".dockerignore")).split("\n").map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
  const needed = ["deno.json", "deno.lock", ...await shippedModules()];
  assert.ok(needed.includes("main.ts"));
  for (const path of needed) assert.equal(dockerIgnores(patterns, path), false, path);
  for (const path of [".git/config", "deploy_test.ts", "sim/pod.ts", "README.md"]) {
    assert.equal(dockerIgnores(patterns, path), true, path);
  }
});

Deno.test({
  name: "kustomize renders deploy/ into the namespace, with the image and labels set",
  ignore: kustomize === undefined,
  async fn() {
    const [command, ...args] = kustomize!;
    const output = await new Deno.Command(command, {
      args: [...args, new URL("deploy/", ROOT).pathname],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(output.success, new TextDecoder().decode(output.stderr));
    const rendered = parseAllDocuments(new TextDecoder().decode(output.stdout));
    assert.ok(Array.isArray(rendered));
    const objects = rendered.map((d) => d.toJS() as Manifest["object"] & k8s.KubernetesObject);
    const kustomization = await readKustomization();
    assert.deepEqual(
      objects.map((o) => o.kind).sort(),
      (await readBase()).map((m) => m.object.kind).sort(),
    );
    for (const object of objects) {
      assert.equal(object.metadata?.namespace, kustomization.namespace, object.kind);
      assert.equal(object.metadata?.labels?.["app.kubernetes.io/part-of"], "rkllama");
    }
    const deployment = objects.find((o) => o.kind === "Deployment") as k8s.V1Deployment;
    const [image] = kustomization.images!;
    assert.equal(routerContainer(deployment).image, `${image.newName}:${image.newTag}`);
    assert.deepEqual(Object.keys(deployment.spec!.selector.matchLabels!).sort(), [
      "app.kubernetes.io/instance",
      "app.kubernetes.io/name",
    ]);
    assert.equal(
      deployment.spec!.template.metadata!.labels!["app.kubernetes.io/version"],
      image.newTag,
    );
  },
});

Deno.test("with --max-body-total of large bodies in flight, burst after burst, the router stays under the Deployment's memory limit", async () => {
  const deployment = await Deno.readTextFile(new URL("deploy/deployment.yaml", ROOT));
  const limit = /limits:\s*\n(?:\s+\w+:.*\n)*?\s+memory:\s*(\d+)Gi/.exec(deployment);
  assert.ok(limit, "deploy/deployment.yaml sets a memory limit in Gi");
  const limitBytes = Number(limit[1]) * 2 ** 30;
  // A board that holds each large body half a second before it answers: the
  // bodies are in flight together, as many as --max-body-total (64 MiB) lets in.
  const backend = await startBackend({ holdMs: 500 });
  const logs = await Deno.makeTempDir();
  // The router as the image runs it: the start task's flags, the image's allocator settings.
  const router = await startRouter(backend.urls[0], `${logs}/router.log`);
  try {
    const body = JSON.stringify({
      model: "bench",
      stream: false,
      messages: [{ role: "user", content: "x".repeat(5 * 2 ** 20) }],
    });
    const sampler = peakRss(router.pid);
    let peak = 0;
    const statuses: number[] = [];
    try {
      for (let burst = 0; burst < 4; burst++) {
        await Promise.all(Array.from({ length: 20 }, async () => {
          const response = await fetch(`${router.url}/api/chat`, { method: "POST", body });
          statuses.push(response.status);
          if (response.status === 503) assert.ok(response.headers.get("retry-after"));
          await response.body?.cancel();
        }));
      }
    } finally {
      peak = await sampler.stop();
    }
    // Twelve 5 MiB bodies fit in 64 MiB: the rest of each burst is refused, not queued.
    assert.ok(statuses.filter((status) => status === 200).length >= 4 * 10, `${statuses}`);
    assert.ok(statuses.every((status) => status === 200 || status === 503), `${statuses}`);
    // Before issue 16 the same bursts took the router to 800-930 MiB.
    assert.ok(
      peak < limitBytes / 2,
      `peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB, half the limit is ${limitBytes / 2 ** 21} MiB`,
    );
  } finally {
    await router.close();
    await backend.close();
    await Deno.remove(logs, { recursive: true });
  }
});

/**
 * The highest RSS of process `pid` while it runs, read every 20 ms by a shell
 * loop (another process's /proc needs more than the tests' permissions).
 */
function peakRss(pid: number): { stop(): Promise<number> } {
  const child = new Deno.Command("sh", {
    args: ["-c", `while :; do grep VmRSS /proc/${pid}/status; sleep 0.02; done`],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let peak = 0;
  const reading = (async () => {
    for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
      for (const [, kb] of text.matchAll(/VmRSS:\s+(\d+) kB/g)) {
        peak = Math.max(peak, Number(kb) * 1024);
      }
    }
  })();
  return {
    async stop() {
      child.kill();
      await child.status;
      await reading;
      return peak;
    },
  };
}
