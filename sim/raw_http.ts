/**
 * @module
 * HTTP/1.1 by hand, for tests that must send what fetch() will not: raw
 * request-targets (`/api/./load`), broken heads, bodies that lie about their size.
 */

/** Sends raw bytes on one connection; resolves with what came back before it closed (or `ms` passed). */
export async function rawExchange(url: string, bytes: Uint8Array, ms = 10_000): Promise<string> {
  const { hostname, port } = new URL(url);
  const connection = await Deno.connect({ hostname, port: Number(port) });
  const timer = setTimeout(() => connection.close(), ms);
  let text = "";
  try {
    await connection.write(bytes).catch(() => {});
    const buffer = new Uint8Array(65_536);
    for (;;) {
      const n = await connection.read(buffer).catch(() => null);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
      // One response is all these requests get.
      if (/\r\n\r\n/.test(text) && responseComplete(text)) break;
    }
  } finally {
    clearTimeout(timer);
    try {
      connection.close();
    } catch { /* closed by the timer */ }
  }
  return text;
}

/**
 * Sends raw bytes on one connection and reads until the router closes it or `ms`
 * pass; `closed` tells which.
 */
export async function rawUntilClosed(
  url: string,
  bytes: Uint8Array,
  ms: number,
): Promise<{ text: string; closed: boolean }> {
  const { hostname, port } = new URL(url);
  const connection = await Deno.connect({ hostname, port: Number(port) });
  let closed = true;
  const timer = setTimeout(() => {
    closed = false;
    connection.close();
  }, ms);
  let text = "";
  try {
    await connection.write(bytes).catch(() => {});
    const buffer = new Uint8Array(65_536);
    for (;;) {
      const n = await connection.read(buffer).catch(() => null);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
  } finally {
    clearTimeout(timer);
    try {
      connection.close();
    } catch { /* closed already */ }
  }
  return { text, closed };
}

/** Whether `text` holds a whole response: its declared length, or chunked to its closing chunk. */
export function responseComplete(text: string): boolean {
  const [head, body] = text.split("\r\n\r\n", 2);
  const length = /content-length: (\d+)/i.exec(head);
  if (length) return new TextEncoder().encode(body).length >= Number(length[1]);
  return /transfer-encoding: chunked/i.test(head) ? body.endsWith("0\r\n\r\n") : false;
}

export function statusOf(raw: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);
}

export function jsonBodyOf(raw: string): unknown {
  const body = raw.split("\r\n\r\n", 2)[1] ?? "";
  const chunked = /transfer-encoding: chunked/i.test(raw.split("\r\n\r\n", 1)[0]);
  return JSON.parse(chunked ? body.replace(/^[0-9a-f]+\r\n|\r\n[0-9a-f]+\r\n/gi, "") : body);
}
