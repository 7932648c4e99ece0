import assert from "node:assert/strict";

Deno.test("deno task demo logs as its router flags say (--log-format here)", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-no-legacy-abort",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      new URL("./demo.ts", import.meta.url).pathname,
      "--port",
      "0",
      "--log-format",
      "pretty",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  let output = "";
  try {
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) {
      output += decoder.decode(chunk, { stream: true });
      if (output.includes("Ctrl-C stops it.") && output.includes("listening on")) break;
    }
  } finally {
    clearTimeout(timer);
    child.kill("SIGTERM");
    await child.status;
  }
  const listening = output.split("\n").find((line) => line.includes("listening on"));
  assert.ok(listening, output);
  // Text for people, not the default JSON line.
  assert.match(listening, /^\d{4}-\d\d-\d\d .* INF rkllama-router.main: listening on /);
});
