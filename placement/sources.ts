/**
 * @module
 * Where `models.yaml` comes from in Kubernetes mode: the ConfigMap `--config`
 * (watched as one object, re-listed on every reconnect). Each document read goes
 * to the reconciler as text. Static mode reads a file instead (models_file.ts),
 * without loading the Kubernetes client this needs.
 */

import * as k8s from "@kubernetes/client-node";
import { ListWatchLoop } from "../kube/list_watch.ts";
import type { KubeConnection } from "../kube/kubernetes.ts";
import { modelsYamlOf } from "../config/models.ts";
import { logger } from "../obs/log.ts";
import type { ConfigText } from "./models_file.ts";

const log = logger("config");

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
