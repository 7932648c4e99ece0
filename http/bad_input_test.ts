import assert from "node:assert/strict";
import http2 from "node:http2";
import { startWorld } from "../sim/fixture.ts";
import type { TestWorld } from "../sim/fixture.ts";
import {
  jsonBodyOf,
  rawExchange,
  rawUntilClosed,
  responseComplete,
  statusOf,
} from "../sim/raw_http.ts";

const encoder = new TextEncoder();

async function assertHealthy(world: TestWorld): Promise<void> {
  const health = await fetch(`${world.url}/health`);
  assert.equal(health.status, 200);
  await health.body?.cancel();
  const pods = (await (await fetch(`${world.url}/router/pods`)).json()).pods;
  for (const pod of pods) assert.equal(pod.inflight, 0, `requests left in flight on ${pod.name}`);
}

Deno.test("an unknown method is a JSON 405 naming the methods passed on", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const response = await fetch(`${world.url}/api/chat`, { method: "PROPFIND" });
  assert.equal(response.status, 405);
  assert.deepEqual(await response.json(), { error: "the method PROPFIND is not supported" });
  assert.match(response.headers.get("allow")!, /POST/);
  const raw = await rawExchange(
    world.url,
    encoder.encode("BREW /api/tags HTTP/1.1\r\nHost: x\r\n\r\n"),
  );
  assert.equal(statusOf(raw), 405);
});

Deno.test("a body that trickles in is cut off after --body-timeout with a JSON 408", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] }, { bodyTimeoutMs: 200 });
  const raw = await rawExchange(
    world.url,
    encoder.encode('POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model"'),
  );
  assert.equal(statusOf(raw), 408);
  assert.deepEqual(jsonBodyOf(raw), {
    error: "the request body did not arrive within 200 ms",
  });
  await assertHealthy(world);
});

Deno.test("a declared body over twice --max-body gets a 413 and its connection closed, not read on", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] }, { maxBodyBytes: 1024 });
  const { text, closed } = await rawUntilClosed(
    world.url,
    encoder.encode(
      `POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: ${2 ** 30}\r\n\r\n{"model":"qwen"`,
    ),
    5000,
  );
  assert.equal(statusOf(text), 413);
  assert.match((jsonBodyOf(text) as { error: string }).error, /larger than the limit/);
  // Whole, and saying it closes: a client must not see a cut answer.
  assert.ok(responseComplete(text), `an incomplete answer: ${text}`);
  assert.match(text, /\r\nconnection: close\r\n/i);
  assert.ok(closed, "the connection is still open 5 s later");
  await assertHealthy(world);
});

Deno.test("a JSON body that is not UTF-8 is a 400 that says so", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const body = new Uint8Array([
    ...encoder.encode('{"model": "qw'),
    0xff,
    0xfe,
    ...encoder.encode('"}'),
  ]);
  const response = await fetch(`${world.url}/api/chat`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
  assert.equal(response.status, 400);
  assert.deepEqual(await response.json(), {
    error: "the request body is not valid UTF-8, so not valid JSON",
  });
});

Deno.test("an unknown model name is echoed in its 404 only up to 200 characters", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const response = await fetch(`${world.url}/api/chat`, {
    method: "POST",
    body: JSON.stringify({ model: "q".repeat(1_000_000) }),
  });
  assert.equal(response.status, 404);
  assert.equal(
    (await response.json()).error,
    `model '${"q".repeat(200)}...' not found; available: qwen`,
  );
});

Deno.test("path traversal in /files/... and /api/modelfile/... is a 400 and reaches no pod", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  for (
    const path of [
      "/files/..%2F..%2Fetc%2Fpasswd/x",
      "/api/modelfile/%2E%2E%2Fsecret",
      "/v1/files/%2E%2E%2Fx/y",
    ]
  ) {
    const response = await fetch(`${world.url}${path}`);
    assert.equal(response.status, 400, path);
    const { error } = await response.json();
    assert.match(error.message ?? error, /is not a model name/);
  }
  const [pod] = world.cluster.pods;
  assert.equal(
    pod.events.filter((e) => e.path?.includes("files") || e.path?.includes("modelfile")).length,
    0,
  );
});

Deno.test("a request head over 16 KiB is refused with a JSON 431 and the router stays healthy", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const big = await rawExchange(
    world.url,
    encoder.encode(`GET /api/tags HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(200_000)}\r\n\r\n`),
  );
  assert.equal(statusOf(big), 431);
  assert.match((jsonBodyOf(big) as { error: string }).error, /larger than 16 KiB/);
  await assertHealthy(world);
});

/** A small seeded generator (mulberry32), so a failing run can be replayed. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("thousands of random requests never crash, hang or confuse the router", async () => {
  // A fixed seed, so a run is the same on every machine; FUZZ_SEED runs (or replays) another.
  const seed = Number(Deno.env.get("FUZZ_SEED") ?? 20_261_203);
  const next = random(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)];
  const text = (max: number) =>
    Array.from(
      { length: Math.floor(next() * max) },
      () => pick(["a", "/", "%", "..", "%2e", "%2F", "é", "\u0000", "{", '"', ":", "latest", " "]),
    ).join("");
  const bytes = (max: number) =>
    Uint8Array.from({ length: Math.floor(next() * max) }, () => Math.floor(next() * 256));
  const value = (depth: number): unknown =>
    pick([
      () => null,
      () => next() * 1e6,
      () => next() < 0.5,
      () => text(12),
      () => pick(["qwen", "qwen:latest", "ns/qwen", "phi", ""]),
      () => depth > 2 ? [] : Array.from({ length: 3 }, () => value(depth + 1)),
      () => depth > 2 ? {} : { model: value(depth + 1), stream: value(depth + 1) },
    ])();
  const paths = [
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/show",
    "/api/tags",
    "/api/ps",
    "/api/pull",
    "/api/delete",
    "/v1/chat/completions",
    "/v1/models/",
    "/files/",
    "/api/modelfile/",
    "/router/",
    "/load_model",
    "/",
  ];
  await using world = await startWorld(
    { pods: [{ models: ["qwen", "phi"], loaded: ["qwen"], tokenDelayMs: 0 }] },
    { maxBodyBytes: 4096, bodyTimeoutMs: 2000 },
  );
  const counts = {
    requests: 0,
    router_errors: 0,
    pod_answers: 0,
    statuses: new Map<number, number>(),
  };
  const problems: string[] = [];
  const one = async () => {
    const path = pick(paths) + (next() < 0.5 ? encodeURI(text(8)).replaceAll("%25", "%") : "");
    const method = pick([
      "GET",
      "POST",
      "POST",
      "POST",
      "PUT",
      "DELETE",
      "PATCH",
      "HEAD",
      "OPTIONS",
      "FOO",
    ]);
    const body = method === "GET" || method === "HEAD" ? undefined : pick([
      () => JSON.stringify(value(0)),
      () => JSON.stringify({ model: value(1), messages: value(1), stream: false }),
      () => JSON.stringify({ model: value(1) }).slice(0, Math.floor(next() * 20)),
      () => bytes(64),
      () => bytes(6000),
      () => text(40),
    ])();
    const headers: Record<string, string> = {};
    if (next() < 0.7) {
      headers["content-type"] = pick([
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "multipart/form-data",
        "application/json; charset=latin1",
      ]);
    }
    let url: string;
    try {
      url = new URL(world.url + path).href;
    } catch {
      return;
    }
    counts.requests++;
    try {
      const response = await fetch(url, {
        method,
        headers,
        body,
        signal: AbortSignal.timeout(15_000),
      });
      const answer = await response.text();
      counts.statuses.set(response.status, (counts.statuses.get(response.status) ?? 0) + 1);
      if (response.status === 500 && answer.includes("internal router error")) {
        problems.push(`${method} ${path}: ${answer}`);
      }
      const api = new URL(url).pathname.startsWith("/api/") ||
        new URL(url).pathname.startsWith("/v1/");
      if (response.status >= 400 && api && method !== "HEAD") {
        try {
          const parsed = JSON.parse(answer);
          if (parsed.error === undefined) {
            problems.push(`${method} ${path}: no error field: ${answer}`);
          }
        } catch {
          problems.push(
            `${method} ${path}: ${response.status} is not JSON: ${answer.slice(0, 200)}`,
          );
        }
      }
      if (response.headers.has("x-process-time")) counts.pod_answers++;
      else if (response.status >= 400) counts.router_errors++;
    } catch (error) {
      problems.push(`${method} ${path}: ${error}`);
    }
  };
  const total = 3000;
  let started = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (started++ < total) await one();
  }));
  // Raw garbage on the socket: request lines no client library would send.
  for (let i = 0; i < 100; i++) {
    const garbage = next() < 0.5 ? bytes(300) : encoder.encode(
      `${pick(["GET", "POST", "X"])} ${text(30)} HTTP/1.${pick(["1", "0", "9"])}\r\n${
        text(40)
      }\r\n\r\n`,
    );
    await rawExchange(world.url, garbage, 5_000);
  }
  console.log(
    `[reliability] fuzz: seed=${seed} requests=${counts.requests} raw_connections=100 router_errors=${counts.router_errors} pod_answers=${counts.pod_answers} statuses=${
      JSON.stringify(Object.fromEntries([...counts.statuses].sort(([a], [b]) => a - b)))
    } problems=${problems.length}`,
  );
  assert.deepEqual(problems.slice(0, 10), [], `seed ${seed}`);
  await assertHealthy(world);
  const chat = await fetch(`${world.url}/api/chat`, {
    method: "POST",
    body: JSON.stringify({ model: "qwen", messages: [], stream: false }),
  });
  assert.equal(chat.status, 200);
  await chat.body?.cancel();
});

Deno.test("bodies held at once are bounded by --max-body-total: past it a 503 with Retry-After", async () => {
  await using world = await startWorld(
    { pods: [{ models: ["qwen"], loaded: ["qwen"] }] },
    { maxBodyBytes: 1024, maxBodyTotalBytes: 1024 },
  );
  const [pod] = world.cluster.pods;
  const chat = () =>
    fetch(`${world.url}/api/chat`, {
      method: "POST",
      body: JSON.stringify({ model: "qwen", stream: false, messages: [], pad: "x".repeat(700) }),
    });
  pod.pause();
  const first = chat();
  await pod.waitFor((e) => e.type === "generation-start");
  const second = await chat();
  assert.equal(second.status, 503);
  assert.ok(second.headers.has("retry-after"));
  assert.match((await second.json()).error, /--max-body-total/);
  pod.resume();
  assert.equal((await first).status, 200);
  await (await first).body?.cancel();
  const third = await chat();
  assert.equal(third.status, 200);
  await third.body?.cancel();
});

Deno.test("an HTTP/2 (h2c) client is refused with a closed connection, not left waiting; * over HTTP/1.1 is a 400", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const client = http2.connect(world.url);
  try {
    const failed = await new Promise<boolean>((resolve) => {
      client.on("error", () => resolve(true));
      client.on("close", () => resolve(true));
      const stream = client.request({ ":method": "GET", ":path": "/api/tags" });
      stream.on("error", () => resolve(true));
      stream.on("response", () => resolve(false));
    });
    assert.ok(failed, "an h2c request got an answer: the server speaks HTTP/1.1 only");
  } finally {
    client.destroy();
  }
  const raw = await rawExchange(world.url, encoder.encode("GET * HTTP/1.1\r\nHost: x\r\n\r\n"));
  assert.equal(statusOf(raw), 400);
  await assertHealthy(world);
});

Deno.test("a declared body a little over --max-body is read and dropped, so the client reads its 413", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] }, { maxBodyBytes: 1024 });
  const body = JSON.stringify({ model: "qwen", prompt: "x".repeat(1500) });
  for (let i = 0; i < 2; i++) {
    const response = await fetch(`${world.url}/api/generate`, { method: "POST", body });
    assert.equal(response.status, 413);
    assert.match((await response.json()).error, /larger than the limit of 1024 bytes/);
  }
});
