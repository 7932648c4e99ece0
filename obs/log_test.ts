import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";

const fields = { method: "POST", path: "/api/chat", pod: "rk-0", durationMs: 12, note: "a b" };

/**
 * The lines a process logs with `setupLogging("info", format)` while it runs
 * `code`, then exits at once: lines are written once per event-loop turn, and
 * those still pending at exit must not be lost.
 */
async function loggedLines(format: "json" | "pretty", code: string): Promise<string[]> {
  const script = `
    import { logger, setupLogging } from "${new URL("./log.ts", import.meta.url).href}";
    const fields = ${JSON.stringify(fields)};
    await setupLogging("info", "${format}");
    ${code}
    Deno.exit(0);
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdin: "null",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return new TextDecoder().decode(output.stdout).split("\n").filter((line) => line !== "");
}

Deno.test("JSON logs put every field at the top level of one object per line", async () => {
  const lines = await loggedLines(
    "json",
    `logger("proxy").info("{method} {path} via {pod}", fields);
     logger("proxy").debug("not at info", fields);`,
  );
  assert.equal(lines.length, 1);
  const record = JSON.parse(lines[0]);
  assert.equal(record.level, "INFO");
  assert.equal(record.logger, "rkllama-router.proxy");
  assert.equal(record.pod, "rk-0");
  assert.equal(record.durationMs, 12);
});

Deno.test("pretty logs show the message, then the fields it does not name", async () => {
  const lines = await loggedLines("pretty", `logger("proxy").warn("{method} {path}", fields);`);
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    / WRN rkllama-router.proxy: POST \/api\/chat pod=rk-0 durationMs=12 note="a b"$/,
  );
});

Deno.test("log lines reach stdout in order, those of a later turn too, including those logged just before exit", async () => {
  const lines = await loggedLines(
    "json",
    `const log = logger("test");
     log.info("first {n}", { n: 1 });
     await new Promise((resolve) => setTimeout(resolve, 0));
     log.warn("second");
     log.error("last, then exit");`,
  );
  assert.deepEqual(lines.map((line) => JSON.parse(line)).map((r) => [r.level, r.message]), [
    ["INFO", "first 1"],
    ["WARN", "second"],
    ["ERROR", "last, then exit"],
  ]);
});

Deno.test("JSON lines are LogTape's own to the byte, plain records and others alike", async () => {
  const { configure, getJsonLinesFormatter, getLogger, reset } = await import("@logtape/logtape");
  const { jsonFormatter, plainJsonLine } = await import("./log.ts");
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { capture: (record) => void records.push(record) },
    loggers: [
      { category: ["t"], lowestLevel: "debug", sinks: ["capture"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  try {
    const log = getLogger(["t", "proxy"]);
    const request = {
      method: "POST",
      path: "/api/chat",
      model: undefined,
      pod: "rk-0",
      status: 200,
      ok: true,
      durationMs: 12,
      bytes: null,
      requestId: 'quote " and \\ and \u0085 and \u0001 and é',
    };
    log.info("{method} {path} {status} via {pod}", request);
    log.warn("no placeholders at all", request);
    log.error("{{literal}} braces and {method}", request);
    log.info("nested {a.b} and spaced { method }", { a: { b: 1 }, method: "GET" });
    log.info("an undefined {model} in the message", request);
    log.info("{error} as an object", { error: new Error("boom", { cause: "x" }) });
    log.info("a field named like LogTape's own: {message}", { message: "m", level: 3 });
    log.debug("numbers {n} {nan}", { n: 1.5, nan: NaN, list: [1, 2] });
    log.info("unclosed {brace", { brace: 1 });
    const logtape = getJsonLinesFormatter({ properties: "flatten" });
    assert.equal(records.length, 9);
    for (const record of records) assert.equal(jsonFormatter(record), logtape(record));
    // The first two take the short way; the others are LogTape's.
    assert.deepEqual(
      records.map((record) => plainJsonLine(record) !== undefined),
      [true, true, false, false, false, false, false, false, false],
    );
  } finally {
    await reset();
  }
});

Deno.test("log lines pending when the process dies of an uncaught error are written", async () => {
  const script = `
    import { logger, setupLogging } from "${new URL("./log.ts", import.meta.url).href}";
    await setupLogging("info", "json");
    logger("test").info("before the crash");
    setTimeout(() => { throw new Error("boom"); }, 0);
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdin: "null",
  }).output();
  assert.equal(output.code, 1);
  const lines = new TextDecoder().decode(output.stdout).split("\n").filter((line) => line);
  assert.deepEqual(lines.map((line) => JSON.parse(line).message), ["before the crash"]);
});
