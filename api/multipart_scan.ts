/**
 * @module
 * Finds a few fields of a multipart/form-data body (RFC 7578, framed as RFC 2046
 * says) without parsing it: the router needs only the `model` field of an audio
 * transcription, not its file. `Response.formData()` of a 60 MiB form held the
 * event loop for 440-490 ms in one piece and grew RSS by 60-120 MiB, and sending
 * another model name parsed and rebuilt it again (560 ms, 190 MiB; issue 16). This
 * scan copies nothing and decodes only each part's headers: 10-50 ms for 60 MiB
 * (150 ms for a file made of near-delimiters), never more than about 15 ms at once.
 * It reads the form to its close delimiter even once the model is found, so a form
 * the boards would refuse, or that names the model twice, is refused here.
 */

/** Why a body is not a multipart form the router can pass on. */
export class MultipartError extends Error {
  override name = "MultipartError";
}

/** A part whose name was asked for: its content is `[start, end)` in the body. */
export interface FormPart {
  name: string;
  /** The part's file name: set (maybe empty) when the part is a file. */
  filename: string | undefined;
  start: number;
  end: number;
}

/**
 * Bytes searched before other work gets a turn. The search costs about 0.2 ms a
 * MiB on audio and 1.3 ms a MiB on a body built of near-delimiters, so a slice
 * holds the event loop a few milliseconds at most.
 */
const SLICE = 4 << 20;

/**
 * Parts read before other work gets a turn, whatever their size: a body of
 * millions of empty parts costs its headers, not its bytes.
 */
const PARTS_PER_SLICE = 20_000;

/**
 * The longest header block a part may have. Real ones are a few hundred bytes;
 * the bound keeps a part that never ends its headers from being searched whole.
 */
export const MAX_PART_HEADERS = 16 << 10;

const CR = 0x0d;
const LF = 0x0a;
const DASH = 0x2d;
const SPACE = 0x20;
const TAB = 0x09;

/** Gives queued work (other requests, timers) a turn. */
function breathe(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * The boundary a multipart Content-Type names.
 *
 * @throws {MultipartError} when it names none
 * @example
 * ```ts
 * boundaryOf('multipart/form-data; boundary="a b"'); // "a b"
 * ```
 */
export function boundaryOf(contentType: string): string {
  const semicolon = contentType.indexOf(";");
  const boundary = semicolon === -1
    ? undefined
    : parameters(contentType.slice(semicolon + 1)).get("boundary");
  // CR or LF in it would break the search's bound (see Search); headers cannot hold them anyway.
  if (!boundary || /[\r\n]/.test(boundary)) {
    throw new MultipartError("the multipart Content-Type names no boundary");
  }
  return boundary;
}

/**
 * Reads a multipart/form-data body part by part and returns the parts named in
 * `wanted`, in order (a name may come more than once). Checks the framing to the
 * close delimiter, so a body the boards could not read is refused here too.
 *
 * @param boundary as {@linkcode boundaryOf} returns it
 * @throws {MultipartError} when the body has no delimiter, no close delimiter, or
 * a part whose headers do not end
 * @example
 * ```ts
 * const body = new TextEncoder().encode(
 *   '--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n--b--\r\n',
 * );
 * await scanMultipart(body, "b", ["model"]);
 * // [{ name: "model", filename: undefined, start: 50, end: 57 }]
 * ```
 */
export async function scanMultipart(
  body: Uint8Array,
  boundary: string,
  wanted: readonly string[],
): Promise<FormPart[]> {
  const encoder = new TextEncoder();
  const search = new Search(body, encoder.encode(`\r\n--${boundary}`));
  const found: FormPart[] = [];
  // Where the next delimiter's `--boundary` ends.
  let after: number;
  if (search.isDelimiter(0, 2)) {
    after = search.needle.length - 2;
  } else {
    const first = await search.next(0);
    if (first === -1) throw new MultipartError(`${CANNOT}: it has no boundary delimiter`);
    after = first + search.needle.length;
  }
  let parts = 0;
  for (;;) {
    if (body[after] === DASH && body[after + 1] === DASH) return found;
    while (body[after] === SPACE || body[after] === TAB) after++;
    const start = after + 2;
    const next = await search.next(start);
    if (next === -1) throw new MultipartError(`${CANNOT}: it has no closing boundary delimiter`);
    const part = readHeaders(body, start, next);
    if (part.name !== undefined && wanted.includes(part.name)) {
      found.push({ name: part.name, filename: part.filename, start: part.content, end: next });
    }
    after = next + search.needle.length;
    if (++parts % PARTS_PER_SLICE === 0 || after >= search.breatheAt) {
      await breathe();
      search.breatheAt = after + SLICE;
    }
  }
}

const CANNOT = "the multipart form body cannot be parsed";

/**
 * Finds delimiters (`CRLF--boundary`, then `--` or white space and CRLF). A
 * Horspool search that compares from the needle's CR forward: the CR is the
 * needle's only one, so two long comparisons never overlap and the work stays
 * linear in the body whatever it holds (about 10 ms for 64 MiB of audio).
 */
class Search {
  readonly needle: Uint8Array;
  /** How far the search may go before other work gets a turn. */
  breatheAt = SLICE;
  readonly #body: Uint8Array;
  readonly #shift = new Int32Array(256);

  constructor(body: Uint8Array, needle: Uint8Array) {
    this.#body = body;
    this.needle = needle;
    const m = needle.length;
    this.#shift.fill(m);
    for (let k = 0; k < m - 1; k++) this.#shift[needle[k]] = m - 1 - k;
  }

  /** Where the next delimiter at or past `from` starts (its CR), or -1 when none does. */
  async next(from: number): Promise<number> {
    let i = from;
    for (;;) {
      const found = this.#within(i, this.breatheAt);
      if (found >= 0) return found;
      i = -found - 1;
      if (i > this.#body.length - this.needle.length) return -1;
      await breathe();
      this.breatheAt = i + SLICE;
    }
  }

  /**
   * True when the needle's bytes from `skip` on are at `at` and end a delimiter
   * line (a boundary followed by other text is content, as parsers take it).
   */
  isDelimiter(at: number, skip: number): boolean {
    const body = this.#body;
    const needle = this.needle;
    const m = needle.length;
    for (let k = skip; k < m; k++) if (body[at + k - skip] !== needle[k]) return false;
    let j = at + m - skip;
    if (body[j] === DASH && body[j + 1] === DASH) return true;
    while (body[j] === SPACE || body[j] === TAB) j++;
    return body[j] === CR && body[j + 1] === LF;
  }

  /**
   * The delimiter starting in `[i, stop)`, else minus one minus where the search
   * stopped.
   */
  #within(i: number, stop: number): number {
    const body = this.#body;
    const shift = this.#shift;
    const m = this.needle.length;
    const last = Math.min(stop, body.length - m + 1);
    while (i < last) {
      if (body[i] === CR && this.isDelimiter(i, 0)) return i;
      i += shift[body[i + m - 1]];
    }
    return -i - 1;
  }
}

/**
 * The name and file name of the part starting at `start` (just past its
 * delimiter's CRLF) whose delimiter that ends it starts at `end`, and where its
 * content starts.
 */
function readHeaders(
  body: Uint8Array,
  start: number,
  end: number,
): { name: string | undefined; filename: string | undefined; content: number } {
  // No headers: the content (if any) follows a blank line, or the part is empty.
  if (start >= end) return { name: undefined, filename: undefined, content: end };
  if (body[start] === CR && body[start + 1] === LF) {
    return { name: undefined, filename: undefined, content: start + 2 };
  }
  // The blank line may be the delimiter's own CRLF (a part with headers, no content).
  const limit = Math.min(end + 2, start + MAX_PART_HEADERS);
  let blank = -1;
  for (let i = start; i + 3 < limit; i++) {
    if (body[i] === CR && body[i + 1] === LF && body[i + 2] === CR && body[i + 3] === LF) {
      blank = i;
      break;
    }
  }
  if (blank === -1) {
    throw new MultipartError(
      end + 2 > start + MAX_PART_HEADERS
        ? `${CANNOT}: a part's headers are longer than ${MAX_PART_HEADERS} bytes`
        : `${CANNOT}: a part's headers do not end with a blank line`,
    );
  }
  const content = Math.min(blank + 4, end);
  let name: string | undefined;
  let filename: string | undefined;
  // Browsers send non-ASCII file names as raw UTF-8.
  const lines = utf8.decode(body.subarray(start, blank)).split("\r\n");
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon === -1 || line.slice(0, colon).trim().toLowerCase() !== "content-disposition") {
      continue;
    }
    const value = line.slice(colon + 1);
    const semicolon = value.indexOf(";");
    if (semicolon === -1) continue;
    const params = parameters(value.slice(semicolon + 1));
    name = params.get("name");
    filename = params.get("filename") ?? params.get("filename*");
  }
  return { name, filename, content };
}

const utf8 = new TextDecoder();

/**
 * The parameters of a header value after its first `;`: `key=token` or
 * `key="quoted \"string\""`, keys lower-cased, the first of a repeated key kept.
 */
function parameters(text: string): Map<string, string> {
  const params = new Map<string, string>();
  let i = 0;
  const n = text.length;
  while (i < n) {
    while (i < n && (text[i] === " " || text[i] === "\t" || text[i] === ";")) i++;
    const equals = text.indexOf("=", i);
    if (equals === -1) break;
    const semicolon = text.indexOf(";", i);
    if (semicolon !== -1 && semicolon < equals) {
      i = semicolon + 1;
      continue;
    }
    const key = text.slice(i, equals).trim().toLowerCase();
    i = equals + 1;
    while (i < n && (text[i] === " " || text[i] === "\t")) i++;
    let value = "";
    if (text[i] === '"') {
      for (i++; i < n && text[i] !== '"'; i++) {
        if (text[i] === "\\" && i + 1 < n) i++;
        value += text[i];
      }
      i++;
    } else {
      const stop = text.indexOf(";", i);
      value = text.slice(i, stop === -1 ? n : stop).trim();
      i = stop === -1 ? n : stop;
    }
    if (!params.has(key)) params.set(key, value);
  }
  return params;
}
