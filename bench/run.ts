/**
 * @module
 * `deno task bench`: what the router costs, measured in one run on loopback and
 * given as ratios to a direct connection and to nginx: throughput and latency of
 * small requests, per-chunk delay of streams, memory with many open streams, and
 * how the routing state scales to 500 pods. Prints a table (and the same as
 * markdown for docs/performance.md) and writes everything as JSON to bench/results/.
 *
 * `--smoke`: tiny durations, to check that it runs. `--profile`: load the router
 * only, with `--cpu-prof`, and print its functions by self time.
 */

import {
  type Helper,
  type Nginx,
  refuseFlag,
  rssBytes,
  runWrk,
  startBackend,
  startFloorProxy,
  startNginx,
  startRouter,
  type WrkResult,
} from "./processes.ts";
import { firstChunkDelays } from "./first_chunk.ts";

const smoke = Deno.args.includes("--smoke");
const profile = Deno.args.includes("--profile");

const plan = smoke
  ? {
    rounds: 1,
    seconds: 1,
    warmupSeconds: 1,
    concurrency: [1, 16, 64],
    streams: 4,
    chunks: 20,
    openStreams: 256,
    memoryRounds: 1,
    firstChunks: 5,
    firstChunkWarmup: 5,
    settleSeconds: 1,
  }
  : {
    rounds: 3,
    seconds: 5,
    warmupSeconds: 3,
    concurrency: [1, 16, 64],
    streams: 16,
    chunks: 100,
    openStreams: 256,
    memoryRounds: 2,
    firstChunks: 40,
    firstChunkWarmup: 500,
    settleSeconds: 30,
  };
const CHUNK_INTERVAL_MS = 10;
/** The router's default --max-body-total: the most request bodies it holds at once. */
const MAX_BODY_TOTAL_BYTES = 64 * 2 ** 20;

/**
 * Where requests go: straight to the backend, through the router, through nginx,
 * and through the least proxy Deno can make (bench/floor_proxy.ts).
 */
type Target = "direct" | "router" | "nginx" | "floor";
const TARGETS: readonly Target[] = ["direct", "router", "nginx", "floor"];

await ensureTools();
const dir = await Deno.makeTempDir({ prefix: "rkllama-bench-" });
const backend = await startBackend();
const backendUrl = backend.urls[0];
const router = await startRouter(
  backendUrl,
  `${dir}/router.log`,
  profile ? { cpuProfileDir: `${dir}/profile` } : {},
);
let nginx: Nginx | undefined;
let floor: Helper | undefined;
try {
  if (profile) {
    await profileRouter();
  } else {
    nginx = await startNginx(backendUrl, dir);
    floor = await startFloorProxy(backendUrl);
    await report(await measure(nginx, floor));
  }
} finally {
  await floor?.close();
  await nginx?.close();
  await router.close();
  await backend.close();
  if (!profile) await Deno.remove(dir, { recursive: true });
}

async function measure(nginx: Nginx, floor: Helper) {
  const urls: Record<Target, string> = {
    direct: backendUrl,
    router: router.url,
    nginx: nginx.url,
    floor: floor.urls[0],
  };
  const pids: Record<Target, number[]> = {
    direct: [],
    router: [router.pid],
    nginx: [nginx.pid, ...childPids(nginx.pid)],
    floor: [floor.pid],
  };
  for (const target of TARGETS) {
    const warm = await runWrk(urls[target], 16, plan.warmupSeconds);
    if (warm.non2xx > 0 || warm.errors > 0) {
      throw new Error(`${target}: ${warm.non2xx} non-2xx answers, ${warm.errors} errors in warmup`);
    }
  }

  log(
    `throughput: ${plan.rounds} round(s) x ${plan.concurrency.length} concurrencies x ${TARGETS.length} targets x ${plan.seconds} s`,
  );
  const runs: Record<string, WrkRun[]> = {};
  for (let round = 0; round < plan.rounds; round++) {
    for (const connections of plan.concurrency) {
      // Rotate the order so that no target always runs right after another.
      for (let i = 0; i < TARGETS.length; i++) {
        const target = TARGETS[(i + round) % TARGETS.length];
        const cpuBefore = cpuSeconds(pids[target]);
        const result = await runWrk(urls[target], connections, plan.seconds);
        const cpu = cpuSeconds(pids[target]) - cpuBefore;
        if (result.non2xx > 0 || result.errors > 0) {
          throw new Error(
            `${target} c=${connections}: ${result.non2xx} non-2xx, ${result.errors} errors`,
          );
        }
        (runs[`${target}/${connections}`] ??= []).push({
          ...result,
          cpu_us_per_request: pids[target].length > 0 ? (cpu * 1e6) / result.requests : null,
        });
        log(
          `  ${target} c=${connections}: ${rps(result).toFixed(0)} req/s, p50 ${
            ms(result.p50_us)
          } ms`,
        );
      }
    }
  }
  const throughput = plan.concurrency.map((connections) => {
    const row = Object.fromEntries(TARGETS.map((target) => {
      const list = runs[`${target}/${connections}`];
      return [target, {
        rps: median(list.map(rps)),
        p50_ms: median(list.map((r) => r.p50_us / 1000)),
        p99_ms: median(list.map((r) => r.p99_us / 1000)),
        cpu_us_per_request: list[0].cpu_us_per_request === null
          ? null
          : median(list.map((r) => r.cpu_us_per_request!)),
        rounds: list,
      }];
    })) as Record<Target, TargetStats>;
    return {
      connections,
      ...row,
      router_over_direct: row.router.rps / row.direct.rps,
      router_over_nginx: row.router.rps / row.nginx.rps,
      router_over_floor: row.router.rps / row.floor.rps,
      router_added_p50_ms: row.router.p50_ms - row.direct.p50_ms,
      nginx_added_p50_ms: row.nginx.p50_ms - row.direct.p50_ms,
    };
  });

  log(
    `streaming: ${plan.streams} streams at once, ${plan.chunks} chunks every ${CHUNK_INTERVAL_MS} ms`,
  );
  const streamRuns = Object.fromEntries(TARGETS.map((t) => [t, [] as StreamResult[]])) as Record<
    Target,
    StreamResult[]
  >;
  for (let round = 0; round < plan.rounds; round++) {
    for (let i = 0; i < TARGETS.length; i++) {
      const target = TARGETS[(i + round) % TARGETS.length];
      streamRuns[target].push(
        await streamDelays(urls[target], plan.streams, plan.chunks, CHUNK_INTERVAL_MS),
      );
    }
  }
  log(
    `first chunks: ${plan.firstChunkWarmup} streams to warm up, then ${plan.rounds} round(s) x ${plan.firstChunks} streams, one at a time, per target`,
  );
  const firstChunks = Object.fromEntries(TARGETS.map((t) => [t, [] as number[]])) as Record<
    Target,
    number[]
  >;
  for (const target of TARGETS) await firstChunkDelays(urls[target], 0, plan.firstChunkWarmup);
  for (let round = 0; round < plan.rounds; round++) {
    for (let i = 0; i < TARGETS.length; i++) {
      const target = TARGETS[(i + round) % TARGETS.length];
      firstChunks[target].push(...await firstChunkDelays(urls[target], plan.firstChunks, 0));
    }
  }
  const streaming = Object.fromEntries(TARGETS.map((target) => {
    const delays = streamRuns[target].flatMap((run) => run.delays).sort((a, b) => a - b);
    const first = firstChunks[target].toSorted((a, b) => a - b);
    return [target, {
      chunks: delays.length,
      p50_ms: percentile(delays, 50),
      p99_ms: percentile(delays, 99),
      max_ms: delays.at(-1)!,
      late_chunks: streamRuns[target].reduce((sum, run) => sum + run.late, 0),
      first_chunk_p50_ms: percentile(first, 50),
      first_chunk_p90_ms: percentile(first, 90),
    }];
  })) as Record<Target, StreamSummary>;

  log(
    `memory: two routers (RSS; the heap with the inspector), ${plan.memoryRounds} round(s) of ${plan.openStreams} open streams`,
  );
  const memory = await measureMemory();

  log("startup: static mode to ready, and a bad flag to its refusal, 5 times each");
  const startup = await measureStartup(backendUrl);

  log("scale: deno bench bench/scale_bench.ts");
  const scale = await scaleBench();
  return {
    throughput,
    streaming,
    memory,
    startup,
    scale,
  };
}

interface TargetStats {
  rps: number;
  p50_ms: number;
  p99_ms: number;
  /** CPU the proxy's processes used per request (none for direct). */
  cpu_us_per_request: number | null;
  rounds: WrkRun[];
}

type WrkRun = WrkResult & { cpu_us_per_request: number | null };

interface StreamResult {
  delays: number[];
  late: number;
}
interface StreamSummary {
  chunks: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  late_chunks: number;
  /** One stream at a time: from the backend stamping its first chunk to the client reading it. */
  first_chunk_p50_ms: number;
  first_chunk_p90_ms: number;
}

/** Wall-clock ms with sub-millisecond precision; bench/backend.ts stamps chunks with the same. */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

function generateRequest(url: string, chunks: number, interval: number): Promise<Response> {
  return fetch(`${url}/api/generate?chunks=${chunks}&interval=${interval}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"model":"bench","prompt":"Hi"}',
  });
}

/**
 * Opens `streams` streams at once and records, for every chunk, how long after
 * the backend sent it the client read it. A chunk read after the next one was
 * sent is "late": a proxy that buffered would make nearly all of them late.
 */
async function streamDelays(
  url: string,
  streams: number,
  chunks: number,
  interval: number,
): Promise<StreamResult> {
  const delays: number[] = [];
  let late = 0;
  const one = async () => {
    const response = await generateRequest(url, chunks, interval);
    if (!response.ok || !response.body) {
      throw new Error(`${url}: stream answered ${response.status}`);
    }
    const decoder = new TextDecoder();
    let buffer = "";
    let previous: { sent: number; read: number } | undefined;
    let lines = 0;
    for await (const bytes of response.body) {
      const read = nowMs();
      buffer += decoder.decode(bytes, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n")) !== -1) {
        const sent = Number(/"sent":([\d.]+)/.exec(buffer.slice(0, end))?.[1]);
        buffer = buffer.slice(end + 1);
        delays.push(read - sent);
        if (previous && previous.read > sent) late++;
        previous = { sent, read };
        lines++;
      }
    }
    if (lines !== chunks) {
      throw new Error(`${url}: stream ended after ${lines} of ${chunks} chunks`);
    }
  };
  await Promise.all(Array.from({ length: streams }, one));
  return { delays, late };
}

interface MemorySample {
  moment: string;
  rss_mib: number;
  /** The JavaScript heap in use after full collections: what the router holds on to. */
  heap_after_gc_mib: number | null;
}

/**
 * Memory of a router of its own: at start, after a load, then with
 * `plan.openStreams` streams open and after them, `plan.memoryRounds` times, then
 * with large bodies, and idle again. Twice: RSS from a router as it runs in
 * production, and the JavaScript heap after full collections from one started
 * with the V8 inspector (which costs about 10 MiB itself, and whose forced
 * collections shrink RSS). A leak shows as a heap that grows from round to
 * round; RSS also holds what V8 and the allocator keep for reuse.
 */
async function measureMemory(): Promise<MemorySample[]> {
  const rss = await memoryRun(false);
  const heap = await memoryRun(true);
  return rss.map((sample, i) => ({ ...sample, heap_after_gc_mib: heap[i].heap_after_gc_mib }));
}

async function memoryRun(inspect: boolean): Promise<MemorySample[]> {
  const measured = await startRouter(backendUrl, `${dir}/router-memory.log`, { inspect });
  const samples: MemorySample[] = [];
  const sample = async (moment: string, rss = rssBytes(measured.pid), collect = true) => {
    samples.push({
      moment,
      rss_mib: mib(rss),
      heap_after_gc_mib: inspect && collect ? mib(await measured.heapAfterGc()) : null,
    });
  };
  try {
    await sample("at start");
    const seconds = plan.seconds * 2;
    await runWrk(measured.url, 64, seconds);
    await sample(`after ${seconds} s of small requests at 64 connections`);
    for (let round = 1; round <= plan.memoryRounds; round++) {
      await holdStreams(
        measured.url,
        plan.openStreams,
        (peakRss) => sample(`with ${plan.openStreams} streams open (round ${round})`, peakRss()),
      );
      // Let the router close the connections the streams used.
      await new Promise((resolve) => setTimeout(resolve, 500));
      await sample(`after them (round ${round})`);
    }
    // Large bodies at once, as many as --max-body-total lets in (the rest get 503s).
    const body = JSON.stringify({
      model: "bench",
      stream: false,
      messages: [{ role: "user", content: "x".repeat(5 * 2 ** 20) }],
    });
    let peak = rssBytes(measured.pid);
    const sampler = setInterval(() => peak = Math.max(peak, rssBytes(measured.pid)), 20);
    try {
      for (let burst = 0; burst < 6; burst++) {
        await Promise.all(Array.from({ length: 20 }, async () => {
          const response = await fetch(`${measured.url}/api/chat`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body,
          });
          await response.body?.cancel();
        }));
      }
    } finally {
      clearInterval(sampler);
    }
    await sample("peak with 20 concurrent 5 MiB chats, 6 times", peak);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await sample("2 s after them");
    // V8's memory reducer gives the heap back about 8 s after allocation calms
    // (and not in a process's first 30 s): what an idle router returns to.
    await new Promise((resolve) => setTimeout(resolve, plan.settleSeconds * 1000));
    await sample(`${plan.settleSeconds + 2} s after them, idle`, rssBytes(measured.pid), false);
  } finally {
    await measured.close();
  }
  return samples;

  /**
   * Opens `count` streams through the router (a chunk every 100 ms for 2 s) and,
   * once all are open, calls `whileOpen` with a function giving the peak RSS
   * seen so far; resolves when the streams have ended.
   */
  async function holdStreams(
    url: string,
    count: number,
    whileOpen: (peakRss: () => number) => Promise<void>,
  ): Promise<void> {
    const firstChunks: Promise<void>[] = [];
    const streams = Array.from({ length: count }, () => {
      let opened!: () => void;
      firstChunks.push(new Promise<void>((resolve) => opened = resolve));
      return (async () => {
        const response = await generateRequest(url, 20, 100);
        let seen = 0;
        for await (const _ of response.body!) {
          if (seen++ === 0) opened();
        }
      })();
    });
    await Promise.all(firstChunks);
    let peak = rssBytes(measured.pid);
    const sampler = setInterval(() => peak = Math.max(peak, rssBytes(measured.pid)), 50);
    try {
      await whileOpen(() => Math.max(peak, rssBytes(measured.pid)));
      await Promise.all(streams);
    } finally {
      clearInterval(sampler);
    }
  }
}

/** Median milliseconds from exec to ready (static mode), and to a bad flag's refusal. */
async function measureStartup(backend: string): Promise<{ ready_ms: number; bad_flag_ms: number }> {
  const ready: number[] = [];
  const refused: number[] = [];
  for (let i = 0; i < (smoke ? 1 : 5); i++) {
    const started = performance.now();
    const router = await startRouter(backend, `${dir}/router-startup.log`);
    ready.push(performance.now() - started);
    await router.close();
    const begun = performance.now();
    await refuseFlag();
    refused.push(performance.now() - begun);
  }
  return { ready_ms: median(ready), bad_flag_ms: median(refused) };
}

interface BenchStat {
  name: string;
  n: number;
  avg_us: number;
  p99_us: number;
}

/** Runs bench/scale_bench.ts with `deno bench --json`. */
async function scaleBench(): Promise<BenchStat[]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "bench",
      "--json",
      "--allow-net",
      "--allow-run",
      "--allow-read",
      new URL("scale_bench.ts", import.meta.url).pathname,
    ],
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    throw new Error(`deno bench failed: ${text}${new TextDecoder().decode(output.stderr)}`);
  }
  const parsed = JSON.parse(text.slice(text.indexOf("{")));
  return parsed.benches.map(
    (bench: { name: string; results: { ok?: { n: number; avg: number; p99: number } }[] }) => {
      const ok = bench.results[0].ok;
      if (!ok) {
        throw new Error(`deno bench: ${bench.name} failed: ${JSON.stringify(bench.results)}`);
      }
      return { name: bench.name, n: ok.n, avg_us: ok.avg / 1000, p99_us: ok.p99 / 1000 };
    },
  );
}

async function report(results: Awaited<ReturnType<typeof measure>>): Promise<void> {
  assertComplete(results);
  const machine = await machineInfo();
  const c1 = results.throughput[0];
  const top = results.throughput.at(-1)!;
  const rss = (part: string) =>
    Math.max(...results.memory.filter((m) => m.moment.includes(part)).map((m) => m.rss_mib));
  const idle = rss("at start");
  const idleAfter = results.memory.at(-1)!.rss_mib;
  // Over what the router held just before the bodies came.
  const peakAt = results.memory.findIndex((m) => m.moment.startsWith("peak with"));
  const bodies = (results.memory[peakAt].rss_mib - results.memory[peakAt - 1].rss_mib) /
    (MAX_BODY_TOTAL_BYTES / 2 ** 20);
  const goals = {
    added_p50_ms_at_1: c1.router_added_p50_ms,
    added_p50_within_0_5_ms: c1.router_added_p50_ms <= 0.5,
    rps_over_nginx_at_top: top.router_over_nginx,
    rps_at_least_0_7_nginx: top.router_over_nginx >= 0.7,
    // Issue 16's targets.
    first_chunk_p50_ms: results.streaming.router.first_chunk_p50_ms,
    first_chunk_within_1_ms: results.streaming.router.first_chunk_p50_ms <= 1,
    // What the router adds to the backend's own write and the client's read.
    first_chunk_added_ms: results.streaming.router.first_chunk_p50_ms -
      results.streaming.direct.first_chunk_p50_ms,
    rss_idle_mib: idle,
    rss_idle_within_100_mib: idle <= 100,
    rss_after_load_mib: rss("of small requests"),
    rss_with_streams_mib: rss("streams open"),
    rss_loaded_within_150_mib: rss("of small requests") <= 150 && rss("streams open") <= 150,
    rss_idle_after_mib: idleAfter,
    // What stays: the binary's code pages the load touched (file-backed, the
    // kernel's to drop) and the allocator's fragments, together about 20-25 MiB.
    rss_back_near_idle: idleAfter <= idle + 32,
    body_cost_over_size: bodies,
    body_cost_within_2x: bodies <= 2.2,
    ready_ms: results.startup.ready_ms,
    ready_within_500_ms: results.startup.ready_ms <= 500,
  };
  const md = markdown(results, machine);
  console.log(`\n${md}`);
  console.log(
    `goals: added p50 at c=1 ${f(goals.added_p50_ms_at_1, 3)} ms (<= 0.5: ${
      goals.added_p50_within_0_5_ms ? "met" : "NOT met"
    }); throughput vs nginx at c=${top.connections} ${
      f(goals.rps_over_nginx_at_top, 2)
    }x (>= 0.7: ${goals.rps_at_least_0_7_nginx ? "met" : "NOT met"})`,
  );
  const met = (ok: boolean) => ok ? "met" : "NOT met";
  console.log(
    [
      `issue 16: first chunk p50 ${f(goals.first_chunk_p50_ms, 3)} ms (<= 1 ms: ${
        met(goals.first_chunk_within_1_ms)
      }; ${f(goals.first_chunk_added_ms, 3)} ms over direct)`,
      `RSS idle ${f(idle, 0)} MiB (<= 100: ${met(goals.rss_idle_within_100_mib)})`,
      `after load ${f(goals.rss_after_load_mib, 0)} MiB, with streams ${
        f(goals.rss_with_streams_mib, 0)
      } MiB (<= 150: ${met(goals.rss_loaded_within_150_mib)})`,
      `idle again ${f(idleAfter, 0)} MiB (<= ${f(idle + 32, 0)}: ${met(goals.rss_back_near_idle)})`,
      `bodies ${f(bodies, 1)}x their size (~2x: ${met(goals.body_cost_within_2x)})`,
      `ready ${f(goals.ready_ms, 0)} ms (<= 500: ${met(goals.ready_within_500_ms)})`,
    ].join("; "),
  );
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const file = new URL(`results/${smoke ? "smoke" : "bench"}-${stamp}.json`, import.meta.url);
  await Deno.mkdir(new URL("results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    file,
    JSON.stringify({ machine, plan: { ...plan, smoke }, goals, ...results }, null, 2) + "\n",
  );
  console.log(`\nwritten to ${file.pathname}`);
}

/** Throws unless every cell of every table has a number (what `bench:smoke` checks). */
function assertComplete(results: Awaited<ReturnType<typeof measure>>): void {
  const numbers: [string, number | null][] = [];
  for (const row of results.throughput) {
    for (const target of TARGETS) {
      const stats = row[target];
      numbers.push([`${target} c=${row.connections} req/s`, stats.rps]);
      numbers.push([`${target} c=${row.connections} p50`, stats.p50_ms]);
      numbers.push([`${target} c=${row.connections} p99`, stats.p99_ms]);
      if (target !== "direct") numbers.push([`${target} CPU`, stats.cpu_us_per_request]);
    }
  }
  for (const target of TARGETS) {
    numbers.push([`${target} stream delays`, results.streaming[target].p99_ms]);
    numbers.push([`${target} first chunk`, results.streaming[target].first_chunk_p50_ms]);
  }
  for (const sample of results.memory) {
    numbers.push([`RSS ${sample.moment}`, sample.rss_mib]);
    if (sample.heap_after_gc_mib !== null) {
      numbers.push([`heap ${sample.moment}`, sample.heap_after_gc_mib]);
    }
  }
  numbers.push(["startup ready", results.startup.ready_ms]);
  numbers.push(["startup bad flag", results.startup.bad_flag_ms]);
  for (const bench of results.scale) numbers.push([bench.name, bench.avg_us]);
  const missing = numbers.filter(([, value]) => value === null || !Number.isFinite(value));
  if (missing.length > 0 || results.scale.length !== 4 || results.memory.length < 4) {
    throw new Error(
      `incomplete results: ${missing.map(([name]) => name).join(", ") || "scale or memory"}`,
    );
  }
}

/** The tables as markdown, ready to paste into docs/performance.md. */
function markdown(
  results: Awaited<ReturnType<typeof measure>>,
  machine: Awaited<ReturnType<typeof machineInfo>>,
): string {
  const lines = [
    `Measured ${machine.date} on ${machine.cpu} (${machine.cores} cores), ${machine.os}; ` +
    `Deno ${machine.deno}, ${machine.nginx}, ${machine.wrk}. ` +
    `Median of ${plan.rounds} round(s) of ${plan.seconds} s per cell.`,
    "",
    "Small non-streaming requests (`POST /api/chat`, wrk with one thread; floor: the least proxy Deno can make, bench/floor_proxy.ts):",
    "",
    "| connections | direct req/s | router req/s | nginx req/s | floor req/s | router/direct | router/nginx | router/floor | CPU per request: router | nginx | floor |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  const cpu = (value: number | null) => `${f(value ?? NaN, 0)} µs`;
  for (const row of results.throughput) {
    lines.push(
      `| ${row.connections} | ${f(row.direct.rps, 0)} | ${f(row.router.rps, 0)} | ${
        f(row.nginx.rps, 0)
      } | ${f(row.floor.rps, 0)} | ${f(row.router_over_direct, 2)}x | ${
        f(row.router_over_nginx, 2)
      }x | ${f(row.router_over_floor, 2)}x | ${cpu(row.router.cpu_us_per_request)} | ${
        cpu(row.nginx.cpu_us_per_request)
      } | ${cpu(row.floor.cpu_us_per_request)} |`,
    );
  }
  lines.push(
    "",
    "| connections | p50 direct | p50 router | p50 nginx | p50 floor | router adds (p50) | p99 direct | p99 router | p99 nginx | p99 floor |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const row of results.throughput) {
    const p = (target: Target, key: "p50_ms" | "p99_ms", digits: number) =>
      `${f(row[target][key], digits)} ms`;
    lines.push(
      `| ${row.connections} | ${p("direct", "p50_ms", 3)} | ${p("router", "p50_ms", 3)} | ${
        p("nginx", "p50_ms", 3)
      } | ${p("floor", "p50_ms", 3)} | ${f(row.router_added_p50_ms, 3)} ms | ${
        p("direct", "p99_ms", 2)
      } | ${p("router", "p99_ms", 2)} | ${p("nginx", "p99_ms", 2)} | ${p("floor", "p99_ms", 2)} |`,
    );
  }
  const s = results.streaming;
  lines.push(
    "",
    `Streaming (${plan.streams} streams at once, a chunk every ${CHUNK_INTERVAL_MS} ms; delay from the backend sending a chunk to the client reading it):`,
    "",
    "| path | chunks | p50 delay | p99 delay | max delay | added p50 | chunks read after the next was sent | first chunk p50 (one stream) | first chunk p90 |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const target of TARGETS) {
    lines.push(
      `| ${target} | ${s[target].chunks} | ${f(s[target].p50_ms, 3)} ms | ${
        f(s[target].p99_ms, 2)
      } ms | ${f(s[target].max_ms, 2)} ms | ${
        target === "direct" ? "-" : `${f(s[target].p50_ms - s.direct.p50_ms, 3)} ms`
      } | ${s[target].late_chunks} | ${f(s[target].first_chunk_p50_ms, 3)} ms | ${
        f(s[target].first_chunk_p90_ms, 3)
      } ms |`,
    );
  }
  lines.push(
    "",
    "Router memory (RSS: a router of its own, as it runs in production; JS heap after full collections: the same sequence on another, started with the V8 inspector to ask for them):",
    "",
    "| moment | RSS | JS heap after GC |",
    "|---|---:|---:|",
    ...results.memory.map((m) =>
      `| ${m.moment} | ${f(m.rss_mib, 1)} MiB | ${
        m.heap_after_gc_mib === null ? "-" : `${f(m.heap_after_gc_mib, 1)} MiB`
      } |`
    ),
    "",
    "Startup (`deno run` as `deno task start` runs it, median of 5; the compiled binary skips the module loading):",
    "",
    "| static mode, exec to listening | a bad flag, exec to its refusal |",
    "|---:|---:|",
    `| ${f(results.startup.ready_ms, 0)} ms | ${f(results.startup.bad_flag_ms, 0)} ms |`,
    "",
    "Scale (`deno bench bench/scale_bench.ts`):",
    "",
    "| benchmark | mean | p99 |",
    "|---|---:|---:|",
    ...results.scale.map((b) => `| ${b.name} | ${duration(b.avg_us)} | ${duration(b.p99_us)} |`),
  );
  return lines.join("\n");
}

/** `--profile`: load the router alone under `--cpu-prof`, then list functions by self time. */
async function profileRouter(): Promise<void> {
  const seconds = smoke ? 2 : 15;
  await runWrk(router.url, 16, 1);
  const result = await runWrk(router.url, 64, seconds);
  log(`router under --cpu-prof: ${rps(result).toFixed(0)} req/s at c=64 for ${seconds} s`);
  await router.close();
  const files = [...Deno.readDirSync(`${dir}/profile`)].filter((e) =>
    e.name.endsWith(".cpuprofile")
  );
  if (files.length !== 1) throw new Error(`expected one CPU profile in ${dir}/profile`);
  const path = `${dir}/profile/${files[0].name}`;
  const cpuProfile = JSON.parse(await Deno.readTextFile(path)) as {
    nodes: {
      id: number;
      callFrame: { functionName: string; url: string; lineNumber: number };
      hitCount: number;
    }[];
  };
  const self = new Map<string, number>();
  let total = 0;
  for (const node of cpuProfile.nodes) {
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url
      ? ` ${url.replace(/^.*\/(node_modules|npm|ext|wt-bench|main)\//, "")}:${lineNumber + 1}`
      : "";
    const key = `${functionName || "(anonymous)"}${where}`;
    self.set(key, (self.get(key) ?? 0) + node.hitCount);
    total += node.hitCount;
  }
  const idle = self.get("(idle)") ?? 0;
  console.log(
    `\nself time, % of busy samples (${total - idle} busy of ${total}); profile: ${path}`,
  );
  for (
    const [key, hits] of [...self].filter(([k]) => k !== "(idle)").sort((a, b) => b[1] - a[1])
      .slice(0, 30)
  ) {
    console.log(`${(100 * hits / (total - idle)).toFixed(1).padStart(5)}%  ${key}`);
  }
}

/** Installs wrk and nginx with apt-get when they are missing (CI runs as root). */
async function ensureTools(): Promise<void> {
  const missing: string[] = [];
  for (const tool of ["wrk", "nginx"]) {
    const found = await new Deno.Command("sh", {
      args: ["-c", `command -v ${tool}`],
      stdout: "null",
    })
      .output();
    if (!found.success) missing.push(tool);
  }
  if (missing.length === 0) return;
  log(`installing ${missing.join(", ")} with apt-get`);
  const install = () =>
    new Deno.Command("apt-get", {
      args: ["install", "-y", "--no-install-recommends", ...missing],
      env: { DEBIAN_FRONTEND: "noninteractive" },
      stdout: "null",
    }).output();
  if ((await install()).success) return;
  await new Deno.Command("apt-get", { args: ["update"], stdout: "null" }).output();
  const retried = await install();
  if (!retried.success) {
    throw new Error(
      `could not install ${missing.join(", ")} (apt-get needs root): ${
        new TextDecoder().decode(retried.stderr)
      }`,
    );
  }
}

async function machineInfo() {
  const version = async (command: string, args: string[]) => {
    const output = await new Deno.Command(command, { args, stdin: "null" }).output();
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    return text.split("\n").find((line) => line.trim() !== "")?.trim() ?? "";
  };
  const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  const osRelease = Deno.readTextFileSync("/etc/os-release");
  return {
    date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
    cpu: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown CPU",
    cores: navigator.hardwareConcurrency,
    os: /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(osRelease)?.[1] ?? Deno.build.os,
    deno: Deno.version.deno,
    nginx: (await version("nginx", ["-v"])).replace("nginx version: ", ""),
    wrk: (await version("wrk", ["-v"])).split(" [")[0],
  };
}

/** User plus system CPU seconds of the processes so far (Linux). */
function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / 100;
}

function childPids(pid: number): number[] {
  const text = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim();
  return text === "" ? [] : text.split(" ").map(Number);
}

function rps(result: WrkResult): number {
  return result.requests / (result.duration_us / 1e6);
}

function median(values: number[]): number {
  return percentile([...values].sort((a, b) => a - b), 50);
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

function ms(us: number): string {
  return (us / 1000).toFixed(3);
}

function mib(bytes: number): number {
  return bytes / 1024 / 1024;
}

function f(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "-";
}

function duration(us: number): string {
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(1)} µs`;
}

function log(message: string): void {
  console.error(message);
}
