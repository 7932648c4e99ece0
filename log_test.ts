import assert from "node:assert/strict";

Deno.test("log lines reach stdout as JSON lines, in order, including those logged just before exit", async () => {
  const log = new URL("./log.ts", import.meta.url).href;
  const script = `
    import { logger, setupLogging } from "${log}";
    await setupLogging("info");
    const log = logger("test");
    await new Promise((resolve) => setTimeout(resolve, 0));
    log.info("first {n}", { n: 1 });
    log.warn("second");
    log.debug("not at info");
    log.error("last, then exit");
    Deno.exit(0);
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdin: "null",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  const records = new TextDecoder().decode(output.stdout).trim().split("\n").map((line) =>
    JSON.parse(line)
  );
  assert.deepEqual(records.map((r) => [r.level, r.message, r.logger]), [
    ["INFO", "first 1", "rkllama-router.test"],
    ["WARN", "second", "rkllama-router.test"],
    ["ERROR", "last, then exit", "rkllama-router.test"],
  ]);
});
