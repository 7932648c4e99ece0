import assert from "node:assert/strict";
import { logger, setupLogging } from "./log.ts";

/** The lines the router logs while `run` runs, in the given format. */
async function captured(format: "json" | "pretty", run: () => void): Promise<string[]> {
  const lines: string[] = [];
  const original = console.log;
  console.log = (line: string) => lines.push(line);
  try {
    await setupLogging("info", format);
    run();
  } finally {
    console.log = original;
    await setupLogging("info");
  }
  return lines;
}

const fields = { method: "POST", path: "/api/chat", pod: "rk-0", durationMs: 12, note: "a b" };

Deno.test("JSON logs put every field at the top level of one object per line", async () => {
  const lines = await captured("json", () => {
    logger("proxy").info("{method} {path} via {pod}", fields);
    logger("proxy").debug("not at info", fields);
  });
  assert.equal(lines.length, 1);
  const record = JSON.parse(lines[0]);
  assert.equal(record.level, "INFO");
  assert.equal(record.logger, "rkllama-router.proxy");
  assert.equal(record.pod, "rk-0");
  assert.equal(record.durationMs, 12);
});

Deno.test("pretty logs show the message, then the fields it does not name", async () => {
  const lines = await captured("pretty", () => logger("proxy").warn("{method} {path}", fields));
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    / WRN rkllama-router.proxy: POST \/api\/chat pod=rk-0 durationMs=12 note="a b"$/,
  );
});
