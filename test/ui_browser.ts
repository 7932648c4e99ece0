/**
 * The status page in a real headless browser (`deno task test:ui`): Debian's
 * chromium driven by playwright-core. The page must follow the cluster live, with
 * no reload: pods, then a model loading and loaded after a models-file change, and
 * a router restart it reconnects through.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { parseConfig } from "../config/flags.ts";
import { startRouter } from "../router.ts";
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
        // It comes back with an admin token: the open page learns that force unload needs it.
        assert.equal(
          await page.locator('[data-action="force-unload"]').getAttribute("data-token-required"),
          "false",
        );
        router = await startRouter({ ...parsed.config, port, adminToken: "s3cret" });
        await page.locator("#live", { hasText: "live" }).waitFor(WAIT);
        await page.locator('[data-action="force-unload"][data-token-required="true"]')
          .waitFor(WAIT);
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
      {
        firstAddress: 95,
        pods: [
          { name: "board-a", models: ["qwen"], loaded: ["qwen"] },
          // Flask-generation RKLlama has no force unload: not a failure.
          { name: "board-c", flavor: "fl", models: ["phi"] },
        ],
      },
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
      // The token goes into a password field of the page's own dialog, not prompt().
      const input = page.locator("#token-dialog #token-input");
      const giveToken = async (token: string) => {
        await input.waitFor(WAIT);
        assert.equal(await input.getAttribute("type"), "password");
        await input.fill(token);
        await page.locator('#token-dialog [data-token="ok"]').click();
      };
      const sent = () =>
        page.waitForResponse((response) => response.url().endsWith("/force_unload_all"), WAIT);
      // Declining the confirmation sends nothing (the requests below are all there is).
      next(false);
      await button.click();
      // Cancelling the token dialog sends nothing either.
      next("");
      await button.click();
      await input.waitFor(WAIT);
      await page.keyboard.press("Escape");
      await input.waitFor({ ...WAIT, state: "hidden" });
      await page.locator("#notice", { hasText: "Nothing done" }).waitFor(WAIT);
      // A wrong token is refused, and forgotten.
      next("");
      await Promise.all([sent(), button.click().then(() => giveToken("wrong"))]);
      await page.locator("#notice", { hasText: "refused the admin token" }).waitFor(WAIT);
      assert.deepEqual(world.cluster.pods[0].loadedModels(), ["qwen"]);
      // The right one works, and is kept for this tab only: the next click asks no token.
      next("");
      await Promise.all([sent(), button.click().then(() => giveToken("s3cret"))]);
      await page.locator("#notice.ok", { hasText: "completed on 1/2" }).waitFor(WAIT);
      await page.locator("#notice", { hasText: "board-c cannot force unload" }).waitFor(WAIT);
      assert.deepEqual(world.cluster.pods[0].loadedModels(), []);
      next("");
      await Promise.all([sent(), button.click()]);
      assert.deepEqual(answers, ["confirm", "confirm", "confirm", "confirm", "confirm"]);
      assert.deepEqual(seen, ["Bearer wrong", "Bearer s3cret", "Bearer s3cret"]);
    });
  },
});

/** Where the page spills: the document wider than the viewport, or a box wider than its card. */
function spills(page: Page): Promise<string[]> {
  return page.evaluate(`(() => {
    const found = [];
    const root = document.documentElement;
    if (root.scrollWidth > innerWidth) found.push("document " + root.scrollWidth + " > " + innerWidth);
    for (const card of document.querySelectorAll(".pod, .panel")) {
      const box = card.getBoundingClientRect();
      for (const inner of card.querySelectorAll(".badge, .chip, .pod-name")) {
        const edge = inner.getBoundingClientRect();
        if (edge.right > box.right + 0.5 || edge.left < box.left - 0.5) {
          found.push(inner.textContent + " spills out of " + (card.dataset.pod || "a panel"));
        }
      }
    }
    return found;
  })()`);
}

Deno.test({
  name:
    "long model names stay inside the page at 1280 and 390 px; dead copies are not counted; pods sort by number; scroll and selection survive updates",
  ignore: !hasChromium,
  async fn() {
    const long = "qwen2.5-coder-14b-instruct-rk3588-w8a8-opt-1-hybrid-ratio-0.5";
    const dir = await Deno.makeTempDir({ prefix: "rkllama-ui-" });
    const modelsFile = join(dir, "models.yaml");
    await Deno.writeTextFile(modelsFile, `models:\n  ${long}:\n    replicas: 2\n`);
    {
      await using world = await startWorld({
        firstAddress: 100,
        pods: [
          { name: "rk-0", models: ["phi"] },
          { name: "rk-1", models: [long, "phi"], loaded: [long] },
          { name: "rk-2", models: [long], loaded: [long] },
          // Its load of the long model, when rk-2 is gone, outlasts the test.
          { name: "rk-10", models: [long], loadDelayMs: 120_000 },
        ],
      }, { modelsFile, unreachableAfter: 1 });
      await withBrowser(async (page) => {
        await page.goto(`${world.url}/ui`);
        await page.locator("#live", { hasText: "live" }).waitFor(WAIT);
        assert.deepEqual(
          await page.evaluate(
            `[...document.querySelectorAll("[data-pod]")].map((card) => card.dataset.pod)`,
          ),
          ["rk-0", "rk-1", "rk-2", "rk-10"],
        );
        const row = page.locator(`[data-model="${long}"]`);
        await row.locator("[data-count]", { hasText: "2 / 2" }).waitFor(WAIT);

        // rk-2 dies: its copy no longer counts, and says why.
        await world.cluster.pods[2].kill();
        await world.router.poller.pollAll();
        await page.locator('[data-pod="rk-2"][data-state="unreachable"]').waitFor(WAIT);
        await page.locator('[data-pod="rk-2"] .error', { hasText: /refused/i }).waitFor(WAIT);
        await row.locator('[data-dead-copy="rk-2"]', { hasText: "unreachable" }).waitFor(WAIT);
        // The reconciler replaces it on rk-10, whose badge then names the long model.
        await page.locator('[data-pod="rk-10"][data-state="loading"]').waitFor(WAIT);
        await row.locator("[data-count].warn", { hasText: "1 / 2" }).waitFor(WAIT);

        for (const width of [1280, 390]) {
          await page.setViewportSize({ width, height: 900 });
          assert.deepEqual(await spills(page), [], `at ${width} px`);
        }
        await page.screenshot({ path: join(dir, "long-names.png"), fullPage: true });

        // A table scrolled sideways stays where it was when its section is redrawn.
        await page.setViewportSize({ width: 320, height: 700 });
        const box = `document.querySelector("#models .scroll")`;
        const scrollable = await page.evaluate(`${box}.scrollWidth - ${box}.clientWidth`);
        assert.ok(
          Number(scrollable) > 20,
          `the models table is ${scrollable} px wider than its box`,
        );
        await page.evaluate(`${box}.scrollLeft = 20`);
        const answer = await fetch(`${world.url}/api/generate`, {
          method: "POST",
          body: JSON.stringify({ model: "phi", prompt: "hi", stream: false }),
        });
        assert.equal(answer.status, 200);
        await answer.body?.cancel();
        // The request counters are re-read every 2 s: the models section is redrawn.
        await page.locator('[data-model="phi"] td[data-rate]', { hasText: /^1$/ }).waitFor(
          WAIT,
        );
        assert.equal(await page.evaluate(`${box}.scrollLeft`), 20);

        // Text being selected in a section is not swapped away under the mouse: the
        // section waits, and catches up once the selection is gone.
        await page.evaluate(
          `getSelection().selectAllChildren(document.querySelector('[data-pod="rk-0"] .pod-name'))`,
        );
        world.router.store.markLoading("rk-0", "phi", Date.now());
        await page.locator("#summary", { hasText: "2 loading" }).waitFor(WAIT);
        assert.equal(await page.locator('[data-pod="rk-0"] [data-loading="phi"]').count(), 0);
        assert.equal(await page.evaluate(`getSelection().toString()`), "rk-0");
        await page.evaluate(`getSelection().removeAllRanges()`);
        await page.locator('[data-pod="rk-0"] [data-loading="phi"]').waitFor(WAIT);
        console.log(`screenshot: ${join(dir, "long-names.png")}`);
      });
    }
  },
});
