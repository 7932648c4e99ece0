/**
 * The router driven by the official `ollama` and `openai` JavaScript clients, as a
 * user would point them at one Ollama server: what they list, what they get back,
 * and the errors they raise.
 */

import assert from "node:assert/strict";
import { type ChatResponse, type GenerateResponse, Ollama } from "ollama";
import OpenAI from "openai";
import { startWorld } from "../sim/fixture.ts";
import type { SimEvent, SimPod } from "../sim/pod.ts";

const HI = [{ role: "user" as const, content: "hi" }];

/** The paths the router polls. */
const POLLS = ["/api/tags", "/api/ps", "/v1/models", "/api/version"];

/** Requests a pod received other than the router's polls. */
function clientRequests(pod: SimPod): SimEvent[] {
  return pod.events.filter((e) => e.type === "request" && !POLLS.includes(e.path ?? ""));
}

/**
 * Responses the ollama clients received, kept reachable. Deno 2.9.6 stops passing
 * an abort on to a fetch whose Response has been garbage-collected while its body
 * is still read (ollama-js keeps only the body's reader): under the whole suite's
 * memory pressure, `stream.abort()` then did nothing and the stream ran to its end.
 */
const ollamaResponses = new Set<Response>();

function ollamaFor(world: { url: string }): Ollama {
  return new Ollama({
    host: world.url,
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      ollamaResponses.add(response);
      return response;
    },
  });
}

function openAIFor(world: { url: string }): OpenAI {
  return new OpenAI({ baseURL: `${world.url}/v1`, apiKey: "unused", maxRetries: 0 });
}

/** Runs `action`, expecting it to reject, and returns what it rejected with. */
async function rejection(action: () => Promise<unknown>): Promise<unknown> {
  try {
    await action();
  } catch (error) {
    return error;
  }
  assert.fail("expected the call to fail");
}

// ---------------------------------------------------------------------------
// The ollama client

Deno.test("the ollama client lists the models on disk across all pods, each once", async () => {
  await using world = await startWorld({
    pods: [
      { models: ["qwen2.5-1.5b", "phi"] },
      { models: [{ name: "qwen2.5-1.5b", size: 4096 }, "llama3.2-1b"] },
    ],
  });
  const { models } = await ollamaFor(world).list();
  // As Ollama lists untagged models: clients check names against this list.
  assert.deepEqual(models.map((m) => m.name), [
    "llama3.2-1b:latest",
    "phi:latest",
    "qwen2.5-1.5b:latest",
  ]);
  const qwen = models.find((m) => m.name === "qwen2.5-1.5b:latest")!;
  assert.equal(qwen.model, "qwen2.5-1.5b:latest");
  assert.equal(qwen.details.format, "rkllm");
  assert.equal(qwen.details.parameter_size, "1.5B");
  assert.ok(Number.isFinite(Date.parse(String(qwen.modified_at))));
});

Deno.test("the ollama client's ps shows every loaded copy, with the pod that holds it", async () => {
  await using world = await startWorld({
    pods: [
      { models: ["qwen", "phi"], loaded: ["qwen", "phi"] },
      { models: ["qwen", "whisper"], loaded: ["qwen"] },
    ],
  });
  const { models } = await ollamaFor(world).ps();
  // The router's additions, which the client's types do not know about.
  const placed = models as unknown as { pod_name: string; node_name: string }[];
  const seen = models.map((m, i) => `${m.name}@${placed[i].pod_name}`);
  assert.deepEqual(seen.sort(), ["phi:latest@rk-0", "qwen:latest@rk-0", "qwen:latest@rk-1"]);
  assert.ok(placed.every((m) => typeof m.node_name === "string" && m.node_name !== ""));
  for (const model of models) {
    assert.equal(model.details.format, "rkllm");
    // Clients parse these as dates: they must be RFC 3339, not RKLlama's "YYYY-MM-DD hh:mm:ss".
    assert.match(String(model.expires_at), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/);
    assert.ok(Number.isFinite(Date.parse(String(model.expires_at))));
    assert.equal(typeof model.size_vram, "number");
  }
});

Deno.test("the ollama client's non-streaming chat returns the pod's whole reply", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokens: ["The", " sky", " is", " blue."] }],
  });
  const reply = await ollamaFor(world).chat({ model: "qwen", messages: HI });
  assert.equal(reply.model, "qwen");
  assert.equal(reply.message.role, "assistant");
  assert.equal(reply.message.content, "The sky is blue.");
  assert.equal(reply.done, true);
  assert.equal(reply.done_reason, "stop");
  assert.equal(reply.eval_count, 4);
});

Deno.test("the ollama client's streaming chat yields one part per token, then done", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokens: ["The", " sky", " is", " blue."] }],
  });
  const stream = await ollamaFor(world).chat({ model: "qwen", messages: HI, stream: true });
  const parts: ChatResponse[] = [];
  for await (const part of stream) parts.push(part);
  assert.equal(parts.length, 5);
  assert.deepEqual(parts.map((p) => p.done), [false, false, false, false, true]);
  assert.equal(parts.map((p) => p.message.content).join(""), "The sky is blue.");
  assert.equal(parts.at(-1)!.done_reason, "stop");
  assert.ok(parts.every((p) => p.model === "qwen"));
});

Deno.test("the ollama client's generate works streaming and not, with a :latest name", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const ollama = ollamaFor(world);
  const whole = await ollama.generate({ model: "qwen:latest", prompt: "hi" });
  assert.equal(whole.response, "Hello world!");
  assert.equal(whole.model, "qwen");
  assert.equal(whole.done, true);

  const stream = await ollama.generate({ model: "qwen", prompt: "hi", stream: true });
  const parts: GenerateResponse[] = [];
  for await (const part of stream) parts.push(part);
  assert.deepEqual(parts.map((p) => p.response), ["Hello", " world", "!", ""]);
  assert.equal(parts.at(-1)!.done, true);
  assert.equal(parts.filter((p) => p.done).length, 1);
});

Deno.test("the ollama client's show describes a model from the pod that has it", async () => {
  await using world = await startWorld({
    pods: [{ models: ["phi"] }, { models: ["qwen2.5-1.5b"] }],
  });
  const ollama = ollamaFor(world);
  const shown = await ollama.show({ model: "qwen2.5-1.5b" });
  assert.equal(shown.details.format, "rkllm");
  assert.equal(shown.details.parameter_size, "1.5B");
  assert.match(shown.modelfile, /FROM="qwen2\.5-1\.5b\.rkllm"/);
  const latest = await ollama.show({ model: "qwen2.5-1.5b:latest" });
  assert.equal(latest.modelfile, shown.modelfile);
  assert.deepEqual(world.cluster.pods.map((pod) => clientRequests(pod).length), [0, 2]);
});

Deno.test("the ollama client's embed returns one vector per input", async () => {
  await using world = await startWorld({
    pods: [{ flavor: "fl", models: ["bge"], loaded: ["bge"] }],
  });
  const ollama = ollamaFor(world);
  const result = await ollama.embed({ model: "bge", input: ["alpha", "beta", "alpha"] });
  assert.equal(result.model, "bge");
  assert.equal(result.embeddings.length, 3);
  for (const vector of result.embeddings) {
    assert.equal(vector.length, 8);
    assert.ok(vector.every((x) => typeof x === "number" && Math.abs(x) <= 1));
  }
  assert.deepEqual(result.embeddings[0], result.embeddings[2]);
  assert.notDeepEqual(result.embeddings[0], result.embeddings[1]);
  const single = await ollama.embed({ model: "bge", input: "beta" });
  assert.deepEqual(single.embeddings, [result.embeddings[1]]);
});

Deno.test("an unknown model makes the ollama client throw a 404 that says it was not found", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen", "phi"], loaded: ["qwen"] }] });
  const ollama = ollamaFor(world);
  const calls: [string, () => Promise<unknown>][] = [
    ["chat", () => ollama.chat({ model: "nope", messages: HI })],
    ["streaming chat", () => ollama.chat({ model: "nope", messages: HI, stream: true })],
    ["generate", () => ollama.generate({ model: "nope", prompt: "hi" })],
    ["embed", () => ollama.embed({ model: "nope", input: "hi" })],
    ["show", () => ollama.show({ model: "nope" })],
  ];
  for (const [name, call] of calls) {
    const error = await rejection(call) as Error & { status_code?: number; error?: string };
    assert.equal(error.name, "ResponseError", name);
    assert.equal(error.status_code, 404, name);
    assert.equal(error.message, "model 'nope' not found; available: phi, qwen", name);
  }
  assert.deepEqual(clientRequests(world.cluster.pods[0]), []);
});

Deno.test("a pod dying mid-stream makes the ollama client's stream throw the router's reason", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokenDelayMs: 20, tokens: Array(200).fill("x") }],
  });
  const [pod] = world.cluster.pods;
  const stream = await ollamaFor(world).chat({ model: "qwen", messages: HI, stream: true });
  let received = 0;
  const error = await rejection(async () => {
    for await (const part of stream) {
      assert.equal(part.message.content, "x");
      if (++received === 1) await pod.kill();
    }
  }) as Error;
  assert.ok(received >= 1);
  assert.ok(received < 200);
  assert.match(error.message, /^pod rk-0 failed mid-stream/);
});

Deno.test("aborting an ollama client stream leaves the pod to finish its generation undisturbed", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokenDelayMs: 2, tokens: Array(100).fill("x") }],
  });
  const [pod] = world.cluster.pods;
  const stream = await ollamaFor(world).chat({ model: "qwen", messages: HI, stream: true });
  let received = 0;
  const error = await rejection(async () => {
    for await (const _part of stream) {
      if (++received === 2) stream.abort();
    }
  }) as Error;
  assert.equal(error.name, "AbortError");
  assert.equal(received, 2);
  await pod.waitFor((e) => e.type === "generation-end");
  assert.deepEqual(pod.events.filter((e) => e.type === "aborted"), []);
});

Deno.test("a cold model on two pods serves concurrent ollama generate calls, loading it at most once per pod", async () => {
  await using world = await startWorld({
    pods: [
      { models: ["qwen"], loadDelayMs: 100 },
      { models: ["qwen"], loadDelayMs: 100 },
    ],
  });
  const ollama = ollamaFor(world);
  assert.deepEqual((await ollama.ps()).models, []);
  const whole = Array.from({ length: 4 }, () => ollama.generate({ model: "qwen", prompt: "hi" }));
  const streamed = Array.from({ length: 2 }, async () => {
    const stream = await ollama.generate({ model: "qwen", prompt: "hi", stream: true });
    let text = "";
    for await (const part of stream) text += part.response;
    return text;
  });
  const replies = await Promise.all(whole);
  assert.deepEqual(replies.map((r) => r.response), Array(4).fill("Hello world!"));
  assert.deepEqual(await Promise.all(streamed), ["Hello world!", "Hello world!"]);

  const loads = world.cluster.pods.map((pod) =>
    pod.events.filter((e) => e.type === "loaded").length
  );
  // One pod loads it inside the first request; the queue behind that one may have
  // the idle pod load a copy of its own (copies on demand), never a second worker.
  assert.ok(loads.every((count) => count <= 1) && loads.includes(1), `loads ${loads}`);
  for (const pod of world.cluster.pods) assert.equal(pod.orphanedWorkers, 0);
  await world.router.poller.pollAll();
  const loaded = (await ollama.ps()).models;
  assert.deepEqual([...new Set(loaded.map((m) => m.name))], ["qwen:latest"]);
});

Deno.test("the ollama client reads Flask-generation pods like FastAPI ones, and the router stops at once after", async () => {
  const world = await startWorld({
    pods: [{ flavor: "fl", models: ["qwen", "phi"], loaded: ["qwen"], tokens: ["ok", "!"] }],
  });
  const ollama = ollamaFor(world);
  assert.deepEqual((await ollama.list()).models.map((m) => m.name), ["phi:latest", "qwen:latest"]);
  assert.deepEqual((await ollama.ps()).models.map((m) => m.name), ["qwen:latest"]);
  const reply = await ollama.chat({ model: "qwen", messages: HI });
  assert.equal(reply.message.content, "ok!");
  const stream = await ollama.generate({ model: "qwen", prompt: "hi", stream: true });
  let text = "";
  for await (const part of stream) text += part.response;
  assert.equal(text, "ok!");
  const shown = await ollama.show({ model: "phi" });
  assert.match(shown.modelfile, /FROM="phi\.rkllm"/);
  // The client stops reading a stream at its last line and keeps the connection:
  // a shutdown must not take that connection for a busy one (it waited for
  // --header-timeout, 10 s).
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<string>((resolve) => timer = setTimeout(() => resolve("late"), 5_000));
  const stopped = world[Symbol.asyncDispose]().then(() => "stopped");
  const first = await Promise.race([stopped, late]);
  clearTimeout(timer);
  await stopped;
  assert.equal(first, "stopped");
});

// ---------------------------------------------------------------------------
// The openai client

Deno.test("the openai client lists and retrieves the models on disk across all pods", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen", "phi"] }, { models: ["qwen", "bge"] }],
  });
  const openai = openAIFor(world);
  const ids: string[] = [];
  for await (const model of openai.models.list()) {
    assert.equal(model.object, "model");
    assert.equal(model.owned_by, "rkllama");
    ids.push(model.id);
  }
  assert.deepEqual(ids, ["bge:latest", "phi:latest", "qwen:latest"]);
  const qwen = await openai.models.retrieve("qwen");
  assert.equal(qwen.id, "qwen");
  assert.equal(qwen.object, "model");
  assert.ok(qwen.created > 0);
});

Deno.test("the openai client gets a NotFoundError with a readable message for an unknown model id", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const error = await rejection(() => openAIFor(world).models.retrieve("nope"));
  assert.ok(error instanceof OpenAI.NotFoundError);
  assert.equal(error.status, 404);
  assert.equal(error.type, "not_found_error");
  assert.equal(error.message, "404 The model 'nope' does not exist");
});

Deno.test("the openai client's chat completion returns the pod's whole reply", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokens: ["The", " sky", " is", " blue."] }],
  });
  const completion = await openAIFor(world).chat.completions.create({
    model: "qwen",
    messages: [{ role: "user", content: "What colour is the sky?" }],
  });
  assert.equal(completion.object, "chat.completion");
  assert.equal(completion.model, "qwen");
  assert.equal(completion.choices.length, 1);
  assert.equal(completion.choices[0].message.content, "The sky is blue.");
  assert.equal(completion.choices[0].finish_reason, "stop");
  assert.equal(completion.usage?.completion_tokens, 4);
});

Deno.test("the openai client's streamed chat completion adds up to the whole reply", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokens: ["The", " sky", " is", " blue."] }],
  });
  const stream = await openAIFor(world).chat.completions.create({
    model: "qwen",
    messages: [{ role: "user", content: "What colour is the sky?" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const deltas: string[] = [];
  const finishes: string[] = [];
  let usage: OpenAI.CompletionUsage | undefined | null;
  for await (const chunk of stream) {
    assert.equal(chunk.model, "qwen");
    for (const choice of chunk.choices) {
      if (choice.delta.content) deltas.push(choice.delta.content);
      if (choice.finish_reason) finishes.push(choice.finish_reason);
    }
    usage ??= chunk.usage;
  }
  assert.deepEqual(deltas, ["The", " sky", " is", " blue."]);
  assert.equal(deltas.join(""), "The sky is blue.");
  assert.deepEqual(finishes, ["stop"]);
  assert.equal(usage?.completion_tokens, 4);
  // A FastAPI-generation board's own OpenAI stream is empty: the router spoke it.
  assert.deepEqual(clientRequests(world.cluster.pods[0]).map((e) => e.path), ["/api/chat"]);
});

Deno.test("the openai client's completions work streaming and not on both board generations", async () => {
  await using world = await startWorld({
    pods: [
      { models: ["qwen"], loaded: ["qwen"], tokens: ["a", "b"] },
      { flavor: "fl", models: ["phi"], loaded: ["phi"], tokens: ["c", "d"] },
    ],
  });
  const openai = openAIFor(world);
  for (const [model, text] of [["qwen", "ab"], ["phi", "cd"]]) {
    const whole = await openai.completions.create({ model, prompt: "hi", max_tokens: 8 });
    assert.equal(whole.choices[0].text, text, model);
    assert.equal(whole.choices[0].finish_reason, "stop", model);
    const stream = await openai.completions.create({ model, prompt: "hi", stream: true });
    let streamed = "";
    for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? "";
    assert.equal(streamed, text, model);
  }
  assert.deepEqual(
    world.cluster.pods.map((pod) => clientRequests(pod).map((e) => e.path)),
    [["/api/generate", "/api/generate"], ["/v1/completions", "/v1/completions"]],
  );
});

Deno.test("the openai client streams a chat completion with tools from a FastAPI-generation board", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokens: ["The", " sky"] }],
  });
  const tools: OpenAI.ChatCompletionTool[] = [{
    type: "function",
    function: { name: "weather", parameters: { type: "object", properties: {} } },
  }];
  const stream = await openAIFor(world).chat.completions.create({
    model: "qwen",
    messages: HI,
    tools,
    stream: true,
  });
  let text = "";
  const finishes: string[] = [];
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? "";
    if (chunk.choices[0]?.finish_reason) finishes.push(chunk.choices[0].finish_reason);
  }
  assert.equal(text, "The sky");
  assert.deepEqual(finishes, ["stop"]);
  // Its /api/chat fails on tools: its own OpenAI chat was asked, not streaming.
  const [request] = clientRequests(world.cluster.pods[0]);
  assert.equal(request.path, "/v1/chat/completions");
});

Deno.test("a bad OpenAI request to a FastAPI-generation board is the openai client's BadRequestError", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const openai = openAIFor(world);
  const error = await rejection(() =>
    openai.completions.create({ model: "qwen", prompt: ["one", "two"] })
  );
  assert.ok(error instanceof OpenAI.BadRequestError);
  assert.equal(error.message, "400 'prompt' must be a string (one prompt per request)");
  assert.deepEqual(clientRequests(world.cluster.pods[0]), []);
});

Deno.test("the openai client's embeddings come back as numbers for the model asked", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"] }, { flavor: "fl", models: ["bge"] }],
  });
  const openai = openAIFor(world);
  const first = await openai.embeddings.create({ model: "bge", input: "alpha" });
  const again = await openai.embeddings.create({ model: "bge", input: "alpha" });
  const other = await openai.embeddings.create({ model: "bge", input: "beta" });
  assert.equal(first.object, "list");
  assert.equal(first.model, "bge");
  assert.equal(first.data.length, 1);
  assert.equal(first.data[0].embedding.length, 8);
  assert.ok(first.data[0].embedding.every((x) => typeof x === "number"));
  assert.deepEqual(again.data[0].embedding, first.data[0].embedding);
  assert.notDeepEqual(other.data[0].embedding, first.data[0].embedding);
  assert.deepEqual(clientRequests(world.cluster.pods[0]), []);
  assert.deepEqual(
    clientRequests(world.cluster.pods[1]).map((e) => e.path),
    // Through the board's /api/embed: its /v1/embeddings flattens a batch.
    Array(3).fill("/api/embed"),
  );
});

Deno.test("the openai client gets one embedding per input of a batch, in order", async () => {
  await using world = await startWorld({ pods: [{ flavor: "fl", models: ["bge"] }] });
  const openai = openAIFor(world);
  const batch = await openai.embeddings.create({ model: "bge", input: ["alpha", "beta"] });
  const alpha = await openai.embeddings.create({ model: "bge", input: "alpha" });
  const floats = await openai.embeddings.create({
    model: "bge",
    input: ["alpha", "beta"],
    encoding_format: "float",
  });
  assert.deepEqual(batch.data.map((d) => d.index), [0, 1]);
  assert.deepEqual(batch.data[0].embedding, alpha.data[0].embedding);
  assert.notDeepEqual(batch.data[1].embedding, batch.data[0].embedding);
  // The SDK asks for base64 unless told; the numbers are the same either way (as float32).
  assert.deepEqual(
    floats.data.map((d) => d.embedding.map((x) => Math.fround(x))),
    batch.data.map((d) => d.embedding),
  );
});

Deno.test("embeddings on a model only FastAPI-generation boards hold are a 501 saying why", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"] }, { flavor: "fl", models: ["qwen", "bge"] }, { models: ["phi"] }],
  });
  const openai = openAIFor(world);
  const error = await rejection(() => openai.embeddings.create({ model: "phi", input: "hi" }));
  assert.ok(error instanceof OpenAI.APIError);
  assert.equal(error.status, 501);
  assert.match(error.message, /only on FastAPI-generation RKLlama boards \(rk-2\)/);
  const ollama = ollamaFor(world);
  const refused = await rejection(() => ollama.embed({ model: "phi", input: "hi" })) as Error & {
    status_code?: number;
  };
  assert.equal(refused.status_code, 501);
  // A model on both generations is embedded by the Flask one.
  for (let i = 0; i < 3; i++) await ollama.embed({ model: "qwen", input: "hi" });
  assert.deepEqual(clientRequests(world.cluster.pods[0]), []);
  assert.deepEqual(
    clientRequests(world.cluster.pods[1]).map((e) => e.path),
    Array(3).fill("/api/embed"),
  );
});

Deno.test("the ollama client's legacy embeddings() gets one vector in the legacy shape", async () => {
  await using world = await startWorld({ pods: [{ flavor: "fl", models: ["bge"] }] });
  const ollama = ollamaFor(world);
  const legacy = await ollama.embeddings({ model: "bge:latest", prompt: "alpha" });
  const current = await ollama.embed({ model: "bge", input: "alpha" });
  assert.deepEqual(legacy.embedding, current.embeddings[0]);
});

Deno.test("an unknown model makes the openai client raise a 404 naming the model", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const openai = openAIFor(world);
  const calls: [string, () => Promise<unknown>][] = [
    ["chat", () => openai.chat.completions.create({ model: "gpt-4o", messages: HI })],
    [
      "streaming chat",
      () => openai.chat.completions.create({ model: "gpt-4o", messages: HI, stream: true }),
    ],
    ["completion", () => openai.completions.create({ model: "gpt-4o", prompt: "hi" })],
    ["embeddings", () => openai.embeddings.create({ model: "gpt-4o", input: "hi" })],
  ];
  for (const [name, call] of calls) {
    const error = await rejection(call);
    assert.ok(error instanceof OpenAI.NotFoundError, name);
    assert.equal(error.status, 404, name);
    assert.equal(error.message, "404 model 'gpt-4o' not found; available: qwen", name);
  }
  assert.deepEqual(clientRequests(world.cluster.pods[0]), []);
});

Deno.test("a pod that breaks an OpenAI stream makes the openai client raise, not end quietly", async () => {
  await using world = await startWorld({
    pods: [{ flavor: "fl", models: ["qwen"], loaded: ["qwen"], brokenOpenAIStream: true }],
  });
  const stream = await openAIFor(world).chat.completions.create({
    model: "qwen",
    messages: HI,
    stream: true,
  });
  const error = await rejection(async () => {
    for await (const _chunk of stream) assert.fail("the broken stream has no chunks");
  });
  assert.ok(error instanceof OpenAI.APIError);
  assert.match(error.message, /^pod rk-0 failed mid-stream/);
});

Deno.test("breaking out of an openai client stream leaves the pod to finish its generation undisturbed", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"], loaded: ["qwen"], tokenDelayMs: 2, tokens: Array(100).fill("x") }],
  });
  const [pod] = world.cluster.pods;
  const stream = await openAIFor(world).chat.completions.create({
    model: "qwen",
    messages: HI,
    stream: true,
  });
  let text = "";
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? "";
    if (text.length === 3) break;
  }
  assert.equal(text, "xxx");
  await pod.waitFor((e) => e.type === "generation-end");
  assert.deepEqual(pod.events.filter((e) => e.type === "aborted"), []);
});
