import assert from "node:assert/strict";
import * as rkllama from "./client.ts";

/**
 * A board on a loopback port answering each `METHOD /path` from `routes` (404
 * otherwise); it notes each call and the client port it came from.
 */
function board(routes: Record<string, () => Response | Promise<Response>>) {
  const calls: string[] = [];
  const ports: number[] = [];
  const hang = Promise.withResolvers<void>();
  const serving = { hostname: "127.0.0.1", port: 0, onListen: () => {} };
  const server = Deno.serve(serving, (request, info) => {
    const call = `${request.method} ${new URL(request.url).pathname}`;
    calls.push(call);
    ports.push(info.remoteAddr.port);
    const route = routes[call];
    if (route) return route();
    return new Response("Not Found", { status: 404 });
  });
  return {
    board: { name: "rk-0", url: `http://127.0.0.1:${server.addr.port}` },
    calls,
    ports,
    hang: async () => {
      await hang.promise;
      return new Response("late");
    },
    async [Symbol.asyncDispose]() {
      hang.resolve();
      await server.shutdown();
    },
  };
}

const json = (body: unknown, status = 200) => () => Response.json(body, { status });
const text = (body: string, status: number) => () => new Response(body, { status });

/** How one call fails: its failure, status and message. */
function failureOf(error: unknown) {
  assert.ok(error instanceof rkllama.BoardError, String(error));
  return { pod: error.pod, call: error.call, failure: error.failure, status: error.status };
}

Deno.test("a board's answers become one BoardError naming the pod, the call and what failed", async (t) => {
  const cases: {
    name: string;
    routes: Record<string, () => Response>;
    run: (board: rkllama.Board) => Promise<unknown>;
    failure: rkllama.BoardFailure;
    call: string;
    status?: number;
    message: string | RegExp;
  }[] = [
    {
      name: "a model list answered with an error status",
      routes: { "GET /api/tags": text("boom", 500) },
      run: (b) => rkllama.tags(b, { timeoutMs: 5000 }),
      failure: "status",
      call: "GET /api/tags",
      status: 500,
      message: "/api/tags answered 500",
    },
    {
      name: "a model list that lists no models",
      routes: { "GET /api/ps": json({ version: "0.0.54" }) },
      run: (b) => rkllama.ps(b, { timeoutMs: 5000 }),
      failure: "invalid",
      call: "GET /api/ps",
      message: "/api/ps did not list models",
    },
    {
      name: "a load refused with FastAPI's detail",
      routes: { "POST /api/load": json({ detail: "Model llama not found" }, 400) },
      run: (b) => rkllama.load(b, "llama", { timeoutMs: 5000 }),
      failure: "status",
      call: "POST /api/load",
      status: 400,
      message: "Model llama not found",
    },
    {
      name: "an unload refused by a Flask board, after the fallback",
      routes: {
        "POST /unload_model": json({ error: "Model unloading is disabled" }, 403),
      },
      run: (b) => rkllama.unload(b, "qwen", { timeoutMs: 5000 }),
      failure: "status",
      call: "POST /unload_model",
      status: 403,
      message: "Model unloading is disabled",
    },
    {
      name: "a load neither route knows",
      routes: {},
      run: (b) => rkllama.load(b, "qwen", { timeoutMs: 5000 }),
      failure: "status",
      call: "POST /load_model",
      status: 404,
      message: "pod rk-0 answered 404: Not Found",
    },
    {
      name: "a force unload on a board without the endpoint",
      routes: {},
      run: (b) => rkllama.forceUnloadAll(b, { timeoutMs: 5000 }),
      failure: "unsupported",
      call: "POST /force_unload_all",
      status: 404,
      message: "this RKLlama version has no /force_unload_all",
    },
    {
      name: "a force unload answered by an HTML error page",
      routes: {
        "POST /force_unload_all": text("<html><h1>Internal Server Error</h1></html>", 500),
      },
      run: (b) => rkllama.forceUnloadAll(b, { timeoutMs: 5000 }),
      failure: "status",
      call: "POST /force_unload_all",
      status: 500,
      message: "pod rk-0 answered 500: Internal Server Error",
    },
    {
      name: "a force unload whose answer is not JSON",
      routes: { "POST /force_unload_all": text("done", 200) },
      run: (b) => rkllama.forceUnloadAll(b, { timeoutMs: 5000 }),
      failure: "invalid",
      call: "POST /force_unload_all",
      message: /^its answer is not JSON: /,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      await using pod = board(c.routes);
      const error = await c.run(pod.board).then(() => undefined, (e) => e);
      assert.deepEqual(failureOf(error), {
        pod: "rk-0",
        call: c.call,
        failure: c.failure,
        status: c.status,
      });
      if (typeof c.message === "string") assert.equal(error.message, c.message);
      else assert.match(error.message, c.message);
    });
  }
});

Deno.test("a board that does not answer in time, a caller that gives up, a closed port", async (t) => {
  await t.step("timeout", async () => {
    await using slow = board({ "GET /api/tags": () => slow.hang() });
    const error = await rkllama.tags(slow.board, { timeoutMs: 50 }).catch((e) => e);
    assert.equal(failureOf(error).failure, "timeout");
    assert.equal(error.message, "no answer within 50 ms");
  });
  await t.step("aborted by the caller, not a timeout", async () => {
    const hang = Promise.withResolvers<void>();
    await using pod = board({
      "POST /api/load": async () => {
        await hang.promise;
        return new Response("late");
      },
    });
    const caller = new AbortController();
    const loading = rkllama.load(pod.board, "qwen", { timeoutMs: 60_000, signal: caller.signal });
    while (!pod.calls.includes("POST /api/load")) await new Promise((r) => setTimeout(r, 5));
    caller.abort(new Error("stopped"));
    const error = await loading.catch((e) => e);
    hang.resolve();
    assert.equal(failureOf(error).failure, "aborted");
  });
  await t.step("unreachable", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const url = `http://127.0.0.1:${listener.addr.port}`;
    listener.close();
    const error = await rkllama.version({ name: "gone", url }, { timeoutMs: 5000 }).catch((e) => e);
    assert.deepEqual(failureOf(error), {
      pod: "gone",
      call: "GET /api/version",
      failure: "unreachable",
      status: undefined,
    });
    assert.match(error.message, /^fetch failed: .*Connection refused/);
  });
});

Deno.test("the answers a board gives when it works", async () => {
  await using pod = board({
    "GET /api/tags": json({ models: [{ name: "qwen" }, { model: "phi" }, { name: "" }, 3] }),
    "GET /v1/models": json({ data: [{ id: "sd" }, { id: 7 }] }),
    "GET /api/version": json({ version: "0.0.54" }),
    "POST /load_model": json({ ok: true }),
    "POST /force_unload_all": json({ killed_tracked: ["qwen"] }),
  });
  const options = { timeoutMs: 5000 };
  assert.deepEqual([...(await rkllama.tags(pod.board, options)).keys()], ["qwen", "phi"]);
  assert.deepEqual([...await rkllama.openAIModels(pod.board, options)], ["sd"]);
  assert.equal(await rkllama.version(pod.board, options), "0.0.54");
  // A Flask board: /api/load is a 404, /load_model does it.
  await rkllama.load(pod.board, "qwen", options);
  assert.deepEqual(await rkllama.forceUnloadAll(pod.board, options), {
    killedTracked: ["qwen"],
    killedOrphaned: [],
  });
  // Without these lists a board still serves: no models, no version, no error.
  await using bare = board({});
  assert.deepEqual([...await rkllama.openAIModels(bare.board, options)], []);
  assert.equal(await rkllama.version(bare.board, options), undefined);
  assert.deepEqual(pod.calls.filter((c) => c.endsWith("load") || c.endsWith("_model")), [
    "POST /api/load",
    "POST /load_model",
  ]);
});

Deno.test("every call to a board goes on a connection of its own", async () => {
  // A FastAPI board can leave a kept connection unread for ever (freshConnections).
  await using pod = board({
    "GET /api/tags": json({ models: [{ name: "qwen" }] }),
    "GET /api/ps": json({ models: [] }),
    "GET /api/version": json({ version: "0.0.54" }),
  });
  const options = { timeoutMs: 5000 };
  for (let round = 0; round < 2; round++) {
    await rkllama.tags(pod.board, options);
    await rkllama.ps(pod.board, options);
    await rkllama.version(pod.board, options);
  }
  assert.equal(pod.ports.length, 6);
  assert.equal(new Set(pod.ports).size, 6, `calls shared connections: ports ${pod.ports}`);
});

Deno.test("an error body is read only up to its bound", async () => {
  await using pod = board({
    "POST /api/unload": () => new Response("x".repeat(1 << 20), { status: 500 }),
  });
  const response = await fetch(`${pod.board.url}/api/unload`, { method: "POST" });
  assert.equal((await rkllama.boundedText(response, 1000)).length, 1000);
  const error = await rkllama.unload(pod.board, "qwen", { timeoutMs: 5000 }).catch((e) => e);
  assert.equal(failureOf(error).status, 500);
  assert.equal(error.message, `pod rk-0 answered 500: ${"x".repeat(300)}`);
});
