/**
 * @module
 * The real RKLlama servers of `../shared/rkllama-real` (both generations, their own
 * unmodified code over a stub NPU library) as test fixtures: built once into a
 * cache by its `setup.sh`, started on loopback, stopped with their model workers.
 */

import { parseConfig, type RouterConfig } from "../config/flags.ts";
import { type Router, startRouter } from "../router.ts";
// The harness asks boards on fresh connections, as the router does, for the same reason.
import { freshConnections } from "../rkllama/upstream.ts";

/** `../shared/rkllama-real`, found relative to the project root. */
export const REAL_DIR = new URL("../../shared/rkllama-real/", import.meta.url).pathname;

/** The stub's default tokens (stub/rkllm_stub.c), cycled for `STUB_TOKENS` tokens. */
const STUB_WORDS = [
  "This",
  " is",
  " a",
  " stubbed",
  " response",
  " from",
  " the",
  " fake",
  " RKLLM",
  " runtime",
  " running",
  " on",
  " x86_64",
  ".",
  " No",
  " NPU",
  " was",
  " used",
  " here",
  "!",
];

/** The whole answer a stub server gives for `tokens` tokens, without a run tag. */
export function stubAnswer(tokens: number): string {
  return Array.from({ length: tokens }, (_, i) => STUB_WORDS[i % STUB_WORDS.length]).join("");
}

/**
 * Builds the servers (cached) and returns the cache directory; undefined when the
 * folder is absent, after saying so in one line. With `REQUIRE_RKLLAMA=1` (CI) an
 * absent folder or a failed build throws instead.
 */
export async function setUpRealServers(): Promise<string | undefined> {
  const required = Deno.env.get("REQUIRE_RKLLAMA") === "1";
  try {
    await Deno.stat(`${REAL_DIR}setup.sh`);
  } catch {
    const message = `no real RKLlama servers: ${REAL_DIR} is absent`;
    if (required) throw new Error(`${message} (REQUIRE_RKLLAMA=1)`);
    console.log(`skip: ${message}`);
    return undefined;
  }
  const setup = await new Deno.Command(`${REAL_DIR}setup.sh`, { stderr: "inherit" }).output();
  const lines = new TextDecoder().decode(setup.stdout).trim().split("\n");
  if (!setup.success) {
    throw new Error(`${REAL_DIR}setup.sh failed: ${lines.slice(-5).join(" / ")}`);
  }
  return lines.at(-1)!;
}

/** How to start one real server. */
export interface RealServerOptions {
  flavor: "fa" | "fl";
  /** A loopback address of its own (the port is 8080, as on a board). */
  host: string;
  /** Models on its disk (default: every fixture model). */
  models?: string[];
  /** Stub knobs (`STUB_LOAD_MS`, `STUB_TOKENS`, ...), read by its model workers. */
  env?: Record<string, string>;
}

/** A running real RKLlama server. */
export interface RealServer extends AsyncDisposable {
  readonly flavor: "fa" | "fl";
  readonly name: string;
  readonly url: string;
  /** The server process's id (changes on restart). */
  readonly pid: number;
  /** Process ids of its model workers (its child processes). */
  workers(): Promise<number[]>;
  /** Names in its own `/api/ps`. */
  loaded(): Promise<string[]>;
  /** Stops it and its workers, orphans included. */
  stop(): Promise<void>;
  /** Starts it again after stop(), same address and disk. */
  start(): Promise<void>;
}

/** Starts one real server; `cache` is what {@linkcode setUpRealServers} returned. */
export async function startRealServer(
  cache: string,
  options: RealServerOptions,
): Promise<RealServer> {
  const port = 8080;
  const disk = await Deno.makeTempDir({ prefix: `rkllama-${options.flavor}-` });
  const all = [...Deno.readDirSync(`${cache}/models`)].map((entry) => entry.name);
  for (const model of options.models ?? all) {
    await Deno.symlink(`${cache}/models/${model}`, `${disk}/${model}`);
  }
  const env = {
    STUB_FINISH_DELAY_MS: "20",
    STUB_LOAD_MS: "500",
    STUB_TOKEN_MS: "20",
    ...options.env,
  };
  let pid = 0;
  let running = false;
  const server: RealServer = {
    flavor: options.flavor,
    name: `${options.flavor}-${options.host}`,
    url: `http://${options.host}:${port}`,
    get pid() {
      return pid;
    },
    async workers() {
      const ps = await new Deno.Command("ps", { args: ["--ppid", String(pid), "-o", "pid="] })
        .output();
      return new TextDecoder().decode(ps.stdout).split("\n").map(Number).filter((n) => n > 0);
    },
    async loaded() {
      const response = await fetch(`${server.url}/api/ps`, {
        client: freshConnections(),
        signal: AbortSignal.timeout(10_000),
      });
      const body = await response.json() as { models: { name: string }[] };
      return body.models.map((model) => model.name).sort();
    },
    async start() {
      // start.sh takes any server answering at the address for its own.
      const squatter = await fetch(`${server.url}/api/version`).then(
        (response) => response.body?.cancel().then(() => true),
        () => false,
      );
      if (squatter) throw new Error(`${server.url} is taken by another server; stop it first`);
      const started = await new Deno.Command(`${REAL_DIR}start.sh`, {
        args: [options.host, String(port), options.flavor, disk],
        env,
        stderr: "piped",
      }).output();
      if (!started.success) {
        throw new Error(
          `start.sh ${options.host} ${options.flavor}: ${new TextDecoder().decode(started.stderr)}`,
        );
      }
      pid = Number(new TextDecoder().decode(started.stdout).trim());
      running = true;
    },
    async stop() {
      if (!running) return;
      running = false;
      await new Deno.Command(`${REAL_DIR}stop.sh`, {
        args: [options.host, String(port), options.flavor],
        stdout: "null",
        stderr: "null",
      }).output();
    },
    async [Symbol.asyncDispose]() {
      await server.stop();
      await Deno.remove(disk, { recursive: true });
    },
  };
  await server.start();
  return server;
}

/** Real servers and a router in front of them, torn down by `await using`. */
export interface RealWorld extends AsyncDisposable {
  servers: RealServer[];
  router: Router;
  url: string;
}

/**
 * Starts `servers` (in parallel) and a router in this process in front of them,
 * named by their `name`; the router polls every 500 ms.
 */
export async function startRealWorld(
  cache: string,
  servers: RealServerOptions[],
  flags: string[] = [],
  overrides: Partial<RouterConfig> = {},
): Promise<RealWorld> {
  const started = await Promise.allSettled(
    servers.map((options) => startRealServer(cache, options)),
  );
  const running = started.flatMap((result) => result.status === "fulfilled" ? [result.value] : []);
  const failed = started.find((result) => result.status === "rejected");
  if (failed) {
    await Promise.all(running.map((server) => server[Symbol.asyncDispose]()));
    throw failed.reason;
  }
  const backends = running.map((server) => `${server.name}=${server.url}`).join(",");
  const parsed = parseConfig(
    [
      "--backends",
      backends,
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--poll-interval",
      "500ms",
      "--log-level",
      "warning",
      ...flags,
    ],
    () => undefined,
  );
  if (parsed.help) throw new Error("unreachable");
  const router = await startRouter({ ...parsed.config, ...overrides });
  return {
    servers: running,
    router,
    url: router.url,
    async [Symbol.asyncDispose]() {
      await router.shutdown(10_000);
      await Promise.all(running.map((server) => server[Symbol.asyncDispose]()));
    },
  };
}
