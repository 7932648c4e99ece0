/**
 * @module
 * `deno task test:clients`: the Python clients people use with Ollama (`ollama`,
 * `openai`, `litellm`, `langchain-ollama`, pinned in test/pyclients/requirements.txt)
 * against the router in front of the REAL RKLlama servers of both generations
 * (../shared/rkllama-real, a stub NPU library under RKLlama's own code): one
 * script per client in test/pyclients/, each checking list, show, chat and
 * generate streaming and not, OpenAI chat and completions, embeddings, name forms
 * (`x`, `x:latest`, `ns/x`) and an unknown model.
 *
 * The FastAPI-generation board holds one model, the Flask one another, and both a
 * third, so every check runs on each generation. Without the real servers' cache
 * (`setup.sh` of ../shared/rkllama-real) or the clients' environment the suite is
 * skipped in one line; with `REQUIRE_PYCLIENTS=1` (CI) it fails instead.
 */

import assert from "node:assert/strict";
import { setUpRealServers, startRealWorld } from "./rkllama_real.ts";

const CLIENTS_DIR = new URL("./pyclients/", import.meta.url).pathname;
const REQUIRED = Deno.env.get("REQUIRE_PYCLIENTS") === "1";

/** What the stub runtime answers: its first STUB_TOKENS words, one token each. */
const STUB = {
  STUB_FINISH_DELAY_MS: "20",
  STUB_LOAD_MS: "300",
  STUB_TOKENS: "6",
  STUB_TOKEN_MS: "25",
};
const EXPECTED_TEXT = "This is a stubbed response from";

const FA_MODEL = "qwen2.5-1.5b";
const FL_MODEL = "qwen2.5-3b";
const BOTH_MODEL = "llama3.2-1b";

async function run(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(command, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

const cache = await setUpRealServers();

/** Why the suite cannot run here, or undefined when it can. */
async function missing(): Promise<string | undefined> {
  if (cache === undefined) return "no real RKLlama servers (../shared/rkllama-real is absent)";
  const venv = await run("bash", [`${CLIENTS_DIR}setup.sh`]);
  if (venv.code !== 0) return `the Python clients could not be installed: ${venv.stderr.trim()}`;
  return undefined;
}

const reason = await missing();
if (reason && !REQUIRED) console.log(`python clients: skipped: ${reason}`);

Deno.test({
  name:
    "the Python ollama, openai, litellm and langchain-ollama clients work through the router in front of real FA and FL boards",
  ignore: reason !== undefined && !REQUIRED,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    if (reason) assert.fail(`REQUIRE_PYCLIENTS=1, but ${reason}`);
    const venv = (await run("bash", [`${CLIENTS_DIR}setup.sh`])).stdout.trim();
    // Loopback addresses of this suite's boards (test:rkllama uses 127.0.0.31-33).
    await using world = await startRealWorld(cache!, [
      { flavor: "fa", host: "127.0.0.46", models: [FA_MODEL, BOTH_MODEL], env: STUB },
      { flavor: "fl", host: "127.0.0.47", models: [FL_MODEL, BOTH_MODEL], env: STUB },
    ]);
    const { router } = world;
    const pods = router.store.podList.value.map((pod) => pod.generation);
    assert.deepEqual(pods, ["fastapi", "flask"]);
    for (const client of ["ollama", "openai", "litellm", "langchain"]) {
      await t.step(client, async () => {
        const result = await run(`${venv}/bin/python`, [`${CLIENTS_DIR}${client}_client.py`], {
          ...STUB,
          ROUTER_URL: router.url,
          FA_MODEL,
          FL_MODEL,
          BOTH_MODEL,
          EXPECTED_TEXT,
          LITELLM_LOCAL_MODEL_COST_MAP: "True",
          PYTHONUNBUFFERED: "1",
        });
        const checks = result.stdout.split("\n").filter((line) => line.startsWith("ok ")).length;
        assert.equal(
          result.code,
          0,
          `${client} failed after ${checks} checks:\n${result.stdout}\n${result.stderr}`,
        );
        assert.ok(checks >= 10, `${client} ran only ${checks} checks`);
      });
    }
  },
});
