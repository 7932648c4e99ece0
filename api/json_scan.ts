/**
 * @module
 * Checks that a request body is JSON and finds a few of its top-level fields
 * without building its values: `JSON.parse` of a 64 MiB body of `[` held the
 * event loop for 12-26 s and took about 3 GB (issue 16). The scan holds no copy
 * of the body, refuses nesting deeper than the boards' parser accepts, and lets
 * other requests run after each mebibyte of a large body.
 */

/** The type of a JSON value, as a message names it. */
export type JsonType = "object" | "array" | "string" | "number" | "boolean" | "null";

/**
 * Where a top-level field's value is in the body: `[start, end)` in bytes for a
 * string, number, boolean or null; for an object or array, `end` is just past
 * its opening bracket.
 */
export interface JsonField {
  type: JsonType;
  start: number;
  end: number;
}

/** What {@linkcode scanJson} found: the top-level value's type and the fields asked for. */
export interface JsonScan {
  type: JsonType;
  /** Each field asked for that the top-level object has; the last one when repeated, as parsers take it. */
  fields: Map<string, JsonField>;
  /** Values in the body, at every depth (strings, numbers, literals, objects and arrays). */
  values: number;
}

/** Why a body is not JSON the router passes on. */
export class JsonError extends Error {
  override name = "JsonError";
  constructor(readonly reason: "syntax" | "utf8" | "bom" | "depth", message: string) {
    super(message);
  }
}

/**
 * Nesting the router accepts: Python's `json` (the boards' parser) fails near its
 * recursion limit of 1000 frames, less those the server already uses; 512 is
 * far beyond any real request and keeps the check cheap.
 */
export const MAX_DEPTH = 512;

/** Bytes scanned before other work gets a turn. */
const SLICE = 1 << 20;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OBJECT = 1;
const ARRAY = 2;

/** What the scanner expects next. */
const enum Expect {
  Value,
  /** After `[`: a value or `]`. */
  FirstValue,
  /** After `{`: a key or `}`. */
  FirstKey,
  Key,
  /** After a key: `:`. */
  Colon,
  /** After a value: `,`, a closing bracket, or the end at the top. */
  After,
  /** Inside a string cut by the end of a slice. */
  InString,
}

/** Gives queued work (other requests, timers) a turn. */
function breathe(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Checks that `bytes` are one JSON text (RFC 8259) in UTF-8 and returns its
 * top-level type and where the top-level fields named in `wanted` are.
 *
 * @throws {JsonError} when the body is not JSON, not UTF-8, starts with a byte
 * order mark (which Ollama refuses too), or nests deeper than {@linkcode MAX_DEPTH}
 * @example
 * ```ts
 * const scan = await scanJson(new TextEncoder().encode('{"model":"qwen"}'), ["model"]);
 * scan.fields.get("model"); // { type: "string", start: 9, end: 15 }
 * ```
 */
export async function scanJson(bytes: Uint8Array, wanted: readonly string[]): Promise<JsonScan> {
  if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
    throw new JsonError(
      "bom",
      "the request body starts with a byte order mark (EF BB BF), which JSON sent over a network must not have (RFC 8259, 8.1) and Ollama refuses; send the body without it",
    );
  }
  const scanner = new Scanner(bytes, wanted);
  for (let limit = SLICE; !scanner.run(limit); limit = scanner.at + SLICE) await breathe();
  if (scanner.highBytes) await checkUtf8(bytes);
  return { type: scanner.rootType!, fields: scanner.fields, values: scanner.values };
}

/** The scan's state between slices; {@linkcode Scanner.run} does the work. */
class Scanner {
  readonly fields = new Map<string, JsonField>();
  rootType: JsonType | undefined;
  /** Whether a byte past ASCII was seen (in a string: anywhere else is a syntax error). */
  highBytes = false;
  /** The next byte to look at. */
  at = 0;
  /** Values seen so far. */
  values = 0;
  readonly #bytes: Uint8Array;
  readonly #wanted: readonly string[];
  /** Object or array, by depth; grown as the body nests deeper. */
  #stack = new Uint8Array(16);
  #depth = 0;
  #expect = Expect.Value;
  /** The wanted top-level key whose value comes next, if any. */
  #key: string | undefined;
  /** Where the string being scanned started, while {@linkcode Expect.InString}. */
  #stringStart = 0;
  /** What to expect after that string. */
  #afterString = Expect.After;

  constructor(bytes: Uint8Array, wanted: readonly string[]) {
    this.#bytes = bytes;
    this.#wanted = wanted;
  }

  /**
   * Scans on to about `limit` (a string may stop exactly there, a token just
   * past it). Returns true once the whole body is scanned.
   *
   * @throws {JsonError} as {@linkcode scanJson}
   */
  run(limit: number): boolean {
    const bytes = this.#bytes;
    const n = bytes.length;
    let stack = this.#stack;
    let i = this.at;
    let depth = this.#depth;
    let expect = this.#expect;
    try {
      if (expect === Expect.InString) {
        const end = this.#stringEnd(i, limit);
        if (end < 0) {
          i = -end;
          return false;
        }
        i = end;
        expect = this.#afterString;
        if (expect === Expect.After) this.#found("string", this.#stringStart, i, depth);
        else if (depth === 1) this.#key = this.#topKey(this.#stringStart, i);
      }
      for (;;) {
        let c = bytes[i];
        while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = bytes[++i];
        if (i >= n) {
          if (depth === 0 && expect === Expect.After) return true;
          this.#fail(i, "");
        }
        if (i >= limit) return false;
        switch (expect) {
          case Expect.After: {
            if (depth === 0) this.#fail(i, "unexpected data after the JSON value");
            const container = stack[depth - 1];
            if (c === 0x2c) {
              i++;
              expect = container === OBJECT ? Expect.Key : Expect.Value;
            } else if (c === (container === OBJECT ? 0x7d : 0x5d)) {
              i++;
              depth--;
            } else {
              this.#fail(i, `expected ',' or '${container === OBJECT ? "}" : "]"}'`);
            }
            continue;
          }
          case Expect.Colon:
            if (c !== 0x3a) this.#fail(i, "expected ':' after a key");
            i++;
            expect = Expect.Value;
            continue;
          case Expect.FirstKey:
          case Expect.Key: {
            if (c === 0x7d && expect === Expect.FirstKey) {
              i++;
              depth--;
              expect = Expect.After;
              continue;
            }
            if (c !== QUOTE) this.#fail(i, "expected a key in double quotes");
            const end = this.#stringEnd(i + 1, limit);
            if (end < 0) {
              this.#stringStart = i;
              this.#afterString = Expect.Colon;
              expect = Expect.InString;
              i = -end;
              return false;
            }
            if (depth === 1) this.#key = this.#topKey(i, end);
            i = end;
            expect = Expect.Colon;
            continue;
          }
          case Expect.FirstValue:
            if (c === 0x5d) {
              i++;
              depth--;
              expect = Expect.After;
              continue;
            }
        }
        // A value.
        const start = i;
        if (c === 0x7b || c === 0x5b) {
          if (depth === MAX_DEPTH) {
            throw new JsonError(
              "depth",
              `the request body nests JSON deeper than ${MAX_DEPTH} levels, more than the router passes on`,
            );
          }
          if (depth === stack.length) {
            const deeper = new Uint8Array(Math.min(MAX_DEPTH, depth * 4));
            deeper.set(stack);
            stack = this.#stack = deeper;
          }
          const type = c === 0x7b ? "object" : "array";
          this.#found(type, start, i + 1, depth);
          stack[depth++] = c === 0x7b ? OBJECT : ARRAY;
          i++;
          expect = c === 0x7b ? Expect.FirstKey : Expect.FirstValue;
          continue;
        }
        let type: JsonType;
        if (c === QUOTE) {
          const end = this.#stringEnd(i + 1, limit);
          if (end < 0) {
            this.#stringStart = i;
            this.#afterString = Expect.After;
            expect = Expect.InString;
            i = -end;
            return false;
          }
          i = end;
          type = "string";
        } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
          i = this.#numberEnd(i);
          type = "number";
        } else if (c === 0x74) {
          i = this.#literal(i, "true");
          type = "boolean";
        } else if (c === 0x66) {
          i = this.#literal(i, "false");
          type = "boolean";
        } else if (c === 0x6e) {
          i = this.#literal(i, "null");
          type = "null";
        } else {
          return this.#fail(i, "expected a value");
        }
        this.#found(type, start, i, depth);
        expect = Expect.After;
      }
    } finally {
      this.at = i;
      this.#depth = depth;
      this.#expect = expect;
    }
  }

  /** Notes a value at `[start, end)` whose enclosing depth is `depth`. */
  #found(type: JsonType, start: number, end: number, depth: number): void {
    this.values++;
    this.rootType ??= type;
    if (depth === 1 && this.#key !== undefined) {
      this.fields.set(this.#key, { type, start, end });
      this.#key = undefined;
    }
  }

  /**
   * The index after the closing quote of the string whose content starts at `j`,
   * or minus the index where it stopped at `limit` without one.
   */
  #stringEnd(j: number, limit: number): number {
    const bytes = this.#bytes;
    const n = bytes.length;
    const stop = limit < n ? limit : n;
    let high = false;
    while (j < stop) {
      const c = bytes[j];
      if (c === QUOTE) {
        if (high) this.highBytes = true;
        return j + 1;
      }
      if (c === BACKSLASH) {
        const next = bytes[j + 1];
        if (next === 0x75) {
          for (let k = j + 2; k < j + 6; k++) {
            const h = bytes[k] | 0x20;
            if (!((h >= 0x30 && h <= 0x39) || (h >= 0x61 && h <= 0x66))) {
              this.#fail(k, "an invalid \\u escape");
            }
          }
          j += 6;
        } else if (
          next === QUOTE || next === BACKSLASH || next === 0x2f || next === 0x62 ||
          next === 0x66 || next === 0x6e || next === 0x72 || next === 0x74
        ) {
          j += 2;
        } else {
          this.#fail(j + 1, "an invalid escape");
        }
        continue;
      }
      if (c < 0x20) this.#fail(j, "a control character inside a string");
      if (c >= 0x80) high = true;
      j++;
    }
    if (high) this.highBytes = true;
    if (j >= n) this.#fail(n, "an unterminated string");
    return -j;
  }

  #numberEnd(j: number): number {
    const bytes = this.#bytes;
    if (bytes[j] === 0x2d) j++;
    if (bytes[j] === 0x30) j++;
    else if (bytes[j] >= 0x31 && bytes[j] <= 0x39) {
      while (bytes[j] >= 0x30 && bytes[j] <= 0x39) j++;
    } else {
      this.#fail(j, "an invalid number");
    }
    if (bytes[j] === 0x2e) {
      j++;
      if (!(bytes[j] >= 0x30 && bytes[j] <= 0x39)) this.#fail(j, "an invalid number");
      while (bytes[j] >= 0x30 && bytes[j] <= 0x39) j++;
    }
    if ((bytes[j] | 0x20) === 0x65) {
      j++;
      if (bytes[j] === 0x2b || bytes[j] === 0x2d) j++;
      if (!(bytes[j] >= 0x30 && bytes[j] <= 0x39)) this.#fail(j, "an invalid number");
      while (bytes[j] >= 0x30 && bytes[j] <= 0x39) j++;
    }
    return j;
  }

  #literal(i: number, word: string): number {
    for (let k = 0; k < word.length; k++) {
      if (this.#bytes[i + k] !== word.charCodeAt(k)) this.#fail(i + k, "expected a value");
    }
    return i + word.length;
  }

  /** The wanted key the string at `[start, end)` spells, else undefined. */
  #topKey(start: number, end: number): string | undefined {
    const bytes = this.#bytes;
    const length = end - start - 2;
    for (const name of this.#wanted) {
      if (name.length !== length) continue;
      let same = true;
      for (let k = 0; k < length && same; k++) same = bytes[start + 1 + k] === name.charCodeAt(k);
      if (same) return name;
    }
    // A key written with escapes (`"mod\u0065l"`) is the same key to a parser.
    if (bytes.subarray(start + 1, end - 1).includes(BACKSLASH)) {
      const text = JSON.parse(new TextDecoder().decode(bytes.subarray(start, end)));
      if (this.#wanted.includes(text)) return text;
    }
    return undefined;
  }

  #fail(at: number, what: string): never {
    throw new JsonError(
      "syntax",
      at >= this.#bytes.length
        ? `the request body is not valid JSON: it ends early${what ? ` (${what})` : ""}`
        : `the request body is not valid JSON: ${what} at byte ${at}`,
    );
  }
}

/** @throws {JsonError} unless `bytes` are UTF-8 (checked a slice at a time). */
async function checkUtf8(bytes: Uint8Array): Promise<void> {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  try {
    for (let start = 0; start < bytes.length; start += SLICE) {
      if (start > 0) await breathe();
      const end = Math.min(bytes.length, start + SLICE);
      decoder.decode(bytes.subarray(start, end), { stream: end < bytes.length });
    }
  } catch {
    throw new JsonError("utf8", "the request body is not valid UTF-8, so not valid JSON");
  }
}
