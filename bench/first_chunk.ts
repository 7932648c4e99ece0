/**
 * @module
 * A stream's first chunk through a path: the fast backend stamps each chunk it
 * makes (bench/backend.ts), and the delay runs to this client reading it.
 *
 * The client reads the socket itself, as curl or an SDK's HTTP stack in another
 * language would: `fetch()` here added 0.2-0.3 ms of its own to every path (its
 * response object, a stream and a read through each), which hid the router's
 * share (bench: direct 0.64 ms with fetch, 0.30-0.45 ms read from the socket).
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const BODY = '{"model":"bench","prompt":"Hi"}';

/** Milliseconds from the backend stamping a stream's first chunk to this client reading it. */
export async function firstChunkDelay(url: string): Promise<number> {
  const { hostname, port, host } = new URL(url);
  const connection = await Deno.connect({ hostname, port: Number(port) });
  try {
    connection.setNoDelay(true);
    // Two chunks 20 ms apart: the first is a stream's, not a whole answer's.
    await connection.write(encoder.encode(
      `POST /api/generate?chunks=2&interval=20 HTTP/1.1\r\nhost: ${host}\r\n` +
        `content-type: application/json\r\ncontent-length: ${BODY.length}\r\n` +
        `connection: close\r\n\r\n${BODY}`,
    ));
    const buffer = new Uint8Array(64 * 1024);
    let text = "";
    let delay: number | undefined;
    for (let n; (n = await connection.read(buffer)) !== null;) {
      const read = performance.timeOrigin + performance.now();
      if (delay !== undefined) continue; // the rest, to the end
      text += decoder.decode(buffer.subarray(0, n));
      const sent = /"sent":([\d.]+)/.exec(text)?.[1];
      if (sent !== undefined) delay = read - Number(sent);
    }
    if (delay === undefined) throw new Error(`${url}: no stamped chunk in ${text.slice(0, 200)}`);
    return delay;
  } finally {
    connection.close();
  }
}

/**
 * First-chunk delays of `count` streams one at a time, after `warmup` not kept:
 * a router in service has run its stream path thousands of times, and V8
 * compiles it to machine code only after it has run often (the same router read
 * 1.1 ms over its first 1,000 streams and 0.87 ms over its fourth 1,000).
 */
export async function firstChunkDelays(
  url: string,
  count: number,
  warmup: number,
): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await firstChunkDelay(url);
  const delays: number[] = [];
  for (let i = 0; i < count; i++) delays.push(await firstChunkDelay(url));
  return delays;
}
