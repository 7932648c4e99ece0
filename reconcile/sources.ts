/**
 * @module
 * Where `models.yaml` comes from: the ConfigMap `--config` (watched as one object,
 * re-listed on every reconnect), or in static mode the file `--models-file`
 * (re-read when its directory changes, which also catches the symlink swap of a
 * mounted ConfigMap). Each document read goes to the reconciler as text.
 */

import * as k8s from "@kubernetes/client-node";
import { ListWatchLoop } from "../discovery/list_watch.ts";
import type { KubeConnection } from "../discovery/kubernetes.ts";
import { modelsYamlOf } from "./config.ts";
import { logger } from "../log.ts";

const log = logger("config");

/** A document read, or why there is none. */
export type ConfigText =
  | { text: string; key: string; source: string }
  | { missing: string; source: string };

/** Watches the ConfigMap `name` in `namespace` until stopped. */
export class ConfigMapSource {
  readonly #loop: ListWatchLoop<k8s.V1ConfigMap>;
  readonly #api: k8s.CoreV1Api;
  readonly #namespace: string;
  readonly #name: string;
  #uid = "";

  constructor(
    connection: KubeConnection,
    namespace: string,
    name: string,
    onText: (text: ConfigText) => void,
  ) {
    this.#api = connection.config.makeApiClient(k8s.CoreV1Api);
    this.#namespace = namespace;
    this.#name = name;
    const fieldSelector = `metadata.name=${name}`;
    const where = `configmap ${namespace}/${name}`;
    const take = (configMap: k8s.V1ConfigMap | undefined) => {
      this.#uid = configMap?.metadata?.uid ?? "";
      const found = modelsYamlOf(configMap?.data);
      if (!configMap) onText({ missing: `${where} does not exist`, source: where });
      else if (!found) {
        onText({ missing: `${where} has no models.yaml or models.yml key`, source: where });
      } else onText({ text: found.text, key: found.key, source: `${where} ${found.key}` });
    };
    this.#loop = new ListWatchLoop<k8s.V1ConfigMap>(connection.config, {
      what: where,
      list: () => this.#api.listNamespacedConfigMap({ namespace, fieldSelector }),
      watchPath: `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`,
      watchQuery: { fieldSelector },
      onList: (items) => take(items.find((item) => item.metadata?.name === name)),
      onEvent: (phase, item) => take(phase === "DELETED" ? undefined : item),
      onStatus: () => {},
    }, { onRestart: (reason) => connection.onWatchRestart?.("configmap", reason) });
  }

  /** Starts watching; resolves after the first list. */
  start(): Promise<void> {
    return this.#loop.start();
  }

  stop(): Promise<void> {
    return this.#loop.stop();
  }

  /** Records a Warning Event on the ConfigMap, where `kubectl describe` shows it. */
  async reportInvalid(message: string): Promise<void> {
    const now = new Date();
    try {
      await this.#api.createNamespacedEvent({
        namespace: this.#namespace,
        body: {
          metadata: { generateName: `${this.#name}.` },
          involvedObject: {
            apiVersion: "v1",
            kind: "ConfigMap",
            name: this.#name,
            namespace: this.#namespace,
            uid: this.#uid || undefined,
          },
          reason: "InvalidModelsConfig",
          message: message.slice(0, 1000),
          type: "Warning",
          source: { component: "rkllama-router" },
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
    } catch (error) {
      log.warn("could not record an Event on the ConfigMap: {error}", { error: String(error) });
    }
  }
}

/** Reads `path` now and again whenever its directory changes, until stopped. */
export class ModelsFileSource {
  readonly #path: string;
  readonly #onText: (text: ConfigText) => void;
  #watcher: Deno.FsWatcher | undefined;
  #running: Promise<void> | undefined;
  #last: string | undefined;
  #pending: ReturnType<typeof setTimeout> | undefined;

  constructor(path: string, onText: (text: ConfigText) => void) {
    this.#path = path;
    this.#onText = onText;
  }

  /** Reads the file once and starts watching it. */
  async start(): Promise<void> {
    await this.read();
    const dir = this.#path.includes("/")
      ? this.#path.slice(0, this.#path.lastIndexOf("/")) || "/"
      : ".";
    try {
      this.#watcher = Deno.watchFs(dir, { recursive: false });
    } catch (error) {
      log.warn(
        "cannot watch {dir} for changes ({error}); the file is re-read every sync interval",
        {
          dir,
          error: String(error),
        },
      );
      return;
    }
    this.#running = (async () => {
      for await (const _event of this.#watcher!) {
        // An editor's save or a ConfigMap update is a burst of events: read once after it.
        clearTimeout(this.#pending);
        this.#pending = setTimeout(() => void this.read(), 100);
      }
    })();
  }

  /** Reads the file and hands it on when it changed. */
  async read(): Promise<void> {
    const source = `file ${this.#path}`;
    let text: string;
    try {
      text = await Deno.readTextFile(this.#path);
    } catch (error) {
      const reason = error instanceof Deno.errors.NotFound
        ? "does not exist"
        : `cannot be read: ${error instanceof Error ? error.message : error}`;
      const missing = `${this.#path} ${reason}`;
      if (this.#last !== missing) this.#onText({ missing, source });
      this.#last = missing;
      return;
    }
    if (text === this.#last) return;
    this.#last = text;
    this.#onText({ text, key: this.#path.slice(this.#path.lastIndexOf("/") + 1), source });
  }

  async stop(): Promise<void> {
    clearTimeout(this.#pending);
    this.#watcher?.close();
    await this.#running;
  }
}
