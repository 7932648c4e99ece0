/**
 * @module
 * The layer order of the router's folders, in one place, and a test that reads the module graph
 * from `deno info --json` and fails when an import runs against it.
 */
import assert from "node:assert/strict";

/**
 * From the top (the composition root) to the bottom (configuration). A module may import modules
 * of its own entry and of any entry below it; never above, nor a neighbour on the same row.
 * `obs/` is split: the metrics name pods' states and models (cluster, api), while every layer logs.
 */
export const LAYERS: readonly (readonly string[])[] = [
  ["sim/"], // simulated boards and API server, for tests and the demo
  ["main.ts"], // the entry: flags, then the rest loaded; signals
  ["router.ts"], // the composition root: builds the parts and wires them
  ["http/"], // the front door: canonical URLs, own paths, CORS, health
  ["proxy/", "admin/", "status/"], // data plane, admin endpoints, status page
  ["placement/"], // models.yaml sources, the reconciler, its plan and how it is applied
  ["obs/metrics.ts"], // Prometheus metrics
  ["kube/"], // Kubernetes: connection, list-watch, pod watch, Lease
  ["cluster/"], // cluster state: the store, the poller, static backends
  ["api/"], // what the API says: error bodies, request ids, model names, the admin check
  ["rkllama/"], // calls to a board: upstream requests, their deadlines, the router's own calls
  ["obs/log.ts"], // logs
  ["config/"], // flags and models.yaml's schema
  ["time/"], // pure time arithmetic: the one backoff
];

/** The row and entry of LAYERS a path relative to the repository belongs to, or undefined. */
function layerOf(path: string): { row: number; entry: string } | undefined {
  for (const [row, entries] of LAYERS.entries()) {
    for (const entry of entries) {
      if (entry.endsWith("/") ? path.startsWith(entry) : path === entry) return { row, entry };
    }
  }
  return undefined;
}

/** Every import between the repository's own modules reachable from `roots`. */
async function localImports(roots: string[]): Promise<{ from: string; to: string }[]> {
  const root = new URL(".", import.meta.url);
  const edges: { from: string; to: string }[] = [];
  for (const module of roots) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", module],
      cwd: root.pathname,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(output.success, new TextDecoder().decode(output.stderr));
    const graph = JSON.parse(new TextDecoder().decode(output.stdout));
    for (const { specifier, dependencies = [] } of graph.modules) {
      if (!specifier.startsWith(root.href)) continue;
      for (const dependency of dependencies) {
        for (const resolved of [dependency.code?.specifier, dependency.type?.specifier]) {
          if (!resolved?.startsWith(root.href)) continue;
          edges.push({
            from: specifier.slice(root.href.length),
            to: resolved.slice(root.href.length),
          });
        }
      }
    }
  }
  return edges;
}

Deno.test("every import of the router's modules runs down the layer order", async () => {
  const edges = await localImports(["main.ts", "sim/demo.ts", "sim/fixture.ts"]);
  assert.ok(edges.length > 50, `only ${edges.length} imports found`);
  const wrong: string[] = [];
  for (const { from, to } of edges) {
    const a = layerOf(from);
    const b = layerOf(to);
    if (!a) wrong.push(`${from} is in no layer`);
    if (!b) wrong.push(`${to} is in no layer`);
    if (!a || !b || a.entry === b.entry) continue;
    if (b.row <= a.row) wrong.push(`${from} imports ${to}, which is not below it`);
  }
  assert.deepEqual([...new Set(wrong)], []);
});

Deno.test("the layer check catches an import that runs up", () => {
  const a = layerOf("cluster/store.ts")!;
  const b = layerOf("proxy/proxy.ts")!;
  assert.ok(b.row < a.row, "the store must not import the proxy");
  assert.equal(layerOf("routes/proxy.ts"), undefined);
});
