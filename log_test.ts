import assert from "node:assert/strict";

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
