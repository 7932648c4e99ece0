/**
 * @module
 * Finding the model a request names, without guessing, and comparing names the way
 * RKLlama does: the namespace (everything up to the first `/`) is dropped, and the
 * router lets `x:latest` stand for a model stored as `x` (and the other way round),
 * which RKLlama itself does not, so the pod is then sent the name it knows.
 */

import { JsonError, type JsonScan, type JsonType, scanJson } from "./json_scan.ts";
import { endpointOf, ENDPOINTS } from "./endpoints.ts";
import { boundaryOf, type FormPart, MultipartError, scanMultipart } from "./multipart_scan.ts";

/** Where in a request the model was named. */
export type ModelSource =
  /**
   * `start` and `end`: the value's bytes in the body, quotes included; `values`:
   * how many JSON values the body holds (what parsing it would cost).
   */
  | { from: "json"; key: string; value: string; start: number; end: number; values: number }
  /** `start` and `end`: the field's content in the body. */
  | { from: "form"; value: string; start: number; end: number }
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

/** `/files/{model}/...`, `/v1/files/{model}/...`, `/api/modelfile/{model}[/...]`: the table's `path` rows. */
const PATH_MODEL = new RegExp(
  `^(${
    ENDPOINTS.filter((row) => row.model === "path").map((row) => RegExp.escape(row.path)).join("|")
  })([^/]+)(.*)$`,
);

/** The top-level fields that may name the model. */
const MODEL_FIELDS = ["model", "name", "model_name"];

/**
 * True when a request to `path` makes the pod load its model if needed (RKLlama loads
 * it inside the request), so two of them at once could start two loads. Only these go
 * through the cold gate; `/api/show` or `/files/...` on an unloaded model load nothing.
 */
export function loadsModel(path: string): boolean {
  return endpointOf(path).loads;
}

/**
 * Paths whose work a pod carries on when the client leaves (RKLlama stops no
 * generation, load or download), so the router reads their answers to the end
 * rather than cut the connection: see relayBody in upstream.ts. Other answers
 * (listings, files) are cut.
 */
export function runsOnWithoutClient(path: string): boolean {
  const endpoint = endpointOf(path);
  return endpoint.loads || endpoint.model === "source";
}

/** What a successful request to `path` unloads: one model, all, or nothing. */
export function unloads(path: string): "model" | "all" | "none" {
  return endpointOf(path).unloads;
}

/** True when the path cannot be served without a model. */
export function needsModel(path: string): boolean {
  const model = endpointOf(path).model;
  return model === "required" || model === "model_name";
}

/**
 * Finds the model a request names: the URL path, else the multipart field `model`,
 * else the JSON body's `model_name` (`/load_model`), `model` or `name`.
 *
 * @param path the URL path as received (percent-encoded)
 * @param contentType the request's Content-Type, or empty
 * @param body the whole request body, or null when there is none; a JSON body or
 * a multipart form is scanned (json_scan.ts, multipart_scan.ts), not parsed, so
 * no body costs more than its own bytes
 * @throws {BadRequest} for a body that is not JSON where JSON is needed (or starts
 * with a byte order mark, or nests too deep), a model that is not a string, or a
 * form that cannot be read, names the model twice or sends it as a file
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
  if (endpointOf(path).model === "source") {
    const scan = await tryScan(body);
    return { from: "none", json: scan?.type === "object" };
  }
  const type = contentType.split(";")[0].trim().toLowerCase();
  if (type === "multipart/form-data") return await findFormModel(contentType, body);
  if (type !== "" && type !== "application/json" && !type.endsWith("+json")) {
    // curl -d sends x-www-form-urlencoded by default; a body that is JSON anyway is
    // still routed by its model, anything else passes through untouched.
    const loose = await tryScan(body);
    if (loose === undefined) {
      if (needsModel(path)) await scanOrRefuse(body);
      return { from: "none" };
    }
    return modelFromJson(path, body, loose);
  }
  return modelFromJson(path, body, await scanOrRefuse(body));
}

/**
 * The form's `model` field, found by scanning (multipart_scan.ts): parsing a 60 MiB
 * form held the event loop for 440-490 ms at once; the scan takes a few ms at a time.
 */
async function findFormModel(
  contentType: string,
  body: Uint8Array<ArrayBuffer>,
): Promise<ModelSource> {
  let fields: FormPart[];
  try {
    fields = await scanMultipart(body, boundaryOf(contentType), ["model"]);
  } catch (error) {
    if (error instanceof MultipartError) throw new BadRequest(400, error.message);
    throw error;
  }
  if (fields.length === 0) return { from: "none" };
  if (fields.length > 1) {
    // FastAPI boards take the last, Flask boards the first: no choice routes right.
    throw new BadRequest(400, "the form field 'model' is given more than once");
  }
  const [field] = fields;
  if (field.filename !== undefined) {
    throw new BadRequest(400, "the form field 'model' must be text, not a file");
  }
  if (field.end === field.start) return { from: "none" };
  const value = lenient.decode(body.subarray(field.start, field.end));
  return { from: "form", value, start: field.start, end: field.end };
}

function modelFromJson(path: string, body: Uint8Array, scan: JsonScan): ModelSource {
  if (scan.type !== "object") {
    if (needsModel(path)) {
      throw new BadRequest(400, "the request body must be a JSON object");
    }
    return { from: "none" };
  }
  const keys = endpointOf(path).model === "model_name" ? ["model_name"] : ["model", "name"];
  for (const key of keys) {
    const field = scan.fields.get(key);
    if (field === undefined || field.type === "null") continue;
    if (field.type !== "string") {
      throw new BadRequest(400, `'${key}' must be a string, got ${article(field.type)}`);
    }
    if (field.end - field.start === 2) continue;
    const value = JSON.parse(lenient.decode(body.subarray(field.start, field.end)));
    return { from: "json", key, value, start: field.start, end: field.end, values: scan.values };
  }
  return { from: "none", json: true };
}

function article(type: JsonType): string {
  return type === "object" || type === "array" ? `an ${type}` : `a ${type}`;
}

/** The scan of a JSON body, or undefined when it is not JSON. */
async function tryScan(body: Uint8Array): Promise<JsonScan | undefined> {
  try {
    return await scanJson(body, MODEL_FIELDS);
  } catch (error) {
    if (error instanceof JsonError) return undefined;
    throw error;
  }
}

/** @throws {BadRequest} 400 saying why, when the body is not JSON */
async function scanOrRefuse(body: Uint8Array): Promise<JsonScan> {
  try {
    return await scanJson(body, MODEL_FIELDS);
  } catch (error) {
    if (error instanceof JsonError) throw new BadRequest(400, error.message);
    throw error;
  }
}

/**
 * JSON model names are validated UTF-8 by then; a form's invalid bytes become
 * U+FFFD, a name no pod has, so no check is needed.
 */
const lenient = new TextDecoder();

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
 * The body with the model named by `source` replaced by `model`, every other
 * byte as sent (no re-serialisation: key order, numbers and escapes are kept).
 * Given as pieces, views of `body` around the new name, as
 * {@linkcode replaceFormModel}: a large body is not copied for a few bytes.
 */
export function replaceJsonModel(
  body: Uint8Array<ArrayBuffer>,
  source: { start: number; end: number },
  model: string,
): Uint8Array<ArrayBuffer>[] {
  return replaced(body, source, JSON.stringify(model));
}

/**
 * The multipart body with the `model` field's content replaced by `model`, every
 * other byte as sent: the boundary and Content-Type stay valid. Given as pieces,
 * views of `body` around the new name, so a large file is neither parsed and
 * written out again (as rebuilding the form did) nor copied.
 */
export function replaceFormModel(
  body: Uint8Array<ArrayBuffer>,
  source: { start: number; end: number },
  model: string,
): Uint8Array<ArrayBuffer>[] {
  return replaced(body, source, model);
}

/** `body` with `[start, end)` replaced by `text`, as views around its bytes. */
function replaced(
  body: Uint8Array<ArrayBuffer>,
  source: { start: number; end: number },
  text: string,
): Uint8Array<ArrayBuffer>[] {
  return [
    body.subarray(0, source.start),
    new TextEncoder().encode(text),
    body.subarray(source.end),
  ];
}
