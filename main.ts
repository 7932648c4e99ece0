/**
 * @module
 * The router's entry point: flags into a config, then the router (router.ts), and a
 * clean stop on SIGTERM or SIGINT. Only the flags' module loads before the flags
 * are read: a bad flag is refused at once, and the rest loads once it is known to
 * be needed (static mode never loads the Kubernetes client).
 */

import { ConfigError, helpText, parseConfig, type RouterConfig } from "./config/flags.ts";
import type { Router } from "./router.ts";

/**
 * A second signal within this long of the first is the same request to stop:
 * under `deno task` or `npx`, one Ctrl-C reaches the router twice, from the
 * terminal's process group and forwarded by the task runner, milliseconds apart.
 */
const REPEAT_SIGNAL_MS = 1000;

async function main(args: string[]): Promise<void> {
  let config: RouterConfig;
  try {
    const parsed = parseConfig(args, (name) => Deno.env.get(name));
    if (parsed.help) {
      console.log(helpText());
      return;
    }
    config = parsed.config;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`rkllama-router: ${error.message} (see --help)`);
    Deno.exit(2);
  }
  if (
    config.modelsFile !== "" &&
    Deno.permissions.querySync({ name: "read", path: config.modelsFile }).state !== "granted"
  ) {
    console.error(
      `rkllama-router: --models-file: may not read '${config.modelsFile}'; the router reads files only under /etc/rkllama-router (put it there), or run it with 'deno task dev', which may read anywhere`,
    );
    Deno.exit(2);
  }
  const [{ logger, setupLogging, describeError }, { startRouter }] = await Promise.all([
    import("./obs/log.ts"),
    import("./router.ts"),
  ]);
  await setupLogging(config.logLevel, config.logFormat);
  const log = logger("main");
  // Whatever fails, stdout stays JSON lines: Deno would print these as text.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    log.error("unhandled rejection (a bug): {error}", {
      error: describeError(event.reason),
      stack: event.reason instanceof Error ? event.reason.stack : undefined,
    });
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    log.fatal("uncaught error (a bug); exiting: {error}", {
      error: describeError(event.error),
      stack: event.error instanceof Error ? event.error.stack : undefined,
    });
    Deno.exit(1);
  });
  let router: Router;
  try {
    router = await startRouter(config);
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      console.error(
        `rkllama-router: ${config.host}:${config.port} is already in use; choose another with --port`,
      );
      Deno.exit(2);
    }
    log.fatal("cannot start: {error}", {
      error: describeError(error),
      stack: error instanceof Error ? error.stack : undefined,
    });
    Deno.exit(1);
  }
  // Explicit listeners, so this works as PID 1 in a container too, where the
  // kernel gives SIGTERM no default action.
  let stoppingSince: number | undefined;
  const stop = async (signal: string) => {
    if (stoppingSince !== undefined) {
      if (performance.now() - stoppingSince < REPEAT_SIGNAL_MS) {
        log.info("{signal} again within {repeatMs} ms: the same request to stop", {
          signal,
          repeatMs: REPEAT_SIGNAL_MS,
        });
        return;
      }
      log.warn("{signal} again: exiting at once", { signal });
      Deno.exit(1);
    }
    stoppingSince = performance.now();
    router.drain();
    log.info(
      "{signal}: draining; /health/ready answers 503, new connections are refused in {drainDelayMs} ms, then requests in flight get up to {shutdownTimeoutMs} ms to finish",
      { signal, drainDelayMs: config.drainDelayMs, shutdownTimeoutMs: config.shutdownTimeoutMs },
    );
    await new Promise((resolve) => setTimeout(resolve, config.drainDelayMs));
    const shutdown = router.shutdown(config.shutdownTimeoutMs);
    log.info("drain delay over: no new connections; waiting for requests in flight");
    const finished = await shutdown;
    if (finished) log.info("every request finished; exiting");
    else log.warn("requests still in flight after --shutdown-timeout are cut; exiting");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
}

if (import.meta.main) await main(Deno.args);
