/**
 * @module
 * `deno task bench:edge`: the router's edge, and another checkout's beside it in
 * the same run (`--baseline DIR`, e.g. a copy of main made with `git archive`), so
 * that a change is measured before and after on the same noisy machine:
 *
 * - CPU per small request and requests per second (wrk, 16 connections), the
 *   floor proxy (bench/floor_proxy.ts) alongside;
 * - the delay of a stream's first chunk, from the backend stamping it to the
 *   client reading it, one stream at a time (issue 16: "streams start late");
 * - RSS: at start, after 10 s of small requests at 64 connections, with 256
 *   streams open, and 2 s after them.
 *
 * `--rounds N` (default 3). Prints a table; nothing is asserted.
 */

import {
  type Helper,
  type RouterProcess,
  rssBytes,
  runWrk,
  startBackend,
  startFloorProxy,
  startRouter,
} from "./processes.ts";
import { firstChunkDelays } from "./first_chunk.ts";

const args = Deno.args;
const option = (name: string) => {
  const index = args.indexOf(`--${name}`);
  return index === -1 ? undefined : args[index + 1];
};
const baselineDir = option("baseline");
const rounds = Number(option("rounds") ?? "3");
const FIRST_CHUNKS = 60;
/** Streams per target before the first chunks are kept (bench/first_chunk.ts). */
const FIRST_CHUNK_WARMUP = 500;

const dir = await Deno.makeTempDir({ prefix: "rkllama-bench-edge-" });
const backend = await startBackend();
const backendUrl = backend.urls[0];
const helpers: { close(): Promise<void> }[] = [backend];
try {
  const routers: Record<string, RouterProcess> = {
    router: await startRouter(backendUrl, `${dir}/router.log`),
  };
  if (baselineDir) {
    const checkout = new URL(`file://${await Deno.realPath(baselineDir)}/`);
    routers.baseline = await startRouter(backendUrl, `${dir}/baseline.log`, { checkout });
  }
  const floor: Helper = await startFloorProxy(backendUrl);
  helpers.push(floor, ...Object.values(routers));
  const targets: Record<string, { url: string; pid?: number }> = {
    direct: { url: backendUrl },
    floor: { url: floor.urls[0], pid: floor.pid },
    ...Object.fromEntries(
      Object.entries(routers).map(([name, router]) => [name, { url: router.url, pid: router.pid }]),
    ),
  };
  const names = Object.keys(targets);

  console.log(`small requests: ${rounds} round(s) x ${names.length} targets x 3 s at c=16`);
  const cpu: Record<string, number[]> = {};
  const rps: Record<string, number[]> = {};
  for (const name of names) await runWrk(targets[name].url, 16, 1);
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + round) % names.length];
      const { url, pid } = targets[name];
      const before = pid ? cpuSeconds(pid) : 0;
      const result = await runWrk(url, 16, 3);
      if (result.non2xx > 0 || result.errors > 0) {
        throw new Error(`${name}: ${result.non2xx} non-2xx, ${result.errors} errors`);
      }
      (rps[name] ??= []).push(result.requests / (result.duration_us / 1e6));
      if (pid) (cpu[name] ??= []).push((cpuSeconds(pid) - before) * 1e6 / result.requests);
    }
  }

  console.log(`first chunks: ${rounds} x ${FIRST_CHUNKS} streams, one at a time, per target`);
  const first: Record<string, number[]> = {};
  for (const name of names) await firstChunkDelays(targets[name].url, 0, FIRST_CHUNK_WARMUP);
  for (let round = 0; round < rounds; round++) {
    for (const name of names) {
      (first[name] ??= []).push(...await firstChunkDelays(targets[name].url, FIRST_CHUNKS, 0));
    }
  }

  console.log("memory: a router of its own per checkout");
  const memory: Record<string, Record<string, number>> = {};
  for (const name of Object.keys(routers)) {
    memory[name] = await measureMemory(name === "baseline" ? baselineDir : undefined);
  }

  console.log("\n| target | req/s (c=16) | CPU per request | first chunk p50 | first chunk p90 |");
  console.log("|---|---:|---:|---:|---:|");
  for (const name of names) {
    const sorted = first[name].toSorted((a, b) => a - b);
    console.log(
      `| ${name} | ${median(rps[name]).toFixed(0)} | ${
        cpu[name] ? `${median(cpu[name]).toFixed(0)} µs` : "-"
      } | ${percentile(sorted, 50).toFixed(3)} ms | ${percentile(sorted, 90).toFixed(3)} ms |`,
    );
  }
  const moments = Object.keys(Object.values(memory)[0]);
  console.log(`\n| RSS (MiB) | ${Object.keys(memory).join(" | ")} |`);
  console.log(`|---|${Object.keys(memory).map(() => "---:").join("|")}|`);
  for (const moment of moments) {
    console.log(
      `| ${moment} | ${
        Object.values(memory).map((samples) => samples[moment].toFixed(1)).join(" | ")
      } |`,
    );
  }
} finally {
  for (const helper of helpers.reverse()) await helper.close();
  await Deno.remove(dir, { recursive: true });
}

/** RSS in MiB of a router of its own at the moments of issue 16's memory targets. */
async function measureMemory(checkoutDir: string | undefined): Promise<Record<string, number>> {
  const checkout = checkoutDir ? new URL(`file://${await Deno.realPath(checkoutDir)}/`) : undefined;
  const router = await startRouter(backendUrl, `${dir}/memory.log`, { checkout });
  const mib = () => rssBytes(router.pid) / 2 ** 20;
  const samples: Record<string, number> = {};
  try {
    samples["at start"] = mib();
    await runWrk(router.url, 64, 10);
    samples["after 10 s of small requests at 64 connections"] = mib();
    const opened: Promise<void>[] = [];
    const streams = Array.from({ length: 256 }, () => {
      const first = Promise.withResolvers<void>();
      opened.push(first.promise);
      return (async () => {
        const response = await fetch(`${router.url}/api/generate?chunks=20&interval=100`, {
          method: "POST",
          body: '{"model":"bench","prompt":"Hi"}',
        });
        for await (const _ of response.body!) first.resolve();
      })();
    });
    await Promise.all(opened);
    samples["with 256 streams open"] = mib();
    await Promise.all(streams);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    samples["2 s after them"] = mib();
  } finally {
    await router.close();
  }
  return samples;
}

function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function median(values: number[]): number {
  return percentile(values.toSorted((a, b) => a - b), 50);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
