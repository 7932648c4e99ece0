/**
 * @module
 * Two ways to serve a trace, as pure discrete-event simulations (no sockets, no
 * clocks): the seed's rule, and the lower bound the issue measures the router
 * against. Both treat a board as FA does: one generation at a time, and a board
 * that loads a model serves nothing meanwhile.
 */

import type { Scenario, TraceRequest } from "./trace.ts";

/** What happened to one request. Times are ms from the start of the trace. */
export interface Outcome {
  id: number;
  arrivalMs: number;
  /** The answer's first byte; undefined when the request was refused. */
  firstByteMs?: number;
  /** The answer's last byte (or the refusal). */
  endMs: number;
  /** "ok", or why not: "rejected" (503 and the like) or "error". */
  status: "ok" | "rejected" | "error";
  board?: string;
}

/** A run of a scenario by one policy. */
export interface Run {
  outcomes: Outcome[];
  /** Loads started on boards during the run. */
  loads: number;
  /** Time each board spent generating, ms. */
  busyMs: number[];
}

/**
 * The seed's rule: each request goes at once to the next loaded copy of its model,
 * round-robin, and queues on that board (first come, first served); a model
 * loaded nowhere is refused (503). Nothing is ever loaded.
 */
export function seedRule(scenario: Scenario): Run {
  const freeAt = scenario.boards.map(() => 0);
  const busyMs = scenario.boards.map(() => 0);
  const turn = new Map<string, number>();
  const outcomes: Outcome[] = [];
  for (const request of byArrival(scenario.requests)) {
    const copies = scenario.boards.flatMap((board, index) =>
      board.loaded.includes(request.model) ? [index] : []
    );
    if (copies.length === 0) {
      outcomes.push({
        id: request.id,
        arrivalMs: request.atMs,
        endMs: request.atMs,
        status: "rejected",
      });
      continue;
    }
    const next = turn.get(request.model) ?? 0;
    turn.set(request.model, next + 1);
    const board = copies[next % copies.length];
    const start = Math.max(request.atMs, freeAt[board]);
    freeAt[board] = start + request.serviceMs;
    busyMs[board] += request.serviceMs;
    outcomes.push({
      id: request.id,
      arrivalMs: request.atMs,
      firstByteMs: start + Math.min(scenario.firstTokenMs, request.serviceMs),
      endMs: start + request.serviceMs,
      status: "ok",
      board: scenario.boards[board].name,
    });
  }
  return { outcomes: outcomes.sort((a, b) => a.id - b.id), loads: 0, busyMs };
}

interface BoardState {
  /** Loaded models and when each last served (for least-recently-used eviction). */
  loaded: Map<string, number>;
  /** Free from this time on (generating or loading until then). */
  freeAt: number;
  /** The model being loaded until `freeAt`, if any. */
  loading?: string;
}

/**
 * The lower bound of the issue: one queue in front of all boards, oldest request
 * first, each bound to a board only when a board with its model loaded is free
 * (late binding); and when a model's queue would wait longer than a load takes,
 * its model is loaded on idle boards that have it on disk (as many as its queue
 * needs), evicting the least recently used copy nobody waits for when the board is
 * full. The best (fewest refused, then shortest mean wait) of {@linkcode sharedQueue}
 * over {@linkcode LOAD_AFTER}. It knows every answer's length in advance, which no
 * router does: a good schedule to be measured against, not a proven optimum.
 */
export function lowerBound(scenario: Scenario): Run & { loadAfter: number } {
  let best: (Run & { loadAfter: number }) | undefined;
  let bestWait = Infinity;
  for (const loadAfter of LOAD_AFTER) {
    const run = { ...sharedQueue(scenario, loadAfter), loadAfter };
    const answered = run.outcomes.filter((o) => o.firstByteMs !== undefined);
    const refused = run.outcomes.length - answered.length;
    const wait = answered.reduce((sum, o) => sum + o.firstByteMs! - o.arrivalMs, 0) /
      Math.max(1, answered.length);
    // Fewer refusals first, then the shorter mean wait.
    const score = refused * 1e12 + wait;
    if (score < bestWait) [best, bestWait] = [run, score];
  }
  return best!;
}

/**
 * How much longer than a load the wait for a model's copies must be before the
 * bound loads another copy: the bound is the best of these schedules (loading
 * eagerly wins on bursts, sparingly on steady traffic).
 */
export const LOAD_AFTER = [0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 8];

/**
 * One queue in front of all boards, late binding, and a load on an idle board
 * when the wait for the model's copies exceeds `loadAfter` loads.
 */
export function sharedQueue(scenario: Scenario, loadAfter = 1): Run {
  const boards: BoardState[] = scenario.boards.map((board) => ({
    loaded: new Map(board.loaded.map((model) => [model, 0])),
    freeAt: 0,
  }));
  const busyMs = scenario.boards.map(() => 0);
  const arrivals = byArrival(scenario.requests);
  const meanService = arrivals.reduce((sum, r) => sum + r.serviceMs, 0) /
    Math.max(1, arrivals.length);
  const queue: TraceRequest[] = [];
  const outcomes: Outcome[] = [];
  let loads = 0;
  let next = 0;
  let now = 0;
  while (next < arrivals.length || queue.length > 0) {
    // Finish loads that are done by now.
    for (const board of boards) {
      if (board.loading !== undefined && board.freeAt <= now) {
        board.loaded.set(board.loading, now);
        board.loading = undefined;
      }
    }
    while (next < arrivals.length && arrivals[next].atMs <= now) queue.push(arrivals[next++]);
    // Late binding: the oldest request first, to any free board with its model.
    for (let i = 0; i < queue.length;) {
      const request = queue[i];
      const index = boards.findIndex((board) =>
        board.freeAt <= now && board.loading === undefined && board.loaded.has(request.model)
      );
      if (index < 0) {
        i++;
        continue;
      }
      const board = boards[index];
      queue.splice(i, 1);
      board.freeAt = now + request.serviceMs;
      board.loaded.set(request.model, now);
      busyMs[index] += request.serviceMs;
      outcomes.push({
        id: request.id,
        arrivalMs: request.atMs,
        firstByteMs: now + Math.min(scenario.firstTokenMs, request.serviceMs),
        endMs: now + request.serviceMs,
        status: "ok",
        board: scenario.boards[index].name,
      });
    }
    loads += startLoads(scenario, boards, queue, now, meanService, loadAfter);
    // A model nobody has on disk would wait forever: refuse it.
    for (let i = 0; i < queue.length;) {
      const model = queue[i].model;
      if (scenario.boards.some((board) => board.onDisk.includes(model))) {
        i++;
        continue;
      }
      const [refused] = queue.splice(i, 1);
      outcomes.push({
        id: refused.id,
        arrivalMs: refused.atMs,
        endMs: now,
        status: "rejected",
      });
    }
    const times = boards.filter((board) => board.freeAt > now).map((board) => board.freeAt);
    if (next < arrivals.length) times.push(arrivals[next].atMs);
    if (times.length === 0) break;
    now = Math.min(...times);
  }
  // Left waiting with no board that could ever take them.
  for (const request of queue) {
    outcomes.push({ id: request.id, arrivalMs: request.atMs, endMs: now, status: "rejected" });
  }
  return { outcomes: outcomes.sort((a, b) => a.id - b.id), loads, busyMs };
}

/** Starts the loads the queue calls for at `now`; returns how many. */
function startLoads(
  scenario: Scenario,
  boards: BoardState[],
  queue: readonly TraceRequest[],
  now: number,
  meanService: number,
  loadAfter: number,
): number {
  let started = 0;
  const waiting = new Map<string, number>();
  for (const request of queue) waiting.set(request.model, (waiting.get(request.model) ?? 0) + 1);
  for (const [model, count] of waiting) {
    for (;;) {
      const copies = boards.filter((board) => board.loaded.has(model));
      const loading = boards.filter((board) => board.loading === model).length;
      if (count <= loading) break;
      // The wait on the copies there are: the soonest to free, then the queue shared out.
      const wait = copies.length === 0 ? Infinity : Math.min(
        ...copies.map((board) => Math.max(0, board.freeAt - now)),
      ) + Math.floor((count - 1) / copies.length) * meanService;
      if (wait <= scenario.loadMs * loadAfter) break;
      const index = boards.findIndex((board, i) =>
        board.freeAt <= now && board.loading === undefined && !board.loaded.has(model) &&
        scenario.boards[i].onDisk.includes(model) &&
        (board.loaded.size < scenario.boards[i].maxLoaded ||
          evictable(board, waiting) !== undefined)
      );
      if (index < 0) break;
      const board = boards[index];
      if (board.loaded.size >= scenario.boards[index].maxLoaded) {
        board.loaded.delete(evictable(board, waiting)!);
      }
      board.loading = model;
      board.freeAt = now + scenario.loadMs;
      started++;
    }
  }
  return started;
}

/** The least recently used model on `board` that nobody waits for. */
function evictable(board: BoardState, waiting: ReadonlyMap<string, number>): string | undefined {
  let oldest: [string, number] | undefined;
  for (const [model, usedAt] of board.loaded) {
    if (waiting.has(model)) continue;
    if (!oldest || usedAt < oldest[1]) oldest = [model, usedAt];
  }
  return oldest?.[0];
}

function byArrival(requests: readonly TraceRequest[]): TraceRequest[] {
  return [...requests].sort((a, b) => a.atMs - b.atMs || a.id - b.id);
}
