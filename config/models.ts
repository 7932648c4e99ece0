/**
 * @module
 * Parsing and validating `models.yaml`, the ConfigMap key that says which models to
 * keep loaded where. Pure: text in, a {@linkcode DesiredConfig} or one sentence naming
 * the first problem and its line out. Whoever reads the ConfigMap keeps the last good
 * config when this says no.
 */

import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  type YAMLMap,
} from "yaml";

/** Where one model should be kept loaded; exactly one of `replicas` and `nodes` is set. */
export interface ModelPlacement {
  /** The model's directory name on the pods. */
  name: string;
  /** Keep this many copies loaded, on any pods: the minimum when copies are added on demand. */
  replicas?: number;
  /**
   * The most copies on demand may bring it to (with `replicas` only); undefined: as
   * many as pods have it on disk.
   */
  maxReplicas?: number;
  /** Keep a copy loaded on the pods of exactly these nodes. */
  nodes?: string[];
  /** Higher is placed first; 0 when not given. */
  priority: number;
  /** 1-based line of the model's key in the YAML, for messages. */
  line: number;
}

/** Everything `models.yaml` asks for. */
export interface DesiredConfig {
  /** In document order. */
  models: ModelPlacement[];
}

/** A parsed config, or the sentence that says what is wrong with it. */
export type ConfigResult = { ok: true; config: DesiredConfig } | { ok: false; error: string };

/** Keys allowed under a model, in the order messages list them. */
const MODEL_KEYS = ["replicas", "maxReplicas", "nodes", "priority"];

/**
 * Picks the models file from a ConfigMap's `data`: `models.yaml`, else `models.yml`
 * (the seed read both).
 *
 * @returns the key used and its text, or undefined when the ConfigMap has neither
 */
export function modelsYamlOf(
  data: Record<string, string> | undefined,
): { key: string; text: string } | undefined {
  if (data === undefined) return undefined;
  for (const key of ["models.yaml", "models.yml"]) {
    if (Object.hasOwn(data, key)) return { key, text: data[key] };
  }
  return undefined;
}

/**
 * Parses and validates `models.yaml`. An empty document, `models:` and `models: {}`
 * all mean "nothing desired". Validation is strict (unknown keys, wrong types,
 * duplicates are errors) because a typo that is silently ignored leaves a board
 * without the model the operator asked for.
 *
 * A model must say `replicas` or `nodes`: one with neither is an error rather than
 * "one copy", because every copy holds NPU memory on a board and freezes the pod
 * while it loads, and pods load any model on its first request anyway, so listing a
 * model should never cost a load by accident.
 *
 * Names are taken as written: a model or node name that YAML would read as a number
 * or a boolean (`1.50:`, `nodes: [007]`) keeps the text in the file, since that is
 * the directory or node name the operator typed.
 *
 * @param knownNodes when given and non-empty, every `nodes` entry must be one of them;
 *   pass the nodes of every pod known, routable or not, or a board that is rebooting
 *   makes the whole config invalid
 * @param key the ConfigMap key the text came from, to name it in messages
 * @returns the config, or `error`: one sentence such as
 *   `models.yaml line 4: 'replicas' of model 'qwen' must be a whole number of 0 or more, got -1`
 * @throws {Deno.errors.NotCapable} when the process may not read the environment
 *   variables `LOG_TOKENS` and `LOG_STREAM`: npm:yaml looks them up while parsing
 * @example
 * ```ts
 * const result = parseModelsConfig("models:\n  qwen:\n    replicas: 2\n");
 * if (result.ok) result.config.models[0]; // { name: "qwen", replicas: 2, priority: 0, line: 2 }
 * ```
 */
export function parseModelsConfig(
  text: string,
  knownNodes?: ReadonlySet<string>,
  key = "models.yaml",
): ConfigResult {
  const lines = new LineCounter();
  // uniqueKeys off: duplicates are reported below, with both lines and in our words.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  const syntaxError = doc.errors[0];
  if (syntaxError) {
    const at = lines.linePos(syntaxError.pos[0]);
    const detail = syntaxError.code === "MULTIPLE_DOCS"
      ? "a second document starts here ('---'); keep all models in one document"
      : `invalid YAML at column ${at.col}: ${syntaxError.message}`;
    return { ok: false, error: `${key} line ${at.line}: ${detail}` };
  }
  try {
    return { ok: true, config: new Reader(doc, lines, knownNodes).config() };
  } catch (error) {
    if (error instanceof Invalid) {
      return { ok: false, error: `${key} line ${error.line}: ${error.message}` };
    }
    throw error;
  }
}

/** The first problem found; unwinds the walk so only that one is reported. */
class Invalid extends Error {
  constructor(readonly line: number, message: string) {
    super(message);
  }
}

/** A YAML node with aliases followed, and the line where it was written (the alias's, for one). */
interface Located {
  node: unknown;
  line: number;
}

/** A key of a mapping, its name as text, and its value. */
interface Entry {
  name: string;
  line: number;
  value: Located;
}

class Reader {
  constructor(
    readonly doc: Document,
    readonly lines: LineCounter,
    readonly knownNodes: ReadonlySet<string> | undefined,
  ) {}

  config(): DesiredConfig {
    const root = this.#resolve(this.doc.contents, 1);
    if (isNothing(root.node)) return { models: [] };
    if (!isMap(root.node)) {
      throw new Invalid(
        root.line,
        `expected a mapping with a 'models' key, like 'models: {qwen: {replicas: 1}}', got ${
          describe(root.node)
        }`,
      );
    }
    const entries = this.#entries(
      root.node,
      (name, first) => `'${name}' appears twice (first on line ${first}); keep one`,
    );
    for (const entry of entries) {
      if (entry.name !== "models") {
        throw new Invalid(
          entry.line,
          `unknown key '${entry.name}' at the top level (allowed: models); remove it`,
        );
      }
    }
    const models = entries[0];
    if (models === undefined) {
      throw new Invalid(
        root.line,
        "no 'models' key; list the models to keep loaded under 'models:'",
      );
    }
    if (isNothing(models.value.node)) return { models: [] };
    if (!isMap(models.value.node)) {
      throw new Invalid(
        models.value.line,
        `'models' must map model names to placements, like 'models: {qwen: {replicas: 1}}', got ${
          describe(models.value.node)
        }`,
      );
    }
    const placements = this.#entries(
      models.value.node,
      (name, first) => `model '${name}' is listed twice (first on line ${first}); keep one`,
    );
    return { models: placements.map((entry) => this.#model(entry)) };
  }

  #model(entry: Entry): ModelPlacement {
    const { name, line } = entry;
    if (name === "") {
      throw new Invalid(line, "a model has no name; write its directory name before the ':'");
    }
    if (name.includes("/")) {
      throw new Invalid(
        line,
        `model name '${name}' contains '/'; write the model's directory name on the pods, like '${
          name.slice(name.lastIndexOf("/") + 1)
        }'`,
      );
    }
    const body = entry.value.node;
    if (!isNothing(body) && !isMap(body)) {
      const count = isScalar(body) && Number.isSafeInteger(body.value) && Number(body.value) >= 0
        ? Number(body.value)
        : 1;
      throw new Invalid(
        entry.value.line,
        `model '${name}' must map to its placement, like '${name}: {replicas: ${count}}', got ${
          describe(body)
        }`,
      );
    }
    const keys = isMap(body)
      ? this.#entries(
        body,
        (key, first) => `model '${name}' sets '${key}' twice (first on line ${first}); keep one`,
      )
      : [];
    for (const key of keys) {
      if (!MODEL_KEYS.includes(key.name)) {
        throw new Invalid(
          key.line,
          `unknown key '${key.name}' under model '${name}' (allowed: ${MODEL_KEYS.join(", ")})`,
        );
      }
    }
    const given = new Map(keys.map((key) => [key.name, key.value]));
    const replicas = given.get("replicas");
    const nodes = given.get("nodes");
    if (replicas && nodes) {
      throw new Invalid(line, `model '${name}' sets both 'replicas' and 'nodes'; use one`);
    }
    if (!replicas && !nodes) {
      throw new Invalid(
        line,
        `model '${name}' has neither 'replicas' nor 'nodes'; add 'replicas: 1' to keep one copy loaded, or 'nodes: [...]' to keep it on those boards`,
      );
    }
    // Values are checked in document order, so the first bad one is the one reported.
    const checks = [...given].sort(([, a], [, b]) => a.line - b.line);
    const placement: ModelPlacement = { name, priority: 0, line };
    for (const [key, value] of checks) {
      if (key === "replicas") {
        placement.replicas = wholeNumber(value, `'replicas' of model '${name}'`, 0);
      } else if (key === "maxReplicas") {
        placement.maxReplicas = wholeNumber(value, `'maxReplicas' of model '${name}'`, 1);
      } else if (key === "nodes") {
        placement.nodes = this.#nodes(value, name);
      } else {
        placement.priority = wholeNumber(value, `'priority' of model '${name}'`);
      }
    }
    const maxReplicas = given.get("maxReplicas");
    if (maxReplicas && nodes) {
      // A pinned model is kept on exactly those boards: copies elsewhere are unloaded.
      throw new Invalid(
        maxReplicas.line,
        `model '${name}' sets 'maxReplicas' with 'nodes'; copies on demand need 'replicas' (the minimum) instead of 'nodes'`,
      );
    }
    if (
      placement.maxReplicas !== undefined && placement.replicas !== undefined &&
      placement.maxReplicas < placement.replicas
    ) {
      throw new Invalid(
        maxReplicas!.line,
        `'maxReplicas' of model '${name}' must be at least its 'replicas' (${placement.replicas}), got ${placement.maxReplicas}`,
      );
    }
    return placement;
  }

  #nodes(value: Located, model: string): string[] {
    const list = value.node;
    if (!isSeq(list)) {
      const example = isScalar(list) && !isNothing(list) ? `[${scalarText(list)}]` : "[rk3588-a]";
      throw new Invalid(
        value.line,
        `'nodes' of model '${model}' must be a list of node names, like 'nodes: ${example}', got ${
          describe(list)
        }`,
      );
    }
    if (list.items.length === 0) {
      throw new Invalid(
        value.line,
        `'nodes' of model '${model}' is empty; list at least one node, or write 'replicas: 0' to unload it everywhere`,
      );
    }
    const seen = new Set<string>();
    const known = this.knownNodes?.size ? this.knownNodes : undefined;
    return list.items.map((item) => {
      const at = this.#resolve(item, value.line);
      if (isNothing(at.node)) {
        throw new Invalid(
          at.line,
          `model '${model}' lists a node with no name; write the node's name or remove the entry`,
        );
      }
      if (!isScalar(at.node)) {
        throw new Invalid(
          at.line,
          `each entry of 'nodes' of model '${model}' must be a node name, got ${describe(at.node)}`,
        );
      }
      const node = scalarText(at.node);
      if (seen.has(node)) {
        throw new Invalid(
          at.line,
          `node '${node}' is listed twice under model '${model}'; list it once`,
        );
      }
      seen.add(node);
      if (known && !known.has(node)) {
        throw new Invalid(
          at.line,
          `node '${node}' of model '${model}' is not a node of any RKLlama pod (known: ${
            [...known].sort().join(", ")
          })`,
        );
      }
      return node;
    });
  }

  /** The mapping's keys as text, in order; refuses keys that are not names and duplicates. */
  #entries(map: YAMLMap, duplicate: (name: string, firstLine: number) => string): Entry[] {
    const mapLine = this.#lineOf(map, 1);
    const firstLine = new Map<string, number>();
    return map.items.map((pair) => {
      const key = this.#resolve(pair.key, mapLine);
      if (!isNothing(key.node) && !isScalar(key.node)) {
        throw new Invalid(
          key.line,
          `keys must be plain names like 'qwen', got ${describe(key.node)}`,
        );
      }
      const name = isScalar(key.node) ? scalarText(key.node) : "";
      const first = firstLine.get(name);
      if (first !== undefined) throw new Invalid(key.line, duplicate(name, first));
      firstLine.set(name, key.line);
      return { name, line: key.line, value: this.#resolve(pair.value, key.line) };
    });
  }

  /** Follows an alias to its anchor, keeping the line where the alias was written. */
  #resolve(site: unknown, fallbackLine: number): Located {
    const line = this.#lineOf(site, fallbackLine);
    if (!isAlias(site)) return { node: site, line };
    const node = site.resolve(this.doc);
    if (node === undefined) {
      throw new Invalid(
        line,
        `alias '*${site.source}' refers to no anchor; define '&${site.source}' before using it`,
      );
    }
    return { node, line };
  }

  #lineOf(node: unknown, fallback: number): number {
    const range = (node as { range?: [number, number, number] } | null)?.range;
    return range ? this.lines.linePos(range[0]).line : fallback;
  }
}

/** True for a missing value: an empty document, `key:` with nothing after it, `~`, `null`. */
function isNothing(node: unknown): boolean {
  return node === null || node === undefined || (isScalar(node) && node.value === null);
}

/**
 * A scalar as text. Plain scalars that YAML reads as numbers or booleans give the
 * text as written (`1.50`, not `1.5`): names are what the operator typed.
 */
function scalarText(node: { value: unknown; source?: string }): string {
  if (node.value === null) return "";
  if (typeof node.value === "string") return node.value;
  return node.source ?? String(node.value);
}

/** How a value reads in a message: `-1`, `'two'`, `a list`. */
function describe(node: unknown): string {
  if (isNothing(node)) return "nothing";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isScalar(node)) {
    return typeof node.value === "string" ? `'${node.value}'` : scalarText(node);
  }
  return "something else";
}

/** Reads a whole number of at least `min` (when given), or says what is wrong. */
function wholeNumber(value: Located, what: string, min?: number): number {
  const node = value.node;
  const number = isScalar(node) ? node.value : undefined;
  if (typeof number === "number" && Number.isSafeInteger(number) && number >= (min ?? -Infinity)) {
    return number;
  }
  const range = min === undefined ? "a whole number" : `a whole number of ${min} or more`;
  const quoted = isScalar(node) && typeof number === "string" && /^\s*[-+]?\d+\s*$/.test(number)
    ? " in quotes, which YAML reads as text; remove the quotes"
    : "";
  throw new Invalid(value.line, `${what} must be ${range}, got ${describe(node)}${quoted}`);
}
