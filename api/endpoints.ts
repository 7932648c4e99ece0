/**
 * @module
 * Every path the router knows, one row each: who answers it, whether it is inference, how
 * it names a model, whether a board loads or unloads a model for it, whether it needs the
 * admin token, and its metric label. The front door, the admin check, the model finder, the
 * proxy and the metrics all read this table, as Ollama registers every route in one function
 * (`server/routes.go`), so that no two path lists can disagree.
 */

/** One row of {@linkcode ENDPOINTS}. */
export interface Endpoint {
  /** The path as a board reads it (percent-decoded); with `prefix`, every path below it. */
  readonly path: string;
  readonly prefix: boolean;
  /**
   * `router`: the router answers it (writes get a 405 unless the row takes them, as
   * `/router/force_unload_all` does); `router-get`: the router answers GET and HEAD, other
   * methods go to a board like any unknown path; `pod`: a board answers it.
   */
  readonly answeredBy: "router" | "router-get" | "pod";
  /**
   * Generation or embeddings, the bulk of the traffic: a `POST` to it, spelled exactly so, goes
   * straight to a board, needing no routing of the router's own and no admin token.
   */
  readonly inference: boolean;
  /**
   * Where the request names its model: `required` (a 400 without one), `optional` (the JSON
   * body or a multipart field, when present), `model_name` (required, in that JSON field),
   * `path` (`/files/{model}/...`), `source` (`model` holds a download source, not a name the
   * boards hold: never looked up), `none` (the router answers it and needs none).
   */
  readonly model: "required" | "optional" | "model_name" | "path" | "source" | "none";
  /** RKLlama loads the named model inside the request when it is not loaded (the cold gate). */
  readonly loads: boolean;
  /** What a successful request unloads from its board. */
  readonly unloads: "model" | "all" | "none";
  /** When `--admin-token` is set: needed by `always` every method, by `writes` all but reads. */
  readonly admin: "always" | "writes" | "never";
  /** The `route` label of its metrics: the path itself, or `other` (series stay bounded). */
  readonly metric: "path" | "other";
}

type Row = [
  path: string,
  answeredBy: Endpoint["answeredBy"],
  inference: boolean,
  model: Endpoint["model"],
  loads: boolean,
  unloads: Endpoint["unloads"],
  admin: Endpoint["admin"],
  metric: Endpoint["metric"],
];

/**
 * A path ending in `*` is a prefix. Model management (pull, delete, create, load, unload, on
 * both RKLlama generations; docs/operations.md#security) needs the token: loads and unloads move
 * NPU memory under everyone's requests, deletes lose files. Any path not here goes to a board,
 * as {@linkcode OTHER} says.
 */
// deno-fmt-ignore
const ROWS: readonly Row[] = [
  // path                       answered by    infer  model         loads  unloads  admin     metric
  ["/api/chat",                 "pod",         true,  "required",   true,  "none",  "never",  "path"],
  ["/api/generate",             "pod",         true,  "required",   true,  "none",  "never",  "path"],
  ["/api/embed",                "pod",         true,  "required",   true,  "none",  "never",  "path"],
  ["/api/embeddings",           "pod",         true,  "required",   true,  "none",  "never",  "path"],
  ["/v1/chat/completions",      "pod",         true,  "required",   true,  "none",  "never",  "path"],
  ["/v1/completions",           "pod",         true,  "required",   true,  "none",  "never",  "path"],
  ["/v1/embeddings",            "pod",         true,  "required",   true,  "none",  "never",  "path"],
  ["/v1/images/generations",    "pod",         false, "required",   false, "none",  "never",  "path"],
  ["/v1/audio/speech",          "pod",         false, "required",   true,  "none",  "never",  "path"],
  ["/v1/audio/transcriptions",  "pod",         false, "required",   true,  "none",  "never",  "path"],
  ["/v1/audio/translations",    "pod",         false, "required",   true,  "none",  "never",  "path"],
  ["/api/show",                 "pod",         false, "required",   false, "none",  "never",  "path"],
  ["/api/version",              "pod",         false, "optional",   false, "none",  "never",  "path"],
  ["/api/push",                 "pod",         false, "optional",   false, "none",  "never",  "path"],
  ["/api/copy",                 "pod",         false, "optional",   false, "none",  "never",  "path"],
  ["/api/load",                 "pod",         false, "required",   true,  "none",  "always", "path"],
  ["/load_model",               "pod",         false, "model_name", true,  "none",  "always", "path"],
  ["/api/unload",               "pod",         false, "required",   false, "model", "always", "path"],
  ["/unload_model",             "pod",         false, "model_name", false, "model", "always", "path"],
  ["/api/delete",               "pod",         false, "optional",   false, "model", "always", "path"],
  ["/rm",                       "pod",         false, "optional",   false, "model", "always", "path"],
  ["/unload_models",            "pod",         false, "optional",   false, "all",   "always", "path"],
  ["/force_unload_all",         "pod",         false, "optional",   false, "all",   "always", "other"],
  ["/api/pull",                 "pod",         false, "source",     false, "none",  "always", "path"],
  ["/pull",                     "pod",         false, "source",     false, "none",  "always", "path"],
  ["/api/create",               "pod",         false, "optional",   false, "none",  "always", "path"],
  ["/api/debug",                "pod",         false, "optional",   false, "none",  "always", "other"],
  ["/files/*",                  "pod",         false, "path",       false, "none",  "never",  "other"],
  ["/v1/files/*",               "pod",         false, "path",       false, "none",  "never",  "other"],
  ["/api/modelfile/*",          "pod",         false, "path",       false, "none",  "writes", "other"],
  ["/",                         "router",      false, "none",       false, "none",  "never",  "other"],
  ["/health",                   "router",      false, "none",       false, "none",  "never",  "other"],
  ["/health/ready",             "router",      false, "none",       false, "none",  "never",  "other"],
  ["/metrics",                  "router",      false, "none",       false, "none",  "never",  "other"],
  ["/api/tags",                 "router",      false, "none",       false, "none",  "never",  "other"],
  ["/api/ps",                   "router",      false, "none",       false, "none",  "never",  "other"],
  ["/v1/models",                "router",      false, "none",       false, "none",  "never",  "other"],
  ["/v1/models/*",              "router-get",  false, "none",       false, "none",  "never",  "other"],
  ["/ui",                       "router",      false, "none",       false, "none",  "never",  "other"],
  ["/ui/",                      "router-get",  false, "none",       false, "none",  "never",  "other"],
  ["/router/status",            "router",      false, "none",       false, "none",  "writes", "other"],
  ["/router/pods",              "router",      false, "none",       false, "none",  "writes", "other"],
  ["/router/models",            "router",      false, "none",       false, "none",  "writes", "other"],
  ["/router/plan",              "router",      false, "none",       false, "none",  "writes", "other"],
  ["/router/events",            "router",      false, "none",       false, "none",  "writes", "other"],
  ["/router/force_unload_all",  "router",      false, "none",       false, "all",   "writes", "other"],
  ["/router/*",                 "router",      false, "none",       false, "none",  "writes", "other"],
];

/** Every path the router knows, exact paths first, then prefixes, longest first. */
export const ENDPOINTS: readonly Endpoint[] = ROWS.map((
  [path, answeredBy, inference, model, loads, unloads, admin, metric],
) => ({
  path: path.endsWith("*") ? path.slice(0, -1) : path,
  prefix: path.endsWith("*"),
  answeredBy,
  inference,
  model,
  loads,
  unloads,
  admin,
  metric,
}));

/** Any path not in the table: a board answers it, with the model in its body if it names one. */
export const OTHER: Endpoint = {
  path: "",
  prefix: true,
  answeredBy: "pod",
  inference: false,
  model: "optional",
  loads: false,
  unloads: "none",
  admin: "never",
  metric: "other",
};

const EXACT = new Map(ENDPOINTS.filter((row) => !row.prefix).map((row) => [row.path, row]));
const PREFIXES = ENDPOINTS.filter((row) => row.prefix)
  .sort((a, b) => b.path.length - a.path.length);

/**
 * The row of `path` (as a board reads it: canonical, see http/canonical_url.ts): its exact
 * row, else the longest prefix row it falls under, else {@linkcode OTHER}.
 *
 * @example
 * ```ts
 * endpointOf("/api/chat").inference; // true
 * endpointOf("/files/qwen/x").model; // "path"
 * ```
 */
export function endpointOf(path: string): Endpoint {
  const exact = EXACT.get(path);
  if (exact !== undefined) return exact;
  for (const row of PREFIXES) if (path.startsWith(row.path)) return row;
  return OTHER;
}

/** True for a `POST` to an inference path as written: a board's, needing no admin token. */
export function isInference(method: string, path: string): boolean {
  return method === "POST" && (EXACT.get(path)?.inference ?? false);
}

/** True when `method` only reads (the methods no admin check and no own-path 405 applies to). */
export function isRead(method: string): boolean {
  return method === "GET" || method === "HEAD" || method === "OPTIONS";
}
