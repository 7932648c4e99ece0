import assert from "node:assert/strict";
import { startWorld } from "../sim/fixture.ts";

Deno.test("writes to the router's own paths are a JSON 405 and reach no board", async () => {
  await using world = await startWorld({ pods: [{ models: ["qwen"], loaded: ["qwen"] }] });
  const [pod] = world.cluster.pods;
  const before = pod.events.length;
  for (const [method, path] of [["POST", "/api/tags"], ["DELETE", "/metrics"], ["PUT", "/ui"]]) {
    const response = await fetch(world.url + path, { method, body: "{}" });
    assert.equal(response.status, 405, `${method} ${path}`);
    assert.equal(response.headers.get("allow"), "GET, HEAD");
    assert.match((await response.json()).error, new RegExp(`${method} is not allowed on`));
  }
  const reached = pod.events.slice(before).filter((e) =>
    e.type === "request" && e.method !== "GET"
  );
  assert.deepEqual(reached, []);
  const tags = await fetch(`${world.url}/api/tags`);
  assert.equal(tags.status, 200);
  await tags.body?.cancel();
});
