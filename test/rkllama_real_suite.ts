/**
 * The router in front of the real RKLlama servers (`../shared/rkllama-real`): two of
 * the FastAPI generation and one of the Flask generation, each on its own loopback
 * address. Run by `deno task test:rkllama`; without the folder it says so and skips.
 */

import assert from "node:assert/strict";
import { postJson, storeReaches } from "../sim/fixture.ts";
import {
  type RealServer,
  type RealServerOptions,
  type RealWorld,
  setUpRealServers,
  startRealWorld,
  stubAnswer,
} from "./rkllama_real.ts";

const cache = await setUpRealServers();
const ignore = cache === undefined;

/** Tokens per answer; with STUB_TOKEN_MS=20, an answer takes about a second. */
const TOKENS = 50;

/**
 * qwen2.5-1.5b is only on fa-1, qwen2.5-3b only on the Flask board, llama3.2-1b on
 * all three: a request for one of the first two always meets the same board.
 */
function boards(env: Record<string, string> = {}): RealServerOptions[] {
  const stub = { STUB_TOKENS: String(TOKENS), STUB_TAG_RUNS: "1", ...env };
  return [
    { flavor: "fa", host: "127.0.0.31", models: ["qwen2.5-1.5b", "llama3.2-1b"], env: stub },
    { flavor: "fa", host: "127.0.0.32", models: ["llama3.2-1b"], env: stub },
    { flavor: "fl", host: "127.0.0.33", models: ["qwen2.5-3b", "llama3.2-1b"], env: stub },
  ];
}

const FA_ONLY = "qwen2.5-1.5b";
const FL_ONLY = "qwen2.5-3b";
const EVERYWHERE = "llama3.2-1b";

/** One chat through the router; returns the answer's text (all chunks of a stream joined). */
async function chat(
  url: string,
  model: string,
  stream: boolean,
  signal?: AbortSignal,
): Promise<{ status: number; text: string; lines: Record<string, unknown>[] }> {
  const response = await postJson(`${url}/api/chat`, {
    model,
    stream,
    messages: [{ role: "user", content: "Hi" }],
  }, { signal });
  const body = await response.text();
  if (!response.ok) return { status: response.status, text: body, lines: [] };
  const lines = body.trim().split("\n").map((line) => JSON.parse(line));
  const text = lines.map((line) => line.message?.content ?? "").join("");
  return { status: response.status, text, lines };
}

/** The answer without the stub's `[run N] ` tag, and how many tags it held. */
function untagged(text: string): { text: string; tags: number } {
  const tags = text.match(/\[run \d+\] /g)?.length ?? 0;
  return { text: text.replace(/\[run \d+\] /g, ""), tags };
}

/** Each server's model workers number its loaded models: none leaked, none dead. */
async function assertWorkersMatchLoaded(servers: RealServer[]): Promise<void> {
  for (const server of servers) {
    const [workers, loaded] = await Promise.all([server.workers(), server.loaded()]);
    assert.equal(
      workers.length,
      loaded.length,
      `${server.name}: ${workers.length} worker processes for ${loaded.length} loaded models (${loaded})`,
    );
  }
}

/** Starts the three boards and a router; `flags` go to the router. */
function world(flags: string[] = [], env?: Record<string, string>): Promise<RealWorld> {
  return startRealWorld(cache!, boards(env), flags);
}

Deno.test({
  name: "real boards: listings, chat and generate (streaming and not) on FastAPI and Flask",
  ignore,
  async fn() {
    await using w = await world();
    const tags = await (await fetch(`${w.url}/api/tags`)).json();
    // Listed as Ollama lists an untagged model; boards are sent the name they know.
    assert.deepEqual(
      tags.models.map((model: { name: string }) => model.name).sort(),
      [EVERYWHERE, FA_ONLY, FL_ONLY].map((name) => `${name}:latest`).sort(),
    );
    for (const model of [FA_ONLY, FL_ONLY]) {
      for (const stream of [true, false]) {
        const answer = await chat(w.url, model, stream);
        assert.equal(answer.status, 200, `${model} stream=${stream}: ${answer.text}`);
        assert.equal(untagged(answer.text).text, stubAnswer(TOKENS), `${model} stream=${stream}`);
        assert.equal(answer.lines.at(-1)?.done, true);
        const generated = await postJson(`${w.url}/api/generate`, {
          model,
          prompt: "Hi",
          stream,
        });
        const lines = (await generated.text()).trim().split("\n").map((line) => JSON.parse(line));
        assert.equal(generated.status, 200);
        assert.equal(
          untagged(lines.map((line) => line.response ?? "").join("")).text,
          stubAnswer(TOKENS),
          `generate ${model} stream=${stream}`,
        );
      }
    }
    // A body past 64 KiB goes to a board chunked (proxy/request_body.ts toSend()):
    // both generations read it whole.
    for (const model of [FA_ONLY, FL_ONLY]) {
      const long = await postJson(`${w.url}/api/chat`, {
        model,
        stream: false,
        messages: [{ role: "user", content: "Hi ".repeat(100_000) }],
      });
      const text = await long.text();
      assert.equal(long.status, 200, `${model}, a 300 KB body: ${text}`);
      assert.equal(untagged(JSON.parse(text).message.content).text, stubAnswer(TOKENS), model);
    }
    const ps = await (await fetch(`${w.url}/api/ps`)).json();
    assert.deepEqual(
      ps.models.map((model: { name: string }) => model.name).sort(),
      [FA_ONLY, FL_ONLY].map((name) => `${name}:latest`).sort(),
    );
    const unknown = await postJson(`${w.url}/api/chat`, {
      model: "no-such-model",
      messages: [{ role: "user", content: "Hi" }],
    });
    assert.equal(unknown.status, 404);
    assert.match((await unknown.json()).error, /model 'no-such-model' not found; available: /);
    await assertWorkersMatchLoaded(w.servers);
  },
});

Deno.test({
  name: "real boards: concurrent first requests for an unloaded model start one worker per board",
  ignore,
  async fn() {
    await using w = await world();
    const answers = await Promise.all([
      ...Array.from({ length: 6 }, () => chat(w.url, EVERYWHERE, true)),
      ...Array.from({ length: 3 }, () => chat(w.url, FL_ONLY, false)),
    ]);
    for (const answer of answers) {
      assert.equal(answer.status, 200, answer.text);
      assert.equal(untagged(answer.text).text, stubAnswer(TOKENS));
    }
    await assertWorkersMatchLoaded(w.servers);
  },
});

/**
 * A client reads the first tokens of a stream (or, `beforeFirstByte`, waits a moment
 * for a non-streaming answer) and leaves; another then asks the same board.
 */
async function leaveThenAsk(w: RealWorld, model: string, beforeFirstByte: boolean) {
  const client = new AbortController();
  const sent = postJson(`${w.url}/api/chat`, {
    model,
    stream: !beforeFirstByte,
    messages: [{ role: "user", content: "Hi" }],
  }, { signal: client.signal }).catch(() => undefined);
  if (beforeFirstByte) {
    // Once the pod has the request (and, not streaming, sends nothing until its end).
    const pods = [...w.router.store.pods.peek().values()];
    while (!pods.some((pod) => pod.runtime.inflight > 0)) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    client.abort();
    assert.equal(await sent, undefined);
  } else {
    const response = await sent;
    const reader = response!.body!.getReader();
    for (let chunks = 0; chunks < 3;) {
      const read = await reader.read();
      assert.equal(read.done, false);
      if (new TextDecoder().decode(read.value).includes('"content"')) chunks++;
    }
    client.abort();
    await reader.cancel().catch(() => {});
  }
  const asked = performance.now();
  const next = await chat(w.url, model, false, AbortSignal.timeout(30_000));
  const seconds = (performance.now() - asked) / 1000;
  return { next, seconds };
}

for (const beforeFirstByte of [false, true]) {
  Deno.test({
    name: beforeFirstByte
      ? "real boards: a client that leaves before its answer begins neither hurts nor blocks the next one (FastAPI, Flask)"
      : "real boards: a client that leaves mid-stream neither hurts nor blocks the next one (FastAPI, Flask)",
    ignore,
    async fn() {
      await using w = await world();
      // Warm both models, so that what follows is about generations, not loads.
      for (const model of [FA_ONLY, FL_ONLY]) {
        assert.equal((await chat(w.url, model, false)).status, 200);
      }
      for (const model of [FA_ONLY, FL_ONLY]) {
        for (let attempt = 1; attempt <= 3; attempt++) {
          const { next, seconds } = await leaveThenAsk(w, model, beforeFirstByte);
          const what = `${model}, try ${attempt}`;
          assert.equal(next.status, 200, `${what}: ${next.text}`);
          const { text, tags } = untagged(next.text);
          assert.equal(tags, 1, `${what}: one run's text only: ${next.text}`);
          assert.equal(text, stubAnswer(TOKENS), `${what}: the whole answer`);
          // The abandoned answer's rest plus this one: about 2 s; a hung lock or a
          // dead worker would take 60 to 300 s.
          assert.ok(seconds < 15, `${what}: answered in ${seconds.toFixed(1)} s`);
        }
      }
      await assertWorkersMatchLoaded(w.servers);
      const metrics = await (await fetch(`${w.url}/metrics`)).text();
      for (const pod of ["fa-127.0.0.31", "fl-127.0.0.33"]) {
        const count = metrics.match(
          new RegExp(
            `rkllama_router_abandoned_generations_total\\{pod="${pod}",model="[^"]+"\\} (\\d+)`,
          ),
        );
        assert.equal(Number(count?.[1]), 3, `${pod}: abandoned answers counted`);
      }
      assert.doesNotMatch(metrics, /rkllama_router_pod_ejections_total\{pod="[^"]+"\} [1-9]/);
      assert.doesNotMatch(metrics, /rkllama_router_upstream_errors_total\{[^}]*\} [1-9]/);
    },
  });
}

Deno.test({
  name:
    "real boards: placement loads and unloads on FastAPI (/api/load) and Flask (/load_model), waiting for a stream in progress",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    const file = `${dir}/models.yaml`;
    await Deno.writeTextFile(file, "models: {}\n");
    await using w = await world(["--models-file", file, "--sync-interval", "500ms"], {
      STUB_TOKENS: "100",
    });
    const [fa1, , fl] = w.servers;
    const { store } = w.router;
    // A long stream on fa-1 while placement wants another model loaded there.
    const streaming = chat(w.url, FA_ONLY, true);
    await storeReaches(store, (s) => s.pods.value.get(fa1.name)?.loaded.has(FA_ONLY) ?? false);
    await Deno.writeTextFile(
      file,
      `models:\n  ${EVERYWHERE}:\n    nodes: [${fa1.name}, ${fl.name}]\n`,
    );
    const answer = await streaming;
    assert.equal(untagged(answer.text).text, stubAnswer(100), "the stream ends whole");
    await storeReaches(
      store,
      (s) => [fa1.name, fl.name].every((pod) => s.pods.value.get(pod)?.loaded.has(EVERYWHERE)),
    );
    assert.deepEqual(await fa1.loaded(), [EVERYWHERE, FA_ONLY].sort());
    assert.deepEqual(await fl.loaded(), [EVERYWHERE]);
    await assertWorkersMatchLoaded(w.servers);

    await Deno.writeTextFile(file, `models:\n  ${EVERYWHERE}:\n    replicas: 0\n`);
    await storeReaches(
      store,
      (s) => [fa1.name, fl.name].every((pod) => !s.pods.value.get(pod)?.loaded.has(EVERYWHERE)),
    );
    assert.deepEqual(await fa1.loaded(), [FA_ONLY]);
    assert.deepEqual(await fl.loaded(), []);
    await assertWorkersMatchLoaded(w.servers);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name:
    "real boards: a board restarted under traffic; requests go on to the others, then to it again",
  ignore,
  async fn() {
    await using w = await world(["--eject-duration", "1s"]);
    const fa1 = w.servers[0];
    const seen: { model: string; status: number; cut: boolean; at: number }[] = [];
    let stopped = false;
    const client = async (model: string) => {
      while (!stopped) {
        const answer = await chat(w.url, model, true, AbortSignal.timeout(60_000));
        const cut = answer.lines.some((line) => "error" in line);
        seen.push({ model, status: answer.status, cut, at: performance.now() });
        if (answer.status === 200 && !cut) {
          assert.equal(untagged(answer.text).text, stubAnswer(TOKENS));
        } else {
          // The router answers at once while no board has the model: ask again a little later.
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      }
    };
    const clients = [client(EVERYWHERE), client(EVERYWHERE), client(FA_ONLY)];
    const served = (model: string, after: number) =>
      seen.some((answer) => answer.model === model && answer.status === 200 && answer.at > after);
    while (!served(FA_ONLY, 0)) await new Promise((resolve) => setTimeout(resolve, 100));
    await fa1.stop();
    const restarted = performance.now();
    await fa1.start();
    // fa-1 is the only board with FA_ONLY: once it answers, it is routed to again.
    const deadline = performance.now() + 60_000;
    while (!served(FA_ONLY, restarted) && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    stopped = true;
    await Promise.all(clients);
    assert.ok(served(FA_ONLY, restarted), "fa-1 served again after its restart");
    assert.ok(served(EVERYWHERE, restarted), "the other boards served meanwhile");
    // Answers cut by the stop end with an error line; every other failure is an
    // error status the router gave at once, and nothing hung.
    for (const answer of seen) {
      if (answer.status !== 200) assert.ok([502, 503].includes(answer.status), `${answer.status}`);
    }
    assert.ok(seen.filter((answer) => answer.cut).length <= 3, JSON.stringify(seen));
    await assertWorkersMatchLoaded(w.servers);
  },
});

Deno.test({
  name: "real boards: force_unload_all on FastAPI and Flask boards",
  ignore,
  async fn() {
    await using w = await world();
    for (const model of [FA_ONLY, EVERYWHERE, FL_ONLY]) {
      assert.equal((await chat(w.url, model, false)).status, 200);
    }
    const response = await fetch(`${w.url}/router/force_unload_all`, { method: "POST" });
    const body = await response.json();
    const byPod = Object.fromEntries(
      body.results.map((result: { pod_name: string }) => [result.pod_name, result]),
    );
    assert.equal(byPod["fa-127.0.0.31"].success, true);
    assert.equal(byPod["fl-127.0.0.33"].unsupported, true);
    const [fa1, fa2] = w.servers;
    assert.deepEqual(await fa1.loaded(), []);
    assert.deepEqual(await fa2.loaded(), []);
    await assertWorkersMatchLoaded([fa1, fa2]);
  },
});
