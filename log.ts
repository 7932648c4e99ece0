/**
 * @module
 * Structured logs: one JSON object per line on stdout through LogTape, so a log
 * collector can index the fields. Modules log under the `rkllama-router` category.
 */

import { configure, getLogger, jsonLinesFormatter, type Logger, type Sink } from "@logtape/logtape";
import type { LogLevel } from "./config.ts";

/** The logger of one part of the router, e.g. `logger("proxy")`. */
export function logger(part: string): Logger {
  return getLogger(["rkllama-router", part]);
}

/** Sends logs at `level` and above to stdout as JSON lines; safe to call again. */
export async function setupLogging(level: LogLevel): Promise<void> {
  await configure({
    reset: true,
    sinks: {
      // Everything goes to stdout whatever its level: one stream to collect.
      stdout: stdoutSink(),
    },
    loggers: [
      { category: ["rkllama-router"], lowestLevel: level, sinks: ["stdout"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stdout"] },
    ],
  });
}

/**
 * Writes JSON lines to stdout, those of one turn of the event loop in one write:
 * with a line per request, a write each was a tenth of the router's CPU time
 * under load (bench/). Lines still pending when the process exits are written then.
 */
function stdoutSink(): Sink {
  const encoder = new TextEncoder();
  let pending: string[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    const bytes = encoder.encode(pending.join(""));
    pending = [];
    try {
      for (let written = 0; written < bytes.length;) {
        written += Deno.stdout.writeSync(bytes.subarray(written));
      }
    } catch {
      // Nobody reads stdout any more (a closed pipe): as console.log, drop the lines.
    }
  };
  globalThis.addEventListener("unload", flush);
  return (record) => {
    if (pending.length === 0) setTimeout(flush, 0);
    pending.push(jsonLinesFormatter(record));
  };
}

/**
 * An error in one line for a log or a message: its message, the cause's (Deno's
 * fetch hides "Connection refused" there), and an HTTP status when it has one.
 */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
    const status = (error as { code?: unknown }).code ??
      (error as { statusCode?: unknown }).statusCode;
    return `${error.message}${cause}${typeof status === "number" ? ` (HTTP ${status})` : ""}`;
  }
  return String(error);
}
