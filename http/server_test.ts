import assert from "node:assert/strict";
import { type HttpServer, serve, type ServeOptions } from "./server.ts";
import { startWorld } from "../sim/fixture.ts";
import { jsonBodyOf, rawExchange, rawUntilClosed, statusOf } from "../sim/raw_http.ts";
import { WholeAnswer } from "../api/whole_answer.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const DEFAULTS: ServeOptions = {
  hostname: "127.0.0.1",
  port: 0,
  headerTimeoutMs: 10_000,
  requestTimeoutMs: 20_000,
  idleTimeoutMs: 10_000,
  maxConnections: 100,
  onError: () => Response.json({ error: "handler failed" }, { status: 500 }),
};

/** A server on loopback, shut down by `await using`. */
async function startServer(
  options: Partial<ServeOptions>,
  handler: (request: Request) => Response | Promise<Response>,
): Promise<HttpServer & AsyncDisposable & { url: string }> {
  const server = await serve({ ...DEFAULTS, ...options }, handler);
  return Object.assign(server, {
    url: `http://127.0.0.1:${server.addr.port}`,
    [Symbol.asyncDispose]: () => server.shutdown(),
  });
}

/** A raw connection that reads what comes, and tells when the server closed it. */
async function connect(url: string) {
  const { hostname, port } = new URL(url);
  const connection = await Deno.connect({ hostname, port: Number(port) });
  let text = "";
  let onText: (() => void) | undefined;
  const closed = (async () => {
    const buffer = new Uint8Array(65_536);
    for (;;) {
      const n = await connection.read(buffer).catch(() => null);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n));
      onText?.();
    }
    onText?.();
  })();
  let isClosed = false;
  closed.then(() => isClosed = true);
  return {
    send: (data: string) => connection.write(encoder.encode(data)),
    text: () => text,
    /** Resolves once what was read passes `test` (or the server closed the connection). */
    until(test: (text: string) => boolean): Promise<string> {
      return new Promise((resolve) => {
        const check = () => {
          if (test(text) || isClosed) {
            onText = undefined;
            resolve(text);
          }
        };
        onText = check;
        check();
      });
    },
    /** Resolves true once the server has closed it, false if still open after `ms`. */
    async closedWithin(ms: number): Promise<boolean> {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const expired = new Promise<boolean>((resolve) =>
        timer = setTimeout(() => resolve(false), ms)
      );
      const result = await Promise.race([closed.then(() => true), expired]);
      clearTimeout(timer);
      return result;
    },
    close() {
      try {
        connection.close();
      } catch { /* closed already */ }
    },
  };
}

const GET = "GET /x HTTP/1.1\r\nHost: x\r\n\r\n";
const answered = (count: number) => (text: string) =>
  text.split("HTTP/1.1 ").length - 1 >= count && /\r\n\r\n[^]*ok$/.test(text);

Deno.test("a request head that never ends gets a JSON 408 and its connection closed after --header-timeout", async () => {
  await using server = await startServer({ headerTimeoutMs: 200 }, () => new Response("ok"));
  const client = await connect(server.url);
  await client.send("GET /x HTTP/1.1\r\nHost: x\r\nX-Slow: ");
  const started = performance.now();
  assert.ok(await client.closedWithin(5000), "the connection is still open 5 s later");
  assert.ok(performance.now() - started >= 150, "closed before the header timeout");
  assert.equal(statusOf(client.text()), 408);
  assert.match((jsonBodyOf(client.text()) as { error: string }).error, /--header-timeout/);
  client.close();
});

Deno.test("a connection that never sends a byte is closed after --header-timeout", async () => {
  await using server = await startServer({ headerTimeoutMs: 200 }, () => new Response("ok"));
  const client = await connect(server.url);
  assert.ok(await client.closedWithin(5000), "the silent connection is still open 5 s later");
  client.close();
});

Deno.test("a body that stops arriving gets the router's JSON 408 and its connection closed", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] }, { bodyTimeoutMs: 200 });
  const { text, closed } = await rawUntilClosed(
    world.url,
    encoder.encode('POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model"'),
    5000,
  );
  assert.equal(statusOf(text), 408);
  assert.match(text, /connection: close/i);
  assert.deepEqual(jsonBodyOf(text), { error: "the request body did not arrive within 200 ms" });
  assert.ok(closed, "the connection is still open 5 s later");
});

Deno.test("a keep-alive connection left idle is closed after --idle-timeout, not before", async () => {
  await using server = await startServer({ idleTimeoutMs: 300 }, () => new Response("ok"));
  const client = await connect(server.url);
  await client.send(GET);
  await client.until(answered(1));
  const started = performance.now();
  assert.ok(!await client.closedWithin(150), "closed before --idle-timeout");
  assert.ok(await client.closedWithin(5000), "the idle connection is still open 5 s later");
  assert.ok(performance.now() - started >= 280, "closed before --idle-timeout");
  client.close();
});

Deno.test("a keep-alive connection whose next request has begun is not closed as idle", async () => {
  await using server = await startServer({ idleTimeoutMs: 200 }, () => new Response("ok"));
  const client = await connect(server.url);
  await client.send(GET);
  await client.until(answered(1));
  await client.send("GET /x HTTP/1.1\r\nHost: x\r\n");
  // Well past --idle-timeout, within --header-timeout (10 s): the head goes on.
  assert.ok(!await client.closedWithin(600), "a connection with a request arriving was closed");
  await client.send("\r\n");
  await client.until(answered(2));
  assert.equal(client.text().split("HTTP/1.1 200").length - 1, 2);
  client.close();
});

Deno.test("past --max-connections a new connection gets a JSON 503 with Retry-After and is closed", async () => {
  await using server = await startServer({ maxConnections: 2 }, () => new Response("ok"));
  const held = [await connect(server.url), await connect(server.url)];
  for (const client of held) {
    await client.send(GET);
    await client.until(answered(1));
  }
  assert.equal(server.connections, 2);
  const extra = await connect(server.url);
  await extra.send(GET);
  assert.ok(await extra.closedWithin(5000), "the connection past the cap is still open");
  assert.equal(statusOf(extra.text()), 503);
  assert.match(extra.text(), /retry-after: 1/i);
  assert.match((jsonBodyOf(extra.text()) as { error: string }).error, /--max-connections/);
  // The held ones still work, and once one goes a new connection is taken again.
  await held[0].send(GET);
  await held[0].until(answered(2));
  held[1].close();
  await held[1].closedWithin(5000);
  while (server.connections > 1) await new Promise((resolve) => setTimeout(resolve, 10));
  const next = await fetch(`${server.url}/x`);
  assert.equal(await next.text(), "ok");
  held[0].close();
});

Deno.test("drain closes idle keep-alive connections at once, and busy ones after their current response", async () => {
  const release = Promise.withResolvers<void>();
  const inHandler = Promise.withResolvers<void>();
  await using server = await startServer({}, async (request) => {
    if (new URL(request.url).pathname === "/slow") {
      inHandler.resolve();
      await release.promise;
    }
    return new Response("ok");
  });
  const idle = await connect(server.url);
  await idle.send(GET);
  await idle.until(answered(1));
  const busy = await connect(server.url);
  await busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  await inHandler.promise;
  server.drain();
  assert.ok(await idle.closedWithin(5000), "an idle connection stayed open after drain()");
  assert.ok(!await busy.closedWithin(50), "a busy connection was cut before its response");
  release.resolve();
  assert.ok(await busy.closedWithin(5000), "the busy connection stayed open after its response");
  assert.equal(statusOf(busy.text()), 200);
  assert.match(busy.text(), /connection: close/i);
  assert.match(busy.text(), /ok$/);
  // New connections are still served while draining, and closed after their answer.
  const late = await fetch(`${server.url}/x`);
  assert.equal(late.headers.get("connection"), "close");
  assert.equal(await late.text(), "ok");
  idle.close();
  busy.close();
});

Deno.test("a draining router moves a keep-alive client off: its connection closes", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"] }] });
  const client = await connect(world.url);
  await client.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  await client.until((text) => /\r\n\r\n.+/.test(text));
  assert.equal(statusOf(client.text()), 200);
  world.router.drain();
  assert.ok(await client.closedWithin(5000), "the keep-alive connection stayed open");
  client.close();
});

Deno.test("a stream is sent chunk by chunk: the first arrives before the stream goes on", async () => {
  const firstRead = Promise.withResolvers<void>();
  await using server = await startServer({}, () =>
    new Response(
      new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(encoder.encode("first\n"));
          // The rest waits for the client to have read the first chunk: a server
          // that held chunks back would never send it (the test's timeout fails it).
          await firstRead.promise;
          controller.enqueue(encoder.encode("second\n"));
          controller.close();
        },
      }),
      { headers: { "content-type": "application/x-ndjson" } },
    ));
  const response = await fetch(`${server.url}/x`, { signal: AbortSignal.timeout(5000) });
  const reader = response.body!.getReader();
  assert.equal(decoder.decode((await reader.read()).value), "first\n");
  firstRead.resolve();
  assert.equal(decoder.decode((await reader.read()).value), "second\n");
  assert.ok((await reader.read()).done);
});

Deno.test("a client that leaves aborts request.signal (a clone's too) and cancels the answer's body", async () => {
  const aborted = Promise.withResolvers<void>();
  const cloneAborted = Promise.withResolvers<void>();
  const cancelled = Promise.withResolvers<void>();
  await using server = await startServer({}, (request) => {
    request.signal.addEventListener("abort", () => aborted.resolve());
    request.clone().signal.addEventListener("abort", () => cloneAborted.resolve());
    return new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(encoder.encode("first\n"));
        },
        cancel() {
          cancelled.resolve();
        },
      }),
    );
  });
  const client = await connect(server.url);
  await client.send(GET);
  await client.until((text) => text.includes("first"));
  client.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<string>((resolve) => timer = setTimeout(() => resolve("late"), 5000));
  const outcome = await Promise.race([
    Promise.all([aborted.promise, cloneAborted.promise, cancelled.promise]).then(() => "all"),
    late,
  ]);
  clearTimeout(timer);
  assert.equal(outcome, "all", "not every signal aborted, or the body was not cancelled, in 5 s");
});

Deno.test("a request body reaches the handler as it arrives, not once it has all come", async () => {
  const firstChunk = Promise.withResolvers<string>();
  await using server = await startServer({}, async (request) => {
    const reader = request.body!.getReader();
    firstChunk.resolve(decoder.decode((await reader.read()).value));
    let rest = "";
    for (let chunk; !(chunk = await reader.read()).done;) rest += decoder.decode(chunk.value);
    return new Response(`rest ${rest}`);
  });
  const client = await connect(server.url);
  await client.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello");
  assert.equal(await firstChunk.promise, "hello");
  await client.send("world");
  const text = await client.until((text) => text.endsWith("rest world"));
  assert.match(text, /content-length: 10\r\n/i);
  client.close();
});

Deno.test("a request target that is no path (*) gets a JSON 400; shutdown() waits for connections", async () => {
  const server = await startServer({}, () => new Response("ok"));
  const client = await connect(server.url);
  await client.send("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
  await client.until((text) => text.endsWith("}"));
  assert.equal(statusOf(client.text()), 400);
  assert.match((jsonBodyOf(client.text()) as { error: string }).error, /must be a path/);
  await server.shutdown();
  assert.equal(server.connections, 0);
  assert.ok(await client.closedWithin(1000));
  client.close();
});

Deno.test("a pod's whole answer handed beside its Response (WholeAnswer) goes out as the same Response would: status, headers, body", async () => {
  const body = '{"model":"qwen","message":{"content":"hé"},"done":true}';
  const init = () => ({
    status: 201,
    statusText: "Made",
    headers: [
      ["content-type", "application/json; charset=utf-8"],
      ["content-length", String(encoder.encode(body).byteLength)],
      ["x-pod", "a"],
    ] as [string, string][],
  });
  const answers: Response[] = [];
  await using server = await startServer({}, (request) => {
    const answer = new URL(request.url).pathname === "/whole"
      ? new WholeAnswer(encoder.encode(body), init())
      : new Response(encoder.encode(body), init());
    // As the front door does once the proxy answered.
    answer.headers.set("x-request-id", "r1");
    answers.push(answer);
    return answer;
  });
  const exchange = async (path: string) => {
    const raw = await rawExchange(
      server.url,
      encoder.encode(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`),
      5000,
    );
    return raw.replace(/\r\ndate: [^\r]*/i, "");
  };
  const whole = await exchange("/whole");
  assert.equal(whole, await exchange("/plain"));
  assert.match(whole, /^HTTP\/1\.1 201 /);
  assert.match(whole, /\r\ncontent-type: application\/json; charset=utf-8\r\n/);
  assert.match(whole, /\r\ncontent-length: 56\r\n/);
  assert.match(whole, /\r\nx-pod: a\r\nx-request-id: r1\r\n/);
  assert.ok(whole.endsWith(`\r\n\r\n${body}`), whole);
  // The server wrote the held bytes: the WholeAnswer's body was never made.
  assert.ok(answers[0] instanceof WholeAnswer && answers[0].bodyUsed);
  await assert.rejects(() => answers[0].text(), TypeError);
  // Draining, it still says so.
  server.drain();
  const draining = await exchange("/whole");
  assert.match(draining, /\r\nconnection: close\r\n/);
  assert.equal(draining, await exchange("/plain"));
});
