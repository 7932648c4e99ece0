/**
 * @module
 * Tests for the simulated RKLlama pod, over real sockets with fetch.
 */

import assert from "node:assert/strict";
import { type SimEvent, type SimPod, type SimPodOptions, startSimPod } from "./pod.ts";

const PS_TIMESTAMP = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$/;
const CHAT = { messages: [{ role: "user", content: "Say hello" }] };

/** Runs a test body against a fresh pod and always closes it. */
async function withPod(
  options: Partial<SimPodOptions>,
  body: (pod: SimPod) => Promise<void>,
): Promise<void> {
  const pod = await startSimPod({ models: ["qwen-1.5b"], ...options });
  try {
    await body(pod);
  } finally {
    await pod.close();
  }
}

function postJson(url: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    ...init,
  });
}

/** Reads a whole body, keeping the chunks as they arrived. */
async function readChunks(response: Response): Promise<string[]> {
  const decoder = new TextDecoder();
  const chunks: string[] = [];
  for await (const chunk of response.body!) chunks.push(decoder.decode(chunk));
  return chunks;
}

function ofType(type: SimEvent["type"]) {
  return (event: SimEvent) => event.type === type;
}

function types(pod: SimPod): string[] {
  return pod.events.map((event) => event.type);
}

Deno.test("/api/tags lists the on-disk models in RKLlama's shape", async () => {
  const models = ["qwen-1.5b", { name: "llama", size: 9000, parameterSize: "8B" }];
  await withPod({ hostname: "127.0.0.21", models }, async (pod) => {
    assert.match(pod.url, /^http:\/\/127\.0\.0\.21:\d+$/);
    assert.equal(pod.name, `127.0.0.21:${pod.port}`);
    const response = await fetch(`${pod.url}/api/tags`);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), {
      models: [
        {
          name: "qwen-1.5b",
          model: "qwen-1.5b",
          size: 2048,
          digest: "",
          details: {
            parent_model: "",
            format: "rkllm",
            family: "llama",
            families: [],
            parameter_size: "1.5B",
            quantization_level: "Q8_0",
          },
          modified_at: "2025-01-02T03:04:05.000000Z",
        },
        {
          name: "llama",
          model: "llama",
          size: 9000,
          digest: "",
          details: {
            parent_model: "",
            format: "rkllm",
            family: "llama",
            families: [],
            parameter_size: "8B",
            quantization_level: "Q8_0",
          },
          modified_at: "2025-01-02T03:04:05.000000Z",
        },
      ],
    });
  });
});

Deno.test("a cold request loads the model inside the request and /api/ps lists it afterwards", async () => {
  await withPod({}, async (pod) => {
    const before = await (await fetch(`${pod.url}/api/ps`)).json();
    assert.deepEqual(before, { models: [] });

    const response = await postJson(`${pod.url}/api/chat`, {
      model: "qwen-1.5b",
      stream: false,
      ...CHAT,
    });
    assert.equal(response.status, 200);
    const reply = await response.json();
    assert.equal(reply.message.content, "Hello world!");
    assert.equal(reply.done_reason, "stop");
    assert.equal(reply.load_duration, 100000000);
    assert.deepEqual(types(pod), [
      "request",
      "request",
      "loaded",
      "generation-start",
      "generation-end",
    ]);

    const after = await (await fetch(`${pod.url}/api/ps`)).json();
    assert.equal(after.models.length, 1);
    const [entry] = after.models;
    assert.equal(entry.name, "qwen-1.5b");
    assert.equal(entry.model, "qwen-1.5b");
    assert.equal(entry.base_domain_id, 10);
    assert.equal(entry.size_vram, null);
    assert.deepEqual(entry.details.families, ["llama"]);
    for (const field of ["expires_at", "loaded_at", "last_call"]) {
      assert.match(entry[field], PS_TIMESTAMP);
    }
    assert.deepEqual(pod.loadedModels(), ["qwen-1.5b"]);
  });
});

Deno.test("a model that is still loading is not listed in /api/ps", async () => {
  await withPod({ loadDelayMs: 300 }, async (pod) => {
    const chat = postJson(`${pod.url}/api/chat`, { model: "qwen-1.5b", stream: false, ...CHAT });
    await pod.waitFor((event) => event.path === "/api/chat");
    const during = await (await fetch(`${pod.url}/api/ps`)).json();
    assert.deepEqual(during, { models: [] });
    assert.equal((await chat).status, 200);
    await pod.waitFor(ofType("generation-end"));
  });
});

Deno.test("an NDJSON chat stream arrives in several chunks and ends with a done chunk", async () => {
  await withPod({ loaded: ["qwen-1.5b"] }, async (pod) => {
    const response = await postJson(`${pod.url}/api/chat`, { model: "qwen-1.5b", ...CHAT });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/x-ndjson");
    assert.ok(response.headers.get("x-process-time"));
    const chunks = await readChunks(response);
    assert.ok(chunks.length >= 2, `expected several chunks, got ${chunks.length}`);
    const lines = chunks.join("").split("\n");
    assert.equal(lines.pop(), "");
    // Python's json.dumps separators, as RKLlama writes them.
    assert.ok(lines[0].startsWith('{"model": "qwen-1.5b", "created_at": "'), lines[0]);
    const parsed = lines.map((line) => JSON.parse(line));
    assert.deepEqual(
      parsed.slice(0, 3).map((chunk) => [chunk.message.content, chunk.done]),
      [["Hello", false], [" world", false], ["!", false]],
    );
    const last = parsed[3];
    assert.deepEqual(Object.keys(last), [
      "model",
      "created_at",
      "message",
      "done",
      "done_reason",
      "total_duration",
      "load_duration",
      "prompt_eval_count",
      "prompt_eval_duration",
      "eval_count",
      "eval_duration",
    ]);
    assert.equal(last.message.content, "");
    assert.equal(last.done, true);
    assert.equal(last.done_reason, "stop");
    assert.equal(last.eval_count, 3);
    assert.match(last.created_at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
  });
});

Deno.test("a generate request without streaming returns one object with the response text", async () => {
  await withPod({ loaded: ["qwen-1.5b"] }, async (pod) => {
    const response = await postJson(`${pod.url}/api/generate`, {
      model: "qwen-1.5b",
      prompt: "hi",
      stream: false,
    });
    const reply = await response.json();
    assert.equal(reply.response, "Hello world!");
    assert.equal(reply.done, true);
    assert.deepEqual(reply.context, []);
    assert.equal(reply.message, undefined);
  });
});

Deno.test("an OpenAI chat stream sends SSE frames and ends with [DONE]", async () => {
  await withPod({ flavor: "fl", loaded: ["qwen-1.5b"] }, async (pod) => {
    const response = await postJson(`${pod.url}/v1/chat/completions`, {
      model: "qwen-1.5b",
      stream: true,
      ...CHAT,
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
    const frames = (await readChunks(response)).join("").split("\n\n");
    assert.equal(frames.pop(), "");
    assert.equal(frames.pop(), "data: [DONE]");
    for (const frame of frames) assert.ok(frame.startsWith("data: "), frame);
    const events = frames.map((frame) => JSON.parse(frame.slice("data: ".length)));
    const usage = events.pop();
    const stop = events.pop();
    assert.equal(events.map((event) => event.choices[0].delta.content).join(""), "Hello world!");
    assert.ok(events.every((event) => event.object === "chat.completion.chunk"));
    assert.equal(stop.choices[0].finish_reason, "stop");
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.completion_tokens, 3);
  });
});

Deno.test("OpenAI chat does not stream by default and answers a chat.completion", async () => {
  await withPod({ loaded: ["qwen-1.5b"] }, async (pod) => {
    const response = await postJson(`${pod.url}/v1/chat/completions`, {
      model: "qwen-1.5b",
      ...CHAT,
    });
    const reply = await response.json();
    assert.equal(reply.object, "chat.completion");
    assert.match(reply.id, /^chatcmpl-/);
    assert.deepEqual(reply.choices, [{
      index: 0,
      message: { role: "assistant", content: "Hello world!" },
      finish_reason: "stop",
    }]);
    assert.deepEqual(Object.keys(reply.usage), [
      "prompt_tokens",
      "completion_tokens",
      "total_tokens",
    ]);
  });
});

Deno.test("FA's OpenAI stream sends SSE headers and then drops the connection, as the real one", async () => {
  await withPod({ loaded: ["qwen-1.5b"] }, async (pod) => {
    const response = await postJson(`${pod.url}/v1/chat/completions`, {
      model: "qwen-1.5b",
      stream: true,
      ...CHAT,
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
    await assert.rejects(response.text());
    // The pod keeps serving afterwards.
    assert.equal((await fetch(`${pod.url}/health`)).status, 200);
    assert.equal(pod.events.filter(ofType("generation-start")).length, 0);
  });
});

Deno.test("two concurrent cold requests for one model orphan a worker", async () => {
  await withPod({}, async (pod) => {
    const body = { model: "qwen-1.5b", stream: false, ...CHAT };
    const responses = await Promise.all([
      postJson(`${pod.url}/api/chat`, body),
      postJson(`${pod.url}/api/chat`, body),
    ]);
    for (const response of responses) assert.equal((await response.json()).done, true);
    assert.equal(pod.orphanedWorkers, 1);
    assert.equal(pod.events.filter(ofType("loaded")).length, 2);
    assert.equal(pod.maxConcurrentGenerations, 1);
  });
});

Deno.test("requests one after another for a cold model orphan nothing", async () => {
  await withPod({}, async (pod) => {
    const body = { model: "qwen-1.5b", stream: false, ...CHAT };
    await (await postJson(`${pod.url}/api/chat`, body)).json();
    await (await postJson(`${pod.url}/api/chat`, body)).json();
    assert.equal(pod.orphanedWorkers, 0);
    assert.equal(pod.events.filter(ofType("loaded")).length, 1);
  });
});

Deno.test("an explicit /api/load on FA freezes /api/ps until the load ends", async () => {
  await withPod({ loadDelayMs: 150 }, async (pod) => {
    const load = postJson(`${pod.url}/api/load`, { model: "qwen-1.5b" });
    await pod.waitFor((event) => event.path === "/api/load");
    const ps = await (await fetch(`${pod.url}/api/ps`)).json();
    // Only a frozen pod could have answered after the load finished.
    assert.deepEqual(ps.models.map((model: { name: string }) => model.name), ["qwen-1.5b"]);
    const loaded = pod.events.findIndex(ofType("loaded"));
    const psSeen = pod.events.findIndex((event) => event.path === "/api/ps");
    assert.ok(loaded < psSeen);
    assert.deepEqual(await (await load).json(), {
      status: "success",
      message: null,
      model: "qwen-1.5b",
    });
  });
});

Deno.test("an explicit load on FL leaves /api/ps answering while it runs", async () => {
  await withPod({ flavor: "fl", loadDelayMs: 300 }, async (pod) => {
    const apiLoad = await postJson(`${pod.url}/api/load`, { model: "qwen-1.5b" });
    assert.equal(apiLoad.status, 404);
    assert.match(await apiLoad.text(), /<title>404 Not Found<\/title>/);

    const load = postJson(`${pod.url}/load_model`, { model_name: "qwen-1.5b" });
    await pod.waitFor((event) => event.path === "/load_model");
    const ps = await (await fetch(`${pod.url}/api/ps`)).json();
    assert.deepEqual(ps, { models: [] });
    assert.deepEqual(await (await load).json(), {
      message: "Model qwen-1.5b loaded successfully.",
    });
    const psSeen = pod.events.findIndex((event) => event.path === "/api/ps");
    assert.ok(psSeen < pod.events.findIndex(ofType("loaded")));
  });
});

Deno.test("a paused pod emits no tokens until it is resumed", async () => {
  await withPod({ loaded: ["qwen-1.5b"], tokenDelayMs: 1 }, async (pod) => {
    pod.pause();
    const response = await postJson(`${pod.url}/api/chat`, { model: "qwen-1.5b", ...CHAT });
    await pod.waitFor(ofType("generation-start"));
    const reader = response.body!.getReader();
    let firstChunkArrived = false;
    const firstRead = reader.read().then((result) => {
      firstChunkArrived = true;
      return result;
    });
    // Round trips to the same pod give unpaused tokens ample time to arrive.
    for (let i = 0; i < 3; i++) await (await fetch(`${pod.url}/api/version`)).json();
    assert.equal(firstChunkArrived, false);
    const resumedAt = performance.timeOrigin + performance.now();
    pod.resume();
    let text = new TextDecoder().decode((await firstRead).value);
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      text += new TextDecoder().decode(read.value);
    }
    assert.equal(text.split("\n").filter((line) => line).length, 4);
    const end = await pod.waitFor(ofType("generation-end"));
    assert.ok(end.at >= resumedAt);
  });
});

Deno.test("killing a pod cuts an open stream mid-way and refuses new connections", async () => {
  await using pod = await startSimPod({ models: ["qwen-1.5b"], loaded: ["qwen-1.5b"] });
  const response = await postJson(`${pod.url}/api/chat`, { model: "qwen-1.5b", ...CHAT });
  const reader = response.body!.getReader();
  const first = await reader.read();
  assert.equal(first.done, false);
  // Stop the stream from finishing on its own before the kill lands.
  pod.pause();
  await pod.kill();
  await assert.rejects(async () => {
    while (!(await reader.read()).done) { /* drain until the cut */ }
  });
  await assert.rejects(fetch(`${pod.url}/api/version`));
  await assert.rejects(pod.waitFor(ofType("generation-end")));
});

/** A streaming chat whose client reads its first chunk, then hangs up. */
async function leaveMidStream(pod: SimPod): Promise<void> {
  const client = new AbortController();
  const response = await postJson(`${pod.url}/api/chat`, { model: "qwen-1.5b", ...CHAT }, {
    signal: client.signal,
  });
  const reader = response.body!.getReader();
  await reader.read();
  client.abort();
  await assert.rejects(reader.read());
}

Deno.test("FA: a client that leaves mid-stream does not stop the worker; the rest of its answer starts the next one", async () => {
  const tokens = ["a", "b", "c", "d", "e"];
  await withPod({ loaded: ["qwen-1.5b"], tokens }, async (pod) => {
    await leaveMidStream(pod);
    const aborted = await pod.waitFor(ofType("aborted"));
    assert.equal(aborted.path, "/api/chat");
    assert.equal(aborted.model, "qwen-1.5b");
    await pod.waitFor(ofType("generation-end"));
    const next = await postJson(`${pod.url}/api/chat`, {
      model: "qwen-1.5b",
      stream: false,
      ...CHAT,
    });
    const { message } = await next.json();
    // Another client's text, then this one's own.
    assert.match(message.content, /^b?c?d?e(abcde)$/);
    assert.equal(pod.events.filter(ofType("leaked")).length, 1);
  });
});

Deno.test("FL: a client that leaves mid-stream kills the model's worker; the next request waits for the reaper, then reloads", async () => {
  await withPod(
    { flavor: "fl", loaded: ["qwen-1.5b"], tokenDelayMs: 20, workerReapMs: 100 },
    async (pod) => {
      await leaveMidStream(pod);
      await pod.waitFor(ofType("worker-died"));
      const asked = performance.now();
      const next = await postJson(`${pod.url}/api/chat`, {
        model: "qwen-1.5b",
        stream: false,
        ...CHAT,
      });
      assert.equal((await next.json()).message.content, "Hello world!");
      assert.ok(performance.now() - asked >= 100, "waited for the reaper");
      assert.deepEqual(
        pod.events.filter((e) => e.type === "unloaded" || e.type === "loaded").map((e) => e.type),
        ["unloaded", "loaded"],
      );
    },
  );
});

Deno.test("a client that gives up during a cold load is recorded as aborted", async () => {
  await withPod({ loadDelayMs: 100 }, async (pod) => {
    const client = new AbortController();
    const request = postJson(
      `${pod.url}/api/chat`,
      { model: "qwen-1.5b", stream: false, ...CHAT },
      {
        signal: client.signal,
      },
    );
    await pod.waitFor((event) => event.path === "/api/chat");
    client.abort();
    await assert.rejects(request);
    await pod.waitFor(ofType("aborted"));
    // The load itself carries on, as RKLlama's does.
    await pod.waitFor(ofType("loaded"));
    assert.equal(pod.events.filter(ofType("generation-start")).length, 0);
  });
});

Deno.test("FA sends stream headers at once but runs one generation at a time", async () => {
  await withPod({ loaded: ["qwen-1.5b"] }, async (pod) => {
    pod.pause();
    const first = await postJson(`${pod.url}/api/chat`, { model: "qwen-1.5b", ...CHAT });
    await pod.waitFor(ofType("generation-start"));
    // The second gets its 200 while the first still holds the slot.
    const second = await postJson(`${pod.url}/api/generate`, { model: "qwen-1.5b", prompt: "x" });
    assert.equal(second.status, 200);
    pod.resume();
    await Promise.all([readChunks(first), readChunks(second)]);
    assert.equal(pod.maxConcurrentGenerations, 1);
    assert.deepEqual(
      pod.events.filter((event) => event.type.startsWith("generation")).map((event) => event.type),
      ["generation-start", "generation-end", "generation-start", "generation-end"],
    );
  });
});

Deno.test("a multipart transcription reports the size of the file it received", async () => {
  await withPod({ models: ["whisper"] }, async (pod) => {
    const form = new FormData();
    form.append("model", "whisper");
    form.append("file", new Blob([new Uint8Array(12345)], { type: "audio/wav" }), "a.wav");
    const response = await fetch(`${pod.url}/v1/audio/transcriptions`, {
      method: "POST",
      body: form,
    });
    assert.equal(response.status, 200);
    const reply = await response.json();
    assert.equal(reply.text, "transcribed 12345 bytes");
    const request = await pod.waitFor((event) => event.path === "/v1/audio/transcriptions");
    assert.equal(request.model, "whisper");
    assert.ok(request.bodyBytes! > 12345);
    assert.match(request.headers!["content-type"], /^multipart\/form-data; boundary=/);
  });
});

Deno.test("FA answers errors with detail bodies", async () => {
  await withPod({}, async (pod) => {
    const unknown = await postJson(`${pod.url}/api/chat`, { model: "nope", ...CHAT });
    assert.equal(unknown.status, 500);
    assert.deepEqual(await unknown.json(), {
      detail: "Failed to load model 'nope': Model directory 'nope' not found.",
    });

    const malformed = await fetch(`${pod.url}/api/chat`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json",
    });
    assert.equal(malformed.status, 422);
    assert.equal((await malformed.json()).detail[0].type, "json_invalid");

    // fetch labels a string body text/plain, which FastAPI refuses to read as JSON.
    const plain = await fetch(`${pod.url}/api/chat`, {
      method: "POST",
      body: JSON.stringify({ model: "qwen-1.5b", ...CHAT }),
    });
    assert.equal(plain.status, 422);
    assert.equal((await plain.json()).detail[0].type, "model_attributes_type");

    const route = await fetch(`${pod.url}/no/such/route`);
    assert.equal(route.status, 404);
    assert.deepEqual(await route.json(), { detail: "Not Found" });

    const missing = await postJson(`${pod.url}/api/chat`, { messages: [] });
    assert.equal(missing.status, 422);
    assert.deepEqual((await missing.json()).detail[0].loc, ["body", "model"]);

    assert.deepEqual(await (await fetch(`${pod.url}/health`)).json(), { status: "ok" });
    assert.deepEqual(await (await fetch(`${pod.url}/api/version`)).json(), { version: "0.0.54" });
  });
});

Deno.test("FL answers errors with error bodies and HTML pages", async () => {
  await withPod({ flavor: "fl" }, async (pod) => {
    const unknown = await postJson(`${pod.url}/api/chat`, { model: "nope", ...CHAT });
    assert.equal(unknown.status, 500);
    assert.deepEqual(await unknown.json(), {
      error: "Failed to load model 'nope': Model directory 'nope' not found.",
    });

    const health = await fetch(`${pod.url}/health`);
    assert.equal(health.status, 404);
    assert.match(health.headers.get("content-type")!, /^text\/html/);
    await health.body?.cancel();

    const version = await fetch(`${pod.url}/api/version`);
    assert.equal(version.headers.get("x-process-time"), null);
    assert.equal(version.headers.get("access-control-allow-origin"), "*");
    assert.equal(await version.text(), '{"version":"0.0.74"}\n');

    const tags = await (await fetch(`${pod.url}/api/tags`)).json();
    assert.deepEqual(Object.keys(tags.models[0]), [
      "details",
      "digest",
      "model",
      "modified_at",
      "name",
      "size",
    ]);
  });
});

Deno.test("model names lose their namespace but :latest is not resolved", async () => {
  await withPod({}, async (pod) => {
    const namespaced = await postJson(`${pod.url}/api/chat`, {
      model: "library/qwen-1.5b",
      stream: false,
      ...CHAT,
    });
    assert.equal((await namespaced.json()).model, "qwen-1.5b");
    const request = await pod.waitFor((event) => event.path === "/api/chat");
    assert.equal(request.model, "library/qwen-1.5b");
    assert.equal((await pod.waitFor(ofType("loaded"))).model, "qwen-1.5b");

    const tagged = await postJson(`${pod.url}/api/chat`, { model: "qwen-1.5b:latest", ...CHAT });
    assert.equal(tagged.status, 500);
    await tagged.body?.cancel();
  });
});

Deno.test("the load and unload endpoints answer with RKLlama's bodies", async () => {
  await withPod({ models: ["a", "b"], loaded: ["a"], loadDelayMs: 1 }, async (pod) => {
    const call = async (path: string, body: unknown) => {
      const response = await postJson(`${pod.url}${path}`, body);
      return [response.status, await response.json()];
    };
    assert.deepEqual(await call("/api/load", { name: "a" }), [200, {
      status: "success",
      message: "Model already loaded",
      model: "a",
    }]);
    assert.deepEqual(await call("/api/load", { model: "zzz" }), [400, {
      detail: "Model directory 'zzz' not found.",
    }]);
    assert.deepEqual(await call("/load_model", { model_name: "b" }), [200, {
      message: "Model b loaded successfully.",
      error: null,
    }]);
    assert.deepEqual(await call("/load_model", { model_name: "b" }), [200, {
      message: null,
      error: "A model is already loaded. Nothing to do.",
    }]);
    assert.deepEqual(await call("/api/unload", { model: "a" }), [200, {
      status: "success",
      message: null,
    }]);
    assert.deepEqual(await call("/api/unload", { model: "a" }), [200, {
      status: "success",
      message: "Model not loaded",
    }]);
    assert.deepEqual(await call("/unload_model", { model_name: "a" }), [400, {
      detail: "No model a is currently loaded.",
    }]);
    assert.deepEqual(await call("/force_unload_all", {}), [200, {
      message: "Force stopped all workers",
      killed_tracked: ["b"],
      killed_orphaned: [],
    }]);
    assert.deepEqual(pod.loadedModels(), []);
    assert.deepEqual(pod.events.filter(ofType("unloaded")).map((event) => event.model), [
      "a",
      "b",
    ]);
  });
});

Deno.test("FL embeddings: /api/embed one vector per input, the legacy path in its shape, OpenAI batches flattened", async () => {
  await withPod({ flavor: "fl", loaded: ["qwen-1.5b"] }, async (pod) => {
    const ollama = await (await postJson(`${pod.url}/api/embed`, {
      model: "qwen-1.5b",
      input: ["one", "two"],
    })).json();
    assert.equal(ollama.model, "qwen-1.5b");
    assert.equal(ollama.embeddings.length, 2);
    assert.notDeepEqual(ollama.embeddings[0], ollama.embeddings[1]);

    // As the real FL server: the legacy path answers /api/embed's shape, not {"embedding"}.
    const legacy = await (await postJson(`${pod.url}/api/embeddings`, {
      model: "qwen-1.5b",
      prompt: "one",
    })).json();
    assert.deepEqual(legacy.embeddings, [ollama.embeddings[0]]);
    assert.equal(legacy.embedding, undefined);

    const openAI = await (await postJson(`${pod.url}/v1/embeddings`, {
      model: "qwen-1.5b",
      input: ["one", "two"],
    })).json();
    assert.equal(openAI.object, "list");
    assert.equal(openAI.data.length, 1);
    assert.deepEqual(openAI.data[0].embedding, ollama.embeddings.flat());
    assert.equal(pod.events.filter(ofType("generation-start")).length, 0);
  });
});

Deno.test("FA embeddings, /v1/completions and /api/chat with tools fail with a plain 500, as the real ones", async () => {
  await withPod({ loaded: ["qwen-1.5b"] }, async (pod) => {
    const requests: [string, Record<string, unknown>][] = [
      ["/api/embed", { input: ["one", "two"] }],
      ["/api/embed", { input: "one" }],
      ["/api/embeddings", { prompt: "one" }],
      ["/v1/embeddings", { input: "one" }],
      ["/v1/completions", { prompt: "one" }],
      ["/api/chat", {
        ...CHAT,
        stream: false,
        tools: [{ type: "function", function: { name: "f" } }],
      }],
    ];
    for (const [path, body] of requests) {
      const response = await postJson(`${pod.url}${path}`, { model: "qwen-1.5b", ...body });
      assert.equal(response.status, 500, path);
      assert.equal(response.headers.get("content-type"), "text/plain; charset=utf-8");
      assert.equal(await response.text(), "Internal Server Error");
    }
  });
});

Deno.test("generated images are linked under /files and served as PNG", async () => {
  await withPod({ models: ["sd"] }, async (pod) => {
    const generated = await (await postJson(`${pod.url}/v1/images/generations`, {
      model: "sd",
      prompt: "a cat",
    })).json();
    const url: string = generated.data[0].url;
    assert.match(url, /^\/files\/sd\/images\/.+\.png$/);
    for (const path of [url, `/v1${url}`]) {
      const image = await fetch(`${pod.url}${path}`);
      assert.equal(image.headers.get("content-type"), "image/png");
      assert.ok((await image.arrayBuffer()).byteLength > 0);
    }

    const speech = await postJson(`${pod.url}/v1/audio/speech`, { model: "sd", input: "hi" });
    assert.equal(speech.headers.get("content-type"), "audio/mpeg");
    assert.ok((await speech.arrayBuffer()).byteLength > 0);
  });
});

Deno.test("/v1/models lists on-disk models and /v1/models/{id} misses with 404", async () => {
  await withPod({}, async (pod) => {
    const list = await (await fetch(`${pod.url}/v1/models`)).json();
    assert.deepEqual(list.data.map((model: { id: string }) => model.id), ["qwen-1.5b"]);
    const one = await (await fetch(`${pod.url}/v1/models/qwen-1.5b`)).json();
    assert.equal(one.owned_by, "rkllama");
    const missing = await fetch(`${pod.url}/v1/models/nope`);
    assert.equal(missing.status, 404);
    assert.deepEqual(await missing.json(), { detail: "Model 'nope' not found" });
    assert.deepEqual(await (await fetch(`${pod.url}/models`)).json(), { models: ["qwen-1.5b"] });
  });
});

Deno.test("a request event records method, path, lower-cased headers and body size", async () => {
  await withPod({}, async (pod) => {
    const body = JSON.stringify({ model: "qwen-1.5b" });
    await (await fetch(`${pod.url}/api/show`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Trace": "abc" },
      body,
    })).json();
    const [request] = pod.events;
    assert.equal(request.type, "request");
    assert.equal(request.method, "POST");
    assert.equal(request.path, "/api/show");
    assert.equal(request.model, "qwen-1.5b");
    assert.equal(request.headers!["x-trace"], "abc");
    assert.equal(request.bodyBytes, new TextEncoder().encode(body).length);
  });
});

Deno.test("waitFor answers from past events and gives up when its signal aborts", async () => {
  await withPod({}, async (pod) => {
    await (await fetch(`${pod.url}/`)).json();
    const past = await pod.waitFor(ofType("request"));
    assert.equal(past.path, "/");
    const giveUp = new AbortController();
    const waiting = pod.waitFor(ofType("loaded"), { signal: giveUp.signal });
    giveUp.abort(new Error("enough"));
    await assert.rejects(waiting, /enough/);
  });
});

Deno.test("FL streams NDJSON and SSE only once it holds the inference slot", async () => {
  await withPod({ flavor: "fl", loaded: ["qwen-1.5b"] }, async (pod) => {
    pod.pause();
    const first = await postJson(`${pod.url}/api/chat`, { model: "qwen-1.5b", ...CHAT });
    await pod.waitFor(ofType("generation-start"));
    let secondHeaders = false;
    const second = postJson(`${pod.url}/v1/completions`, {
      model: "qwen-1.5b",
      prompt: "x",
      stream: true,
    }).then((response) => {
      secondHeaders = true;
      return response;
    });
    await pod.waitFor((event) => event.path === "/v1/completions");
    for (let i = 0; i < 3; i++) await (await fetch(`${pod.url}/api/version`)).json();
    assert.equal(secondHeaders, false);
    pod.resume();

    const ndjson = (await readChunks(first)).join("").trim().split("\n").map((line) =>
      JSON.parse(line)
    );
    assert.equal(ndjson.at(-1).done, true);
    const sse = (await readChunks(await second)).join("");
    assert.ok(sse.endsWith("data: [DONE]\n\n"));
    assert.match(sse, /"text": "Hello"/);
    assert.equal(pod.maxConcurrentGenerations, 1);
  });
});

Deno.test("FL runs generations of different models side by side, FA one at a time on the pod", async () => {
  for (const flavor of ["fl", "fa"] as const) {
    await withPod(
      { flavor, models: ["qwen-1.5b", "phi-3"], loaded: ["qwen-1.5b", "phi-3"], tokenDelayMs: 20 },
      async (pod) => {
        await Promise.all(["qwen-1.5b", "phi-3"].map(async (model) => {
          const response = await postJson(`${pod.url}/api/chat`, { model, stream: false, ...CHAT });
          assert.equal((await response.json()).done, true);
        }));
        assert.equal(pod.maxConcurrentGenerations, flavor === "fl" ? 2 : 1, flavor);
      },
    );
  }
});

Deno.test("a load past maxLoaded fails as RKLlama's does when no NPU domain id is free", async () => {
  for (const flavor of ["fa", "fl"] as const) {
    await withPod(
      { flavor, models: ["a", "b", "c"], loaded: ["a"], maxLoaded: 2, loadDelayMs: 1 },
      async (pod) => {
        const load = await postJson(`${pod.url}/load_model`, { model_name: "b" });
        assert.equal(load.status, 200, await load.text());
        const full = await postJson(`${pod.url}/load_model`, { model_name: "c" });
        const body = await full.json();
        assert.equal(full.status, 400);
        assert.deepEqual(
          body,
          flavor === "fa"
            ? { detail: "Unexpected Error loading the model c into memory." }
            : { error: "list index out of range" },
        );
        const chat = await postJson(`${pod.url}/api/chat`, { model: "c", stream: false, ...CHAT });
        assert.equal(chat.status, 500, flavor);
        await chat.body?.cancel();
        assert.deepEqual(pod.loadedModels().sort(), ["a", "b"]);
        const unload = await postJson(`${pod.url}/unload_model`, { model_name: "a" });
        await unload.body?.cancel();
        const after = await postJson(`${pod.url}/load_model`, { model_name: "c" });
        assert.equal(after.status, 200, await after.text());
        assert.deepEqual(pod.loadedModels().sort(), ["b", "c"]);
      },
    );
  }
});
