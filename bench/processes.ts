/**
 * @module
 * The processes a benchmark runs: the fast backend, the router exactly as
 * `deno task start` runs it, nginx as a plain reverse proxy, and wrk. Each starts
 * on loopback with ports the system picks, and stops with `close()`.
 */

const here = new URL(".", import.meta.url);
const root = new URL("..", here);

/** A helper process: the fast backend or the floor proxy. */
export interface Helper {
  urls: string[];
  pid: number;
  close(): Promise<void>;
}

/** Starts bench/backend.ts in its own process; it exits when we close its stdin. */
export function startBackend(
  options: { ports?: number; models?: number; loaded?: number; holdMs?: number } = {},
): Promise<Helper> {
  return startHelper("backend.ts", [
    "--hold",
    String(options.holdMs ?? 0),
    "--ports",
    String(options.ports ?? 1),
    "--models",
    String(options.models ?? 1),
    "--loaded",
    String(options.loaded ?? 1),
  ]);
}

/** Starts bench/floor_proxy.ts in front of `upstream`. */
export function startFloorProxy(upstream: string): Promise<Helper> {
  return startHelper("floor_proxy.ts", ["--upstream", upstream]);
}

/** Runs a bench/ script that prints `{"urls": [...]}` and exits when its stdin closes. */
async function startHelper(script: string, args: string[]): Promise<Helper> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", new URL(script, here).pathname, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const { line } = await firstLine(child.stdout, (text) => text.startsWith("{"));
  const { urls } = JSON.parse(line) as { urls: string[] };
  return {
    urls,
    pid: child.pid,
    async close() {
      await child.stdin.close().catch(() => {});
      await child.status;
    },
  };
}

/** A running router process. */
export interface RouterProcess {
  url: string;
  pid: number;
  /**
   * The JavaScript heap in use after two full collections, in bytes; only for a
   * router started with `inspect` (it asks V8 through the inspector protocol).
   */
  heapAfterGc(): Promise<number>;
  /** SIGTERM, then waits for the exit (which writes a CPU profile if asked for). */
  close(): Promise<void>;
}

/** The flags `deno task start` gives `deno run`, which the compiled binary also gets. */
export async function startTaskFlags(checkout: URL = root): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", checkout)));
  const words: string[] = config.tasks.start.split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run" || words.at(-1) !== "main.ts") {
    throw new Error(`deno.json's start task is not 'deno run ... main.ts': ${config.tasks.start}`);
  }
  return words.slice(2, -1);
}

/** The variables the Dockerfile's `ENV` sets for the router (glibc's allocator settings). */
export async function imageEnv(checkout: URL = root): Promise<Record<string, string>> {
  const dockerfile = await Deno.readTextFile(new URL("Dockerfile", checkout));
  const env: Record<string, string> = {};
  for (const [, words] of dockerfile.replaceAll("\\\n", " ").matchAll(/^ENV\s+(.*)$/gm)) {
    for (const [, name, value] of words.matchAll(/(\w+)=(\S+)/g)) env[name] = value;
  }
  return env;
}

/**
 * Starts main.ts as `deno task start` does, with `--backends` pointing at
 * `backend`; its log lines go to `logFile`. `cpuProfileDir` adds `--cpu-prof`;
 * `inspect` opens the V8 inspector on loopback, for {@linkcode RouterProcess.heapAfterGc}.
 */
export async function startRouter(
  backend: string,
  logFile: string,
  options: {
    cpuProfileDir?: string;
    inspect?: boolean;
    /** Another checkout's router (its main.ts, deno.json and Dockerfile), to compare with. */
    checkout?: URL;
  } = {},
): Promise<RouterProcess> {
  const checkout = options.checkout ?? root;
  const inspectPort = options.inspect ? freePort() : undefined;
  const profile = [
    ...(options.cpuProfileDir ? ["--cpu-prof", `--cpu-prof-dir=${options.cpuProfileDir}`] : []),
    ...(inspectPort ? [`--inspect=127.0.0.1:${inspectPort}`] : []),
  ];
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...profile,
      ...await startTaskFlags(checkout),
      new URL("main.ts", checkout).pathname,
      "--backends",
      `bench=${backend}`,
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      // The backend answers any number of requests at once, as Ollama can: the
      // benchmark measures the proxy, not the generation slots of an RKLlama board.
      "--slots",
      "1000",
    ],
    clearEnv: true,
    // As in the image: its allocator settings are part of what it costs.
    env: await imageEnv(checkout),
    stdin: "null",
    stdout: "piped",
    // The inspector announces itself on stderr.
    stderr: inspectPort ? "null" : "inherit",
  }).spawn();
  const { line, rest } = await firstLine(child.stdout, (text) => listeningUrl(text) !== undefined);
  const url = listeningUrl(line)!;
  // The router logs one line per request: keep draining them into a file, as a
  // log collector would, so that the router never blocks on a full pipe.
  const log = await Deno.open(logFile, { write: true, create: true, truncate: true });
  const drained = rest.pipeTo(log.writable);
  return {
    url,
    pid: child.pid,
    heapAfterGc() {
      if (!inspectPort) throw new Error("the router was started without the inspector");
      return heapAfterGc(inspectPort);
    },
    async close() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      await child.status;
      await drained;
    },
  };
}

/** Runs main.ts as `deno task start` does with a flag it does not know; resolves once refused. */
export async function refuseFlag(): Promise<void> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...await startTaskFlags(), new URL("main.ts", root).pathname, "--no-such-flag"],
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (output.code !== 2) throw new Error(`a bad flag exited ${output.code}, not 2`);
}

/** Asks V8 through the inspector protocol for two full collections, then the heap in use. */
async function heapAfterGc(port: number): Promise<number> {
  const [target] = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const socket = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  const waiting = new Map<number, (result: Record<string, number>) => void>();
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    waiting.get(message.id)?.(message.result);
    waiting.delete(message.id);
  };
  let id = 0;
  const call = (method: string) =>
    new Promise<Record<string, number>>((resolve) => {
      waiting.set(++id, resolve);
      socket.send(JSON.stringify({ id, method }));
    });
  try {
    await call("HeapProfiler.enable");
    await call("HeapProfiler.collectGarbage");
    await call("HeapProfiler.collectGarbage");
    return (await call("Runtime.getHeapUsage")).usedSize;
  } finally {
    socket.close();
  }
}

/** A running nginx. */
export interface Nginx {
  url: string;
  /** The master process; its one worker is its child. */
  pid: number;
  close(): Promise<void>;
}

/** Runs nginx in the foreground with bench/nginx.conf, all its files in `dir`. */
export async function startNginx(upstream: string, dir: string): Promise<Nginx> {
  const port = freePort();
  const template = await Deno.readTextFile(new URL("nginx.conf", here));
  const conf = template.replaceAll("@DIR@", dir)
    .replaceAll("@UPSTREAM@", new URL(upstream).host)
    .replaceAll("@LISTEN@", `127.0.0.1:${port}`);
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  const child = new Deno.Command("nginx", {
    args: ["-p", dir, "-e", `${dir}/error.log`, "-c", `${dir}/nginx.conf`],
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // nginx says nothing when it listens: connect until it accepts (bounded).
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`nginx did not listen on port ${port} within 10 s: ${error}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    async close() {
      try {
        child.kill("SIGQUIT");
      } catch {
        // Already exited.
      }
      await child.status;
    },
  };
}

/** One wrk run's summary; latencies in microseconds. */
export interface WrkResult {
  requests: number;
  duration_us: number;
  non2xx: number;
  errors: number;
  p50_us: number;
  p99_us: number;
  mean_us: number;
  max_us: number;
}

/** Runs wrk (one thread) with `connections` connections for `seconds` against `url`. */
export async function runWrk(
  url: string,
  connections: number,
  seconds: number,
): Promise<WrkResult> {
  const output = await new Deno.Command("wrk", {
    args: [
      "-t1",
      `-c${connections}`,
      `-d${seconds}s`,
      "--timeout",
      "5s",
      "-s",
      new URL("wrk_chat.lua", here).pathname,
      `${url}/api/chat`,
    ],
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  const line = text.trim().split("\n").at(-1) ?? "";
  if (!output.success || !line.startsWith("{")) {
    throw new Error(`wrk failed: ${text}${new TextDecoder().decode(output.stderr)}`);
  }
  return JSON.parse(line);
}

/** Resident memory of a process in bytes (Linux). */
export function rssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) * 1024;
}

/** The URL in the router's "listening on" log line; undefined for other lines. */
function listeningUrl(line: string): string | undefined {
  try {
    const url = JSON.parse(line).url;
    return typeof url === "string" ? url : undefined;
  } catch {
    return undefined;
  }
}

/** A port free right now (nginx cannot be asked to pick one and tell). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Reads lines until one passes `wanted`; returns it and the unread rest of the stream. */
async function firstLine(
  stream: ReadableStream<Uint8Array>,
  wanted: (line: string) => boolean,
): Promise<{ line: string; rest: ReadableStream<Uint8Array> }> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`the process exited before it was ready; it wrote: ${buffer}`);
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split("\n");
    const index = lines.slice(0, -1).findIndex(wanted);
    if (index === -1) continue;
    const leftover = new TextEncoder().encode(lines.slice(index + 1).join("\n"));
    const rest = new ReadableStream<Uint8Array>({
      start(controller) {
        if (leftover.length > 0) controller.enqueue(leftover);
      },
      async pull(controller) {
        const next = await reader.read();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
    return { line: lines[index], rest };
  }
}
