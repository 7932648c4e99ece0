/**
 * `deno task screenshot`: the status page against the demo cluster (`deno task
 * demo`, with a placement config so the reconciler has something to show), saved
 * as docs/ui.png (laptop) and docs/ui-phone.png for the README and docs/operations.md. Needs
 * /usr/bin/chromium.
 */

import { join } from "node:path";
import { chromium } from "playwright-core";
import { startDemo } from "../sim/demo.ts";

const dir = await Deno.makeTempDir({ prefix: "rkllama-screenshot-" });
const modelsFile = join(dir, "models.yaml");
const config = (extra: string) =>
  Deno.writeTextFile(
    modelsFile,
    [
      "models:",
      "  qwen2.5-1.5b:",
      "    replicas: 2",
      "    priority: 10",
      "  phi-3-mini:",
      "    nodes: [rk3576-c]",
      extra,
    ].join("\n"),
  );
await config("");
await using demo = await startDemo(["--port", "0", "--models-file", modelsFile]);
const url = demo.router.url;
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium" });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(`${url}/ui`);
  await page.locator("#live", { hasText: "live" }).waitFor();
  await page.locator('[data-pod="rk3576-c"] [data-loaded="phi-3-mini"]').waitFor();
  // Some traffic for the request counters, one request at a time.
  for (let i = 0; i < 6; i++) {
    const answer = await fetch(`${url}/api/chat`, {
      method: "POST",
      body: JSON.stringify({
        model: "qwen2.5-1.5b",
        messages: [{ role: "user", content: "Hi" }],
        stream: false,
      }),
    });
    await answer.text();
  }
  await page.locator('[data-model="qwen2.5-1.5b"] td.n', { hasText: /^\d+ ms$/ }).waitFor();
  // A model asked for that is still loading when the picture is taken.
  await config("  deepseek-r1-1.5b:\n    replicas: 1\n");
  await page.locator('[data-pod="rk3588-a"] [data-loading="deepseek-r1-1.5b"]').waitFor();
  await page.screenshot({ path: "docs/ui.png", fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: "docs/ui-phone.png" });
  console.log("wrote docs/ui.png and docs/ui-phone.png");
} finally {
  await browser.close();
  await Deno.remove(dir, { recursive: true });
}
