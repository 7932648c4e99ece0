/**
 * @module
 * Pod records as the store holds them, made up for tests of the routing decisions.
 */

import type { Generation, PodRecord } from "../cluster/store.ts";

/** The clock of {@linkcode podRecord}'s records. */
export const NOW = 1_000_000;

/** A pod holding `holds`, in `state` (routable and idle by default). */
export function podRecord(
  name: string,
  holds: { loaded?: string[]; onDisk?: string[]; loading?: string[] } = {},
  state: {
    inflight?: number;
    ready?: boolean;
    reachable?: boolean;
    ejectedUntil?: number;
    lastSent?: number;
  } = {},
  generation: Generation = "fastapi",
): PodRecord {
  const entries = (names: string[]) => new Map(names.map((n) => [n, { name: n }]));
  return {
    name,
    node: name,
    url: `http://${name}:8080`,
    ready: state.ready ?? true,
    onDisk: entries([...(holds.onDisk ?? []), ...(holds.loaded ?? [])]),
    loaded: entries(holds.loaded ?? []),
    otherModels: new Set(),
    loading: new Map((holds.loading ?? []).map((m) => [m, NOW])),
    polled: true,
    reachable: state.reachable ?? true,
    failedPolls: 0,
    unreachable: false,
    lastPollAt: NOW,
    lastPollError: "",
    busy: "",
    version: "0.0.54",
    generation,
    runtime: {
      inflight: state.inflight ?? 0,
      ejectedUntil: state.ejectedUntil ?? 0,
      ejectedAt: 0,
      ejectedReason: "",
      strikes: 0,
      lastSent: new Map((holds.loaded ?? []).map((m) => [m, state.lastSent ?? NOW])),
    },
  };
}
