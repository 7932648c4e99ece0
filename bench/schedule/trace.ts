/**
 * @module
 * Seeded request traces for `deno task bench:schedule`: who asks for which model,
 * when, and for how long a board will generate. Times are real (unscaled)
 * milliseconds; the replay against the router divides them by its time scale.
 */

/** A simulated board as the traces see it: FA, one generation at a time. */
export interface BoardSpec {
  name: string;
  /** Models on the board's disk. */
  onDisk: string[];
  /** Models loaded when the trace starts (a subset of `onDisk`). */
  loaded: string[];
  /** How many models the board's NPU memory holds at once. */
  maxLoaded: number;
}

/** One request of a trace. */
export interface TraceRequest {
  id: number;
  /** Arrival, ms after the trace starts. */
  atMs: number;
  model: string;
  /** How long the board generates the answer, first token included. */
  serviceMs: number;
}

/** A trace and the cluster it runs on. */
export interface Scenario {
  name: string;
  /** One line for the table and the JSON. */
  description: string;
  seed: number;
  boards: BoardSpec[];
  /** How long a board takes to load a model. */
  loadMs: number;
  /** From a generation's start to its first token (the same for every answer). */
  firstTokenMs: number;
  requests: TraceRequest[];
}

/**
 * A small seeded PRNG (mulberry32): the same seed gives the same trace on every
 * machine. Returns a function yielding numbers in [0, 1).
 *
 * @example
 * ```ts
 * const random = mulberry32(15);
 * const u = random(); // 0 <= u < 1
 * ```
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An exponential variate with the given mean (Poisson arrivals have these gaps). */
export function exponential(random: () => number, mean: number): number {
  return -Math.log(1 - random()) * mean;
}

/**
 * Zipf weights for `n` items (rank 1 first), normalised to sum to 1.
 *
 * @example
 * ```ts
 * zipfWeights(2, 1); // [2/3, 1/3]
 * ```
 */
export function zipfWeights(n: number, exponent: number): number[] {
  const raw = Array.from({ length: n }, (_, k) => 1 / (k + 1) ** exponent);
  const total = raw.reduce((a, b) => a + b, 0);
  return raw.map((w) => w / total);
}

/** The index drawn from `weights` (which sum to 1). */
export function drawIndex(random: () => number, weights: readonly number[]): number {
  let u = random();
  for (let i = 0; i < weights.length; i++) {
    u -= weights[i];
    if (u < 0) return i;
  }
  return weights.length - 1;
}

/** Options of {@linkcode warmTrace}. */
export interface WarmOptions {
  seed: number;
  /** Offered load: arrival rate x mean answer time / boards (0.85 = 85%). */
  load: number;
  requests: number;
  boards?: number;
  shortMs?: number;
  longMs?: number;
  /** Share of long answers. */
  longShare?: number;
}

/**
 * Warm mixed lengths: one model loaded on every board, Poisson arrivals at the
 * offered load, short and long answers mixed (80/20 of 0.1 s and 1.5 s by default).
 */
export function warmTrace(options: WarmOptions): Scenario {
  const { seed, load, requests } = options;
  const boardCount = options.boards ?? 4;
  const shortMs = options.shortMs ?? 100;
  const longMs = options.longMs ?? 1500;
  const longShare = options.longShare ?? 0.2;
  const random = mulberry32(seed);
  const meanService = (1 - longShare) * shortMs + longShare * longMs;
  const meanGap = meanService / (boardCount * load);
  const trace: TraceRequest[] = [];
  let at = 0;
  for (let id = 0; id < requests; id++) {
    at += exponential(random, meanGap);
    const long = random() < longShare;
    trace.push({ id, atMs: at, model: "qwen", serviceMs: long ? longMs : shortMs });
  }
  return {
    name: `warm-${Math.round(load * 100)}`,
    description: `warm: ${boardCount} boards, 1 model loaded on all, Poisson at ${
      Math.round(load * 100)
    }% load, ${Math.round((1 - longShare) * 100)}% ${shortMs} ms / ${
      Math.round(longShare * 100)
    }% ${longMs} ms answers`,
    seed,
    boards: Array.from({ length: boardCount }, (_, i) => ({
      name: `rk-${i}`,
      onDisk: ["qwen"],
      loaded: ["qwen"],
      maxLoaded: 2,
    })),
    loadMs: 2000,
    firstTokenMs: shortMs / 5,
    requests: trace,
  };
}

/** Options of {@linkcode coldBurstTrace}. */
export interface ColdBurstOptions {
  seed: number;
  /** Requests arriving together. */
  requests?: number;
  boards?: number;
  loadMs?: number;
  answerMs?: number;
  /** Spread of the arrivals (uniform), ms; 0 = all at once. */
  spreadMs?: number;
}

/**
 * A cold burst: many requests at once for a model every board has on disk and
 * none has loaded (24 requests, 4 boards, 2 s load, 0.5 s answers by default).
 */
export function coldBurstTrace(options: ColdBurstOptions): Scenario {
  const requests = options.requests ?? 24;
  const boardCount = options.boards ?? 4;
  const loadMs = options.loadMs ?? 2000;
  const answerMs = options.answerMs ?? 500;
  const spreadMs = options.spreadMs ?? 0;
  const random = mulberry32(options.seed);
  const trace = Array.from({ length: requests }, (_, id) => ({
    id,
    atMs: spreadMs * random(),
    model: "phi",
    serviceMs: answerMs,
  })).sort((a, b) => a.atMs - b.atMs).map((request, id) => ({ ...request, id }));
  return {
    name: `cold-${requests}`,
    description:
      `cold burst: ${requests} requests within ${spreadMs} ms for a model on disk on ${boardCount} idle boards, none loaded (${loadMs} ms load, ${answerMs} ms answers)`,
    seed: options.seed,
    boards: Array.from({ length: boardCount }, (_, i) => ({
      name: `rk-${i}`,
      onDisk: ["phi", "qwen"],
      loaded: ["qwen"],
      maxLoaded: 2,
    })),
    loadMs,
    firstTokenMs: answerMs / 5,
    requests: trace,
  };
}

/** Options of {@linkcode zipfTrace}. */
export interface ZipfOptions {
  seed: number;
  requests: number;
  /** Offered load over all boards. */
  load?: number;
  boards?: number;
  models?: number;
  maxLoaded?: number;
  exponent?: number;
  shortMs?: number;
  longMs?: number;
  longShare?: number;
  loadMs?: number;
}

/**
 * Many models, few fit: 8 boards with every model on disk and room for
 * `maxLoaded` (2) each; 6 models of Zipf popularity; at the start the most popular
 * models are loaded round the boards, so the tail is cold.
 */
export function zipfTrace(options: ZipfOptions): Scenario {
  const boardCount = options.boards ?? 8;
  const modelCount = options.models ?? 6;
  const maxLoaded = options.maxLoaded ?? 2;
  const load = options.load ?? 0.7;
  const shortMs = options.shortMs ?? 100;
  const longMs = options.longMs ?? 1500;
  const longShare = options.longShare ?? 0.2;
  const random = mulberry32(options.seed);
  const models = Array.from({ length: modelCount }, (_, i) => `m${i + 1}`);
  const weights = zipfWeights(modelCount, options.exponent ?? 1);
  const meanService = (1 - longShare) * shortMs + longShare * longMs;
  const meanGap = meanService / (boardCount * load);
  const trace: TraceRequest[] = [];
  let at = 0;
  for (let id = 0; id < options.requests; id++) {
    at += exponential(random, meanGap);
    const model = models[drawIndex(random, weights)];
    const long = random() < longShare;
    trace.push({ id, atMs: at, model, serviceMs: long ? longMs : shortMs });
  }
  // Copies at the start in proportion to popularity: board i holds its share,
  // one model each, so the boards have room for one more.
  const boards = Array.from({ length: boardCount }, (_, i) => {
    const loaded = [models[initialModel(i, weights, boardCount)]];
    return { name: `rk-${i}`, onDisk: [...models], loaded, maxLoaded };
  });
  return {
    name: `zipf-${boardCount}x${modelCount}`,
    description:
      `zipf: ${boardCount} boards (room for ${maxLoaded} models each), ${modelCount} models of Zipf popularity, ${
        Math.round(load * 100)
      }% load, one model loaded per board at the start`,
    seed: options.seed,
    boards,
    loadMs: options.loadMs ?? 2000,
    firstTokenMs: shortMs / 5,
    requests: trace,
  };
}

/** Which model board `board` holds at the start: the boards are shared out by popularity. */
function initialModel(board: number, weights: readonly number[], boards: number): number {
  let cumulative = 0;
  const middle = (board + 0.5) / boards;
  for (let i = 0; i < weights.length; i++) {
    cumulative += weights[i];
    if (middle < cumulative) return i;
  }
  return weights.length - 1;
}
