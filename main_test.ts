import assert from "node:assert/strict";
import { envName, FLAGS, OTHER_ENV } from "./config/flags.ts";
import { startSimCluster } from "./sim/cluster.ts";
import type { SimPod } from "./sim/pod.ts";
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

/** The permission set named by `-P=NAME` in `flags`, from deno.json's `"permissions"`. */
async function permissionSet(flags: string[]): Promise<Record<string, unknown>> {
  const config = JSON.parse(await Deno.readTextFile(new URL("./deno.json", import.meta.url)));
  const named = flags.find((flag) => flag.startsWith("-P="));
  assert.ok(named, "the start task names its permission set with -P=NAME");
  const set = config.permissions?.[named.slice("-P=".length)];
  assert.ok(set, `deno.json has no permission set ${named}`);
  return set;
}

Deno.test("the start task lets the router read exactly the variables it reads, and no others", async () => {
  const flags = await startTaskFlags();
  const set = await permissionSet(flags);
  assert.ok(Array.isArray(set.env), "the permission set must list the variables it reads");
  assert.deepEqual(
    [...set.env as string[]].sort(),
    [...FLAGS.map((spec) => envName(spec.flag)), ...OTHER_ENV].sort(),
  );
  assert.ok(flags.includes("--ignore-env"), "libraries' own reads must find nothing");
});

/** The tasks whose permissions are a named set in deno.json, not flags repeated per task. */
const SET_TASKS = [
  "start",
  "dev",
  "compile",
  "compile:amd64",
  "compile:arm64",
  "test",
  "test:cluster",
  "test:outage",
];

Deno.test("the router's tasks name a permission set deno.json defines, and repeat no --allow-*", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("./deno.json", import.meta.url)));
  for (const name of SET_TASKS) {
    const task: string = config.tasks[name];
    const set = /(?:^|\s)-P=(\S+)/.exec(task)?.[1];
    assert.ok(set && config.permissions[set], `${name}: names no permission set deno.json has`);
    assert.doesNotMatch(task, /--allow-/, `${name} repeats permissions`);
  }
});

Deno.test("--help prints every flag and exits 0", async () => {
  const output = await (await routerProcess(["--help"])).output();
  assert.equal(output.code, 0);
  const text = new TextDecoder().decode(output.stdout);
  for (const spec of FLAGS) assert.match(text, new RegExp(`--${spec.flag}( |$)`, "m"));
});

Deno.test("in static mode the router never loads the Kubernetes client", async () => {
  await using cluster = await startSimCluster({ pods: [{ models: ["qwen"] }] });
  // The same config, but the client is a module that fails as it loads.
  const config = JSON.parse(await Deno.readTextFile(new URL("./deno.json", import.meta.url)));
  const dir = await Deno.makeTempDir({ prefix: "rkllama-router-test-" });
  config.imports["@kubernetes/client-node"] =
    "data:text/javascript,throw new Error('the Kubernetes client was loaded')";
  await Deno.writeTextFile(`${dir}/deno.json`, JSON.stringify(config));
  // The lock keeps the other packages as they are (nothing to resolve again).
  await Deno.copyFile(new URL("./deno.lock", import.meta.url), `${dir}/deno.lock`);
  const modelsFile = `${dir}/models.yaml`;
  await Deno.writeTextFile(modelsFile, "models: {}\n");
  try {
    for (const kube of [false, true]) {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--config",
          `${dir}/deno.json`,
          "--allow-all",
          new URL("./main.ts", import.meta.url).pathname,
          ...(kube ? ["--kube-api", "http://127.0.0.50:9"] : ["--backends", cluster.backends]),
          "--models-file",
          modelsFile,
          "--drain-delay",
          "0s",
          "--port",
          "0",
          "--host",
          "127.0.0.1",
        ],
        clearEnv: true,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      if (kube) {
        // The check fails where it should: Kubernetes mode loads the stand-in, which throws.
        const output = await child.output();
        assert.equal(output.code, 1);
        assert.match(new TextDecoder().decode(output.stdout), /the Kubernetes client was loaded/);
        continue;
      }
      const log = logLines(child.stdout);
      await log.next(/^listening/);
      child.kill("SIGTERM");
      assert.equal((await child.status).code, 0);
      assert.equal(await new Response(child.stderr).text(), "");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an empty --backends is refused, not taken as Kubernetes mode", async () => {
  const output = await (await routerProcess(["--backends", ""])).output();
  assert.equal(output.code, 2);
  assert.match(new TextDecoder().decode(output.stderr), /--backends: .*at least one/);
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
    ROUTER_DRAIN_DELAY: "0s",
  });
  const url = await listeningUrl(child.stdout);
  const tags = await (await fetch(`${url}/api/tags`)).json();
  assert.deepEqual(tags.models.map((m: { name: string }) => m.name), ["phi:latest", "qwen:latest"]);
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
    ROUTER_DRAIN_DELAY: "0s",
  });
  const url = await listeningUrl(child.stdout);
  const ps = await (await fetch(`${url}/api/ps`)).json();
  assert.deepEqual(
    ps.models.map((m: { name: string; pod_name: string }) => `${m.name}@${m.pod_name}`),
    [
      "qwen:latest@rk-0",
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

/** The router's JSON log lines as they come, to wait on the one that says something happened. */
function logLines(stdout: ReadableStream<Uint8Array>) {
  const seen: { message: string; [field: string]: unknown }[] = [];
  let wake = Promise.withResolvers<void>();
  const ended = (async () => {
    let buffer = "";
    for await (const text of stdout.pipeThrough(new TextDecoderStream())) {
      buffer += text;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) {
        seen.push(JSON.parse(line));
      }
      wake.resolve();
      wake = Promise.withResolvers<void>();
    }
    wake.resolve();
  })();
  return {
    /** Resolves with the first line (past or future) whose message matches. */
    async next(pattern: RegExp) {
      for (let from = 0;;) {
        const found = seen.slice(from).find((line) => pattern.test(line.message));
        if (found) return found;
        from = seen.length;
        const done = await Promise.race([wake.promise.then(() => false), ended.then(() => true)]);
        if (done && !seen.slice(from).some((line) => pattern.test(line.message))) {
          throw new Error(`the router exited without logging ${pattern}`);
        }
      }
    },
  };
}

/** Sends `n` chat streams at once; resolves when the pods have all `n` requests. */
async function sendStreams(url: string, pods: SimPod[], n: number) {
  const chats = () =>
    pods.flatMap((pod) => pod.events).filter((e) => e.type === "request" && e.path === "/api/chat")
      .length;
  const before = chats();
  const responses = Array.from({ length: n }, () =>
    fetch(`${url}/api/chat`, {
      method: "POST",
      body: JSON.stringify({ model: "qwen", messages: [{ role: "user", content: "hi" }] }),
    }));
  await Promise.race(pods.map((pod) => pod.waitFor(() => chats() - before >= n)));
  return responses.map(async (response) => {
    try {
      const text = await (await response).text();
      return JSON.parse(text.trim().split("\n").at(-1)!);
    } catch {
      return undefined;
    }
  });
}

Deno.test("on SIGTERM the router turns unready, stops taking connections after --drain-delay, finishes 20 open streams and exits 0", async () => {
  await using cluster = await startSimCluster({
    pods: Array.from({ length: 4 }, () => ({
      models: ["qwen"],
      loaded: ["qwen"],
      tokens: Array(20).fill("x"),
    })),
  });
  const child = await routerProcess([
    "--backends",
    cluster.backends,
    "--port",
    "0",
    "--host",
    "127.0.0.1",
    "--drain-delay",
    "200ms",
    // Five streams per pod reach the pods (the router would queue all but one).
    "--slots",
    "5",
  ]);
  const log = logLines(child.stdout);
  const url = (await log.next(/^listening/)).url as string;
  // Paused pods hold every stream open across the signal (FastAPI pods also
  // queue all but one generation each).
  for (const pod of cluster.pods) pod.pause();
  const streams = await sendStreams(url, cluster.pods, 20);
  child.kill("SIGTERM");
  await log.next(/: draining;/);
  const ready = await fetch(`${url}/health/ready`);
  assert.equal(ready.status, 503);
  assert.equal((await ready.json()).status, "shutting down");
  await log.next(/no new connections/);
  await assert.rejects(fetch(`${url}/health`), TypeError);
  for (const pod of cluster.pods) pod.resume();
  const completed = (await Promise.all(streams)).filter((last) => last?.done === true).length;
  console.log(`[reliability] drain: streams=20 completed=${completed}`);
  assert.equal(completed, 20);
  assert.equal((await child.status).code, 0);
  await log.next(/every request finished/);
  assert.equal(await new Response(child.stderr).text(), "");
});

Deno.test("a second SIGTERM (a second after the first) makes a draining router exit at once, and --shutdown-timeout bounds the wait", async () => {
  await using cluster = await startSimCluster({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const [pod] = cluster.pods;
  for (const second of [true, false]) {
    const child = await routerProcess([
      "--backends",
      cluster.backends,
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--drain-delay",
      // Past the second in which a repeated signal is the same request to stop.
      second ? "1100ms" : "0s",
      "--shutdown-timeout",
      second ? "1h" : "200ms",
    ]);
    const log = logLines(child.stdout);
    const url = (await log.next(/^listening/)).url as string;
    pod.pause();
    const [stream] = await sendStreams(url, [pod], 1);
    child.kill("SIGTERM");
    if (second) {
      // As `deno task` delivers one Ctrl-C: twice, milliseconds apart.
      await log.next(/draining/);
      child.kill("SIGTERM");
      await log.next(/again within 1000 ms: the same request/);
    }
    await log.next(/no new connections/);
    if (second) child.kill("SIGTERM");
    assert.equal((await child.status).code, second ? 1 : 0);
    if (!second) await log.next(/cut; exiting/);
    pod.resume();
    const last = await stream;
    if (second) assert.equal(last, undefined, "the stream was cut");
    else {
      // Cut at --shutdown-timeout, but with a last line the ollama client raises.
      assert.deepEqual(last, { error: "the router is shutting down (--shutdown-timeout)" });
    }
    await child.stderr.cancel();
  }
});

/** True when this machine lets us start a process in a new PID namespace (root, or user namespaces). */
function canUnshare(): boolean {
  try {
    return new Deno.Command("unshare", { args: ["--pid", "--fork", "true"], stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "as PID 1 of its own PID namespace, as in a container, the router still drains on SIGTERM",
  // Needs unshare(1) and the right to make a PID namespace; reported as ignored where missing.
  ignore: !canUnshare(),
  async fn() {
    await using cluster = await startSimCluster({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
    const child = new Deno.Command("unshare", {
      args: [
        "--pid",
        "--fork",
        "--kill-child",
        Deno.execPath(),
        "run",
        ...await startTaskFlags(),
        new URL("./main.ts", import.meta.url).pathname,
        "--backends",
        cluster.backends,
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--drain-delay",
        "0s",
      ],
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const log = logLines(child.stdout);
    await log.next(/^listening/);
    // The router is PID 1 inside; from here it has another PID, a child of unshare's.
    // (Deno asks for --allow-all to read /proc itself; cat may.)
    const children = await new Deno.Command("cat", {
      args: [`/proc/${child.pid}/task/${child.pid}/children`],
    }).output();
    const [pid1] = new TextDecoder().decode(children.stdout).trim().split(" ").map(Number);
    // The kernel drops signals to a namespace's PID 1 that it has no handler for.
    Deno.kill(pid1, "SIGTERM");
    await log.next(/every request finished/);
    assert.equal((await child.status).code, 0);
    assert.equal(await new Response(child.stderr).text(), "");
  },
});
