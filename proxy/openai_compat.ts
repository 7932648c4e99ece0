/**
 * @module
 * The OpenAI API for boards that cannot speak it, and Ollama's embedding shapes for
 * boards that answer them wrong: a request is rewritten for the board's Ollama
 * endpoint (`/api/chat`, `/api/generate`, `/api/embed`) and its answer rewritten
 * back, chunk by chunk for streams. The FastAPI generation's own OpenAI layer sends
 * empty streams and fails `/v1/completions`; both generations flatten an OpenAI
 * batch of embeddings into one vector and answer the legacy `/api/embeddings` in
 * `/api/embed`'s shape (see docs/api.md). Everything here is pure but for reading
 * the answer it is handed.
 */

import type { Generation } from "../cluster/store.ts";
import { BadRequest } from "../api/model_name.ts";
import { errorResponse } from "../api/errors.ts";

/** One request rewritten for a board. */
export interface Translation {
  /** The path to send the board. */
  path: string;
  /** The JSON body to send the board. */
  body: string;
  /**
   * The board's answer rewritten for the client. Errors (status 400 and up) are
   * returned as they are: the proxy shapes them for the client's path.
   */
  answer(upstream: Response): Promise<Response>;
}

/** Paths the router may serve through a board's Ollama endpoints. */
const TRANSLATED = new Set([
  "/v1/chat/completions",
  "/v1/completions",
  "/v1/embeddings",
  "/api/embeddings",
]);

/** Embedding paths: the FastAPI generation answers every one of them with a 500. */
const EMBEDDINGS = new Set(["/api/embed", "/api/embeddings", "/v1/embeddings"]);

/** True when requests to `path` may need a translation (checked before parsing anything). */
export function mayTranslate(path: string, generation?: Generation): boolean {
  // The Flask generation's own OpenAI chat and completions work (see translationFor).
  if (generation === "flask" && (path === "/v1/chat/completions" || path === "/v1/completions")) {
    return false;
  }
  return TRANSLATED.has(path);
}

/** True when a board of `generation` cannot serve `path` at all (embeddings on FastAPI). */
export function unsupportedOn(path: string, generation: Generation): boolean {
  return generation === "fastapi" && EMBEDDINGS.has(path);
}

/**
 * How to serve a request to `path` on a board of `generation`, or undefined when
 * the board's own endpoint serves it as sent: OpenAI chat and completions on the
 * Flask generation, whose OpenAI layer works. `request` is the client's JSON body,
 * `model` the name the board knows.
 *
 * @throws {BadRequest} for a body the translation cannot carry (no messages, a
 * batch of prompts, token arrays)
 */
export function translationFor(
  path: string,
  generation: Generation,
  request: Record<string, unknown>,
  model: string,
): Translation | undefined {
  switch (path) {
    case "/v1/chat/completions":
      if (generation === "flask") return undefined;
      // FastAPI's /api/chat fails on any tools (500), its own OpenAI chat takes them
      // but cannot stream: the whole answer is asked for, and streamed in one piece.
      if (generation === "fastapi" && hasTools(request)) {
        return wholeChatTranslation(request, model);
      }
      return chatTranslation(request, model);
    case "/v1/completions":
      return generation === "flask" ? undefined : completionTranslation(request, model);
    case "/v1/embeddings":
      return openAIEmbeddingTranslation(request, model);
    case "/api/embeddings":
      return legacyEmbeddingTranslation(request, model);
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Requests

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Ollama's `options` for an OpenAI request's sampling fields. RKLlama's FastAPI
 * generation reads only some (its `num_predict` is fixed when the model loads).
 */
export function ollamaOptions(request: Json): Json | undefined {
  const options: Json = {};
  for (const key of ["temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"]) {
    if (typeof request[key] === "number") options[key] = request[key];
  }
  const maxTokens = request.max_completion_tokens ?? request.max_tokens;
  if (typeof maxTokens === "number") options.num_predict = maxTokens;
  if (typeof request.stop === "string") options.stop = [request.stop];
  else if (Array.isArray(request.stop)) options.stop = request.stop;
  return Object.keys(options).length > 0 ? options : undefined;
}

/**
 * An OpenAI chat request as Ollama's `/api/chat` takes it.
 *
 * @example
 * ```ts
 * chatRequest({ model: "x", messages: [{ role: "user", content: "Hi" }], max_tokens: 5 }, "x");
 * // { model: "x", messages: [{ role: "user", content: "Hi" }], stream: false, options: { num_predict: 5 } }
 * ```
 * @throws {BadRequest} when `messages` is not a list of messages
 */
export function chatRequest(request: Json, model: string): Json {
  if (!Array.isArray(request.messages) || request.messages.length === 0) {
    throw new BadRequest(400, "'messages' must be a non-empty array of messages");
  }
  oneChoice(request);
  const chat: Json = {
    model,
    messages: request.messages.map(ollamaMessage),
    stream: request.stream === true,
  };
  const options = ollamaOptions(request);
  if (options) chat.options = options;
  if (Array.isArray(request.tools) && request.tools.length > 0) chat.tools = request.tools;
  const format = request.response_format;
  if (isObject(format)) {
    if (format.type === "json_object") chat.format = "json";
    else if (format.type === "json_schema" && isObject(format.json_schema)) {
      chat.format = format.json_schema.schema ?? "json";
    }
  }
  return chat;
}

/** @throws {BadRequest} for `n` other than 1: a board makes one answer per request */
function oneChoice(request: Json): void {
  if (request.n !== undefined && request.n !== null && request.n !== 1) {
    throw new BadRequest(400, "'n' must be 1: a board makes one answer per request");
  }
}

function ollamaMessage(message: unknown, index: number): Json {
  if (!isObject(message) || typeof message.role !== "string") {
    throw new BadRequest(400, `messages[${index}] must be an object with a 'role'`);
  }
  // OpenAI's newer name for the system role; Ollama and RKLlama know only "system".
  const role = message.role === "developer" ? "system" : message.role;
  const converted: Json = { role, content: "" };
  const { content } = message;
  if (typeof content === "string") converted.content = content;
  else if (Array.isArray(content)) {
    const texts: string[] = [];
    const images: string[] = [];
    for (const part of content) {
      if (!isObject(part)) continue;
      if (part.type === "text" && typeof part.text === "string") texts.push(part.text);
      if (part.type === "image_url") images.push(imageData(part.image_url, index));
    }
    converted.content = texts.join("\n");
    if (images.length > 0) converted.images = images;
  } else if (content !== null && content !== undefined) {
    throw new BadRequest(400, `messages[${index}].content must be a string or a list of parts`);
  }
  if (Array.isArray(message.tool_calls)) {
    converted.tool_calls = message.tool_calls.map((call) => {
      const fn = isObject(call) && isObject(call.function) ? call.function : {};
      return {
        ...(isObject(call) && typeof call.id === "string" ? { id: call.id } : {}),
        type: "function",
        function: { name: fn.name, arguments: parseArguments(fn.arguments) },
      };
    });
  }
  if (typeof message.tool_call_id === "string") converted.tool_call_id = message.tool_call_id;
  if (typeof message.name === "string" && role === "tool") converted.tool_name = message.name;
  return converted;
}

/** OpenAI sends tool arguments as a JSON string; Ollama as an object. */
function parseArguments(value: unknown): unknown {
  if (typeof value !== "string") return value ?? {};
  try {
    return JSON.parse(value);
  } catch {
    return {};
  }
}

/** The base64 of a `data:` image URL; Ollama takes images only as base64. */
function imageData(imageUrl: unknown, index: number): string {
  const url = isObject(imageUrl) ? imageUrl.url : imageUrl;
  const match = typeof url === "string" ? /^data:[^;,]*;base64,(.*)$/s.exec(url) : null;
  if (!match) {
    throw new BadRequest(
      400,
      `messages[${index}]: images must be given as data: URLs with base64 content`,
    );
  }
  return match[1];
}

/**
 * An OpenAI completion request as Ollama's `/api/generate` takes it.
 *
 * @throws {BadRequest} when `prompt` is not one string
 */
export function completionRequest(request: Json, model: string): Json {
  const prompt = Array.isArray(request.prompt) && request.prompt.length === 1
    ? request.prompt[0]
    : request.prompt;
  if (typeof prompt !== "string") {
    throw new BadRequest(400, "'prompt' must be a string (one prompt per request)");
  }
  oneChoice(request);
  const generate: Json = { model, prompt, stream: request.stream === true };
  if (typeof request.suffix === "string") generate.suffix = request.suffix;
  const options = ollamaOptions(request);
  if (options) generate.options = options;
  return generate;
}

/**
 * The texts of an embedding request's `input` (OpenAI) or `prompt` (legacy Ollama).
 *
 * @throws {BadRequest} when it is not a string or a non-empty list of strings
 */
export function embeddingInputs(input: unknown, field: string): string[] {
  if (typeof input === "string") return [input];
  if (Array.isArray(input) && input.length > 0 && input.every((i) => typeof i === "string")) {
    return input;
  }
  throw new BadRequest(400, `'${field}' must be a string or a non-empty array of strings`);
}

// ---------------------------------------------------------------------------
// Answers

/** OpenAI's finish reason for Ollama's `done_reason`. */
export function finishReason(doneReason: unknown, toolCalls: boolean): string {
  if (toolCalls) return "tool_calls";
  return doneReason === "length" ? "length" : "stop";
}

function randomId(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

function usageOf(done: Json): Json {
  const prompt = typeof done.prompt_eval_count === "number" ? done.prompt_eval_count : 0;
  const completion = typeof done.eval_count === "number" ? done.eval_count : 0;
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
  };
}

/** Ollama's tool calls (arguments as objects) as OpenAI's (arguments as JSON text). */
export function openAIToolCalls(calls: unknown, withIndex: boolean): Json[] {
  if (!Array.isArray(calls)) return [];
  return calls.map((call, index) => {
    const fn = isObject(call) && isObject(call.function) ? call.function : {};
    const id = isObject(call) && typeof call.id === "string" ? call.id : randomId("call");
    return {
      ...(withIndex ? { index } : {}),
      id,
      type: "function",
      function: {
        name: fn.name,
        arguments: typeof fn.arguments === "string"
          ? fn.arguments
          : JSON.stringify(fn.arguments ?? {}),
      },
    };
  });
}

/**
 * Ollama's whole `/api/chat` answer as an OpenAI `chat.completion`.
 *
 * @example
 * ```ts
 * chatCompletion({ message: { role: "assistant", content: "Hi" }, done_reason: "stop", eval_count: 1 }, "x", "chatcmpl-1", 0);
 * ```
 */
export function chatCompletion(answer: Json, model: string, id: string, created: number): Json {
  const message = isObject(answer.message) ? answer.message : {};
  const toolCalls = openAIToolCalls(message.tool_calls, false);
  return {
    id,
    object: "chat.completion",
    created,
    model,
    choices: [{
      index: 0,
      message: {
        role: "assistant",
        content: typeof message.content === "string" ? message.content : "",
        ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
      },
      logprobs: null,
      finish_reason: finishReason(answer.done_reason, toolCalls.length > 0),
    }],
    usage: usageOf(answer),
  };
}

/** Ollama's whole `/api/generate` answer as an OpenAI `text_completion`. */
export function textCompletion(answer: Json, model: string, id: string, created: number): Json {
  return {
    id,
    object: "text_completion",
    created,
    model,
    choices: [{
      text: typeof answer.response === "string" ? answer.response : "",
      index: 0,
      logprobs: null,
      finish_reason: finishReason(answer.done_reason, false),
    }],
    usage: usageOf(answer),
  };
}

/** What a stream of Ollama lines becomes: SSE frames, ending in `data: [DONE]`. */
export interface StreamState {
  id: string;
  created: number;
  model: string;
  kind: "chat" | "completion";
  includeUsage: boolean;
  /** The role was sent (in the first chunk, as OpenAI does). */
  started: boolean;
  toolCalls: number;
  /** The last frame was sent: `[DONE]`, or an error. */
  ended: boolean;
}

function frame(value: unknown): string {
  return `data: ${JSON.stringify(value)}\n\n`;
}

function errorFrame(message: string): string {
  return frame({ error: { message, type: "server_error", param: null, code: null } });
}

/**
 * The SSE frames for one line of an Ollama stream (`/api/chat` or `/api/generate`).
 * A line with `done: true` ends the stream with the finish reason, the usage when
 * asked for (`stream_options.include_usage`) and `[DONE]`; an `error` line ends it
 * with an error event, which the OpenAI clients raise.
 */
export function streamFrames(line: Json, state: StreamState): string {
  if (state.ended) return "";
  const chunk = (choices: Json[], extra: Json = {}) =>
    frame({
      id: state.id,
      object: state.kind === "chat" ? "chat.completion.chunk" : "text_completion",
      created: state.created,
      model: state.model,
      choices,
      ...extra,
    });
  if (line.error !== undefined) {
    state.ended = true;
    return errorFrame(typeof line.error === "string" ? line.error : JSON.stringify(line.error));
  }
  let out = "";
  if (state.kind === "chat") {
    const message = isObject(line.message) ? line.message : {};
    const content = typeof message.content === "string" ? message.content : "";
    const calls = openAIToolCalls(message.tool_calls, true).map((call) => ({
      ...call,
      index: state.toolCalls + (call.index as number),
    }));
    state.toolCalls += calls.length;
    if (content !== "" || calls.length > 0 || !state.started) {
      const delta: Json = state.started ? {} : { role: "assistant" };
      delta.content = content;
      if (calls.length > 0) delta.tool_calls = calls;
      state.started = true;
      out += chunk([{ index: 0, delta, logprobs: null, finish_reason: null }]);
    }
  } else {
    const text = typeof line.response === "string" ? line.response : "";
    if (text !== "") {
      out += chunk([{ index: 0, text, logprobs: null, finish_reason: null }]);
    }
  }
  if (line.done === true) {
    const finish = finishReason(line.done_reason, state.toolCalls > 0);
    out += state.kind === "chat"
      ? chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: finish }])
      : chunk([{ index: 0, text: "", logprobs: null, finish_reason: finish }]);
    if (state.includeUsage) out += chunk([], { usage: usageOf(line) });
    out += "data: [DONE]\n\n";
    state.ended = true;
  }
  return out;
}

/**
 * Ollama embeddings as OpenAI's list, one entry per input, as floats or as the
 * base64 of little-endian float32s (`encoding_format: "base64"`, which the OpenAI
 * SDKs ask for by default).
 */
export function openAIEmbeddings(
  vectors: readonly (readonly number[])[],
  model: string,
  promptTokens: number,
  encoding: unknown,
): Json {
  return {
    object: "list",
    data: vectors.map((vector, index) => ({
      object: "embedding",
      index,
      embedding: encoding === "base64" ? float32Base64(vector) : vector,
    })),
    model,
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  };
}

function float32Base64(vector: readonly number[]): string {
  const bytes = new Uint8Array(new Float32Array(vector).buffer);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

// ---------------------------------------------------------------------------
// Translations

function hasTools(request: Json): boolean {
  return Array.isArray(request.tools) && request.tools.length > 0;
}

/**
 * The SSE frames of a whole `chat.completion`: its message in one chunk, then the
 * finish reason, the usage when asked for, and `[DONE]`.
 */
export function completionFrames(completion: Json, state: StreamState): string {
  const [choice] = Array.isArray(completion.choices) ? completion.choices : [];
  const message = isObject(choice) && isObject(choice.message) ? choice.message : {};
  const calls = Array.isArray(message.tool_calls)
    ? message.tool_calls.map((call, index) => isObject(call) ? { index, ...call } : call)
    : [];
  const delta: Json = {
    role: "assistant",
    content: typeof message.content === "string" ? message.content : "",
  };
  if (calls.length > 0) delta.tool_calls = calls;
  const chunk = (choices: Json[], extra: Json = {}) =>
    frame({
      id: state.id,
      object: "chat.completion.chunk",
      created: state.created,
      model: state.model,
      choices,
      ...extra,
    });
  const finish = isObject(choice) && typeof choice.finish_reason === "string"
    ? choice.finish_reason
    : finishReason(undefined, calls.length > 0);
  let out = chunk([{ index: 0, delta, logprobs: null, finish_reason: null }]) +
    chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: finish }]);
  if (state.includeUsage && isObject(completion.usage)) {
    out += chunk([], { usage: completion.usage });
  }
  state.ended = true;
  return out + "data: [DONE]\n\n";
}

function wholeChatTranslation(request: Json, model: string): Translation {
  const { stream_options: _, ...rest } = request;
  const state = newState("chat", model, request);
  return {
    path: "/v1/chat/completions",
    body: JSON.stringify({ ...rest, model, stream: false }),
    answer: request.stream === true
      ? async (upstream) => {
        const whole = await wholeAnswer(upstream, "/v1/chat/completions", (json) => ({ json }));
        if (!whole.ok) return whole;
        const frames = completionFrames(await whole.json(), state);
        return new Response(frames, {
          status: whole.status,
          headers: answerHeaders(whole, "text/event-stream; charset=utf-8"),
        });
      }
      : (upstream) => Promise.resolve(upstream),
  };
}

function chatTranslation(request: Json, model: string): Translation {
  const body = chatRequest(request, model);
  const state = newState("chat", model, request);
  return {
    path: "/api/chat",
    body: JSON.stringify(body),
    answer: body.stream
      ? (upstream) => Promise.resolve(sseAnswer(upstream, state))
      : (upstream) =>
        wholeAnswer(upstream, "/v1/chat/completions", (answer) => ({
          json: chatCompletion(answer, model, state.id, state.created),
        })),
  };
}

function completionTranslation(request: Json, model: string): Translation {
  const body = completionRequest(request, model);
  const state = newState("completion", model, request);
  const echo = request.echo === true ? body.prompt as string : "";
  return {
    path: "/api/generate",
    body: JSON.stringify(body),
    answer: body.stream
      ? (upstream) => Promise.resolve(sseAnswer(upstream, state))
      : (upstream) =>
        wholeAnswer(upstream, "/v1/completions", (answer) => {
          const json = textCompletion(answer, model, state.id, state.created);
          if (echo) {
            const [choice] = json.choices as Json[];
            choice.text = echo + choice.text;
          }
          return { json };
        }),
  };
}

function openAIEmbeddingTranslation(request: Json, model: string): Translation {
  const inputs = embeddingInputs(request.input, "input");
  const body: Json = { model, input: inputs };
  if (typeof request.truncate === "boolean") body.truncate = request.truncate;
  return {
    path: "/api/embed",
    body: JSON.stringify(body),
    answer: (upstream) =>
      wholeAnswer(upstream, "/v1/embeddings", (answer) => {
        const vectors = checkedVectors(answer, inputs.length);
        if (typeof vectors === "string") return { error: vectors };
        const tokens = typeof answer.prompt_eval_count === "number" ? answer.prompt_eval_count : 0;
        return { json: openAIEmbeddings(vectors, model, tokens, request.encoding_format) };
      }),
  };
}

function legacyEmbeddingTranslation(request: Json, model: string): Translation {
  const [prompt] = embeddingInputs(request.prompt ?? request.input, "prompt");
  const body: Json = { model, input: prompt };
  if (request.keep_alive !== undefined) body.keep_alive = request.keep_alive;
  if (isObject(request.options)) body.options = request.options;
  return {
    path: "/api/embed",
    body: JSON.stringify(body),
    answer: (upstream) =>
      wholeAnswer(upstream, "/api/embeddings", (answer) => {
        const vectors = checkedVectors(answer, 1);
        if (typeof vectors === "string") return { error: vectors };
        return { json: { embedding: vectors[0] } };
      }),
  };
}

/** The vectors of an `/api/embed` answer, or why they cannot be the answer. */
function checkedVectors(answer: Json, inputs: number): number[][] | string {
  const vectors = answer.embeddings;
  if (!Array.isArray(vectors) || !vectors.every(Array.isArray)) {
    return "the board's /api/embed answer holds no embeddings";
  }
  if (vectors.length !== inputs) {
    return `the board answered ${vectors.length} embeddings for ${inputs} inputs`;
  }
  return vectors as number[][];
}

function newState(kind: "chat" | "completion", model: string, request: Json): StreamState {
  const streamOptions = isObject(request.stream_options) ? request.stream_options : {};
  return {
    id: randomId(kind === "chat" ? "chatcmpl" : "cmpl"),
    created: Math.floor(Date.now() / 1000),
    model,
    kind,
    includeUsage: streamOptions.include_usage === true,
    started: false,
    toolCalls: 0,
    ended: false,
  };
}

/** The answer's headers for a new body: the board's, less those that described its body. */
function answerHeaders(upstream: Response, contentType: string): Headers {
  const headers = new Headers(upstream.headers);
  headers.delete("content-length");
  headers.delete("content-encoding");
  headers.set("content-type", contentType);
  return headers;
}

/**
 * A whole JSON answer rewritten by `rewrite`; a board that sends no JSON, or an
 * answer `rewrite` refuses, becomes a 502 in the client's error shape.
 */
async function wholeAnswer(
  upstream: Response,
  path: string,
  rewrite: (answer: Json) => { json: Json } | { error: string },
): Promise<Response> {
  if (upstream.status >= 400) return upstream;
  let parsed: unknown;
  try {
    parsed = await upstream.json();
  } catch (error) {
    return errorResponse(path, 502, `the board's answer is not JSON: ${String(error)}`);
  }
  if (!isObject(parsed)) return errorResponse(path, 502, "the board's answer is not an object");
  if (parsed.error !== undefined) {
    const message = typeof parsed.error === "string" ? parsed.error : JSON.stringify(parsed.error);
    return errorResponse(path, 502, message);
  }
  const result = rewrite(parsed);
  if ("error" in result) return errorResponse(path, 502, result.error);
  return new Response(JSON.stringify(result.json), {
    status: upstream.status,
    headers: answerHeaders(upstream, "application/json"),
  });
}

/** An NDJSON stream from the board as OpenAI's SSE, line by line as it comes. */
function sseAnswer(upstream: Response, state: StreamState): Response {
  if (upstream.status >= 400 || !upstream.body) return upstream;
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let pending = "";
  const linesOf = (text: string): string => {
    let out = "";
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        parsed = { error: `the board sent a line that is not JSON: ${line.slice(0, 200)}` };
      }
      if (isObject(parsed)) out += streamFrames(parsed, state);
    }
    return out;
  };
  const translated = upstream.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        pending += decoder.decode(chunk, { stream: true });
        const end = pending.lastIndexOf("\n");
        if (end === -1) return;
        const out = linesOf(pending.slice(0, end));
        pending = pending.slice(end + 1);
        if (out !== "") controller.enqueue(encoder.encode(out));
      },
      flush(controller) {
        let out = linesOf(pending + decoder.decode());
        if (!state.ended) out += errorFrame("the board's answer ended before it was done");
        state.ended = true;
        controller.enqueue(encoder.encode(out));
      },
    }),
  );
  return new Response(translated, {
    status: upstream.status,
    statusText: upstream.statusText,
    headers: answerHeaders(upstream, "text/event-stream; charset=utf-8"),
  });
}
