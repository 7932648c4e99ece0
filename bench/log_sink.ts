/**
 * @module
 * `deno run -A bench/log_sink.ts`: the router's stdout sink and JSON formatter
 * (obs/log.ts) against LogTape's JSON formatter alone and LogTape's `getStreamSink`
 * with `nonBlocking`, in one run, a request's log line at a time: CPU per line and
 * how many lines reach a pipe.
 */

import { configure, getJsonLinesFormatter, getLogger, getStreamSink } from "@logtape/logtape";
import { jsonFormatter, setupLogging, stdoutSink } from "../obs/log.ts";

const LINES = 50_000;
const ROUNDS = 3;

/** This process's CPU time in ms (utime + stime, from /proc at 100 ticks a second). */
function cpuMs(): number {
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** Child: logs LINES request lines through `sink`, writes its CPU per line to stderr. */
async function child(sink: string): Promise<void> {
  let dispose: (() => PromiseLike<void>) | undefined;
  if (sink === "router") {
    await setupLogging("info");
  } else if (sink === "router-sink+logtape-json") {
    // The router's sink with LogTape's JSON formatter alone, without the fast path.
    await configure({
      reset: true,
      sinks: { stdout: stdoutSink(getJsonLinesFormatter({ properties: "flatten" })) },
      loggers: [
        { category: ["rkllama-router"], lowestLevel: "info", sinks: ["stdout"] },
        { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
      ],
    });
  } else {
    const stream = getStreamSink(Deno.stdout.writable, {
      formatter: jsonFormatter,
      nonBlocking: { bufferSize: 1000, flushInterval: 10 },
    });
    await configure({
      reset: true,
      sinks: { stdout: stream },
      loggers: [
        { category: ["rkllama-router"], lowestLevel: "info", sinks: ["stdout"] },
        { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
      ],
    });
    dispose = () => stream[Symbol.asyncDispose]();
  }
  const log = getLogger(["rkllama-router", "proxy"]);
  const started = cpuMs();
  for (let i = 0; i < LINES; i++) {
    log.info("{method} {path} {status} {durationMs}", {
      method: "POST",
      path: "/api/chat",
      status: 200,
      durationMs: 12.5,
      pod: "rk-0",
      model: "qwen",
      requestId: `r${i}`,
    });
    // Requests come over time, not in one synchronous loop.
    if (i % 64 === 63) await new Promise((resolve) => setTimeout(resolve, 0));
  }
  await (dispose?.() ?? new Promise((resolve) => setTimeout(resolve, 50)));
  console.error(((cpuMs() - started) * 1000 / LINES).toFixed(1));
}

if (Deno.args[0] === "--child") {
  await child(Deno.args[1]);
} else {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const sink of ["router", "router-sink+logtape-json", "logtape"]) {
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", import.meta.filename!, "--child", sink],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const lines = output.stdout.filter((byte) => byte === 0x0a).length;
      const cpu = new TextDecoder().decode(output.stderr).trim();
      console.log(`round ${round} ${sink}: ${cpu} us CPU/line, ${lines} of ${LINES} lines written`);
    }
  }
}
