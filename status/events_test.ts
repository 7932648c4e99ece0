import assert from "node:assert/strict";
import { effect } from "@preact/signals-core";
import { Hono } from "hono";
import { Store } from "../cluster/store.ts";
import { startWorld } from "../sim/fixture.ts";
import { ModelActivity } from "./model_activity.ts";
import { routerSnapshot, StatusFeed } from "./status_feed.ts";
import { eventRoutes } from "./events.ts";
import { renderSections } from "./ui.tsx";

/** One Server-Sent Event, or a comment line (`event` "comment"). */
interface SseEvent {
  event: string;
  data: string;
}

/** Reads the events of an SSE response as they arrive. */
async function* sseEvents(response: Response): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of response.body!) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) event = "comment";
        else if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
        else if (line.startsWith("retry: ")) event = "retry";
      }
      yield { event, data: data.join("\n") };
    }
  }
}

/** Bounds a wait, so a broken feed fails the test instead of hanging it. */
function within<T>(promise: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The next event named `name`, skipping others. */
function next(events: AsyncGenerator<SseEvent>, name: string): Promise<SseEvent> {
  return within(
    (async () => {
      for (;;) {
        const { value, done } = await events.next();
        if (done) throw new Error(`the stream ended before a '${name}' event`);
        if (value.event === name) return value;
      }
    })(),
    `'${name}' event`,
  );
}

/** The first `status` event whose data satisfies `match`. */
function nextWhere(
  events: AsyncGenerator<SseEvent>,
  what: string,
  // deno-lint-ignore no-explicit-any
  match: (status: any) => boolean,
): Promise<unknown> {
  return within(
    (async () => {
      // Not `for await`: leaving it would end the generator for the next wait.
      for (;;) {
        const { value, done } = await events.next();
        if (done) throw new Error(`the stream ended before ${what}`);
        if (value.event !== "status") continue;
        const status = JSON.parse(value.data);
        if (match(status)) return status;
      }
    })(),
    what,
  );
}

/** Resolves once the feed is (or is not) running. */
function until(feed: StatusFeed, active: boolean): Promise<void> {
  const reached = Promise.withResolvers<void>();
  const dispose = effect(() => {
    if (feed.active.value === active) reached.resolve();
  });
  return within(reached.promise, `feed active=${active}`).finally(dispose);
}

/** A store with pods `a` and `b`, a feed over it, and `/router/events` on a real socket. */
function serveFeed(
  options: { heartbeatMs?: number; debounceMs?: number; maxBacklog?: number } = {},
) {
  const store = new Store();
  for (const name of ["a", "b"]) {
    store.upsertPod({ name, node: name, url: `http://127.0.0.1:9/${name}`, ready: true });
  }
  let builds = 0;
  const build = routerSnapshot({
    store,
    placement: () => undefined,
    activity: new ModelActivity(),
    adminTokenRequired: false,
  });
  const feed = new StatusFeed(() => {
    builds++;
    return build();
  }, { debounceMs: options.debounceMs ?? 20, refreshMs: 60_000 });
  const app = new Hono().route(
    "/",
    eventRoutes({
      feed,
      render: renderSections,
      heartbeatMs: options.heartbeatMs,
      maxBacklog: options.maxBacklog,
    }),
  );
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  return {
    store,
    feed,
    builds: () => builds,
    url: `http://127.0.0.1:${server.addr.port}/router/events`,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

Deno.test("/router/events sends the router's status on connect and again when the store changes", async () => {
  await using world = await startWorld({
    pods: [{ name: "a", models: ["qwen", "phi"], loaded: ["qwen"] }, {
      name: "b",
      models: ["phi"],
    }],
  });
  const response = await fetch(`${world.url}/router/events`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const events = sseEvents(response);
  assert.deepEqual(await events.next(), { value: { event: "retry", data: "" }, done: false });
  const first = JSON.parse((await next(events, "status")).data);
  assert.equal(typeof first.now, "number");
  assert.deepEqual(
    first.pods.map((pod: { name: string; loaded: string[] }) => [pod.name, pod.loaded]),
    [["a", ["qwen"]], ["b", []]],
  );
  world.router.store.markLoading("b", "phi", Date.now());
  const second = JSON.parse((await next(events, "status")).data);
  assert.deepEqual(second.pods[1].loading.map((entry: { model: string }) => entry.model), ["phi"]);
  await events.return(undefined);
});

Deno.test("a burst of store changes goes out as one event with the final state", async () => {
  await using served = serveFeed({ debounceMs: 50 });
  const events = sseEvents(await fetch(served.url));
  JSON.parse((await next(events, "status")).data);
  for (let i = 0; i < 100; i++) served.store.markLoading("a", `model-${i}`, i);
  const after = JSON.parse((await next(events, "status")).data);
  assert.equal(after.pods[0].loading.length, 100);
  await events.return(undefined);
});

Deno.test("the feed runs only while someone listens, and stops when the last one leaves", async () => {
  await using served = serveFeed();
  assert.equal(served.feed.active.peek(), false);
  // No listener: store changes build nothing.
  served.store.markLoading("a", "x", 1);
  assert.equal(served.builds(), 0);

  const one = sseEvents(await fetch(served.url));
  const two = sseEvents(await fetch(served.url));
  await next(one, "status");
  await next(two, "status");
  assert.equal(served.feed.active.peek(), true);
  await one.return(undefined);
  served.store.markLoading("a", "y", 2);
  // The other listener still gets changes.
  const seen = JSON.parse((await next(two, "status")).data);
  assert.deepEqual(seen.pods[0].loading.map((e: { model: string }) => e.model), ["x", "y"]);
  assert.equal(served.feed.active.peek(), true);
  await two.return(undefined);
  await until(served.feed, false);
  const builds = served.builds();
  served.store.markLoading("a", "z", 3);
  assert.equal(served.builds(), builds);
});

Deno.test("/router/events keeps a quiet stream open with comment lines", async () => {
  await using served = serveFeed({ heartbeatMs: 20 });
  const events = sseEvents(await fetch(served.url));
  await next(events, "status");
  assert.deepEqual(await next(events, "comment"), { event: "comment", data: "" });
  await events.return(undefined);
});

Deno.test("/router/events?view=html sends the status page's sections rendered", async () => {
  await using served = serveFeed();
  const events = sseEvents(await fetch(`${served.url}?view=html`));
  const { now, sections } = JSON.parse((await next(events, "html")).data);
  assert.equal(typeof now, "number");
  assert.deepEqual(Object.keys(sections).sort(), ["models", "pods", "reconciler", "summary"]);
  assert.match(sections.pods, /data-pod="a"/);
  await events.return(undefined);
});

Deno.test("the router's shutdown ends open event streams instead of waiting on them", async () => {
  await using world = await startWorld({ pods: [{ name: "a", models: ["qwen"] }] });
  const events = sseEvents(await fetch(`${world.url}/router/events`));
  await next(events, "status");
  await within(world.router.shutdown(), "shutdown");
  assert.equal((await within(events.next(), "end of stream")).done, true);
});

Deno.test("/router/events follows the reconciler: a config change, the load it plans, its result", async () => {
  const dir = await Deno.makeTempDir({ prefix: "rkllama-events-" });
  const modelsFile = `${dir}/models.yaml`;
  await Deno.writeTextFile(modelsFile, "models:\n  qwen:\n    replicas: 1\n");
  try {
    await using world = await startWorld(
      { pods: [{ name: "a", models: ["qwen", "phi"], loaded: ["qwen"], loadDelayMs: 50 }] },
      { modelsFile },
    );
    const events = sseEvents(await fetch(`${world.url}/router/events`));
    await nextWhere(events, "the config in force", (status) => status.reconciler?.valid === true);
    await Deno.writeTextFile(
      modelsFile,
      "models:\n  qwen:\n    replicas: 1\n  phi:\n    nodes: [a]\n",
    );
    const done = await nextWhere(
      events,
      "the load of phi done",
      (status) => status.reconciler.recent.some((r: { model: string }) => r.model === "phi"),
    ) as {
      reconciler: { recent: { kind: string; outcome: string }[] };
      pods: { loaded: string[] }[];
    };
    assert.deepEqual(
      [done.reconciler.recent[0].kind, done.reconciler.recent[0].outcome],
      ["load", "done"],
    );
    // The same push may show it loaded already; then no later one need come.
    if (!done.pods[0].loaded.includes("phi")) {
      await nextWhere(
        events,
        "phi loaded on a",
        (status) => status.pods[0].loaded.includes("phi"),
      );
    }
    await events.return(undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/router/events takes only GET", async () => {
  await using world = await startWorld({ pods: [{ name: "a", models: ["qwen"] }] });
  const events = await fetch(`${world.url}/router/events`, { method: "POST" });
  assert.equal(events.status, 405);
  assert.deepEqual(await events.json(), { error: "POST is not allowed on /router/events" });
});

Deno.test("HEAD /router/events answers the headers and holds no subscription", async () => {
  await using served = serveFeed();
  for (const query of ["", "?view=html"]) {
    const response = await fetch(served.url + query, { method: "HEAD" });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
    assert.equal(await response.text(), "");
    assert.equal(served.feed.subscribers, 0);
    assert.equal(served.feed.active.peek(), false);
  }
});

Deno.test("a client that stops reading is dropped instead of queueing events without end", async () => {
  await using served = serveFeed({ debounceMs: 0, maxBacklog: 4 });
  // Big events, so the socket's buffers fill after a few dozen.
  const name = "m".repeat(60);
  for (let i = 0; i < 1000; i++) served.store.markLoading("a", `${name}-${i}`, i);
  const { port } = new URL(served.url);
  const socket = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
  try {
    await socket.write(
      new TextEncoder().encode("GET /router/events HTTP/1.1\r\nhost: x\r\n\r\n"),
    );
    // The first bytes mean it is subscribed; it reads nothing after them.
    const buffer = new Uint8Array(1 << 16);
    assert.notEqual(await within(socket.read(buffer), "the first bytes"), null);
    assert.equal(served.feed.subscribers, 1);
    // This test's own subscription sees each push the stalled client is sent.
    let pushed = Promise.withResolvers<void>();
    const unsubscribe = served.feed.subscribe(() => pushed.resolve());
    try {
      let pushes = 0;
      // Each event is about 100 kB: 500 of them overflow any socket buffer many times.
      for (; pushes < 500 && served.feed.subscribers > 1; pushes++) {
        pushed = Promise.withResolvers<void>();
        served.store.markLoading("a", `${name}-0`, 10_000 + pushes);
        await within(pushed.promise, "a push");
      }
      assert.equal(served.feed.subscribers, 1, `still subscribed after ${pushes} pushes`);
    } finally {
      unsubscribe();
    }
    // What was queued for it still arrives, then the response's last chunk.
    let tail = "";
    await within(
      (async () => {
        while (!tail.endsWith("\r\n0\r\n\r\n")) {
          const n = await socket.read(buffer);
          if (n === null) throw new Error("the connection closed before the response ended");
          tail = (tail + new TextDecoder().decode(buffer.subarray(0, n))).slice(-64);
        }
      })(),
      "the end of the dropped stream",
    );
  } finally {
    socket.close();
  }
});

Deno.test("a plan remade unchanged (every poll round) changes nothing the status feed pushes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "rkllama-events-" });
  const modelsFile = `${dir}/models.yaml`;
  await Deno.writeTextFile(modelsFile, "models:\n  qwen:\n    replicas: 1\n");
  try {
    await using world = await startWorld(
      { pods: [{ name: "a", models: ["qwen"], loaded: ["qwen"] }] },
      { modelsFile },
    );
    const placement = world.router.placement!;
    const build = routerSnapshot({
      store: world.router.store,
      placement: () => placement,
      activity: new ModelActivity(),
      adminTokenRequired: false,
    });
    placement.reconciler.reconcile();
    const before = JSON.stringify(build());
    const planned = placement.reconciler.lastPlan.at;
    // The next plan is made on a later millisecond.
    while (Date.now() === planned) await Promise.resolve();
    placement.reconciler.reconcile();
    assert.notEqual(placement.reconciler.lastPlan.at, planned);
    assert.equal(JSON.stringify(build()), before);
    assert.equal(placement.view().plan.changedAt, new Date(planned).toISOString());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/router/events?view=html says whether force unload needs the admin token", async () => {
  await using served = serveFeed();
  const events = sseEvents(await fetch(`${served.url}?view=html`));
  const { adminTokenRequired } = JSON.parse((await next(events, "html")).data);
  assert.equal(adminTokenRequired, false);
  await events.return(undefined);
});
