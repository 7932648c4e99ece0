import assert from "node:assert/strict";
import { type ConfigText, ModelsFileSource } from "./models_file.ts";

Deno.test("the models file is read at start and again when it is replaced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "rkllama-router-test-" });
  const path = `${dir}/models.yaml`;
  await Deno.writeTextFile(path, "models: {}\n");
  const seen: ConfigText[] = [];
  let next = Promise.withResolvers<void>();
  const source = new ModelsFileSource(path, (text) => {
    seen.push(text);
    next.resolve();
  });
  await source.start();
  assert.deepEqual(seen, [{ text: "models: {}\n", key: "models.yaml", source: `file ${path}` }]);
  next = Promise.withResolvers<void>();
  // Replaced the way editors and ConfigMap mounts do: a new file renamed over the old one.
  await Deno.writeTextFile(`${dir}/.new`, "models:\n  qwen:\n    replicas: 1\n");
  await Deno.rename(`${dir}/.new`, path);
  await next.promise;
  assert.equal((seen[1] as { text: string }).text, "models:\n  qwen:\n    replicas: 1\n");
  await source.stop();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a missing models file is reported once, not as an empty config", async () => {
  const seen: ConfigText[] = [];
  const source = new ModelsFileSource("/nonexistent/models.yaml", (text) => seen.push(text));
  await source.read();
  await source.read();
  assert.deepEqual(seen, [{
    missing: "/nonexistent/models.yaml does not exist",
    source: "file /nonexistent/models.yaml",
  }]);
});
