import assert from "node:assert/strict";
import { chatStatus, postJson, startWorld } from "../sim/fixture.ts";
import type { SimPod } from "../sim/pod.ts";
import { parseConfig } from "../config/flags.ts";
import { startRouter } from "../router.ts";
import { MAX_TRANSLATED_VALUES } from "./proxy.ts";

const CHAT = { messages: [{ role: "user", content: "hi" }] };

function requestsTo(pod: SimPod, path: string) {
  return pod.events.filter((e) => e.type === "request" && e.path === path);
}

Deno.test("a chat stream reaches the client chunk by chunk, before the pod has finished", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokenDelayMs: 30, tokens: ["a", "b", "c", "d"] }],
  });
  const [pod] = world.cluster.pods;
  const response = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "application/x-ndjson");
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  const first = await reader.read();
  assert.match(first.value!, /"content": "a"/);
  assert.equal(pod.events.some((e) => e.type === "generation-end"), false);
  let rest = "";
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    rest += chunk.value;
  }
  const lines = (first.value! + rest).split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 5);
  assert.equal(JSON.parse(lines.at(-1)!).done, true);
});

Deno.test("a busy replica is avoided while an idle one has the model", async () => {
  await using world = await startWorld({
    pods: [
      { models: ["qwen"], loaded: ["qwen"] },
      { models: ["qwen"], loaded: ["qwen"] },
    ],
  });
  const [a, b] = world.cluster.pods;
  a.pause();
  b.pause();
  const first = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
  const busy = requestsTo(a, "/api/chat").length === 1 ? a : b;
  const idle = busy === a ? b : a;
  idle.resume();
  for (let i = 0; i < 3; i++) {
    assert.equal(await chatStatus(world.url), 200);
  }
  assert.equal(requestsTo(busy, "/api/chat").length, 1);
  assert.equal(requestsTo(idle, "/api/chat").length, 3);
  busy.resume();
  await first.text();
});

Deno.test("concurrent requests for a cold model load it at most once per pod (never two workers), and all succeed", async () => {
  await using world = await startWorld({
    pods: [
      { models: ["qwen"], loadDelayMs: 100 },
      { models: ["qwen"], loadDelayMs: 100 },
    ],
  });
  const responses = await Promise.all(
    Array.from(
      { length: 5 },
      () => postJson(`${world.url}/api/generate`, { model: "qwen", prompt: "hi", stream: false }),
    ),
  );
  for (const response of responses) {
    assert.equal(response.status, 200);
    assert.equal((await response.json()).response, "Hello world!");
  }
  const loads = world.cluster.pods.map((pod) =>
    pod.events.filter((e) => e.type === "loaded").length
  );
  // One pod loads it inside the first request; the queue behind that one may have
  // the idle pod load a copy of its own (copies on demand), never a second worker.
  assert.ok(loads.every((count) => count <= 1) && loads.includes(1), `loads ${loads}`);
  for (const pod of world.cluster.pods) assert.equal(pod.orphanedWorkers, 0);
  const status = await (await fetch(`${world.url}/router/models`)).json();
  assert.ok(status.models[0].replicas >= 1);
});

Deno.test("requests still succeed when a pod is killed: the router ejects it and retries", async () => {
  await using world = await startWorld({
    pods: [
      { models: ["qwen"], loaded: ["qwen"] },
      { models: ["qwen"], loaded: ["qwen"] },
    ],
  });
  const [dead, alive] = world.cluster.pods;
  await dead.kill();
  for (let i = 0; i < 4; i++) {
    assert.equal(await chatStatus(world.url), 200);
  }
  assert.equal(requestsTo(alive, "/api/chat").length, 4);
  const pods = (await (await fetch(`${world.url}/router/pods`)).json()).pods;
  assert.equal(pods.find((p: { name: string }) => p.name === dead.name).state, "ejected");
});

/** The text of a non-streaming chat answer through the router. */
async function chatText(url: string): Promise<string> {
  const response = await postJson(`${url}/api/chat`, { model: "qwen", stream: false, ...CHAT });
  assert.equal(response.status, 200);
  return (await response.json()).message.content;
}

/** The router's /router/pods `inflight` of its only pod. */
async function inflight(url: string): Promise<number> {
  return (await (await fetch(`${url}/router/pods`)).json()).pods[0].inflight;
}

for (const flavor of ["fa", "fl"] as const) {
  Deno.test(`a client that leaves mid-stream does not cut the generation: the pod finishes it, counted busy, and the next answer is whole and its own (${flavor})`, async () => {
    await using world = await startWorld({
      pods: [{
        flavor,
        models: ["qwen"],
        loaded: ["qwen"],
        tokenDelayMs: 10,
        tokens: Array.from({ length: 40 }, (_, i) => `${i} `),
        // Under a router that cut the stream, the next request would wait this long.
        workerReapMs: 1000,
      }],
    });
    const [pod] = world.cluster.pods;
    const client = new AbortController();
    const response = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT }, {
      signal: client.signal,
    });
    const reader = response.body!.getReader();
    await reader.read();
    client.abort();
    await reader.read().catch(() => {});
    // The pod's request is in flight until its answer ends, and only then.
    assert.equal(await inflight(world.url), 1);
    await pod.waitFor((e) => e.type === "generation-end");
    const whole = Array.from({ length: 40 }, (_, i) => `${i} `).join("");
    assert.equal(await chatText(world.url), whole);
    assert.equal(await inflight(world.url), 0);
    // What RKLlama does to a client that leaves never happened.
    assert.deepEqual(
      pod.events.filter((e) => ["aborted", "leaked", "worker-died"].includes(e.type)),
      [],
    );
    const metrics = await (await fetch(`${world.url}/metrics`)).text();
    assert.match(
      metrics,
      /rkllama_router_abandoned_generations_total\{pod="rk-0",model="qwen"\} 1/,
    );
    assert.match(
      metrics,
      /rkllama_router_abandoned_pod_seconds_total\{pod="rk-0",model="qwen"\} 0\.\d+/,
    );
    assert.doesNotMatch(metrics, /rkllama_router_upstream_errors_total\{/);
    assert.doesNotMatch(metrics, /rkllama_router_pod_ejections_total\{pod="rk-0"\} [1-9]/);
  });
}

Deno.test("a client that leaves before its answer begins: the pod's answer is still read to its end", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokenDelayMs: 5, tokens: Array(40).fill("x") }],
  });
  const [pod] = world.cluster.pods;
  const client = new AbortController();
  const sent = postJson(`${world.url}/api/chat`, { model: "qwen", stream: false, ...CHAT }, {
    signal: client.signal,
  }).catch((error) => error);
  await pod.waitFor((e) => e.type === "generation-start");
  client.abort();
  assert.equal((await sent).name, "AbortError");
  await pod.waitFor((e) => e.type === "generation-end");
  assert.equal(await chatText(world.url), "x".repeat(40));
  assert.deepEqual(pod.events.filter((e) => e.type === "aborted"), []);
  const metrics = await (await fetch(`${world.url}/metrics`)).text();
  assert.match(metrics, /rkllama_router_abandoned_generations_total\{pod="rk-0",model="qwen"\} 1/);
});

Deno.test("malformed JSON, a model of the wrong type and a missing model are 400s with JSON errors", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const cases: [string, string][] = [
    ["{not json", "the request body is not valid JSON: expected a key in double quotes at byte 1"],
    ['{"model": 7}', "'model' must be a string, got a number"],
    ['{"messages": []}', "model is required"],
  ];
  for (const [body, message] of cases) {
    const response = await fetch(`${world.url}/api/chat`, { method: "POST", body });
    assert.equal(response.status, 400);
    assert.deepEqual(await response.json(), { error: message });
  }
  assert.equal(requestsTo(world.cluster.pods[0], "/api/chat").length, 0);
});

Deno.test("a body over --max-body is refused with 413 and never reaches a pod", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] }, { maxBodyBytes: 1024 });
  // Within twice the limit, so that it is read and dropped and the 413 can be read.
  const big = JSON.stringify({ model: "qwen", prompt: "x".repeat(1500) });
  const response = await fetch(`${world.url}/api/generate`, { method: "POST", body: big });
  assert.equal(response.status, 413);
  assert.match((await response.json()).error, /larger than the limit of 1024 bytes/);
  const streamed = await fetch(`${world.url}/api/generate`, {
    method: "POST",
    body: ReadableStream.from([new TextEncoder().encode(big)]),
  });
  assert.equal(streamed.status, 413);
  await streamed.body?.cancel();
  assert.equal(requestsTo(world.cluster.pods[0], "/api/generate").length, 0);
});

Deno.test("an unknown model is a 404 from the router's inventory, naming what exists", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen", "phi"] }] });
  const response = await postJson(`${world.url}/api/chat`, { model: "llama3", ...CHAT });
  assert.equal(response.status, 404);
  assert.deepEqual(await response.json(), {
    error: "model 'llama3' not found; available: phi, qwen",
  });
  const openai = await postJson(`${world.url}/v1/chat/completions`, { model: "llama3", ...CHAT });
  assert.equal(openai.status, 404);
  assert.equal(
    (await openai.json()).error.message,
    "model 'llama3' not found; available: phi, qwen",
  );
});

Deno.test("no reachable pods is a 503 with Retry-After", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] }, {
    unreachableAfter: 1,
  });
  await world.cluster.pods[0].kill();
  await world.router.poller.pollAll();
  const response = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
  assert.equal(response.status, 503);
  assert.equal(response.headers.get("retry-after"), "30");
  assert.match((await response.json()).error, /cannot take requests now/);
  const version = await fetch(`${world.url}/api/version`);
  assert.equal(version.status, 503);
  await version.body?.cancel();
});

Deno.test("namespaces and :latest are resolved, and the pod is sent the name it knows", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const body =
    '{"model":"library/qwen:latest","prompt":"hi","stream":false,"n":12345678901234567890}';
  const response = await fetch(`${world.url}/api/generate`, { method: "POST", body });
  assert.equal(response.status, 200);
  assert.equal((await response.json()).model, "qwen");
  const seen = requestsTo(world.cluster.pods[0], "/api/generate")[0];
  assert.equal(seen.model, "qwen");
  assert.equal(seen.bodyBytes, body.length - "library/:latest".length);
});

Deno.test("a multipart transcription is routed by its form field, with the file intact", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"] }, { models: ["whisper"], loaded: ["whisper"] }],
  });
  const form = new FormData();
  form.set("model", "whisper");
  form.set("file", new Blob([new Uint8Array(12345)], { type: "audio/wav" }), "a.wav");
  const response = await fetch(`${world.url}/v1/audio/transcriptions`, {
    method: "POST",
    body: form,
  });
  assert.equal(response.status, 200);
  assert.match((await response.json()).text, /12345 bytes/);
  assert.equal(requestsTo(world.cluster.pods[1], "/v1/audio/transcriptions").length, 1);
});

Deno.test("a multipart model named x:latest reaches the pod as the name it knows, file intact", async () => {
  await using world = await startWorld({ pods: [{ models: ["whisper"], loaded: ["whisper"] }] });
  const form = new FormData();
  form.set("model", "library/whisper:latest");
  form.set("file", new Blob([new Uint8Array(777)], { type: "audio/wav" }), "a.wav");
  const response = await fetch(`${world.url}/v1/audio/transcriptions`, {
    method: "POST",
    body: form,
  });
  assert.equal(response.status, 200);
  assert.match((await response.json()).text, /777 bytes/);
  assert.equal(requestsTo(world.cluster.pods[0], "/v1/audio/transcriptions")[0].model, "whisper");
});

Deno.test("files are routed by the model in their path", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }, { models: ["sd"] }] });
  const response = await fetch(`${world.url}/files/sd/images/a.png`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "image/png");
  await response.body?.cancel();
  assert.equal(requestsTo(world.cluster.pods[1], "/files/sd/images/a.png").length, 1);
});

Deno.test("an SSE stream from the OpenAI endpoint passes through frame by frame", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const response = await postJson(`${world.url}/v1/chat/completions`, {
    model: "qwen",
    stream: true,
    ...CHAT,
  });
  assert.equal(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const text = await response.text();
  assert.match(text, /^data: \{/);
  assert.ok(text.endsWith("data: [DONE]\n\n"));
});

Deno.test("a pod that dies mid-stream ends the NDJSON stream with an error line", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokenDelayMs: 20, tokens: Array(200).fill("x") }],
  });
  const [pod] = world.cluster.pods;
  const response = await postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT });
  const reader = response.body!.getReader();
  await reader.read();
  await pod.kill();
  let text = "";
  const decoder = new TextDecoder();
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    text += decoder.decode(chunk.value);
  }
  const last = JSON.parse(text.trim().split("\n").at(-1)!);
  assert.match(last.error, /failed mid-stream/);
});

Deno.test("a pod's FastAPI error reaches Ollama clients as {error}, keeping the status", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const response = await postJson(`${world.url}/api/chat`, { model: "qwen", messages: "wrong" });
  assert.equal(response.status, 422);
  const body = await response.json();
  assert.equal(typeof body.error, "string");
});

Deno.test("requests that name no model go to a ready pod", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const response = await fetch(`${world.url}/api/version`);
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { version: "0.0.54" });
});

Deno.test("a copy idle past the pod's expiry is reloaded by one request at a time", async () => {
  const expired = async (podIdleExpiryMs: number) => {
    const world = await startWorld(
      { pods: [{ models: ["qwen"], loaded: ["qwen"], loadDelayMs: 100 }] },
      // Four at once: one slot per board would send them one by one whatever the expiry.
      { podIdleExpiryMs, slots: 4 },
    );
    const [pod] = world.cluster.pods;
    const warm = await postJson(`${world.url}/api/generate`, { model: "qwen", prompt: "hi" });
    await warm.text();
    // The pod unloads the model on its own (idle expiry) before the router's next poll.
    await (await postJson(`${pod.url}/api/unload`, { model: "qwen" })).body?.cancel();
    const responses = await Promise.all(
      Array.from(
        { length: 4 },
        () => postJson(`${world.url}/api/generate`, { model: "qwen", prompt: "hi", stream: false }),
      ),
    );
    for (const response of responses) {
      assert.equal(response.status, 200);
      await response.body?.cancel();
    }
    const orphaned = pod.orphanedWorkers;
    await world[Symbol.asyncDispose]();
    return orphaned;
  };
  // Trusting the stale poll, RKLlama would start a worker per request and leak all but one.
  assert.ok(await expired(24 * 3_600_000) > 0);
  assert.equal(await expired(1), 0);
});

Deno.test("a request arriving while a possibly expired copy reloads waits for it", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], loadDelayMs: 100 }],
  });
  const [pod] = world.cluster.pods;
  // The router did not load this copy, so it cannot know how long it has been idle.
  await (await postJson(`${pod.url}/api/unload`, { model: "qwen" })).body?.cancel();
  const first = postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT, stream: false });
  await pod.waitFor((e) => e.type === "request" && e.path === "/api/chat");
  const second = postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT, stream: false });
  for (const response of await Promise.all([first, second])) {
    assert.equal(response.status, 200);
    await response.body?.cancel();
  }
  assert.equal(pod.orphanedWorkers, 0);
});

Deno.test("/api/show on a model that is not loaded leaves it not loaded", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loadDelayMs: 100 }] });
  const [pod] = world.cluster.pods;
  const show = await postJson(`${world.url}/api/show`, { name: "qwen" });
  assert.equal(show.status, 200);
  await show.body?.cancel();
  assert.equal(world.router.store.loadedOn.value.get("qwen"), undefined);
  const first = postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT, stream: false });
  await pod.waitFor((e) => e.type === "request" && e.path === "/api/chat");
  const second = postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT, stream: false });
  for (const response of await Promise.all([first, second])) await response.body?.cancel();
  assert.equal(pod.orphanedWorkers, 0);
});

Deno.test("an unload through the router is known at once, so the next requests reload it one at a time", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], loadDelayMs: 100 }],
  });
  const [pod] = world.cluster.pods;
  await (await postJson(`${world.url}/api/generate`, { model: "qwen", prompt: "hi" })).text();
  const unload = await postJson(`${world.url}/api/unload`, { model: "qwen" });
  assert.equal(unload.status, 200);
  await unload.body?.cancel();
  assert.equal(world.router.store.loadedOn.value.get("qwen"), undefined);
  const responses = await Promise.all(
    Array.from(
      { length: 3 },
      () => postJson(`${world.url}/api/chat`, { model: "qwen", ...CHAT, stream: false }),
    ),
  );
  for (const response of responses) await response.body?.cancel();
  assert.equal(pod.orphanedWorkers, 0);
});

Deno.test("image, speech and transcription models that only /v1/models lists are routed to", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"] }, { models: ["qwen", { name: "whisper-small", kind: "other" }] }],
  });
  const form = new FormData();
  form.set("model", "whisper-small");
  form.set("file", new Blob([new Uint8Array(10)]), "a.wav");
  const response = await fetch(`${world.url}/v1/audio/transcriptions`, {
    method: "POST",
    body: form,
  });
  assert.equal(response.status, 200);
  await response.body?.cancel();
  assert.equal(requestsTo(world.cluster.pods[1], "/v1/audio/transcriptions").length, 1);
  const tags = await (await fetch(`${world.url}/api/tags`)).json();
  assert.deepEqual(tags.models.map((m: { name: string }) => m.name), ["qwen:latest"]);
  const models = await (await fetch(`${world.url}/v1/models`)).json();
  assert.deepEqual(models.data.map((m: { id: string }) => m.id), [
    "qwen:latest",
    "whisper-small:latest",
  ]);
});

Deno.test("JSON that curl -d labels as a form reaches the pod labelled as JSON, model or not", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const [pod] = world.cluster.pods;
  for (
    const [path, body] of [["/api/pull", '{"model":"owner/repo/file.rkllm"}'], [
      "/api/generate",
      '{"model":"qwen","prompt":"hi","stream":false}',
    ]]
  ) {
    const response = await fetch(`${world.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body,
    });
    await response.body?.cancel();
    const seen = requestsTo(pod, path)[0];
    assert.equal(seen.headers?.["content-type"], "application/json", path);
  }
});

Deno.test("a request id is kept or made, passed to the pod, and returned to the client", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const [pod] = world.cluster.pods;
  const kept = await postJson(`${world.url}/api/generate`, { model: "qwen", prompt: "hi" }, {
    headers: { "content-type": "application/json", "x-request-id": "req-42" },
  });
  await kept.body?.cancel();
  assert.equal(kept.headers.get("x-request-id"), "req-42");
  assert.equal(requestsTo(pod, "/api/generate")[0].headers?.["x-request-id"], "req-42");
  const made = await postJson(`${world.url}/api/generate`, { model: "qwen", prompt: "hi" }, {
    headers: { "content-type": "application/json", "x-request-id": "not a token" },
  });
  await made.body?.cancel();
  const id = made.headers.get("x-request-id")!;
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.equal(requestsTo(pod, "/api/generate")[1].headers?.["x-request-id"], id);
  const tags = await fetch(`${world.url}/api/tags`);
  await tags.body?.cancel();
  assert.match(tags.headers.get("x-request-id")!, /^[0-9a-f-]{36}$/);
});

/**
 * A pod on a raw socket that lists `qwen`, then answers `/api/show` with a
 * Content-Length it does not keep: part of the body, then a closed connection.
 */
function startTruncatingPod(): { url: string; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const encoder = new TextEncoder();
  const answer = (conn: Deno.Conn, body: string, length = body.length) =>
    conn.write(encoder.encode(
      `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${length}\r\nconnection: close\r\n\r\n${body}`,
    ));
  const serve = async (conn: Deno.Conn) => {
    const buffer = new Uint8Array(64 * 1024);
    const read = await conn.read(buffer);
    const head = new TextDecoder().decode(buffer.subarray(0, read ?? 0));
    try {
      if (head.startsWith("GET /api/tags ")) await answer(conn, '{"models":[{"name":"qwen"}]}');
      else if (head.startsWith("GET /api/ps ")) await answer(conn, '{"models":[]}');
      else if (head.startsWith("GET /v1/models ")) await answer(conn, '{"data":[]}');
      else await answer(conn, '{"modelfile": "FR', 1000);
    } finally {
      conn.close();
    }
  };
  (async () => {
    for await (const conn of listener) serve(conn).catch(() => {});
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    close: () => listener.close(),
  };
}

Deno.test("a pod that breaks off a non-streaming answer gets the client a 502 that says so", async () => {
  const pod = startTruncatingPod();
  try {
    const parsed = parseConfig(
      [
        "--backends",
        `rk-0=${pod.url}`,
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--poll-interval",
        "1h",
      ],
      () => undefined,
    );
    if (parsed.help) throw new Error("unreachable");
    const router = await startRouter(parsed.config);
    try {
      const response = await postJson(`${router.url}/api/show`, { model: "qwen" });
      assert.equal(response.status, 502);
      assert.match((await response.json()).error, /pod rk-0 failed while answering/);
      assert.equal(router.store.pods.peek().get("rk-0")!.runtime.inflight, 0);
    } finally {
      await router.shutdown();
    }
  } finally {
    pod.close();
  }
});

Deno.test("a large declared body reaches the pod whole, with its model renamed in place", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const content = "é".repeat(300_000);
  const response = await postJson(`${world.url}/api/chat`, {
    model: "qwen:latest",
    stream: false,
    messages: [{ role: "user", content }],
  });
  assert.equal(response.status, 200);
  await response.body?.cancel();
  const sent = world.cluster.pods[0].events.findLast((e) =>
    e.type === "request" && e.path === "/api/chat"
  );
  const expected = JSON.stringify({
    model: "qwen",
    stream: false,
    messages: [{ role: "user", content }],
  });
  assert.equal(sent?.bodyBytes, new TextEncoder().encode(expected).length);
});

Deno.test("an OpenAI request the router must translate is refused past a million JSON values, and not parsed", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], flavor: "fa" }],
  });
  const values = (count: number) =>
    `{"model":"qwen","messages":[{"role":"user","content":"Hi"}],"junk":[${"0,".repeat(count)}0]}`;
  // 8 values besides the list's `count` zeros (the object, model, messages, its
  // message, role, content, junk, the last 0): a million in all is the most taken.
  const refused = await fetch(`${world.url}/v1/chat/completions`, {
    method: "POST",
    body: values(MAX_TRANSLATED_VALUES - 7),
  });
  assert.equal(refused.status, 413);
  // An OpenAI path: the error in OpenAI's shape.
  assert.match(
    (await refused.json()).error.message,
    /reads at most 1000000 JSON values in one; this body has 1000001/,
  );
  assert.equal(requestsTo(world.cluster.pods[0], "/api/chat").length, 0);
  const taken = await fetch(`${world.url}/v1/chat/completions`, {
    method: "POST",
    body: values(MAX_TRANSLATED_VALUES - 8),
  });
  assert.equal(taken.status, 200, await taken.clone().text());
  await taken.body?.cancel();
});
