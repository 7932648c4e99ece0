/**
 * @module
 * Replays a trace against the router as it is: real sockets, real timers, time
 * divided by `scale`. The simulated boards generate every answer at the trace's
 * shortest length; a longer answer is made by pausing its board after its first
 * token (an FA board runs one generation at a time, so the pause holds back only
 * that answer). Results come back in real (unscaled) milliseconds.
 */

import type { Outcome, Run } from "./simulate.ts";
import type { Scenario, TraceRequest } from "./trace.ts";
import { type BoardHandle, startRouterWorld } from "./world.ts";

/** A run through the router, with what the boards saw. */
export interface RouterRun extends Run {
  /** Per board: the most generations it ever ran or queued at once (its slots: 1). */
  maxConcurrent: Record<string, number>;
  /** Workers leaked by concurrent cold loads of one model on one board. */
  orphanedWorkers: number;
  /** Long answers whose pause came too late (they ended short, the next answer ran long). */
  lengthMisses: number;
  /** Mean generation time on the boards over the trace's mean (timer overshoot). */
  serviceInflation: number;
  /** A few of the failures, for the reader. */
  failures: string[];
}

/** Replays `scenario` through a router started for it; `scale` 4 runs 4x faster than real. */
export async function replayOnRouter(scenario: Scenario, scale: number): Promise<RouterRun> {
  const baseMs = Math.min(...scenario.requests.map((r) => r.serviceMs));
  const tokens = Math.max(1, Math.round(baseMs / scenario.firstTokenMs));
  await using world = await startRouterWorld(scenario.boards.map((board) => ({
    name: board.name,
    models: board.onDisk,
    loaded: board.loaded,
    loadDelayMs: scenario.loadMs / scale,
    maxLoaded: board.maxLoaded,
    tokenDelayMs: baseMs / tokens / scale,
    tokens,
  })));
  const failures: string[] = [];
  let lengthMisses = 0;
  const t0 = performance.now();
  const real = (t: number) => (t - t0) * scale;
  const one = async (request: TraceRequest): Promise<Outcome> => {
    await sleepUntil(t0 + request.atMs / scale);
    const sent = performance.now();
    const requestId = `bench-${request.id}`;
    const base = { id: request.id, arrivalMs: real(sent) };
    try {
      const response = await fetch(`${world.url}/api/chat`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": requestId },
        body: JSON.stringify({
          model: request.model,
          stream: true,
          messages: [{ role: "user", content: "hi" }],
        }),
      });
      if (response.status !== 200) {
        const text = await response.text();
        if (failures.length < 5) failures.push(`${response.status} ${text.slice(0, 200)}`);
        const status = response.status === 503 || response.status === 429 ? "rejected" : "error";
        return { ...base, endMs: real(performance.now()), status };
      }
      const reader = response.body!.getReader();
      let firstByte: number | undefined;
      const extraMs = request.serviceMs - baseMs;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (firstByte === undefined && value.length > 0) {
          firstByte = performance.now();
          if (extraMs > 0) stretch(world.boards, requestId, extraMs / scale);
        }
      }
      const end = performance.now();
      if (firstByte === undefined) throw new Error("the answer had no body");
      const generated = real(end) - real(firstByte);
      if (extraMs > 0 && generated < 0.8 * (request.serviceMs - scenario.firstTokenMs)) {
        lengthMisses++;
      }
      return {
        ...base,
        firstByteMs: real(firstByte),
        endMs: real(end),
        status: "ok",
        board: boardOf(world.boards, requestId)?.name,
      };
    } catch (error) {
      if (failures.length < 5) failures.push(String(error));
      return { ...base, endMs: real(performance.now()), status: "error" };
    }
  };
  const outcomes = await Promise.all(scenario.requests.map(one));
  const busyMs = world.boards.map((board) => generatingMs(board.events) * scale);
  const generations = world.boards.reduce(
    (sum, board) => sum + board.events.filter((e) => e.type === "generation-end").length,
    0,
  );
  const traceMean = scenario.requests.reduce((sum, r) => sum + r.serviceMs, 0) /
    scenario.requests.length;
  return {
    outcomes,
    loads: world.boards.reduce(
      (sum, board) => sum + board.events.filter((e) => e.type === "loaded").length,
      0,
    ),
    busyMs,
    maxConcurrent: Object.fromEntries(
      world.boards.map((board) => [board.name, board.maxQueuedOnPod]),
    ),
    orphanedWorkers: world.boards.reduce((sum, board) => sum + board.orphanedWorkers, 0),
    lengthMisses,
    serviceInflation: generations === 0
      ? NaN
      : busyMs.reduce((a, b) => a + b, 0) / generations / traceMean,
    failures,
  };
}

/** Holds back the rest of the answer to `requestId` on its board for `ms`. */
function stretch(boards: readonly BoardHandle[], requestId: string, ms: number): void {
  const board = boardOf(boards, requestId);
  if (!board) return;
  board.pause();
  setTimeout(() => board.resume(), ms);
}

/** The board the router sent `requestId` to (the router passes the id on). */
function boardOf(boards: readonly BoardHandle[], requestId: string): BoardHandle | undefined {
  return boards.find((board) =>
    board.events.findLast((event) =>
      event.type === "request" &&
      (event.headers?.["x-request-id"] ?? "").split(/,\s*/).includes(requestId)
    ) !== undefined
  );
}

/** Sum of generation-start to generation-end on one board (FA: one at a time). */
function generatingMs(events: readonly { type: string; at: number }[]): number {
  let total = 0;
  let started: number | undefined;
  for (const event of events) {
    if (event.type === "generation-start") started = event.at;
    if (event.type === "generation-end" && started !== undefined) {
      total += event.at - started;
      started = undefined;
    }
  }
  return total;
}

function sleepUntil(at: number): Promise<void> {
  const ms = at - performance.now();
  return ms <= 0 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, ms));
}
