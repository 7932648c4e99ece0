/**
 * @module
 * Finding the model a request names, without guessing, and comparing names the way
 * RKLlama does: the namespace (everything up to the first `/`) is dropped, and the
 * router lets `x:latest` stand for a model stored as `x` (and the other way round),
 * which RKLlama itself does not, so the pod is then sent the name it knows.
 */

/** Where in a request the model was named. */
export type ModelSource =
  | { from: "json"; key: string; value: string }
  | { from: "form"; value: string }
  | { from: "path"; value: string; prefix: string; rest: string }
  /** `json`: the body is a JSON object all the same (its label may say otherwise). */
  | { from: "none"; json?: boolean };

/** A request that cannot be routed as sent; `status` is the HTTP status to answer with. */
export class BadRequest extends Error {
  override name = "BadRequest";
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Paths that always need a model; asking without one is the client's mistake (400). */
export const MODEL_REQUIRED: ReadonlySet<string> = new Set([
  "/api/chat",
  "/api/generate",
  "/api/embed",
  "/api/embeddings",
  "/api/show",
  "/api/load",
  "/api/unload",
  "/load_model",
  "/unload_model",
  "/v1/chat/completions",
  "/v1/completions",
  "/v1/embeddings",
  "/v1/images/generations",
  "/v1/audio/speech",
  "/v1/audio/transcriptions",
  "/v1/audio/translations",
]);

/**
 * Paths whose `model` field is not a model the pods hold: `/api/pull` takes a
 * download source there (`owner/repo/file.rkllm`), so it must not be looked up.
 */
const MODEL_IS_NOT_A_NAME = new Set(["/api/pull", "/pull"]);

/** Paths that name the model in a `model_name` field (both RKLlama generations). */
const MODEL_NAME_FIELD = new Set(["/load_model", "/unload_model"]);

/** `/files/{model}/...`, `/v1/files/{model}/...` and `/api/modelfile/{model}[/...]`. */
const PATH_MODEL = /^(\/files\/|\/v1\/files\/|\/api\/modelfile\/)([^/]+)(.*)$/;

/**
 * Paths on which RKLlama loads the model if it is not loaded (inside the request),
 * so two of them at once could start two loads. Only these go through the cold
 * gate; `/api/show` or `/files/...` on an unloaded model load nothing.
 */
const LOADS_MODEL = new Set([
  "/api/chat",
  "/api/generate",
  "/api/embed",
  "/api/embeddings",
  "/api/load",
  "/load_model",
  "/v1/chat/completions",
  "/v1/completions",
  "/v1/embeddings",
  "/v1/audio/speech",
  "/v1/audio/transcriptions",
  "/v1/audio/translations",
]);

/** Paths that unload one model (JSON `model`, `name` or `model_name`) on success. */
const UNLOADS_MODEL = new Set(["/api/unload", "/unload_model", "/api/delete", "/rm"]);

/** Paths that unload every model of the pod on success. */
const UNLOADS_ALL = new Set(["/unload_models", "/force_unload_all"]);

/** True when a request to `path` makes the pod load its model if needed. */
export function loadsModel(path: string): boolean {
  return LOADS_MODEL.has(path);
}

/**
 * Paths whose work a pod carries on when the client leaves (RKLlama stops no
 * generation, load or download), so the router reads their answers to the end
 * rather than cut the connection: see relayBody in upstream.ts. Other answers
 * (listings, files) are cut.
 */
export function runsOnWithoutClient(path: string): boolean {
  return LOADS_MODEL.has(path) || MODEL_IS_NOT_A_NAME.has(path);
}

/** What a successful request to `path` unloads: one model, all, or nothing. */
export function unloads(path: string): "model" | "all" | "none" {
  if (UNLOADS_MODEL.has(path)) return "model";
  if (UNLOADS_ALL.has(path)) return "all";
  return "none";
}

/** True when the path cannot be served without a model. */
export function needsModel(path: string): boolean {
  return MODEL_REQUIRED.has(path);
}

/**
 * Finds the model a request names: the URL path, else the multipart field `model`,
 * else the JSON body's `model_name` (`/load_model`), `model` or `name`.
 *
 * @param path the URL path as received (percent-encoded)
 * @param contentType the request's Content-Type, or empty
 * @param body the whole request body, or null when there is none
 * @throws {BadRequest} for a body that is not JSON where JSON is needed, or a model that is not a string
 */
export async function findModel(
  path: string,
  contentType: string,
  body: Uint8Array<ArrayBuffer> | null,
): Promise<ModelSource> {
  const inPath = PATH_MODEL.exec(path);
  if (inPath) {
    let value: string;
    try {
      value = decodeURIComponent(inPath[2]);
    } catch {
      throw new BadRequest(400, `the path '${path}' is not validly percent-encoded`);
    }
    if (value === "." || value === ".." || value.includes("/")) {
      throw new BadRequest(400, `'${value}' is not a model name`);
    }
    return { from: "path", value, prefix: inPath[1], rest: inPath[3] };
  }
  if (body === null || body.length === 0) return { from: "none" };
  if (MODEL_IS_NOT_A_NAME.has(path)) return { from: "none", json: isJsonObject(body) };
  const type = contentType.split(";")[0].trim().toLowerCase();
  if (type === "multipart/form-data") return await findFormModel(contentType, body);
  if (type !== "" && type !== "application/json" && !type.endsWith("+json")) {
    // curl -d sends x-www-form-urlencoded by default; a body that is JSON anyway is
    // still routed by its model, anything else passes through untouched.
    const loose = tryParseJson(body);
    if (loose === undefined) {
      if (MODEL_REQUIRED.has(path)) throw new BadRequest(400, notJson(body));
      return { from: "none" };
    }
    return modelFromJson(path, loose);
  }
  const parsed = tryParseJson(body);
  if (parsed === undefined) throw new BadRequest(400, notJson(body));
  return modelFromJson(path, parsed);
}

async function findFormModel(
  contentType: string,
  body: Uint8Array<ArrayBuffer>,
): Promise<ModelSource> {
  let form: FormData;
  try {
    form = await new Response(body, { headers: { "content-type": contentType } })
      .formData();
  } catch {
    throw new BadRequest(400, "the multipart form body cannot be parsed");
  }
  const value = form.get("model");
  if (value === null) return { from: "none" };
  if (typeof value !== "string") {
    throw new BadRequest(400, "the form field 'model' must be text, not a file");
  }
  return value === "" ? { from: "none" } : { from: "form", value };
}

function isJsonObject(body: Uint8Array<ArrayBuffer>): boolean {
  const parsed = tryParseJson(body);
  return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed);
}

function modelFromJson(path: string, parsed: unknown): ModelSource {
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    if (MODEL_REQUIRED.has(path)) {
      throw new BadRequest(400, "the request body must be a JSON object");
    }
    return { from: "none" };
  }
  const object = parsed as Record<string, unknown>;
  const keys = MODEL_NAME_FIELD.has(path) ? ["model_name"] : ["model", "name"];
  for (const key of keys) {
    const value = object[key];
    if (value === undefined || value === null) continue;
    if (typeof value !== "string") {
      throw new BadRequest(400, `'${key}' must be a string, got ${jsonType(value)}`);
    }
    if (value === "") continue;
    return { from: "json", key, value };
  }
  return { from: "none", json: true };
}

function jsonType(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  return `a ${typeof value}`;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/** Why a body is not JSON: its bytes are not UTF-8 text, or the text is not JSON. */
function notJson(body: Uint8Array<ArrayBuffer>): string {
  try {
    decoder.decode(body);
  } catch {
    return "the request body is not valid UTF-8, so not valid JSON";
  }
  return "the request body is not valid JSON";
}

/** Lenient decoding has no strict check, and costs a third as much (bench/). */
const lenient = new TextDecoder();

function tryParseJson(body: Uint8Array<ArrayBuffer>): unknown {
  try {
    let text = lenient.decode(body);
    // A replacement character: bytes that are not UTF-8, or one the client sent.
    if (text.includes("\uFFFD")) text = decoder.decode(body);
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Drops the namespace as RKLlama does: everything up to and including the first `/`. */
export function stripNamespace(name: string): string {
  const slash = name.indexOf("/");
  return slash === -1 ? name : name.slice(slash + 1);
}

/**
 * The name the pods know for a requested model, or undefined when no pod has it.
 *
 * @example
 * ```ts
 * resolveModel("library/qwen:latest", new Set(["qwen"])); // "qwen"
 * ```
 */
export function resolveModel(requested: string, known: ReadonlySet<string>): string | undefined {
  const name = stripNamespace(requested);
  if (known.has(name)) return name;
  if (name.endsWith(":latest")) {
    const bare = name.slice(0, -":latest".length);
    if (known.has(bare)) return bare;
  } else if (!name.includes(":") && known.has(`${name}:latest`)) {
    return `${name}:latest`;
  }
  return undefined;
}

/**
 * The body with the top-level string field `key` set to `value`, every other byte
 * as sent (no re-serialisation: key order, numbers and escapes are kept).
 * Returns undefined when the field is not a top-level string.
 */
export function replaceTopLevelString(
  text: string,
  key: string,
  value: string,
): string | undefined {
  let depth = 0;
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (ch === '"') {
      const end = stringEnd(text, i);
      if (end === -1) return undefined;
      if (depth === 1) {
        let j = end + 1;
        while (j < text.length && /\s/.test(text[j])) j++;
        if (text[j] === ":" && JSON.parse(text.slice(i, end + 1)) === key) {
          j++;
          while (j < text.length && /\s/.test(text[j])) j++;
          if (text[j] !== '"') return undefined;
          const valueEnd = stringEnd(text, j);
          if (valueEnd === -1) return undefined;
          return text.slice(0, j) + JSON.stringify(value) + text.slice(valueEnd + 1);
        }
      }
      i = end + 1;
      continue;
    }
    if (ch === "{" || ch === "[") depth++;
    else if (ch === "}" || ch === "]") depth--;
    i++;
  }
  return undefined;
}

/** Index of the quote closing the JSON string that starts at `start`, or -1. */
function stringEnd(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === '"') return i;
  }
  return -1;
}
