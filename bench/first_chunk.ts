/**
 * @module
 * A stream's first chunk through a path: the fast backend stamps each chunk it
 * makes (bench/backend.ts), and the delay runs to this client reading it.
 */

/** Milliseconds from the backend stamping a stream's first chunk to this client reading it. */
export async function firstChunkDelay(url: string): Promise<number> {
  const response = await fetch(`${url}/api/generate?chunks=2&interval=20`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"model":"bench","prompt":"Hi"}',
  });
  const reader = response.body!.getReader();
  const { value } = await reader.read();
  const read = performance.timeOrigin + performance.now();
  const sent = Number(/"sent":([\d.]+)/.exec(new TextDecoder().decode(value))?.[1]);
  while (!(await reader.read()).done) { /* the rest */ }
  return read - sent;
}
