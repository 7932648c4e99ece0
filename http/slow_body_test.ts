/**
 * The one test that times how fast the router answers while it works: beside other test files
 * its probes wait for the CPU, not for the router, so `deno task test` (test files side by side)
 * leaves it out and `deno task test:latency` runs it alone (CI runs both).
 */
import assert from "node:assert/strict";
import { startWorld } from "../sim/fixture.ts";
import type { TestWorld } from "../sim/fixture.ts";

const encoder = new TextEncoder();

async function assertHealthy(world: TestWorld): Promise<void> {
  const health = await fetch(`${world.url}/health`);
  assert.equal(health.status, 200);
  await health.body?.cancel();
  const pods = (await (await fetch(`${world.url}/router/pods`)).json()).pods;
  for (const pod of pods) assert.equal(pod.inflight, 0, `requests left in flight on ${pod.name}`);
}

/**
 * Sends `body` to /api/chat while asking /health over and over; returns the chat's
 * status and error, and the longest /health took meanwhile.
 */
function chatWhileProbing(
  world: TestWorld,
  body: Uint8Array<ArrayBuffer>,
): Promise<{ status: number; error: string; slowestHealthMs: number }> {
  return postWhileProbing<{ error: string }>(world, "/api/chat", "application/json", body);
}

/** Sends `body` to `path` while asking /health over and over, as {@linkcode chatWhileProbing}. */
async function postWhileProbing<Answer>(
  world: TestWorld,
  path: string,
  contentType: string,
  body: Uint8Array<ArrayBuffer>,
): Promise<{ status: number; slowestHealthMs: number } & Answer> {
  // The first request compiles the routes: not what is measured.
  await (await fetch(`${world.url}/health`)).body?.cancel();
  let sending = true;
  let slowestHealthMs = 0;
  const probing = (async () => {
    while (sending) {
      const sent = performance.now();
      const health = await fetch(`${world.url}/health`);
      await health.body?.cancel();
      slowestHealthMs = Math.max(slowestHealthMs, performance.now() - sent);
    }
  })();
  try {
    const response = await fetch(`${world.url}${path}`, {
      method: "POST",
      headers: { "content-type": contentType },
      body,
    });
    return { status: response.status, ...await response.json(), slowestHealthMs };
  } finally {
    sending = false;
    await probing;
  }
}

// The issue asks for ~100 ms; the bound is 500 ms because these machines are shared
// (a loaded core alone pauses a process that long). Parsing such bodies whole took 12-26 s.
Deno.test("a 64 MiB body built to be slow to parse is refused while /health answers within 500 ms", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const mib = 2 ** 20;
  const brackets = new Uint8Array(64 * mib - 1).fill(0x5b);
  const deep = await chatWhileProbing(world, brackets);
  assert.equal(deep.status, 400);
  assert.match(deep.error, /deeper than 512 levels/);
  // Every byte must be scanned: 22 million empty arrays in one.
  const pairs = encoder.encode(`[${"[],".repeat(Math.floor((64 * mib - 4) / 3))}[]]`);
  const wide = await chatWhileProbing(world, pairs);
  assert.equal(wide.status, 400);
  assert.equal(wide.error, "the request body must be a JSON object");
  assert.ok(deep.slowestHealthMs < 500, `/health took ${deep.slowestHealthMs} ms`);
  assert.ok(wide.slowestHealthMs < 500, `/health took ${wide.slowestHealthMs} ms`);
  await assertHealthy(world);
});

// Parsing such a form whole held the event loop for about 600 ms (440 ms for audio);
// the scan takes a few milliseconds at a time. The model comes after the file, so all
// of it is searched, and the file is made of near-delimiters, the slowest to search.
Deno.test("a 60 MiB transcription with the model after the file is routed while /health answers within 500 ms", async () => {
  await using world = await startWorld({
    pods: [{ models: ["qwen"] }, { models: ["whisper"], loaded: ["whisper"] }],
  });
  const mib = 2 ** 20;
  const boundary = "----router-test-boundary";
  const head = encoder.encode(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n` +
      "Content-Type: audio/wav\r\n\r\n",
  );
  const tail = encoder.encode(
    `\r\n--${boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n` +
      `whisper:latest\r\n--${boundary}--\r\n`,
  );
  const body = new Uint8Array(60 * mib);
  const fileSize = body.length - head.length - tail.length;
  const near = encoder.encode(`\r\n--${boundary}X`);
  const block = new Uint8Array(near.length * 2048);
  for (let at = 0; at < block.length; at += near.length) block.set(near, at);
  for (let at = head.length; at < head.length + fileSize; at += block.length) {
    body.set(block.subarray(0, Math.min(block.length, head.length + fileSize - at)), at);
  }
  body.set(head);
  body.set(tail, head.length + fileSize);
  const sent = await postWhileProbing<{ text: string }>(
    world,
    "/v1/audio/transcriptions",
    `multipart/form-data; boundary=${boundary}`,
    body,
  );
  assert.equal(sent.status, 200);
  assert.equal(sent.text, `transcribed ${fileSize} bytes`);
  const seen = world.cluster.pods[1].events.filter((event) =>
    event.path === "/v1/audio/transcriptions"
  );
  // The pod is sent the name it knows, the body otherwise as sent.
  assert.equal(seen[0].model, "whisper");
  assert.equal(seen[0].bodyBytes, body.length - ":latest".length);
  assert.ok(sent.slowestHealthMs < 500, `/health took ${sent.slowestHealthMs} ms`);
  await assertHealthy(world);
});
