/**
 * @module
 * Structured logs: one JSON object per line on stdout through LogTape, so a log
 * collector can index the fields. Modules log under the `rkllama-router` category.
 */

import {
  configure,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogRecord,
  type Sink,
  type TextFormatter,
} from "@logtape/logtape";
import type { LogFormat, LogLevel } from "./config.ts";

/** The logger of one part of the router, e.g. `logger("proxy")`. */
export function logger(part: string): Logger {
  return getLogger(["rkllama-router", part]);
}

/**
 * Sends logs at `level` and above to stdout, as JSON lines or as text for people
 * (`pretty`); safe to call again.
 */
export async function setupLogging(level: LogLevel, format: LogFormat = "json"): Promise<void> {
  await configure({
    reset: true,
    sinks: {
      // Everything goes to stdout whatever its level: one stream to collect.
      stdout: stdoutSink(format === "pretty" ? prettyFormatter : jsonFormatter),
    },
    loggers: [
      { category: ["rkllama-router"], lowestLevel: level, sinks: ["stdout"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stdout"] },
    ],
  });
}

/** Fields at the top level of each object, where `jq .pod` and log indexers find them. */
const jsonFormatter: TextFormatter = getJsonLinesFormatter({ properties: "flatten" });

/**
 * One line per record for a terminal: time, level, category, the message, then
 * the fields the message does not show as `key=value`, so nothing is hidden.
 */
const prettyFormatter: TextFormatter = getTextFormatter({
  timestamp: "date-time-tz",
  value: "bare",
  format: ({ timestamp, level, category, message, record }) =>
    `${timestamp} ${level} ${category}: ${message}${extraFields(record)}`,
});

function extraFields(record: LogRecord): string {
  const raw = typeof record.rawMessage === "string" ? record.rawMessage : "";
  let text = "";
  for (const [key, value] of Object.entries(record.properties)) {
    if (value === undefined || raw.includes(`{${key}}`)) continue;
    const shown = typeof value === "string" && /^[^\s"=]+$/.test(value)
      ? value
      : JSON.stringify(value);
    text += ` ${key}=${shown}`;
  }
  return text;
}

/**
 * Writes JSON lines to stdout, those of one turn of the event loop in one write:
 * with a line per request, a write each was a tenth of the router's CPU time
 * under load (bench/). Lines still pending when the process exits are written then.
 */
function stdoutSink(formatter: TextFormatter): Sink {
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
    const line = formatter(record);
    pending.push(line.endsWith("\n") ? line : `${line}\n`);
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
