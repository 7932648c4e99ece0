import assert from "node:assert/strict";
import { chatStatus, postJson, startKubeWorld, startWorld, storeReaches } from "../sim/fixture.ts";
import { modelLabel, routeLabel } from "./metrics.ts";

const CHAT = { messages: [{ role: "user", content: "hi" }] };

/** The samples of a Prometheus text exposition, by `name{labels}` as written. */
function samples(text: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    found.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return found;
}

async function scrape(url: string): Promise<Map<string, number>> {
  const response = await fetch(`${url}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return samples(await response.text());
}

/** One sample; labels in the order prom-client writes them (as declared). */
function value(all: Map<string, number>, name: string, labels: Record<string, string> = {}) {
  const inner = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(",");
  return all.get(inner === "" ? name : `${name}{${inner}}`);
}

Deno.test("a stream is counted when it ends, with its duration to the end and its time to first byte", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokenDelayMs: 40, tokens: ["a", "b", "c", "d"] }],
  });
  const pod = world.cluster.pods[0].name;
  const chat = { model: "qwen", route: "/api/chat" };
  const counted = { model: "qwen", pod, route: "/api/chat", code: "200" };
  const response = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
  const reader = response.body!.getReader();
  await reader.read();

  const during = await scrape(world.url);
  assert.equal(value(during, "rkllama_router_inflight_requests", { pod }), 1);
  assert.equal(
    value(during, "rkllama_router_requests_total", counted),
    undefined,
  );
  assert.equal(value(during, "rkllama_router_request_duration_seconds_count", chat), undefined);

  while (!(await reader.read()).done);
  const after = await scrape(world.url);
  assert.equal(value(after, "rkllama_router_inflight_requests", { pod }), 0);
  assert.equal(value(after, "rkllama_router_requests_total", counted), 1);
  assert.equal(value(after, "rkllama_router_request_duration_seconds_count", chat), 1);
  assert.equal(
    value(after, "rkllama_router_time_to_first_byte_seconds_count", { model: "qwen" }),
    1,
  );
  const duration = value(after, "rkllama_router_request_duration_seconds_sum", chat)!;
  const ttfb = value(after, "rkllama_router_time_to_first_byte_seconds_sum", { model: "qwen" })!;
  // Four tokens 40 ms apart follow the headers: the duration runs to the last one.
  assert.ok(duration - ttfb >= 0.12, `duration ${duration} s, time to first byte ${ttfb} s`);
  assert.equal(
    value(after, "rkllama_router_request_duration_seconds_bucket", { le: "0.1", ...chat }),
    0,
  );
});

Deno.test("names a client makes up become model=unknown and route=other, so series stay bounded", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  for (let i = 0; i < 50; i++) {
    const response = await postJson(`${world.url}/api/chat`, { model: `made-up-${i}`, ...CHAT });
    assert.equal(response.status, 404);
    await response.body?.cancel();
    const odd = await fetch(`${world.url}/api/random-${i}`);
    await odd.body?.cancel();
  }
  const text = await (await fetch(`${world.url}/metrics`)).text();
  assert.doesNotMatch(text, /made-up|random-/);
  const all = samples(text);
  assert.equal(
    value(all, "rkllama_router_requests_total", {
      model: "unknown",
      pod: "none",
      route: "/api/chat",
      code: "404",
    }),
    50,
  );
  const other = [...all.keys()].filter((key) =>
    key.startsWith("rkllama_router_requests_total{") && key.includes('route="other"')
  );
  assert.equal(other.length, 1, other.join("\n"));
  assert.equal(all.get(other[0]), 50);
});

Deno.test("a pod that refuses connections counts an upstream error, an ejection and a retry", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"] }, { models: ["qwen"], loaded: ["qwen"] }],
  });
  const [dead, alive] = world.cluster.pods;
  await dead.kill();
  // Turns alternate between pods; two requests are sure to try the dead one once.
  for (let i = 0; i < 2; i++) {
    assert.equal(await chatStatus(world.url), 200);
  }
  const all = await scrape(world.url);
  assert.equal(
    value(all, "rkllama_router_upstream_errors_total", { pod: dead.name, reason: "connect" }),
    1,
  );
  assert.equal(value(all, "rkllama_router_pod_ejections_total", { pod: dead.name }), 1);
  assert.equal(value(all, "rkllama_router_retries_total", { reason: "connect" }), 1);
  assert.equal(
    value(all, "rkllama_router_requests_total", {
      model: "qwen",
      pod: alive.name,
      route: "/api/chat",
      code: "200",
    }),
    2,
  );
  assert.equal(value(all, "rkllama_router_pods", { state: "ejected" }), 1);
  assert.equal(value(all, "rkllama_router_pods", { state: "routable" }), 1);
});

Deno.test("placement shows in config_valid, leader, model_replicas and reconcile_actions_total", async () => {
  const dir = await Deno.makeTempDir({ prefix: "rkllama-router-test-" });
  const path = `${dir}/models.yaml`;
  await Deno.writeTextFile(path, "models:\n  qwen:\n    replicas: 2\n");
  await using world = await startWorld({
    pods: [{ models: ["qwen"] }, { models: ["qwen"] }, { models: ["phi"], loaded: ["phi"] }],
  }, { modelsFile: path, syncIntervalMs: 3_600_000 });
  await storeReaches(world.router.store, (store) => store.loadedOn.value.get("qwen")?.length === 2);
  let all = await scrape(world.url);
  assert.equal(value(all, "rkllama_router_config_valid"), 1);
  assert.equal(value(all, "rkllama_router_leader"), 1);
  assert.equal(value(all, "rkllama_router_model_replicas", { model: "qwen", state: "desired" }), 2);
  assert.equal(value(all, "rkllama_router_model_replicas", { model: "qwen", state: "loaded" }), 2);
  assert.equal(value(all, "rkllama_router_model_replicas", { model: "phi", state: "loaded" }), 1);
  assert.equal(
    value(all, "rkllama_router_model_replicas", { model: "phi", state: "desired" }),
    undefined,
  );
  assert.equal(
    value(all, "rkllama_router_reconcile_actions_total", { action: "load", result: "done" }),
    2,
  );

  await Deno.writeTextFile(path, "models:\n  qwen:\n    replicas: many\n");
  await world.router.placement!.reread();
  all = await scrape(world.url);
  assert.equal(value(all, "rkllama_router_config_valid"), 0);
});

Deno.test("an API outage counts a restart of the pods watch", async () => {
  await using world = await startKubeWorld({ pods: [{ models: ["qwen"] }] });
  const [router] = world.routers;
  await storeReaches(router.store, (s) => s.pods.value.size === 1);
  await world.kube.outage();
  await storeReaches(router.store, (s) => !s.discovery.value.connected);
  world.kube.remove("pods", "default", "rk-0");
  await world.kube.restore();
  await storeReaches(router.store, (s) => s.pods.value.size === 0);
  const all = await scrape(router.url);
  assert.ok(
    value(all, "rkllama_router_kube_watch_restarts_total", {
      resource: "pods",
      reason: "error",
    })! >=
      1,
  );
});

Deno.test("the series of a deleted pod are dropped, those of the others kept", async () => {
  await using world = await startKubeWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"] }, { models: ["phi"], loaded: ["phi"] }],
  });
  const [router] = world.routers;
  await storeReaches(router.store, (s) => s.pods.value.size === 2);
  const [gone, kept] = world.cluster.pods.map((pod) => pod.name);
  await router.poller.pollAll();
  assert.equal(await chatStatus(router.url, "qwen"), 200);
  assert.equal(await chatStatus(router.url, "phi"), 200);
  router.store.ejectWithBackoff(gone, 1000, "test");
  const before = await (await fetch(`${router.url}/metrics`)).text();
  assert.match(before, new RegExp(`pod="${gone}"`));
  world.kube.remove("pods", "default", gone);
  await storeReaches(router.store, (s) => s.pods.value.size === 1);
  const after = await (await fetch(`${router.url}/metrics`)).text();
  assert.doesNotMatch(after, new RegExp(`pod="${gone}"`));
  assert.match(after, new RegExp(`requests_total\\{[^}]*pod="${kept}"`));
});

Deno.test("process metrics are real readings, not the zeros of unreadable /proc files", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const all = await scrape(world.url);
  assert.ok(value(all, "process_resident_memory_bytes")! > 1024 * 1024);
  assert.ok(value(all, "nodejs_heap_size_used_bytes")! > 0);
  assert.ok(!all.has("process_open_fds"));
});

Deno.test("event_loop_lag_seconds shows how long the loop was blocked", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  await scrape(world.url);
  const until = performance.now() + 400;
  while (performance.now() < until) {
    // Block the event loop, as a long synchronous computation would.
  }
  const blocked = await scrape(world.url);
  assert.ok(value(blocked, "rkllama_router_event_loop_lag_seconds")! >= 0.3);
  assert.ok(!blocked.has("nodejs_eventloop_lag_p99_seconds"));
});

Deno.test("promtool accepts the exposition", async (t) => {
  const promtool = await which("promtool");
  if (!promtool) {
    // .ci/run installs it and sets REQUIRE_PROMTOOL, so CI cannot skip this.
    if (Deno.env.get("REQUIRE_PROMTOOL")) assert.fail("promtool is required but not found");
    console.log("promtool not found (Debian package prometheus): skipping the lint");
    return;
  }
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"] }],
  });
  const response = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
  await response.text();
  const text = await (await fetch(`${world.url}/metrics`)).text();
  await t.step("promtool check metrics", async () => {
    const child = new Deno.Command(promtool, {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(text));
    await writer.close();
    const out = await child.output();
    const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, said);
    assert.equal(said.trim(), "", said);
  });
});

Deno.test("promtool parses every PromQL example in docs/operations.md", async () => {
  const promtool = await which("promtool");
  if (!promtool) {
    if (Deno.env.get("REQUIRE_PROMTOOL")) assert.fail("promtool is required but not found");
    console.log("promtool not found (Debian package prometheus): skipping the check");
    return;
  }
  const readme = await Deno.readTextFile(new URL("../docs/operations.md", import.meta.url));
  const queries = [...readme.matchAll(/```promql\n([\s\S]*?)```/g)].flatMap((block) =>
    // A query may go on over indented lines.
    block[1].replace(/\n\s+/g, " ").split("\n").filter((line) => line.trim() !== "")
  );
  assert.ok(queries.length >= 5, `only ${queries.length} queries found`);
  const rules = queries.map((query, i) =>
    `      - record: readme_${i}\n        expr: ${JSON.stringify(query)}\n`
  );
  const dir = await Deno.makeTempDir({ prefix: "rkllama-router-promql-" });
  const file = `${dir}/rules.yml`;
  await Deno.writeTextFile(file, `groups:\n  - name: readme\n    rules:\n${rules.join("")}`);
  const out = await new Deno.Command(promtool, { args: ["check", "rules", file] }).output();
  const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, said);
  assert.match(said, new RegExp(`SUCCESS: ${queries.length} rules found`));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("routeLabel() and modelLabel() keep labels to known values", () => {
  assert.equal(routeLabel("/api/chat"), "/api/chat");
  assert.equal(routeLabel("/v1/chat/completions"), "/v1/chat/completions");
  assert.equal(routeLabel("/api/chat/../../x"), "other");
  assert.equal(modelLabel("qwen:latest", true), "qwen:latest");
  assert.equal(modelLabel(undefined, true), "unknown");
  assert.equal(modelLabel(undefined, false), "none");
});

async function which(command: string): Promise<string | undefined> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      const path = `${dir}/${command}`;
      if ((await Deno.stat(path)).isFile) return path;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}
