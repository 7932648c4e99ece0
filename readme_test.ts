import assert from "node:assert/strict";
import { DEMO_CLUSTER, startDemo } from "./sim/demo.ts";
import { envName, FLAGS } from "./config/flags.ts";

/** README.md and every page of docs/, as paths from the repository root. */
async function pages(): Promise<string[]> {
  const found = ["README.md"];
  for await (const entry of Deno.readDir(new URL("./docs/", import.meta.url))) {
    if (entry.isFile && entry.name.endsWith(".md")) found.push(`docs/${entry.name}`);
  }
  return found.sort();
}

function readPage(page: string): Promise<string> {
  return Deno.readTextFile(new URL(page, import.meta.url));
}

/** The curl lines of the `sh` blocks of `page`, with the status each one should get. */
async function curlExamples(page: string): Promise<{ command: string; status: string }[]> {
  const text = await readPage(page);
  const examples = [];
  for (const block of text.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const line of block[1].split("\n")) {
      if (!line.startsWith("curl ")) continue;
      const [command, comment] = line.split(/\s+#\s*/);
      examples.push({ command, status: /^\d{3}$/.test(comment ?? "") ? comment : "2xx" });
    }
  }
  return examples;
}

/** The anchors GitHub gives the headings of a markdown page. */
function anchors(text: string): Set<string> {
  const found = new Set<string>();
  for (const [, heading] of text.matchAll(/^#+ (.*)$/gm)) {
    found.add(heading.trim().toLowerCase().replace(/[^\p{L}\p{N}_\- ]/gu, "").replaceAll(" ", "-"));
  }
  return found;
}

Deno.test("every curl example in README.md and docs/*.md works against the demo", async () => {
  const fast = {
    pods: DEMO_CLUSTER.pods.map((pod) => ({ ...pod, loadDelayMs: 20, tokenDelayMs: 1 })),
  };
  await using demo = await startDemo(["--port", "0"], fast);
  const address = new URL(demo.router.url).host;
  const examples = [];
  for (const page of await pages()) examples.push(...await curlExamples(page));
  // 24 in README and 13 in docs/api.md before README was split: a moved command stays executed.
  assert.ok(examples.length >= 37, `only ${examples.length} examples found`);
  assert.ok((await curlExamples("README.md")).length >= 2, "README.md shows no curl example");
  for (const { command, status } of examples) {
    const line = command.replaceAll("localhost:8080", address);
    const output = await new Deno.Command("bash", {
      args: ["-c", `${line} --max-time 20 -o /dev/null -w '%{http_code}'`],
      cwd: new URL(".", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const code = new TextDecoder().decode(output.stdout);
    assert.equal(
      output.code,
      0,
      `${command}: curl failed: ${new TextDecoder().decode(output.stderr)}`,
    );
    if (status === "2xx") assert.match(code, /^2\d\d$/, `${command} answered ${code}`);
    else assert.equal(code, status, command);
  }
});

Deno.test("docs/configuration.md documents every flag with its variable", async () => {
  const text = await readPage("docs/configuration.md");
  for (const spec of FLAGS) {
    assert.match(
      text,
      new RegExp(`\\| \`--${spec.flag}[ \`]`),
      `--${spec.flag} is not in docs/configuration.md`,
    );
    assert.ok(
      text.includes(`\`${envName(spec.flag)}\``),
      `${envName(spec.flag)} is not in docs/configuration.md`,
    );
  }
});

Deno.test("every link between README.md, docs/ and the repository's files resolves", async () => {
  const texts = new Map<string, string>();
  for (const page of await pages()) texts.set(page, await readPage(page));
  let checked = 0;
  for (const [page, text] of texts) {
    const links = [
      ...text.matchAll(/\]\(([^)\s]+)\)/g),
      ...text.matchAll(/src="([^"]+)"/g),
    ].map((match) => match[1]).filter((link) => !/^[a-z]+:/.test(link));
    for (const link of links) {
      const [path, fragment] = link.split("#");
      const target = path === ""
        ? new URL(page, import.meta.url)
        : new URL(path, new URL(page, import.meta.url));
      const relative = target.pathname.slice(new URL(".", import.meta.url).pathname.length);
      const exists = await Deno.stat(target).then(() => true, () => false);
      assert.ok(exists, `${page}: ${link} points at ${relative}, which does not exist`);
      if (fragment !== undefined) {
        const linked = texts.get(relative);
        assert.ok(linked !== undefined, `${page}: ${link} has an anchor but is no page`);
        assert.ok(anchors(linked).has(fragment), `${page}: ${link}: no heading #${fragment}`);
      }
      checked++;
    }
  }
  assert.ok(checked >= 50, `only ${checked} links found`);
});
