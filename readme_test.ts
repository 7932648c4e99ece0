import assert from "node:assert/strict";
import { DEMO_CLUSTER, startDemo } from "./sim/demo.ts";
import { envName, FLAGS } from "./config/flags.ts";

/** The curl lines of the `sh` blocks of `file`, with the status each one should get. */
async function readmeExamples(
  file = "./README.md",
): Promise<{ command: string; status: string }[]> {
  const readme = await Deno.readTextFile(new URL(file, import.meta.url));
  const examples = [];
  for (const block of readme.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const line of block[1].split("\n")) {
      if (!line.startsWith("curl ")) continue;
      const [command, comment] = line.split(/\s+#\s*/);
      examples.push({ command, status: /^\d{3}$/.test(comment ?? "") ? comment : "2xx" });
    }
  }
  return examples;
}

Deno.test("every curl example in README.md and docs/*.md works against the demo", async () => {
  const fast = {
    pods: DEMO_CLUSTER.pods.map((pod) => ({ ...pod, loadDelayMs: 20, tokenDelayMs: 1 })),
  };
  await using demo = await startDemo(["--port", "0"], fast);
  const address = new URL(demo.router.url).host;
  const readme = await readmeExamples();
  const api = await readmeExamples("./docs/api.md");
  assert.ok(readme.length >= 15, `only ${readme.length} examples found in README.md`);
  assert.ok(api.length >= 10, `only ${api.length} examples found in docs/api.md`);
  const examples = [...readme, ...api];
  // Every other page of docs/ too: a command moved out of README stays executed.
  for await (const entry of Deno.readDir(new URL("./docs/", import.meta.url))) {
    if (!entry.name.endsWith(".md") || entry.name === "api.md") continue;
    examples.push(...await readmeExamples(`./docs/${entry.name}`));
  }
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

Deno.test("README.md documents every flag with its variable", async () => {
  const readme = await Deno.readTextFile(new URL("./README.md", import.meta.url));
  for (const spec of FLAGS) {
    assert.match(
      readme,
      new RegExp(`\\| \`--${spec.flag}[ \`]`),
      `--${spec.flag} is not in README.md`,
    );
    assert.ok(
      readme.includes(`\`${envName(spec.flag)}\``),
      `${envName(spec.flag)} is not in README.md`,
    );
  }
});
