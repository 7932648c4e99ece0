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
import type { LogFormat, LogLevel } from "../config/flags.ts";

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
const logtapeJson: TextFormatter = getJsonLinesFormatter({ properties: "flatten" });

/**
 * LogTape's JSON lines, the same to the byte, written without its general
 * machinery for the common record (a plain `{key}` template, values that are
 * strings, numbers, booleans or null): formatting each request's line was 5% of
 * the router's CPU under load (bench/); `deno run -A bench/log_sink.ts` measures
 * 20-22 µs of CPU a request line with it, 27-29 µs with LogTape's formatter alone.
 * Other records go to LogTape's formatter.
 */
export const jsonFormatter: TextFormatter = (record) =>
  plainJsonLine(record) ?? logtapeJson(record);

/** Parsed templates: literal, key, literal, ..., literal; null when not plain. */
const templates = new Map<string, string[] | null>();
const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/;
/** Keys LogTape's own fields would collide with. */
const RESERVED = new Set(["@timestamp", "level", "message", "logger"]);
/** What LogTape escapes after JSON.stringify (which leaves them as they are). */
const C1_CONTROL = /[\u007f-\u009f]/;
const C1_CONTROLS = /[\u007f-\u009f]/g;

function plainTemplate(raw: string): string[] | null {
  let parts = templates.get(raw);
  if (parts !== undefined) return parts;
  parts = raw.split(PLACEHOLDER);
  for (let i = 0; i < parts.length; i += 2) {
    if (parts[i].includes("{") || parts[i].includes("}")) {
      parts = null;
      break;
    }
  }
  // Templates are literals in the code; the bound only guards against a dynamic one.
  if (templates.size < 1000) templates.set(raw, parts);
  return parts;
}

/** The JSON line of a plain record (see {@linkcode jsonFormatter}), else undefined. */
export function plainJsonLine(record: LogRecord): string | undefined {
  if (typeof record.rawMessage !== "string") return undefined;
  const parts = plainTemplate(record.rawMessage);
  if (parts === null) return undefined;
  const { properties } = record;
  let message = parts[0];
  for (let i = 1; i < parts.length; i += 2) {
    const value = properties[parts[i]];
    if (typeof value !== "string" && typeof value !== "number" && typeof value !== "boolean") {
      return undefined;
    }
    message += JSON.stringify(value) + parts[i + 1];
  }
  // Built as text: JSON.stringify of a fresh object with the fields spread into
  // it took twice as long. Keys and values outside the plain cases go to LogTape.
  let line = `{"@timestamp":"${isoTime(record.timestamp)}","level":"${
    record.level === "warning" ? "WARN" : record.level.toUpperCase()
  }","message":${jsonString(message)},"logger":${jsonString(record.category.join("."))}`;
  for (const key in properties) {
    if (!plainKey(key)) return undefined;
    const value = properties[key];
    if (value === undefined) continue;
    if (typeof value === "string") line += `,"${key}":${jsonString(value)}`;
    else if (typeof value === "number") {
      line += `,"${key}":${Number.isFinite(value) ? value : null}`;
    } else if (typeof value === "boolean" || value === null) line += `,"${key}":${value}`;
    else return undefined;
  }
  return `${line}}\n`;
}

/** The last timestamp written: under load, many lines share a millisecond. */
let lastTime = NaN;
let lastIso = "";

function isoTime(timestamp: number): string {
  if (timestamp !== lastTime) {
    lastTime = timestamp;
    lastIso = new Date(timestamp).toISOString();
  }
  return lastIso;
}

/** A string as JSON, escaped as LogTape escapes it (tested on the short string, not the line). */
function jsonString(text: string): string {
  const json = JSON.stringify(text);
  return C1_CONTROL.test(text) ? json.replace(C1_CONTROLS, escapeControl) : json;
}

/** Keys seen to be plain: safe to write as they are, and not LogTape's own fields. */
const plainKeys = new Set<string>();
const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

function plainKey(key: string): boolean {
  if (plainKeys.has(key)) return true;
  if (!PLAIN_KEY.test(key) || RESERVED.has(key)) return false;
  if (plainKeys.size < 1000) plainKeys.add(key);
  return true;
}

function escapeControl(char: string): string {
  return `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`;
}

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

/** How long a line may wait to be written with those that follow it. */
const FLUSH_MS = 10;
/** Characters of pending lines past which they are written at once. */
const FLUSH_CHARS = 64 * 1024;

/**
 * Writes JSON lines to stdout, those of up to {@linkcode FLUSH_MS} in one write:
 * with a line per request, a write each was a tenth of the router's CPU time
 * under load, and a write and a timer per line still a twentieth with one client
 * at a time (bench/). Lines still pending when the process exits, or dies of an
 * uncaught error, are written then.
 *
 * Kept instead of LogTape's `getStreamSink` with `nonBlocking` (2.4.2), which does
 * the same job otherwise: it awaits one write per line, drops lines once twice its
 * buffer is pending, and cannot write at exit (its flush is async). Measured by
 * `deno run -A bench/log_sink.ts` (one run, stdout a pipe, 50,000 request lines,
 * 3 rounds): 20-22 µs of CPU per line here, all lines written; 27-34 µs there, and
 * 13,000-15,500 of the 50,000 lines written.
 */
export function stdoutSink(formatter: TextFormatter): Sink {
  const encoder = new TextEncoder();
  let pending: string[] = [];
  let chars = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (pending.length === 0) return;
    const bytes = encoder.encode(pending.join(""));
    pending = [];
    chars = 0;
    try {
      for (let written = 0; written < bytes.length;) {
        written += Deno.stdout.writeSync(bytes.subarray(written));
      }
    } catch {
      // Nobody reads stdout any more (a closed pipe): as console.log, drop the lines.
    }
  };
  globalThis.addEventListener("unload", flush);
  globalThis.addEventListener("error", flush);
  globalThis.addEventListener("unhandledrejection", flush);
  return (record) => {
    const formatted = formatter(record);
    const line = formatted.endsWith("\n") ? formatted : `${formatted}\n`;
    pending.push(line);
    chars += line.length;
    if (chars >= FLUSH_CHARS) flush();
    else timer ??= setTimeout(flush, FLUSH_MS);
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
