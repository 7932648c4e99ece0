/**
 * @module
 * Structured logs: one JSON object per line on stdout through LogTape, so a log
 * collector can index the fields. Modules log under the `rkllama-router` category.
 */

import {
  configure,
  getConsoleSink,
  getLogger,
  jsonLinesFormatter,
  type Logger,
} from "@logtape/logtape";
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
      // Everything goes to stdout (console.log) whatever its level: one stream to collect.
      stdout: getConsoleSink({
        formatter: jsonLinesFormatter,
        levelMap: {
          trace: "log",
          debug: "log",
          info: "log",
          warning: "log",
          error: "log",
          fatal: "log",
        },
      }),
    },
    loggers: [
      { category: ["rkllama-router"], lowestLevel: level, sinks: ["stdout"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stdout"] },
    ],
  });
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
