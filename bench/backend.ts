/**
 * @module
 * A fast stand-in for RKLlama pods, so the benchmark measures the router and not
 * a board: every answer is prebuilt, and `/api/generate` streams NDJSON chunks at a
 * fixed pace, each stamped with the time it was sent. It answers the router's polls
 * (`/api/tags`, `/api/ps`, `/v1/models`) with `--models` models on disk, the first
 * `--loaded` of them loaded.
 *
 * Runs in its own process (`deno run --allow-net bench/backend.ts --ports 1`), prints
 * one JSON line `{"urls": [...]}` once every port listens, and exits when its stdin
 * closes, so it never outlives the benchmark that started it.
 */

const args = parseArgs(Deno.args);
const hostname = args.hostname ?? "127.0.0.1";
const ports = Number(args.ports ?? "1");
const modelCount = Number(args.models ?? "1");
const loadedCount = Number(args.loaded ?? "1");

/** Model names: `bench` first (the one the benchmark requests), then `m1`, `m2`, ... */
const models = Array.from({ length: modelCount }, (_, i) => i === 0 ? "bench" : `m${i}`);

function entry(name: string): Record<string, unknown> {
  return {
    name,
    model: name,
    size: 1_000_000,
    digest: "",
    details: { format: "rkllm", family: "llama", parameter_size: "1B", quantization_level: "" },
    modified_at: "2025-01-01T00:00:00Z",
  };
}

const encoder = new TextEncoder();
const json = { "content-type": "application/json" };
const tags = encoder.encode(JSON.stringify({ models: models.map(entry) }));
const ps = encoder.encode(JSON.stringify({
  models: models.slice(0, loadedCount).map((name) => ({
    ...entry(name),
    expires_at: "2099-01-01 00:00:00",
  })),
}));
const openAI = encoder.encode(JSON.stringify({
  object: "list",
  data: models.map((id) => ({ id, object: "model", created: 0, owned_by: "rkllama" })),
}));
/** The answer to a small non-streaming chat request, as Ollama shapes it. */
const chat = encoder.encode(JSON.stringify({
  model: "bench",
  created_at: "2025-01-01T00:00:00Z",
  message: { role: "assistant", content: "Hello! How can I help you today?" },
  done: true,
  done_reason: "stop",
  total_duration: 1,
  prompt_eval_count: 1,
  eval_count: 8,
}));

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** `?chunks=N&interval=MS`: N chunks, one every MS milliseconds, each stamped `sent`. */
function generate(url: URL): Response {
  const chunks = Number(url.searchParams.get("chunks") ?? "50");
  const interval = Number(url.searchParams.get("interval") ?? "10");
  let sent = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const tick = () => {
        const done = sent === chunks - 1;
        const line =
          `{"model":"bench","response":"tok","done":${done},"i":${sent},"sent":${nowMs()}}\n`;
        controller.enqueue(encoder.encode(line));
        sent++;
        if (done) controller.close();
        else timer = setTimeout(tick, interval);
      };
      tick();
    },
    // The client went away: stop sending.
    cancel() {
      clearTimeout(timer);
    },
  });
  return new Response(body, { headers: { "content-type": "application/x-ndjson" } });
}

/** Milliseconds a large body is held after it arrived, before the answer (`--hold`). */
const holdMs = Number(args.hold ?? "0");

function handle(request: Request): Response | Promise<Response> {
  // Most requests are the small chat: answer before parsing the URL.
  if (request.method === "POST" && request.url.endsWith("/api/chat")) {
    // A large body is read to its end first, as a board parses it before it answers.
    if (Number(request.headers.get("content-length")) > 65536) return readFirst(request);
    return new Response(chat, { headers: json });
  }
  const url = new URL(request.url);
  switch (url.pathname) {
    case "/api/tags":
      return new Response(tags, { headers: json });
    case "/api/ps":
      return new Response(ps, { headers: json });
    case "/v1/models":
      return new Response(openAI, { headers: json });
    case "/api/generate":
      return generate(url);
    default:
      return new Response(chat, { headers: json });
  }
}

async function readFirst(request: Request): Promise<Response> {
  await request.arrayBuffer();
  if (holdMs > 0) await new Promise((resolve) => setTimeout(resolve, holdMs));
  return new Response(chat, { headers: json });
}

const servers = Array.from(
  { length: ports },
  () => Deno.serve({ hostname, port: 0, onListen: () => {} }, handle),
);
console.log(JSON.stringify({
  urls: servers.map((server) => `http://${server.addr.hostname}:${server.addr.port}`),
}));
// Exit when whoever started us goes away.
for await (const _ of Deno.stdin.readable) { /* drain */ }
Deno.exit(0);

function parseArgs(list: string[]): Record<string, string> {
  const parsed: Record<string, string> = {};
  for (let i = 0; i < list.length; i += 2) parsed[list[i].replace(/^--/, "")] = list[i + 1];
  return parsed;
}
