/**
 * @module
 * The cluster seen as one server: `/api/tags`, `/api/ps`, `/v1/models` and
 * `/v1/models/{id}` answered from the store, in Ollama's and OpenAI's shapes.
 * Only pods that answer polls are counted: a model on an unreachable pod cannot be served.
 * Models are listed as Ollama lists them, with a tag (`qwen2.5-1.5b:latest`): clients
 * check names against the list, and the router takes either form (pods get theirs).
 */

import { Hono } from "hono";
import type { PodModelEntry, PodRecord, Store } from "../cluster/store.ts";
import { errorResponse } from "../api/errors.ts";
import { resolveModel } from "../api/model_name.ts";

/** The Hono app for the aggregated listings. */
export function aggregateRoutes(store: Store): Hono {
  const app = new Hono();
  app.get("/api/tags", (c) => c.json({ models: onDiskModels(store).map(tagEntry) }));
  app.get("/api/ps", (c) => c.json({ models: loadedModels(store) }));
  app.get(
    "/v1/models",
    (c) => c.json({ object: "list", data: openAIModels(store).map(openAIModel) }),
  );
  app.get("/v1/models/:id{.+}", (c) => {
    const id = c.req.param("id");
    const models = openAIModels(store);
    const name = resolveModel(id, new Set(models.map((m) => m.name)));
    const found = models.find((m) => m.name === name);
    if (!found) {
      return errorResponse(c.req.path, 404, `The model '${id}' does not exist`);
    }
    // As Ollama answers: the model under the id it was asked for.
    return c.json({ ...openAIModel(found), id });
  });
  return app;
}

interface NamedEntry {
  name: string;
  entry: PodModelEntry;
}

/** Pods that answer polls, in name order. */
function servingPods(store: Store): PodRecord[] {
  return store.podList.value.filter((pod) => pod.ready && pod.reachable);
}

/** Each model on disk somewhere, once, with the entry of the first pod (by name) that has it. */
function onDiskModels(store: Store): NamedEntry[] {
  const seen = new Map<string, PodModelEntry>();
  for (const pod of servingPods(store)) {
    for (const [name, entry] of pod.onDisk) {
      if (!seen.has(name)) seen.set(name, entry);
    }
  }
  return [...seen].sort(([a], [b]) => a.localeCompare(b)).map(([name, entry]) => ({
    name,
    entry,
  }));
}

/** What `/v1/models` lists: the models on disk plus image, speech and transcription models. */
function openAIModels(store: Store): NamedEntry[] {
  const models = onDiskModels(store);
  const names = new Set(models.map((model) => model.name));
  for (const pod of servingPods(store)) {
    for (const name of pod.otherModels) {
      if (!names.has(name)) {
        names.add(name);
        models.push({ name, entry: {} });
      }
    }
  }
  return models.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * A model's name as Ollama lists it: with its tag, `:latest` when it has none.
 * RKLlama names models by directory, untagged; Ollama clients compare names in
 * that form (langchain-ollama refuses `x:latest` that the list calls `x`).
 *
 * @example
 * ```ts
 * ollamaName("qwen2.5-1.5b"); // "qwen2.5-1.5b:latest"
 * ollamaName("qwen:7b"); // "qwen:7b"
 * ```
 */
export function ollamaName(name: string): string {
  return name.includes(":") ? name : `${name}:latest`;
}

function tagEntry({ name, entry }: NamedEntry): Record<string, unknown> {
  return {
    name: ollamaName(name),
    model: ollamaName(name),
    modified_at: entry.modified_at ?? "",
    size: entry.size ?? 0,
    digest: entry.digest ?? "",
    details: entry.details ?? {},
  };
}

function openAIModel({ name, entry }: NamedEntry): Record<string, unknown> {
  const modified = Date.parse(String(entry.modified_at ?? ""));
  return {
    id: ollamaName(name),
    object: "model",
    created: Number.isFinite(modified) ? Math.floor(modified / 1000) : 0,
    owned_by: "rkllama",
  };
}

/** Every loaded copy of every model, with the pod and node that hold it. */
function loadedModels(store: Store): Record<string, unknown>[] {
  const models: Record<string, unknown>[] = [];
  for (const pod of servingPods(store)) {
    for (const [name, entry] of [...pod.loaded].sort(([a], [b]) => a.localeCompare(b))) {
      models.push({
        ...entry,
        name: ollamaName(name),
        model: ollamaName(name),
        size: entry.size ?? 0,
        digest: entry.digest ?? "",
        details: entry.details ?? {},
        expires_at: rfc3339(entry.expires_at),
        loaded_at: rfc3339(entry.loaded_at),
        last_call: rfc3339(entry.last_call),
        // RKLlama reports null; the ollama CLI reads size_vram == size as "100% GPU",
        // the closest it has to "in NPU memory", and 0 as "100% CPU", which is wrong.
        size_vram: entry.size_vram ?? entry.size ?? 0,
        pod_name: pod.name,
        node_name: pod.node,
      });
    }
  }
  return models;
}

/**
 * RKLlama writes `/api/ps` times as `2026-11-27 20:58:32.598478` (no zone). Clients
 * such as Ollama's Go client only read RFC 3339, so the router sends
 * `2026-11-27T20:58:32.598478Z`: the literal `Z` is RKLlama's own convention
 * elsewhere, and pods in containers run in UTC unless told otherwise.
 */
export function rfc3339(value: unknown): unknown {
  if (typeof value !== "string") return value;
  const match = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)$/.exec(value);
  return match ? `${match[1]}T${match[2]}Z` : value;
}
