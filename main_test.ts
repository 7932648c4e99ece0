import assert from "node:assert/strict";
import { envName, FLAGS, OTHER_ENV } from "./config.ts";
import { startSimCluster } from "./sim/cluster.ts";
import { configMapObject, podObject, startFakeKube } from "./sim/kube.ts";

/** The flags `deno task start` gives `deno run`: the ones the compiled binary gets. */
async function startTaskFlags(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("./deno.json", import.meta.url)));
  const words: string[] = config.tasks.start.split(/\s+/);
  assert.deepEqual(words.slice(0, 2), ["deno", "run"]);
  assert.equal(words.at(-1), "main.ts");
  return words.slice(2, -1);
}

/** Runs main.ts exactly as `deno task start` does. */
async function routerProcess(args: string[], env: Record<string, string> = {}) {
  const command = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...await startTaskFlags(),
      new URL("./main.ts", import.meta.url).pathname,
      ...args,
    ],
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  return command.spawn();
}

/** Reads JSON log lines until the router says where it listens. */
async function listeningUrl(stdout: ReadableStream<Uint8Array>): Promise<string> {
  let buffer = "";
  for await (const text of stdout.pipeThrough(new TextDecoderStream())) {
    buffer += text;
    for (const line of buffer.split("\n").slice(0, -1)) {
      const record = JSON.parse(line);
      if (record.url) return record.url;
    }
  }
  throw new Error(`the router exited before listening; it wrote: ${buffer}`);
}

Deno.test("the start task lets the router read exactly the variables it reads, and no others", async () => {
  const flags = await startTaskFlags();
  const allowEnv = flags.find((flag) => flag.startsWith("--allow-env="));
  assert.ok(allowEnv, "the start task must list the variables it reads");
  assert.deepEqual(
    allowEnv.slice("--allow-env=".length).split(",").sort(),
    [...FLAGS.map((spec) => envName(spec.flag)), ...OTHER_ENV].sort(),
  );
  assert.ok(flags.includes("--ignore-env"), "libraries' own reads must find nothing");
});

Deno.test("--help prints every flag and exits 0", async () => {
  const output = await (await routerProcess(["--help"])).output();
  assert.equal(output.code, 0);
  const text = new TextDecoder().decode(output.stdout);
  for (const spec of FLAGS) assert.match(text, new RegExp(`--${spec.flag}( |$)`, "m"));
});

Deno.test("a bad flag is one clear line on stderr and exit code 2", async () => {
  const output = await (await routerProcess(["--port", "eighty"])).output();
  assert.equal(output.code, 2);
  assert.equal(
    new TextDecoder().decode(output.stderr),
    "rkllama-router: --port: expected a whole number from 0 to 65535, got 'eighty' (see --help)\n",
  );
});

Deno.test("the router runs with the start task's permissions, configured from the environment, and stops on SIGTERM", async () => {
  await using cluster = await startSimCluster({
    pods: [{ models: ["qwen"], loaded: ["qwen"] }, { models: ["phi"] }],
  });
  const child = await routerProcess([], {
    ROUTER_BACKENDS: cluster.backends,
    ROUTER_PORT: "0",
    ROUTER_HOST: "127.0.0.1",
    ROUTER_LOG_LEVEL: "debug",
  });
  const url = await listeningUrl(child.stdout);
  const tags = await (await fetch(`${url}/api/tags`)).json();
  assert.deepEqual(tags.models.map((m: { name: string }) => m.name), ["phi", "qwen"]);
  const chat = await fetch(`${url}/api/chat`, {
    method: "POST",
    body: JSON.stringify({ model: "phi", messages: [{ role: "user", content: "hi" }] }),
  });
  const lines = (await chat.text()).trim().split("\n");
  assert.equal(JSON.parse(lines.at(-1)!).done, true);
  child.kill("SIGTERM");
  const status = await child.status;
  assert.equal(status.code, 0);
  const stderr = await new Response(child.stderr).text();
  assert.equal(stderr, "");
});

Deno.test("the router runs in Kubernetes mode with the start task's permissions", async () => {
  await using kube = await startFakeKube();
  await using cluster = await startSimCluster({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const [pod] = cluster.pods;
  kube.apply(
    "pods",
    podObject({ name: pod.name, labels: { app: "rkllama" }, ip: pod.hostname, port: pod.port }),
  );
  kube.apply(
    "configmaps",
    configMapObject("rkllama-model-config", {
      "models.yaml": "models:\n  qwen:\n    replicas: 1\n",
    }),
  );
  const child = await routerProcess([], {
    ROUTER_KUBE_API: kube.url,
    ROUTER_PORT: "0",
    ROUTER_HOST: "127.0.0.1",
  });
  const url = await listeningUrl(child.stdout);
  const ps = await (await fetch(`${url}/api/ps`)).json();
  assert.deepEqual(
    ps.models.map((m: { name: string; pod_name: string }) => `${m.name}@${m.pod_name}`),
    [
      "qwen@rk-0",
    ],
  );
  await kube.waitForRequest((r) => r.path.endsWith("/leases/rkllama-router") && r.method === "PUT");
  const plan = await (await fetch(`${url}/router/plan`)).json();
  assert.equal(plan.config.valid, true);
  child.kill("SIGTERM");
  assert.equal((await child.status).code, 0);
  assert.equal(await new Response(child.stderr).text(), "");
});

Deno.test("a --models-file the binary may not read is refused at start, saying where to put it", async () => {
  const output = await (await routerProcess([
    "--backends",
    "http://127.0.0.1:1",
    "--models-file",
    "/tmp/models.yaml",
  ])).output();
  assert.equal(output.code, 2);
  assert.match(new TextDecoder().decode(output.stderr), /only under \/etc\/rkllama-router/);
});
