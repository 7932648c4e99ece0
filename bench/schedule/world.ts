/**
 * @module
 * Where the schedule benchmark touches the rest of the repository (besides
 * main.ts's `--log`, which sets up the router's log): a
 * router started in this process (router.ts, via sim/fixture.ts) in front of
 * simulated RKLlama boards (sim/pod.ts). When those files move, fix the imports
 * here.
 */

import { startWorld } from "../../sim/fixture.ts";
import type { SimEvent } from "../../sim/pod.ts";

/** One simulated board to start. */
export interface SimBoard {
  name: string;
  models: string[];
  loaded: string[];
  loadDelayMs: number;
  /** Models it holds at once; a load past it fails, as RKLlama's does when its NPU is full. */
  maxLoaded: number;
  tokenDelayMs: number;
  tokens: number;
}

/** What the benchmark needs from a simulated board. */
export interface BoardHandle {
  readonly name: string;
  readonly events: readonly SimEvent[];
  readonly maxConcurrentGenerations: number;
  /** The most generation requests that ran or waited on the board at once. */
  readonly maxQueuedOnPod: number;
  readonly orphanedWorkers: number;
  pause(): void;
  resume(): void;
}

/** A router in front of simulated boards; `await using` stops both. */
export interface RouterWorld extends AsyncDisposable {
  url: string;
  boards: BoardHandle[];
}

/** Loopback addresses 127.0.0.60 to .79 are this benchmark's. */
const FIRST_ADDRESS = 60;

/**
 * Starts the boards (FA, one generation at a time) and the router as it is today,
 * its `--max-loaded` the smallest of the boards' (the flag is one for all boards).
 */
export async function startRouterWorld(boards: readonly SimBoard[]): Promise<RouterWorld> {
  if (boards.length > 20) throw new Error("bench:schedule has 20 loopback addresses for boards");
  const world = await startWorld({
    firstAddress: FIRST_ADDRESS,
    pods: boards.map((board) => ({
      name: board.name,
      flavor: "fa" as const,
      models: board.models,
      loaded: board.loaded,
      loadDelayMs: board.loadDelayMs,
      maxLoaded: board.maxLoaded,
      tokenDelayMs: board.tokenDelayMs,
      tokens: Array.from({ length: board.tokens }, (_, i) => `t${i} `),
    })),
  }, { maxLoaded: Math.min(...boards.map((board) => board.maxLoaded)) });
  return {
    url: world.url,
    boards: world.cluster.pods,
    [Symbol.asyncDispose]: () => world[Symbol.asyncDispose](),
  };
}
