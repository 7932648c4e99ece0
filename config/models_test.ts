import assert from "node:assert/strict";
import { type DesiredConfig, modelsYamlOf, parseModelsConfig } from "./models.ts";

const KNOWN_NODES = new Set(["rk3588-b", "rk3588-a"]);

function configOf(text: string, knownNodes?: ReadonlySet<string>): DesiredConfig {
  const result = parseModelsConfig(text, knownNodes);
  if (!result.ok) throw new Error(`expected a valid config, got: ${result.error}`);
  return result.config;
}

function errorOf(text: string, knownNodes?: ReadonlySet<string>): string {
  const result = parseModelsConfig(text, knownNodes);
  if (result.ok) throw new Error(`expected an error, got ${JSON.stringify(result.config)}`);
  return result.error;
}

/** Lines joined with newlines, so each case reads like the file it stands for. */
const yaml = (...lines: string[]) => lines.join("\n") + "\n";

Deno.test("parseModelsConfig() reads the documented example with each model's line", () => {
  const text = yaml(
    "models:",
    "  qwen2.5-1.5b:",
    "    replicas: 2        # keep it loaded on 2 pods (any nodes)",
    "    priority: 10",
    "  phi-3-mini:",
    "    nodes: [rk3588-a, rk3588-b]",
  );
  assert.deepEqual(configOf(text, KNOWN_NODES), {
    models: [
      { name: "qwen2.5-1.5b", replicas: 2, priority: 10, line: 2 },
      { name: "phi-3-mini", nodes: ["rk3588-a", "rk3588-b"], priority: 0, line: 5 },
    ],
  });
});

Deno.test("parseModelsConfig() treats an empty document or an empty 'models' as nothing desired", () => {
  for (const text of ["", "# all models load on demand\n", "~\n", "models:\n", "models: {}\n"]) {
    assert.deepEqual(configOf(text), { models: [] }, JSON.stringify(text));
  }
});

Deno.test("parseModelsConfig() accepts replicas: 0, a negative priority and block-style lists", () => {
  const text = yaml(
    "models:",
    "  old-model:",
    "    replicas: 0",
    "    priority: -5",
    "  phi:",
    "    nodes:",
    "      - rk3588-a",
  );
  assert.deepEqual(configOf(text).models, [
    { name: "old-model", replicas: 0, priority: -5, line: 2 },
    { name: "phi", nodes: ["rk3588-a"], priority: 0, line: 5 },
  ]);
});

Deno.test("parseModelsConfig() reads maxReplicas, the bound of copies on demand", () => {
  const result = parseModelsConfig(
    yaml("models:", "  qwen:", "    replicas: 1", "    maxReplicas: 3"),
  );
  assert.ok(result.ok);
  assert.deepEqual(result.config.models, [
    { name: "qwen", replicas: 1, maxReplicas: 3, priority: 0, line: 2 },
  ]);
});

Deno.test("parseModelsConfig() keeps names YAML would read as numbers as they are written", () => {
  const text = yaml(
    "models:",
    "  1.50:",
    "    nodes: [007, true, 'rk3588-a']",
  );
  assert.deepEqual(configOf(text).models, [
    { name: "1.50", nodes: ["007", "true", "rk3588-a"], priority: 0, line: 2 },
  ]);
});

Deno.test("parseModelsConfig() follows aliases, so boards can be listed once", () => {
  const text = yaml(
    "models:",
    "  phi:",
    "    nodes: &boards [rk3588-a, rk3588-b]",
    "  gemma:",
    "    nodes: *boards",
  );
  assert.deepEqual(configOf(text, KNOWN_NODES).models.map((model) => model.nodes), [
    ["rk3588-a", "rk3588-b"],
    ["rk3588-a", "rk3588-b"],
  ]);
});

Deno.test("parseModelsConfig() checks node names only against a non-empty set of known nodes", () => {
  const text = yaml("models:", "  phi:", "    nodes: [rk9]");
  assert.deepEqual(configOf(text).models[0].nodes, ["rk9"]);
  assert.deepEqual(configOf(text, new Set()).models[0].nodes, ["rk9"]);
});

Deno.test("parseModelsConfig() names the ConfigMap key the text came from", () => {
  const result = parseModelsConfig("models: [qwen]\n", undefined, "models.yml");
  assert.deepEqual(result, {
    ok: false,
    error:
      "models.yml line 1: 'models' must map model names to placements, like 'models: {qwen: {replicas: 1}}', got a list",
  });
});

Deno.test("parseModelsConfig() reports only the first problem in the document", () => {
  const text = yaml(
    "models:",
    "  phi:",
    "    nodes: [rk3588-a]",
    "  qwen:",
    "    replica: 1",
    "  gemma:",
    "    replicas: -1",
  );
  assert.equal(
    errorOf(text),
    "models.yaml line 5: unknown key 'replica' under model 'qwen' (allowed: replicas, maxReplicas, nodes, priority)",
  );
});

Deno.test("parseModelsConfig() reports a misspelt key before the missing placement it causes", () => {
  const text = yaml("models:", "  qwen:", "    priority: 1", "    replica: 2");
  assert.equal(
    errorOf(text),
    "models.yaml line 4: unknown key 'replica' under model 'qwen' (allowed: replicas, maxReplicas, nodes, priority)",
  );
});

/** One row per message: the file, then the exact error. */
const INVALID: [string, string, string][] = [
  [
    "a tab used as indentation",
    yaml("models:", "\tqwen:", "    replicas: 1"),
    "models.yaml line 2: invalid YAML at column 1: Tabs are not allowed as indentation",
  ],
  [
    "an unclosed flow mapping",
    yaml("models:", "  qwen: {replicas: 2"),
    "models.yaml line 3: invalid YAML at column 1: Flow map in block collection must be sufficiently indented and end with a }",
  ],
  [
    "a second document",
    yaml("models: {}", "---", "models: {}"),
    "models.yaml line 2: a second document starts here ('---'); keep all models in one document",
  ],
  [
    "a list at the top",
    yaml("- qwen"),
    "models.yaml line 1: expected a mapping with a 'models' key, like 'models: {qwen: {replicas: 1}}', got a list",
  ],
  [
    "a plain word at the top",
    yaml("qwen"),
    "models.yaml line 1: expected a mapping with a 'models' key, like 'models: {qwen: {replicas: 1}}', got 'qwen'",
  ],
  [
    "a mapping without 'models'",
    yaml("{}"),
    "models.yaml line 1: no 'models' key; list the models to keep loaded under 'models:'",
  ],
  [
    "an unknown top-level key",
    yaml("models: {}", "aliases: {}"),
    "models.yaml line 2: unknown key 'aliases' at the top level (allowed: models); remove it",
  ],
  [
    "'models' twice",
    yaml("models: {}", "models: {}"),
    "models.yaml line 2: 'models' appears twice (first on line 1); keep one",
  ],
  [
    "'models' as a list",
    yaml("models: [qwen]"),
    "models.yaml line 1: 'models' must map model names to placements, like 'models: {qwen: {replicas: 1}}', got a list",
  ],
  [
    "'models' as a word",
    yaml("models: qwen"),
    "models.yaml line 1: 'models' must map model names to placements, like 'models: {qwen: {replicas: 1}}', got 'qwen'",
  ],
  [
    "a model listed twice",
    yaml("models:", "  qwen:", "    replicas: 1", "  qwen:", "    replicas: 2"),
    "models.yaml line 4: model 'qwen' is listed twice (first on line 2); keep one",
  ],
  [
    "a model named by an empty string",
    yaml("models:", '  "":', "    replicas: 1"),
    "models.yaml line 2: a model has no name; write its directory name before the ':'",
  ],
  [
    "a model named by a null",
    yaml("models:", "  ~:", "    replicas: 1"),
    "models.yaml line 2: a model has no name; write its directory name before the ':'",
  ],
  [
    "a model name with a namespace",
    yaml("models:", "  library/qwen:", "    replicas: 1"),
    "models.yaml line 2: model name 'library/qwen' contains '/'; write the model's directory name on the pods, like 'qwen'",
  ],
  [
    "a model name that is a list",
    yaml("models:", "  ? [a, b]", "  : {replicas: 1}"),
    "models.yaml line 2: keys must be plain names like 'qwen', got a list",
  ],
  [
    "a model given a number instead of a mapping",
    yaml("models:", "  qwen: 2"),
    "models.yaml line 2: model 'qwen' must map to its placement, like 'qwen: {replicas: 2}', got 2",
  ],
  [
    "a model given a list instead of a mapping",
    yaml("models:", "  qwen: [rk3588-a]"),
    "models.yaml line 2: model 'qwen' must map to its placement, like 'qwen: {replicas: 1}', got a list",
  ],
  [
    "an unknown key under a model",
    yaml("models:", "  qwen:", "    replica: 2"),
    "models.yaml line 3: unknown key 'replica' under model 'qwen' (allowed: replicas, maxReplicas, nodes, priority)",
  ],
  [
    "a key set twice under a model",
    yaml("models:", "  qwen:", "    replicas: 1", "    replicas: 2"),
    "models.yaml line 4: model 'qwen' sets 'replicas' twice (first on line 3); keep one",
  ],
  [
    "both replicas and nodes",
    yaml("models:", "  qwen:", "    replicas: 1", "    nodes: [rk3588-a]"),
    "models.yaml line 2: model 'qwen' sets both 'replicas' and 'nodes'; use one",
  ],
  [
    "a model with nothing under it",
    yaml("models:", "  qwen:"),
    "models.yaml line 2: model 'qwen' has neither 'replicas' nor 'nodes'; add 'replicas: 1' to keep one copy loaded, or 'nodes: [...]' to keep it on those boards",
  ],
  [
    "a model with only a priority",
    yaml("models:", "  qwen:", "    priority: 3"),
    "models.yaml line 2: model 'qwen' has neither 'replicas' nor 'nodes'; add 'replicas: 1' to keep one copy loaded, or 'nodes: [...]' to keep it on those boards",
  ],
  [
    "negative replicas",
    yaml("models:", "  qwen:", "    priority: 3", "    replicas: -1"),
    "models.yaml line 4: 'replicas' of model 'qwen' must be a whole number of 0 or more, got -1",
  ],
  [
    "fractional replicas",
    yaml("models:", "  qwen:", "    replicas: 1.5"),
    "models.yaml line 3: 'replicas' of model 'qwen' must be a whole number of 0 or more, got 1.5",
  ],
  [
    "infinite replicas",
    yaml("models:", "  qwen:", "    replicas: .inf"),
    "models.yaml line 3: 'replicas' of model 'qwen' must be a whole number of 0 or more, got .inf",
  ],
  [
    "quoted replicas",
    yaml("models:", "  qwen:", '    replicas: "2"'),
    "models.yaml line 3: 'replicas' of model 'qwen' must be a whole number of 0 or more, got '2' in quotes, which YAML reads as text; remove the quotes",
  ],
  [
    "replicas as a word",
    yaml("models:", "  qwen:", "    replicas: two"),
    "models.yaml line 3: 'replicas' of model 'qwen' must be a whole number of 0 or more, got 'two'",
  ],
  [
    "replicas with no value",
    yaml("models:", "  qwen:", "    replicas:"),
    "models.yaml line 3: 'replicas' of model 'qwen' must be a whole number of 0 or more, got nothing",
  ],
  [
    "maxReplicas below replicas",
    yaml("models:", "  qwen:", "    replicas: 2", "    maxReplicas: 1"),
    "models.yaml line 4: 'maxReplicas' of model 'qwen' must be at least its 'replicas' (2), got 1",
  ],
  [
    "maxReplicas of 0",
    yaml("models:", "  qwen:", "    replicas: 0", "    maxReplicas: 0"),
    "models.yaml line 4: 'maxReplicas' of model 'qwen' must be a whole number of 1 or more, got 0",
  ],
  [
    "maxReplicas with nodes",
    yaml("models:", "  phi:", "    nodes: [rk3588-a]", "    maxReplicas: 2"),
    "models.yaml line 4: model 'phi' sets 'maxReplicas' with 'nodes'; copies on demand need 'replicas' (the minimum) instead of 'nodes'",
  ],
  [
    "a priority that is a word",
    yaml("models:", "  qwen:", "    replicas: 1", "    priority: high"),
    "models.yaml line 4: 'priority' of model 'qwen' must be a whole number, got 'high'",
  ],
  [
    "a fractional priority",
    yaml("models:", "  qwen:", "    replicas: 1", "    priority: 0.5"),
    "models.yaml line 4: 'priority' of model 'qwen' must be a whole number, got 0.5",
  ],
  [
    "nodes as one word",
    yaml("models:", "  phi:", "    nodes: rk3588-a"),
    "models.yaml line 3: 'nodes' of model 'phi' must be a list of node names, like 'nodes: [rk3588-a]', got 'rk3588-a'",
  ],
  [
    "nodes as a mapping",
    yaml("models:", "  phi:", "    nodes: {rk3588-b: 1}"),
    "models.yaml line 3: 'nodes' of model 'phi' must be a list of node names, like 'nodes: [rk3588-a]', got a mapping",
  ],
  [
    "an empty nodes list",
    yaml("models:", "  phi:", "    nodes: []"),
    "models.yaml line 3: 'nodes' of model 'phi' is empty; list at least one node, or write 'replicas: 0' to unload it everywhere",
  ],
  [
    "a node listed twice",
    yaml("models:", "  phi:", "    nodes:", "      - rk3588-a", "      - rk3588-a"),
    "models.yaml line 5: node 'rk3588-a' is listed twice under model 'phi'; list it once",
  ],
  [
    "an empty node entry",
    yaml("models:", "  phi:", "    nodes:", "      - rk3588-a", "      -"),
    "models.yaml line 5: model 'phi' lists a node with no name; write the node's name or remove the entry",
  ],
  [
    "a node entry that is a list",
    yaml("models:", "  phi:", "    nodes:", "      - [rk3588-a]"),
    "models.yaml line 4: each entry of 'nodes' of model 'phi' must be a node name, got a list",
  ],
  [
    "a node no pod runs on",
    yaml("models:", "  phi:", "    nodes:", "      - rk3588-a", "      - rk9"),
    "models.yaml line 5: node 'rk9' of model 'phi' is not a node of any RKLlama pod (known: rk3588-a, rk3588-b)",
  ],
  [
    "an alias with no anchor",
    yaml("models:", "  phi:", "    nodes: *boards"),
    "models.yaml line 3: alias '*boards' refers to no anchor; define '&boards' before using it",
  ],
];

for (const [what, text, error] of INVALID) {
  Deno.test(`parseModelsConfig() refuses ${what}, naming the line`, () => {
    assert.equal(errorOf(text, KNOWN_NODES), error);
  });
}

Deno.test("modelsYamlOf() prefers models.yaml over models.yml", () => {
  assert.deepEqual(modelsYamlOf({ "models.yml": "b", "models.yaml": "a" }), {
    key: "models.yaml",
    text: "a",
  });
  assert.deepEqual(modelsYamlOf({ "models.yml": "b", "other": "c" }), {
    key: "models.yml",
    text: "b",
  });
});

Deno.test("modelsYamlOf() returns an empty models.yaml, which means nothing desired", () => {
  assert.deepEqual(modelsYamlOf({ "models.yaml": "" }), { key: "models.yaml", text: "" });
});

Deno.test("modelsYamlOf() returns undefined for a ConfigMap without either key or without data", () => {
  assert.equal(modelsYamlOf({ "config.yaml": "models: {}" }), undefined);
  assert.equal(modelsYamlOf(undefined), undefined);
});
