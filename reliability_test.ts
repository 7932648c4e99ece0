/**
 * The fault suite: the router under pod deaths, an API outage, hanging pods and
 * slow clients, with real sockets. Each scenario prints its figures on one
 * `[reliability]` line; docs/operations.md's Reliability section copies a run's numbers.
 * Every scenario is bounded by counts of requests, not by time, except the API
 * outage, whose length is the fault itself, and the slow reader's pause (until the
 * pod is no longer read from, at most 2 s).
 */

import assert from "node:assert/strict";
import { chatStatus, postJson, startKubeWorld, startWorld, storeReaches } from "./sim/fixture.ts";
import { type SimPod, type SimPodOptions, startSimPod } from "./sim/pod.ts";
import { isRoutable } from "./cluster/store.ts";
import { canConnect } from "./rkllama/upstream.ts";

const CHAT = { messages: [{ role: "user", content: "hi" }] };

/**
 * How long the fake API server stays down: 3 s in `deno task test`, the full 30 s the reliability
 * issue asks for in `deno task test:outage` (CI runs both), or any length with `OUTAGE_MS`.
 */
const OUTAGE_MS = Number(Deno.env.get("OUTAGE_MS") ?? 3_000);

function report(scenario: string, figures: Record<string, number | string>): void {
  const text = Object.entries(figures).map(([key, value]) => `${key}=${value}`).join(" ");
  console.log(`[reliability] ${scenario}: ${text}`);
}

/** Counts finished requests, and lets a test wait for the next `n` of them. */
class Progress {
  count = 0;
  #waiters: { at: number; resolve: () => void }[] = [];

  tick(): void {
    this.count++;
    for (const waiter of [...this.#waiters]) {
      if (this.count >= waiter.at) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  }

  more(n: number): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ at: this.count + n, resolve });
    return promise;
  }
}

/** Steady load: `loops` clients sending one request after another until stopped. */
function steadyLoad(url: string, loops: number, stream: boolean) {
  const figures = { sent: 0, failed: 0, cut: 0 };
  const failures: string[] = [];
  const progress = new Progress();
  let stopped = false;
  const one = async () => {
    figures.sent++;
    try {
      const response = await postJson(`${url}/api/chat`, { model: "qwen", stream, ...CHAT });
      const text = await response.text();
      const last = JSON.parse(text.trim().split("\n").at(-1)!);
      if (response.status !== 200) {
        figures.failed++;
        failures.push(`${response.status} ${text}`);
      } else if (last.done !== true) {
        // A stream whose pod died under it: the router ends it with an error line.
        if (stream && typeof last.error === "string") figures.cut++;
        else {
          figures.failed++;
          failures.push(text);
        }
      }
    } catch (error) {
      figures.failed++;
      failures.push(String(error));
    }
    progress.tick();
  };
  const running = Array.from({ length: loops }, async () => {
    while (!stopped) await one();
  });
  return {
    figures,
    failures,
    progress,
    async stop() {
      stopped = true;
      await Promise.all(running);
    },
  };
}

Deno.test("killing 1 of 3 pods again and again under steady load fails no non-streaming request", async () => {
  const spec: SimPodOptions = { models: ["qwen"], loaded: ["qwen"], tokenDelayMs: 10 };
  await using world = await startWorld(
    { pods: [spec, spec, spec] },
    { pollIntervalMs: 100, ejectMs: 300 },
  );
  const { store } = world.router;
  const live: SimPod[] = [...world.cluster.pods];
  const restarted: SimPod[] = [];
  try {
    const plain = steadyLoad(world.url, 6, false);
    const streams = steadyLoad(world.url, 2, true);
    const rounds = 6;
    for (let round = 0; round < rounds; round++) {
      const index = round % live.length;
      const victim = live[index];
      await plain.progress.more(15);
      await victim.kill();
      // The others carry the load while it is down...
      await plain.progress.more(15);
      // ...then it comes back on the same address, as a restarted container does,
      // and must be routed to again once a poll has seen it.
      const back = await startSimPod({
        ...spec,
        name: victim.name,
        hostname: victim.hostname,
        port: victim.port,
      });
      live[index] = back;
      restarted.push(back);
      await storeReaches(store, (s) => isRoutable(s.pods.value.get(victim.name)!, Date.now()));
    }
    await plain.progress.more(15);
    await Promise.all([plain.stop(), streams.stop()]);
    report("pod kills", {
      kills: rounds,
      requests: plain.figures.sent,
      failed: plain.figures.failed,
      streams: streams.figures.sent,
      streams_cut: streams.figures.cut,
      streams_failed: streams.figures.failed,
    });
    assert.deepEqual(plain.failures, []);
    assert.deepEqual(streams.failures, [], "a cut stream must end with an error line");
    // Every restarted pod took requests again.
    for (const pod of restarted) {
      assert.ok(pod.events.some((e) => e.type === "request" && e.path === "/api/chat"));
    }
  } finally {
    await Promise.all(restarted.map((pod) => pod.close()));
  }
});

Deno.test(`a ${OUTAGE_MS / 1000} s Kubernetes API outage does not stop routing, and discovery catches up after it`, async () => {
  const spec: SimPodOptions = { models: ["qwen"], loaded: ["qwen"], tokenDelayMs: 10 };
  await using world = await startKubeWorld(
    { pods: [spec, spec, spec] },
    { overrides: { pollIntervalMs: 500 } },
  );
  const [router] = world.routers;
  await storeReaches(router.store, (s) => s.podList.value.every((p) => isRoutable(p, Date.now())));
  await world.kube.outage();
  await storeReaches(router.store, (s) => !s.discovery.value.connected);
  const load = steadyLoad(router.url, 2, false);
  // Meanwhile the cluster changes: a pod is deleted, which the router must see
  // once the API is back (it cannot see it before).
  world.kube.remove("pods", "default", "rk-2");
  // It comes back as a restarted API server does: every resourceVersion the
  // router holds is too old (a watch from one gets 410 Gone).
  world.kube.expireResourceVersions();
  await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));
  const during = { ...load.figures };
  const restoredAt = Date.now();
  await world.kube.restore();
  await storeReaches(router.store, (s) => s.discovery.value.connected && !s.pods.value.has("rk-2"));
  const recoveryMs = Date.now() - restoredAt;
  await load.stop();
  report("API outage", {
    outage_s: OUTAGE_MS / 1000,
    requests_during_outage: during.sent,
    failed: load.figures.failed,
    rediscovered_after_ms: recoveryMs,
  });
  assert.deepEqual(load.failures, []);
  assert.ok(during.sent > 0);
  assert.deepEqual([...router.store.pods.value.keys()].sort(), ["rk-0", "rk-1"]);
});

Deno.test("a pod that hangs after its headers ends the stream with an error after --stream-idle-timeout", async () => {
  await using world = await startWorld(
    { pods: [{ models: ["qwen"], loaded: ["qwen"], tokens: Array(50).fill("x") }] },
    { streamIdleTimeoutMs: 300 },
  );
  const [pod] = world.cluster.pods;
  const response = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
  assert.equal(response.status, 200);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = (await reader.read()).value!;
  pod.pause();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += value;
  }
  pod.resume();
  const last = JSON.parse(text.trim().split("\n").at(-1)!);
  assert.equal(
    last.error,
    "pod rk-0 failed mid-stream: it sent nothing for 300 ms (--stream-idle-timeout)",
  );
  // The router let go of the pod, which stops generating.
  await pod.waitFor((e) => e.type === "aborted");
  const pods = (await (await fetch(`${world.url}/router/pods`)).json()).pods;
  assert.equal(pods[0].inflight, 0);
  report("hanging pod", { streams: 1, ended_with_error: 1 });
});

/**
 * Resolves once `lastAt()` (when something last happened) is `quietMs` old, or after `limitMs`
 * at most: a pod whose stream stopped being read stops being asked for chunks, while a router
 * that reads ahead keeps asking (it takes the 1 GiB in well under a second on loopback).
 */
async function stalled(lastAt: () => number, quietMs: number, limitMs: number): Promise<void> {
  const end = Date.now() + limitMs;
  for (;;) {
    const quietAt = lastAt() + quietMs;
    if (quietAt <= Date.now() || Date.now() >= end) return;
    await new Promise((resolve) => setTimeout(resolve, Math.min(quietAt, end) - Date.now()));
  }
}

Deno.test("a client that reads a stream slowly does not make the router buffer it", async () => {
  // A pod that would send 1 GiB as fast as it is read, counting what it was asked for.
  let pulled = 0;
  let pulledAt = Date.now();
  const chunk = new TextEncoder().encode(`{"message":{"content":"${"x".repeat(65_000)}"}}\n`);
  const models = { models: [{ name: "qwen", model: "qwen" }] };
  const pod = Deno.serve({ hostname: "127.0.0.41", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    if (path === "/api/tags" || path === "/api/ps") return Response.json(models);
    if (path !== "/api/chat") return new Response(null, { status: 404 });
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled >= 1024 ** 3) return controller.close();
        pulled += chunk.byteLength;
        pulledAt = Date.now();
        controller.enqueue(chunk);
      },
    }, { highWaterMark: 0 });
    return new Response(body, { headers: { "content-type": "application/x-ndjson" } });
  });
  try {
    await using world = await startWorld({ pods: [] }, {
      backends: [{ name: "fast", url: `http://127.0.0.41:${pod.addr.port}` }],
    });
    await world.router.poller.pollAll();
    const response = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
    const reader = response.body!.getReader();
    let read = 0;
    // Read 4 MiB, then stop reading while the pod could go on sending.
    while (read < 4 * 1024 ** 2) read += (await reader.read()).value!.byteLength;
    const before = pulled;
    await stalled(() => pulledAt, 500, 2000);
    const stalledAt = pulled;
    // The router reads an abandoned generation to its end: let this one end now.
    pulled = 1024 ** 3;
    await reader.cancel();
    report("slow reader", {
      client_read_mib: Math.round(read / 1024 ** 2),
      pod_sent_mib: Math.round(stalledAt / 1024 ** 2),
      growth_while_stalled_mib: Math.round((stalledAt - before) / 1024 ** 2),
    });
    // What the pod got rid of beyond what the client read is what the two sockets'
    // buffers hold (tens of MiB where tcp_rmem allows 32 MiB), not the 1 GiB offered,
    // which a router that reads ahead takes in well under a second on loopback.
    assert.ok(stalledAt - read < 256 * 1024 ** 2, `the router took ${stalledAt} bytes ahead`);
  } finally {
    await pod.shutdown();
  }
});

Deno.test("a lone pod that dies gives a clear 503, and is routed to again after a good poll", async () => {
  const spec: SimPodOptions = { models: ["qwen"], loaded: ["qwen"] };
  await using world = await startWorld({ pods: [spec] }, { ejectMs: 1 });
  const [pod] = world.cluster.pods;
  await pod.kill();
  const down = await postJson(`${world.url}/api/chat`, { model: "qwen", stream: false, ...CHAT });
  assert.equal(down.status, 503);
  assert.ok(down.headers.has("retry-after"));
  assert.equal(
    (await down.json()).error,
    "model 'qwen' is only on pods that cannot take requests now: rk-0 (ejected)",
  );
  const ready = await fetch(`${world.url}/health/ready`);
  assert.equal(ready.status, 503);
  await ready.body?.cancel();
  await using back = await startSimPod({
    ...spec,
    name: pod.name,
    hostname: pod.hostname,
    port: pod.port,
  });
  // Its ejection time is up, but only a poll that reaches it lets it back in.
  const still = await postJson(`${world.url}/api/chat`, { model: "qwen", stream: false, ...CHAT });
  assert.equal(still.status, 503);
  await still.body?.cancel();
  await world.router.poller.pollAll();
  const up = await postJson(`${world.url}/api/chat`, { model: "qwen", stream: false, ...CHAT });
  assert.equal(up.status, 200);
  await up.body?.cancel();
  assert.ok(back.events.some((e) => e.path === "/api/chat"));
});

Deno.test("a pod answering 5xx to polls leaves routing, and returns when its polls succeed", async () => {
  let failing = false;
  const models = { models: [{ name: "qwen", model: "qwen" }] };
  const pod = Deno.serve({ hostname: "127.0.0.42", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    if (failing) return new Response("Internal Server Error", { status: 500 });
    if (path === "/api/tags" || path === "/api/ps") return Response.json(models);
    if (path === "/api/chat") return Response.json({ done: true });
    return new Response(null, { status: 404 });
  });
  try {
    await using world = await startWorld({ pods: [] }, {
      backends: [{ name: "flaky", url: `http://127.0.0.42:${pod.addr.port}` }],
    });
    await world.router.poller.pollAll();
    failing = true;
    for (let i = 0; i < 3; i++) {
      await world.router.poller.pollAll();
    }
    const pods = (await (await fetch(`${world.url}/router/pods`)).json()).pods;
    assert.equal(pods[0].state, "unreachable");
    const refused = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
    assert.equal(refused.status, 503);
    await refused.body?.cancel();
    failing = false;
    await world.router.poller.pollAll();
    const served = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
    assert.equal(served.status, 200);
    await served.body?.cancel();
  } finally {
    await pod.shutdown();
  }
});

Deno.test("a pod that takes connections but never answers is a 504 after --first-byte-timeout, not a connect failure", async () => {
  // Accepts TCP connections and reads nothing: the kernel completes the handshake.
  const listener = Deno.listen({ hostname: "127.0.0.43", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const connection of listener) held.push(connection);
  })();
  const models = { models: [{ name: "qwen", model: "qwen" }] };
  try {
    await using world = await startWorld({ pods: [] }, {
      backends: [{ name: "mute", url: `http://127.0.0.43:${listener.addr.port}` }],
      connectTimeoutMs: 50,
      firstByteTimeoutMs: 500,
      pollTimeoutMs: 50,
    });
    // Give the store a model on the mute pod, as a poll would have.
    world.router.store.applyPolls([{
      pod: "mute",
      ok: true,
      at: Date.now(),
      onDisk: new Map([["qwen", models.models[0]]]),
      loaded: new Map([["qwen", models.models[0]]]),
      otherModels: new Set(),
    }]);
    const response = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
    assert.equal(response.status, 504);
    assert.equal((await response.json()).error, "pod mute sent no response within 500 ms");
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const connection of held) connection.close();
  }
});

Deno.test("canConnect() tells a listening port from a closed one", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.44", port: 0 });
  const { port } = listener.addr;
  const accepted = listener.accept();
  assert.equal(await canConnect(`http://127.0.0.44:${port}`, 1000), true);
  (await accepted).close();
  listener.close();
  assert.equal(await canConnect(`http://127.0.0.44:${port}`, 1000), false);
});

Deno.test("a POST whose pod dies after taking it, before any answer, is answered by another pod", async () => {
  const spec: SimPodOptions = { models: ["qwen"], loaded: ["qwen"] };
  await using world = await startWorld({ pods: [spec, spec] });
  const pods = world.cluster.pods;
  for (const pod of pods) pod.pause();
  const answer = postJson(`${world.url}/api/chat`, { model: "qwen", stream: false, ...CHAT });
  // Whichever pod got it has started generating: the request was sent and taken.
  const taken = await Promise.race(
    pods.map((pod) => pod.waitFor((e) => e.type === "generation-start").then(() => pod)),
  );
  const other = pods.find((pod) => pod !== taken)!;
  other.resume();
  await taken.kill();
  const response = await answer;
  assert.equal(response.status, 200);
  assert.equal((await response.json()).done, true);
  assert.ok(other.events.some((e) => e.type === "generation-end"));
});

Deno.test({
  name:
    "a pod that cannot be connected to within --connect-timeout is ejected and the request goes to another",
  // The probe's connect is still waiting on the kernel when the test ends; it is
  // closed when it completes, which may be after the test.
  sanitizeOps: false,
  async fn() {
    // A listener that never accepts, with its accept queue full: the kernel drops
    // further SYNs, as a powered-off board does.
    const listener = Deno.listen({ hostname: "127.0.0.46", port: 0 });
    const queued: Deno.Conn[] = [];
    try {
      for (;;) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const connecting = Deno.connect({ hostname: "127.0.0.46", port: listener.addr.port });
        const connected = await Promise.race([
          connecting,
          new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), 200)),
        ]);
        clearTimeout(timer);
        if (!connected) {
          // The SYN that found the queue full: closed whenever it completes or fails.
          connecting.then((late) => late.close(), () => {});
          break;
        }
        queued.push(connected);
        assert.ok(queued.length < 5000, "the accept queue never filled");
      }
      // The simulated pod's first poll must not time out on a loaded machine: it is
      // the board the request falls back to.
      await using world = await startWorld({ pods: [{ models: ["qwen"] }] }, {
        connectTimeoutMs: 100,
        pollTimeoutMs: 2000,
      });
      const entry = { name: "qwen", model: "qwen" };
      world.router.store.upsertPod({
        name: "dark",
        node: "dark",
        url: `http://127.0.0.46:${listener.addr.port}`,
        ready: true,
      });
      // The dark pod holds the only loaded copy, so it is tried first.
      world.router.store.applyPolls([{
        pod: "dark",
        ok: true,
        at: Date.now(),
        onDisk: new Map([["qwen", entry]]),
        loaded: new Map([["qwen", entry]]),
        otherModels: new Set(),
      }]);
      assert.equal(await chatStatus(world.url), 200);
      const pods = (await (await fetch(`${world.url}/router/pods`)).json()).pods;
      const dark = pods.find((pod: { name: string }) => pod.name === "dark");
      assert.equal(dark.state, "ejected");
      assert.equal(dark.ejected_reason, "pod dark could not be connected to within 100 ms");
    } finally {
      for (const connection of queued) connection.close();
      listener.close();
    }
  },
});
