/**
 * @module
 * A simulated cluster: several {@linkcode SimPod}s, each on its own loopback
 * address (127.0.0.11, 127.0.0.12, ...), as pods have their own IPs in a real
 * cluster. `backends` is the string for the router's `--backends` flag.
 */

import { type SimPod, type SimPodOptions, startSimPod } from "./pod.ts";

/** How to start a simulated cluster. */
export interface SimClusterOptions {
  /** One entry per pod; hostname defaults to the pod's own loopback address. */
  pods: (Omit<SimPodOptions, "hostname"> & { hostname?: string })[];
  /** Last octet of the first pod's address (default 11). */
  firstAddress?: number;
}

/** A running simulated cluster; `await using` closes it. */
export interface SimCluster extends AsyncDisposable {
  /** In the order they were given. */
  pods: SimPod[];
  /** "name=url,name=url" for the router's --backends flag. */
  backends: string;
  /** Stops every pod. */
  close(): Promise<void>;
}

/** Starts every pod of a simulated cluster; default names are rk-0, rk-1, ... */
export async function startSimCluster(options: SimClusterOptions): Promise<SimCluster> {
  const firstAddress = options.firstAddress ?? 11;
  if (firstAddress + options.pods.length - 1 > 254) {
    throw new Error("sim cluster: not enough loopback addresses for that many pods");
  }
  const starting = options.pods.map((pod, index) =>
    startSimPod({
      ...pod,
      name: pod.name ?? `rk-${index}`,
      hostname: pod.hostname ?? `127.0.0.${firstAddress + index}`,
    })
  );
  const settled = await Promise.allSettled(starting);
  const pods = settled.flatMap((result) => result.status === "fulfilled" ? [result.value] : []);
  const failure = settled.find((result) => result.status === "rejected");
  if (failure) {
    // Do not leak the pods that did start.
    await Promise.all(pods.map((pod) => pod.close()));
    throw (failure as PromiseRejectedResult).reason;
  }
  const close = async () => {
    await Promise.all(pods.map((pod) => pod.close()));
  };
  return {
    pods,
    backends: pods.map((pod) => `${pod.name}=${pod.url}`).join(","),
    close,
    [Symbol.asyncDispose]: close,
  };
}
