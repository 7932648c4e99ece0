/**
 * @module
 * `deno task demo`: three simulated RKLlama boards and the router in front of them,
 * on this machine only, so the router can be tried without hardware. Router flags
 * given to the task (e.g. `--port 9000`) are passed on.
 */

import { ConfigError, parseBackends, parseConfig } from "../config/flags.ts";
import { type Router, startRouter } from "../router.ts";
import { setupLogging } from "../obs/log.ts";
import { type SimCluster, type SimClusterOptions, startSimCluster } from "./cluster.ts";

/** The demo cluster: two FastAPI-generation boards and one Flask-generation board. */
export const DEMO_CLUSTER: SimClusterOptions = {
  pods: [
    {
      name: "rk3588-a",
      models: [
        { name: "qwen2.5-1.5b", size: 1_900_000_000, parameterSize: "1.5B" },
        { name: "deepseek-r1-1.5b", size: 2_000_000_000, parameterSize: "1.5B" },
      ],
      loaded: ["qwen2.5-1.5b"],
      loadDelayMs: 3000,
      tokenDelayMs: 60,
      tokens: ["Hello", " from", " a", " simulated", " RK3588", "!"],
    },
    {
      name: "rk3588-b",
      models: [
        { name: "qwen2.5-1.5b", size: 1_900_000_000, parameterSize: "1.5B" },
        { name: "phi-3-mini", size: 2_500_000_000, parameterSize: "3.8B" },
      ],
      loaded: ["qwen2.5-1.5b"],
      loadDelayMs: 3000,
      tokenDelayMs: 60,
      tokens: ["Hello", " from", " another", " simulated", " RK3588", "!"],
    },
    {
      name: "rk3576-c",
      flavor: "fl",
      models: [
        { name: "phi-3-mini", size: 2_500_000_000, parameterSize: "3.8B" },
        { name: "whisper-small", size: 500_000_000, kind: "other" },
      ],
      loadDelayMs: 3000,
      tokenDelayMs: 80,
      tokens: ["Hello", " from", " a", " simulated", " RK3576", "!"],
    },
  ],
};

/** A running demo. */
export interface Demo extends AsyncDisposable {
  router: Router;
  cluster: SimCluster;
}

/**
 * Starts the demo cluster and a router in front of it.
 *
 * @param args router flags; `--backends` is set to the simulated pods
 * @param clusterOptions the simulated boards (tests make them faster)
 * @throws {ConfigError} for flags the router would refuse
 */
export async function startDemo(
  args: readonly string[],
  clusterOptions: SimClusterOptions = DEMO_CLUSTER,
): Promise<Demo> {
  const parsed = parseConfig(args, () => undefined);
  if (parsed.help) throw new ConfigError("the demo takes router flags, not --help");
  const cluster = await startSimCluster(clusterOptions);
  try {
    const router = await startRouter({
      ...parsed.config,
      host: args.includes("--host") ? parsed.config.host : "127.0.0.1",
      backends: parseBackends(cluster.backends),
    });
    return {
      router,
      cluster,
      async [Symbol.asyncDispose]() {
        await router.shutdown();
        await cluster.close();
      },
    };
  } catch (error) {
    await cluster.close();
    throw error;
  }
}

/**
 * Logs as the router would with these flags (`--log-level`, `--log-format`):
 * the demo takes any router flag.
 *
 * @throws {ConfigError} for flags the router would refuse
 */
export async function setupDemoLogging(args: readonly string[]): Promise<void> {
  const parsed = parseConfig(args, () => undefined);
  if (parsed.help) throw new ConfigError("the demo takes router flags, not --help");
  await setupLogging(parsed.config.logLevel, parsed.config.logFormat);
}

function tryLines(url: string): string {
  const chat = JSON.stringify({
    model: "qwen2.5-1.5b",
    messages: [{ role: "user", content: "Hi" }],
  });
  const cold = JSON.stringify({ model: "phi-3-mini", prompt: "Hi", stream: false });
  return [
    "",
    `rkllama-router demo: 3 simulated boards behind ${url}`,
    "",
    "Try:",
    `  curl -s ${url}/api/tags                 # every model on any board`,
    `  curl -s ${url}/api/ps                   # what is loaded where`,
    `  curl -N ${url}/api/chat -d '${chat}'`,
    `  curl -s ${url}/api/generate -d '${cold}'   # cold: loads first (3 s)`,
    `  curl -s ${url}/router/status`,
    `  OLLAMA_HOST=${url} ollama list          # if you have the ollama CLI`,
    "",
    `The live status page: ${url}/ui`,
    "",
    "Ctrl-C stops it.",
    "",
  ].join("\n");
}

if (import.meta.main) {
  let demo: Demo;
  try {
    await setupDemoLogging(Deno.args);
    demo = await startDemo(Deno.args);
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      console.error("rkllama-router demo: the port is in use; choose another with --port 9000");
      Deno.exit(2);
    }
    if (!(error instanceof ConfigError)) throw error;
    console.error(`rkllama-router demo: ${error.message} (see --help of the router)`);
    Deno.exit(2);
  }
  console.log(tryLines(demo.router.url));
  const stop = async () => {
    await demo[Symbol.asyncDispose]();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
