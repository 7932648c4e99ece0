import assert from "node:assert/strict";
import {
  chatCompletion,
  chatRequest,
  completionFrames,
  completionRequest,
  embeddingInputs,
  finishReason,
  ollamaOptions,
  openAIEmbeddings,
  streamFrames,
  type StreamState,
  textCompletion,
  translationFor,
  unsupportedOn,
} from "./openai_compat.ts";
import { BadRequest } from "../api/model_name.ts";

Deno.test("ollamaOptions() carries OpenAI's sampling fields over as Ollama options", () => {
  const cases: [Record<string, unknown>, Record<string, unknown> | undefined][] = [
    [{}, undefined],
    [{ max_tokens: 5 }, { num_predict: 5 }],
    [{ max_completion_tokens: 7, max_tokens: 5 }, { num_predict: 7 }],
    [{ temperature: 0.2, top_p: 0.9, seed: 3 }, { temperature: 0.2, top_p: 0.9, seed: 3 }],
    [{ stop: "END" }, { stop: ["END"] }],
    [{ stop: ["a", "b"] }, { stop: ["a", "b"] }],
    [{ frequency_penalty: 1, presence_penalty: 0.5 }, {
      frequency_penalty: 1,
      presence_penalty: 0.5,
    }],
    [{ temperature: "hot" }, undefined],
  ];
  for (const [request, options] of cases) {
    assert.deepEqual(ollamaOptions(request), options, JSON.stringify(request));
  }
});

Deno.test("chatRequest() turns OpenAI messages, tools and formats into Ollama's", () => {
  const chat = chatRequest({
    model: "ignored",
    stream: true,
    max_tokens: 9,
    response_format: { type: "json_object" },
    tools: [{ type: "function", function: { name: "f", parameters: {} } }],
    messages: [
      { role: "developer", content: "Be brief." },
      {
        role: "user",
        content: [
          { type: "text", text: "What is" },
          { type: "text", text: "this?" },
          { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
        ],
      },
      {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: '{"a":1}' } }],
      },
      { role: "tool", tool_call_id: "c1", name: "f", content: "42" },
    ],
  }, "qwen");
  assert.deepEqual(chat, {
    model: "qwen",
    stream: true,
    options: { num_predict: 9 },
    format: "json",
    tools: [{ type: "function", function: { name: "f", parameters: {} } }],
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: "What is\nthis?", images: ["AAAA"] },
      {
        role: "assistant",
        content: "",
        tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: { a: 1 } } }],
      },
      { role: "tool", content: "42", tool_call_id: "c1", tool_name: "f" },
    ],
  });
  // OpenAI does not stream unless asked; Ollama does unless told not to.
  assert.equal(chatRequest({ messages: [{ role: "user", content: "x" }] }, "q").stream, false);
  assert.deepEqual(
    chatRequest({
      messages: [{ role: "user", content: "x" }],
      response_format: { type: "json_schema", json_schema: { schema: { type: "object" } } },
    }, "q").format,
    { type: "object" },
  );
});

Deno.test("chatRequest() refuses what it cannot carry, saying what is wrong", () => {
  const cases: [unknown, RegExp][] = [
    [undefined, /'messages' must be a non-empty array/],
    [[], /'messages' must be a non-empty array/],
    [["hi"], /messages\[0\] must be an object with a 'role'/],
    [[{ role: "user", content: 5 }], /messages\[0\]\.content must be a string/],
    [
      [{ role: "user", content: [{ type: "image_url", image_url: { url: "http://x/y.png" } }] }],
      /data: URLs/,
    ],
  ];
  for (const [messages, message] of cases) {
    assert.throws(() => chatRequest({ messages }, "q"), (error: unknown) => {
      assert.ok(error instanceof BadRequest);
      assert.equal(error.status, 400);
      assert.match(error.message, message);
      return true;
    });
  }
});

Deno.test("completionRequest() takes one prompt, alone or in a list of one", () => {
  assert.deepEqual(completionRequest({ prompt: "Hi", max_tokens: 3, stop: "." }, "q"), {
    model: "q",
    prompt: "Hi",
    stream: false,
    options: { num_predict: 3, stop: ["."] },
  });
  assert.equal(completionRequest({ prompt: ["Hi"], stream: true }, "q").stream, true);
  assert.throws(() => completionRequest({ prompt: ["a", "b"] }, "q"), /one prompt per request/);
  assert.throws(() => completionRequest({}, "q"), /'prompt' must be a string/);
  assert.throws(() => completionRequest({ prompt: "x", n: 2 }, "q"), /'n' must be 1/);
  assert.throws(
    () => chatRequest({ messages: [{ role: "user", content: "x" }], n: 3 }, "q"),
    /'n' must be 1/,
  );
  assert.equal(chatRequest({ messages: [{ role: "user", content: "x" }], n: 1 }, "q").model, "q");
});

Deno.test("embeddingInputs() accepts a string or a list of strings only", () => {
  assert.deepEqual(embeddingInputs("a", "input"), ["a"]);
  assert.deepEqual(embeddingInputs(["a", "b"], "input"), ["a", "b"]);
  for (const bad of [[], [1, 2], [[1, 2]], 5, undefined]) {
    assert.throws(() => embeddingInputs(bad, "input"), /'input' must be a string or a non-empty/);
  }
});

Deno.test("finishReason() maps Ollama's done_reason, tool calls first", () => {
  assert.equal(finishReason("stop", false), "stop");
  assert.equal(finishReason("length", false), "length");
  assert.equal(finishReason(undefined, false), "stop");
  assert.equal(finishReason("stop", true), "tool_calls");
});

Deno.test("chatCompletion() and textCompletion() give OpenAI's shapes with usage", () => {
  const done = {
    message: { role: "assistant", content: "Hello" },
    done: true,
    done_reason: "length",
    prompt_eval_count: 4,
    eval_count: 2,
  };
  assert.deepEqual(chatCompletion(done, "qwen", "chatcmpl-1", 7), {
    id: "chatcmpl-1",
    object: "chat.completion",
    created: 7,
    model: "qwen",
    choices: [{
      index: 0,
      message: { role: "assistant", content: "Hello" },
      logprobs: null,
      finish_reason: "length",
    }],
    usage: { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 },
  });
  const tools = chatCompletion(
    {
      message: {
        role: "assistant",
        content: "",
        tool_calls: [{ function: { name: "f", arguments: { a: 1 } } }],
      },
      done_reason: "stop",
    },
    "qwen",
    "chatcmpl-2",
    7,
  );
  const [choice] = tools.choices as { message: { tool_calls: unknown[] }; finish_reason: string }[];
  assert.equal(choice.finish_reason, "tool_calls");
  assert.deepEqual(choice.message.tool_calls.map((c) => (c as { function: unknown }).function), [
    { name: "f", arguments: '{"a":1}' },
  ]);
  assert.deepEqual(
    textCompletion({ response: "Hi", done_reason: "stop", eval_count: 1 }, "q", "cmpl-1", 7),
    {
      id: "cmpl-1",
      object: "text_completion",
      created: 7,
      model: "q",
      choices: [{ text: "Hi", index: 0, logprobs: null, finish_reason: "stop" }],
      usage: { prompt_tokens: 0, completion_tokens: 1, total_tokens: 1 },
    },
  );
});

function state(kind: "chat" | "completion", includeUsage = false): StreamState {
  return {
    id: "x-1",
    created: 7,
    model: "q",
    kind,
    includeUsage,
    started: false,
    toolCalls: 0,
    ended: false,
  };
}

/** The JSON of each `data:` frame, `[DONE]` as the string. */
function frames(text: string): unknown[] {
  return text.split("\n\n").filter((f) => f !== "").map((f) => {
    assert.match(f, /^data: /);
    const data = f.slice("data: ".length);
    return data === "[DONE]" ? data : JSON.parse(data);
  });
}

Deno.test("streamFrames() turns an Ollama chat stream into OpenAI chunks, role first, usage when asked", () => {
  const s = state("chat", true);
  const out = [
    { message: { role: "assistant", content: "Hel" }, done: false },
    { message: { role: "assistant", content: "lo" }, done: false },
    {
      message: { role: "assistant", content: "" },
      done: true,
      done_reason: "stop",
      prompt_eval_count: 3,
      eval_count: 2,
    },
  ].map((line) => streamFrames(line, s)).join("");
  const chunk = (choices: unknown[], extra = {}) => ({
    id: "x-1",
    object: "chat.completion.chunk",
    created: 7,
    model: "q",
    choices,
    ...extra,
  });
  assert.deepEqual(frames(out), [
    chunk([{
      index: 0,
      delta: { role: "assistant", content: "Hel" },
      logprobs: null,
      finish_reason: null,
    }]),
    chunk([{ index: 0, delta: { content: "lo" }, logprobs: null, finish_reason: null }]),
    chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }]),
    chunk([], { usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } }),
    "[DONE]",
  ]);
  assert.equal(streamFrames({ message: { content: "late" } }, s), "");
});

Deno.test("streamFrames() sends tool calls with their index and ends with tool_calls", () => {
  const s = state("chat");
  const out = streamFrames({
    message: {
      role: "assistant",
      content: "",
      tool_calls: [{ function: { name: "f", arguments: {} } }],
    },
    done: false,
  }, s) + streamFrames({ message: { content: "" }, done: true, done_reason: "stop" }, s);
  const [first, last, done] = frames(out) as {
    choices: {
      delta: { tool_calls?: { index: number; function: unknown }[] };
      finish_reason: string;
    }[];
  }[];
  assert.deepEqual(first.choices[0].delta.tool_calls!.map((c) => [c.index, c.function]), [
    [0, { name: "f", arguments: "{}" }],
  ]);
  assert.equal(last.choices[0].finish_reason, "tool_calls");
  assert.equal(done, "[DONE]");
});

Deno.test("streamFrames() ends a stream with an error event on an Ollama error line", () => {
  const s = state("completion");
  const out = streamFrames({ response: "a", done: false }, s) +
    streamFrames({ error: "the pod failed" }, s) +
    streamFrames({ response: "b", done: true }, s);
  assert.deepEqual(frames(out), [
    {
      id: "x-1",
      object: "text_completion",
      created: 7,
      model: "q",
      choices: [{ index: 0, text: "a", logprobs: null, finish_reason: null }],
    },
    { error: { message: "the pod failed", type: "server_error", param: null, code: null } },
  ]);
});

Deno.test("openAIEmbeddings() gives one entry per vector, as floats or base64 float32", () => {
  const floats = openAIEmbeddings([[0.5, 1], [2, -1]], "bge", 3, undefined);
  assert.deepEqual(floats, {
    object: "list",
    data: [
      { object: "embedding", index: 0, embedding: [0.5, 1] },
      { object: "embedding", index: 1, embedding: [2, -1] },
    ],
    model: "bge",
    usage: { prompt_tokens: 3, total_tokens: 3 },
  });
  const encoded = openAIEmbeddings([[0.5, 1]], "bge", 1, "base64");
  const [entry] = encoded.data as { embedding: string }[];
  const bytes = Uint8Array.from(atob(entry.embedding), (c) => c.charCodeAt(0));
  assert.deepEqual([...new Float32Array(bytes.buffer)], [0.5, 1]);
});

Deno.test("translationFor() translates OpenAI generation except on the Flask generation", () => {
  const chat = { messages: [{ role: "user", content: "hi" }] };
  assert.equal(translationFor("/v1/chat/completions", "flask", chat, "q"), undefined);
  assert.equal(translationFor("/v1/chat/completions", "fastapi", chat, "q")?.path, "/api/chat");
  assert.equal(translationFor("/v1/chat/completions", "unknown", chat, "q")?.path, "/api/chat");
  assert.equal(translationFor("/v1/completions", "flask", { prompt: "x" }, "q"), undefined);
  assert.equal(
    translationFor("/v1/completions", "fastapi", { prompt: "x" }, "q")?.path,
    "/api/generate",
  );
  // Both generations flatten an OpenAI batch and answer the legacy path in the new shape.
  for (const generation of ["flask", "fastapi", "unknown"] as const) {
    const batch = translationFor("/v1/embeddings", generation, { input: ["a", "b"] }, "q");
    assert.equal(batch?.path, "/api/embed");
    assert.deepEqual(JSON.parse(batch!.body), { model: "q", input: ["a", "b"] });
    const legacy = translationFor("/api/embeddings", generation, { prompt: "a" }, "q");
    assert.deepEqual(JSON.parse(legacy!.body), { model: "q", input: "a" });
  }
  assert.equal(translationFor("/api/chat", "fastapi", chat, "q"), undefined);
});

Deno.test("unsupportedOn() rules out embeddings on the FastAPI generation only", () => {
  for (const path of ["/api/embed", "/api/embeddings", "/v1/embeddings"]) {
    assert.equal(unsupportedOn(path, "fastapi"), true);
    assert.equal(unsupportedOn(path, "flask"), false);
    assert.equal(unsupportedOn(path, "unknown"), false);
  }
  assert.equal(unsupportedOn("/api/chat", "fastapi"), false);
});

Deno.test("a translated stream becomes SSE as it arrives, and an early end is an error event", async () => {
  const translation = translationFor("/v1/chat/completions", "fastapi", {
    stream: true,
    messages: [{ role: "user", content: "hi" }],
  }, "q")!;
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const writer = writable.getWriter();
  const answer = await translation.answer(
    new Response(readable, { headers: { "content-type": "application/x-ndjson" } }),
  );
  assert.equal(answer.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const reader = answer.body!.pipeThrough(new TextDecoderStream()).getReader();
  const encoder = new TextEncoder();
  // Half a line first: nothing can be sent until it is whole.
  await writer.write(encoder.encode('{"message":{"content":"He'));
  await writer.write(encoder.encode('llo"},"done":false}\n'));
  const first = await reader.read();
  assert.match(first.value!, /"delta":\{"role":"assistant","content":"Hello"\}/);
  await writer.close();
  let rest = "";
  for (let part = await reader.read(); !part.done; part = await reader.read()) rest += part.value;
  assert.deepEqual(frames(rest), [{
    error: {
      message: "the board's answer ended before it was done",
      type: "server_error",
      param: null,
      code: null,
    },
  }]);
});

Deno.test("an /api/embed answer with fewer vectors than inputs becomes a 502, not a short list", async () => {
  const translation = translationFor("/v1/embeddings", "flask", { input: ["a", "b"] }, "q")!;
  const answer = await translation.answer(Response.json({ embeddings: [[1, 2, 3, 4]] }));
  assert.equal(answer.status, 502);
  assert.deepEqual(await answer.json(), {
    error: {
      message: "the board answered 1 embeddings for 2 inputs",
      type: "server_error",
      param: null,
      code: null,
    },
  });
  const legacy = translationFor("/api/embeddings", "flask", { prompt: "a" }, "q")!;
  const whole = await legacy.answer(Response.json({ embeddings: [[1, 2]], model: "q" }));
  assert.deepEqual(await whole.json(), { embedding: [1, 2] });
  const failed = await legacy.answer(Response.json({ error: "boom" }, { status: 500 }));
  assert.equal(failed.status, 500);
});

Deno.test("with tools, a FastAPI board is asked its own OpenAI chat, whole, since its /api/chat fails on them", () => {
  const tools = [{ type: "function", function: { name: "f", parameters: {} } }];
  const request = {
    model: "library/q:latest",
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: "user", content: "hi" }],
    tools,
  };
  const translation = translationFor("/v1/chat/completions", "fastapi", request, "q")!;
  assert.equal(translation.path, "/v1/chat/completions");
  assert.deepEqual(JSON.parse(translation.body), {
    model: "q",
    stream: false,
    messages: [{ role: "user", content: "hi" }],
    tools,
  });
  // The Flask generation's /api/chat takes tools; an unknown board is tried through it.
  assert.equal(translationFor("/v1/chat/completions", "unknown", request, "q")?.path, "/api/chat");
  assert.equal(translationFor("/v1/chat/completions", "flask", request, "q"), undefined);
});

Deno.test("completionFrames() streams a whole chat.completion in one piece, with tool call indexes", () => {
  const s = state("chat", true);
  const out = completionFrames({
    choices: [{
      index: 0,
      message: {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }],
      },
      finish_reason: "tool_calls",
    }],
    usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
  }, s);
  const chunk = (choices: unknown[], extra = {}) => ({
    id: "x-1",
    object: "chat.completion.chunk",
    created: 7,
    model: "q",
    choices,
    ...extra,
  });
  assert.deepEqual(frames(out), [
    chunk([{
      index: 0,
      delta: {
        role: "assistant",
        content: "",
        tool_calls: [{
          index: 0,
          id: "c1",
          type: "function",
          function: { name: "f", arguments: "{}" },
        }],
      },
      logprobs: null,
      finish_reason: null,
    }]),
    chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: "tool_calls" }]),
    chunk([], { usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } }),
    "[DONE]",
  ]);
});
