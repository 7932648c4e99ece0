/**
 * The status page in a real headless browser (`deno task test:ui`): Debian's
 * chromium driven by playwright-core. The page must follow the cluster live, with
 * no reload: pods, then a model loading and loaded after a models-file change, and
 * a router restart it reconnects through.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { parseConfig } from "../config.ts";
import { startRouter } from "../main.ts";
import { startSimCluster } from "../sim/cluster.ts";
import { startWorld } from "../sim/fixture.ts";

const CHROMIUM = "/usr/bin/chromium";
const hasChromium = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();
if (!hasChromium) {
  console.log(`skipping the status page tests: no ${CHROMIUM} (apt-get install chromium)`);
}

/** Every wait on the page is bounded; loads in the simulated cluster take a few seconds. */
const WAIT = { timeout: 30_000 };

async function withBrowser(run: (page: Page) => Promise<void>): Promise<void> {
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (
        message.type() === "error" && !/ERR_CONNECTION_REFUSED|Failed to load/.test(message.text())
      ) {
        problems.push(`console: ${message.text()}`);
      }
    });
    await run(page);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
}

Deno.test({
  name:
    "the status page shows the pods, then a model loading and loaded after a config change, live",
  ignore: !hasChromium,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "rkllama-ui-" });
    const modelsFile = join(dir, "models.yaml");
    await Deno.writeTextFile(modelsFile, "models:\n  qwen:\n    replicas: 1\n");
    await using cluster = await startSimCluster({
      firstAddress: 90,
      pods: [
        { name: "board-a", models: ["qwen", "phi"], loaded: ["qwen"], loadDelayMs: 3000 },
        { name: "board-b", models: ["phi"], loadDelayMs: 3000 },
      ],
    });
    const parsed = parseConfig(
      [
        "--backends",
        cluster.backends,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--models-file",
        modelsFile,
      ],
      () => undefined,
    );
    if (parsed.help) throw new Error("unreachable");
    let router = await startRouter(parsed.config);
    try {
      await withBrowser(async (page) => {
        await page.goto(`${router.url}/ui`);
        await page.locator("#live", { hasText: "live" }).waitFor(WAIT);
        // A marker a reload would lose: everything below arrives through /router/events.
        await page.evaluate(() => Object.assign(globalThis, { notReloaded: true }));
        await page.locator('[data-pod="board-a"][data-state="routable"] [data-loaded="qwen"]')
          .waitFor(WAIT);
        await page.locator('[data-pod="board-b"][data-state="routable"]').waitFor(WAIT);
        await page.locator('[data-config="valid"]').waitFor(WAIT);
        assert.equal(
          await page.locator('[data-model="phi"] td').nth(1).innerText(),
          "not in config",
        );

        await Deno.writeTextFile(
          modelsFile,
          "models:\n  qwen:\n    replicas: 1\n  phi:\n    nodes: [board-b]\n",
        );
        await page.locator('[data-pod="board-b"] [data-loading="phi"]').waitFor(WAIT);
        await page.locator('[data-model="phi"] [data-count]', { hasText: "0 / 1" }).waitFor(WAIT);
        await page.locator('[data-pod="board-b"] [data-loaded="phi"]').waitFor(WAIT);
        await page.locator('[data-model="phi"] [data-count]', { hasText: "1 / 1" }).waitFor(WAIT);
        await page.locator('[data-outcome="done"]', { hasText: "load phi on board-b" })
          .waitFor(WAIT);

        // A refused config shows its error with the line, and the last good one stays.
        await Deno.writeTextFile(modelsFile, "models:\n  qwen:\n    replicas: -1\n");
        await page.locator("[data-config-error]", { hasText: "line 3" }).waitFor(WAIT);

        // The request's time to first byte reaches the models table.
        const answer = await fetch(`${router.url}/api/generate`, {
          method: "POST",
          body: JSON.stringify({ model: "qwen", prompt: "hi", stream: false }),
        });
        assert.equal(answer.status, 200);
        await answer.body?.cancel();
        await page.locator('[data-model="qwen"] td.n', { hasText: /^\d+ ms$/ }).waitFor(WAIT);

        // The router restarts on the same address; the page reconnects by itself.
        const port = Number(new URL(router.url).port);
        await router.shutdown();
        await page.locator("#live", { hasText: "reconnecting" }).waitFor(WAIT);
        router = await startRouter({ ...parsed.config, port });
        await page.locator("#live", { hasText: "live" }).waitFor(WAIT);
        await page.locator('[data-pod="board-b"] [data-loaded="phi"]').waitFor(WAIT);
        assert.equal(await page.evaluate(() => "notReloaded" in globalThis), true);

        // On a phone the page is one column and never scrolls sideways.
        await page.setViewportSize({ width: 390, height: 844 });
        assert.equal(
          await page.evaluate("document.documentElement.scrollWidth <= innerWidth"),
          true,
        );

        const shot = join(dir, "ui.png");
        await page.screenshot({ path: shot, fullPage: true });
        const png = await Deno.readFile(shot);
        assert.deepEqual([...png.slice(1, 4)], [0x50, 0x4e, 0x47]);
        console.log(`screenshot: ${shot} (${png.length} bytes)`);
      });
    } finally {
      await router.shutdown();
    }
  },
});

Deno.test({
  name: "force unload asks to confirm, and asks for the admin token when the router needs one",
  ignore: !hasChromium,
  async fn() {
    await using world = await startWorld(
      { firstAddress: 95, pods: [{ name: "board-a", models: ["qwen"], loaded: ["qwen"] }] },
      { adminToken: "s3cret" },
    );
    const seen: (string | null)[] = [];
    await withBrowser(async (page) => {
      page.on("request", (request) => {
        if (request.url().endsWith("/force_unload_all")) {
          seen.push(request.headers()["authorization"] ?? null);
        }
      });
      await page.goto(`${world.url}/ui`);
      const button = page.locator('[data-action="force-unload"]');
      const answers: string[] = [];
      const next = (...replies: (string | false)[]) => {
        page.removeAllListeners("dialog");
        page.on("dialog", (dialog) => {
          answers.push(dialog.type());
          const reply = replies.shift();
          void (reply === false ? dialog.dismiss() : dialog.accept(reply || undefined));
        });
      };
      const sent = () =>
        page.waitForResponse((response) => response.url().endsWith("/force_unload_all"), WAIT);
      // Declining the confirmation sends nothing (the requests below are all there is).
      next(false);
      await button.click();
      // A wrong token is refused, and forgotten.
      next("", "wrong");
      await Promise.all([sent(), button.click()]);
      await page.locator("#notice", { hasText: "refused the admin token" }).waitFor(WAIT);
      assert.deepEqual(world.cluster.pods[0].loadedModels(), ["qwen"]);
      // The right one works, and is kept for this tab only: the next click asks no token.
      next("", "s3cret");
      await Promise.all([sent(), button.click()]);
      await page.locator("#notice", { hasText: "completed on 1/1" }).waitFor(WAIT);
      assert.deepEqual(world.cluster.pods[0].loadedModels(), []);
      next("");
      await Promise.all([sent(), button.click()]);
      assert.deepEqual(answers, ["confirm", "confirm", "prompt", "confirm", "prompt", "confirm"]);
      assert.deepEqual(seen, ["Bearer wrong", "Bearer s3cret", "Bearer s3cret"]);
    });
  },
});
