import assert from "node:assert/strict";
import { boundaryOf, MAX_PART_HEADERS, MultipartError, scanMultipart } from "./multipart_scan.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The `model` fields the scan finds in `text` (framed by boundary `b` unless told), as text. */
async function models(text: string, boundary = "b"): Promise<string[]> {
  const body = encoder.encode(text);
  const parts = await scanMultipart(body, boundary, ["model"]);
  return parts.map((part) => decoder.decode(body.subarray(part.start, part.end)));
}

const model = (value: string, headers = 'Content-Disposition: form-data; name="model"') =>
  `${headers}\r\n\r\n${value}`;
const file = (content: string) =>
  `Content-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n${content}`;
const form = (parts: string[], boundary = "b") =>
  `--${boundary}\r\n${parts.join(`\r\n--${boundary}\r\n`)}\r\n--${boundary}--\r\n`;

Deno.test("scanMultipart() finds the model field wherever it is and whatever the file holds", async () => {
  const cases: [string, string, string[]][] = [
    ["model first", form([model("whisper"), file("RIFF....")]), ["whisper"]],
    ["model after the file", form([file("RIFF\0\r\n\r\n...."), model("whisper")]), ["whisper"]],
    ["no model", form([file("x")]), []],
    ["empty model", form([model("")]), [""]],
    ["model given twice", form([model("a"), file("x"), model("b")]), ["a", "b"]],
    ["a model value with CRLF kept", form([model("a\r\nb")]), ["a\r\nb"]],
    ["a non-ASCII model", form([model("modèle")]), ["modèle"]],
    [
      "header names and the disposition in any case, the name unquoted",
      form([model("w", "content-DISPOSITION: Form-Data; NAME=model")]),
      ["w"],
    ],
    [
      "other headers and parameters around the name",
      form([
        model("w", 'X-A: 1\r\nContent-Disposition: form-data; x="a;name=\\"y\\""; name="model"'),
      ]),
      ["w"],
    ],
    [
      "a field named otherwise",
      form([model("w", 'Content-Disposition: form-data; name="models"')]),
      [],
    ],
    [
      "a file holding boundary-like text that is not a delimiter",
      form([file("--b\r\n\r\n--bb\r\n--b-\r\n--b x\r\n--\r\n-b"), model("w")]),
      ["w"],
    ],
    ["a preamble and an epilogue", `junk\r\n${form([model("w")])}more junk`, ["w"]],
    [
      "white space after a boundary",
      "--b  \r\n" + model("w") + "\r\n--b\t\r\n" + file("x") + "\r\n--b--",
      ["w"],
    ],
    ["no CRLF after the close delimiter", form([model("w")]).slice(0, -2), ["w"]],
    ["an empty form", "--b--\r\n", []],
    ["a part with no headers", form(["\r\nx", model("w")]), ["w"]],
    [
      "a part with headers but no content",
      form([model("w"), 'Content-Disposition: form-data; name="c"\r\n']),
      ["w"],
    ],
  ];
  for (const [name, text, expected] of cases) assert.deepEqual(await models(text), expected, name);
});

Deno.test("scanMultipart() gives the field's bytes in the body and says when it is a file", async () => {
  const text = form([file("abc"), model("whisper")]);
  const body = encoder.encode(text);
  const parts = await scanMultipart(body, "b", ["model", "file"]);
  assert.deepEqual(parts, [
    { name: "file", filename: "a.wav", start: text.indexOf("abc"), end: text.indexOf("abc") + 3 },
    {
      name: "model",
      filename: undefined,
      start: text.indexOf("whisper"),
      end: text.indexOf("whisper") + 7,
    },
  ]);
  const named = await scanMultipart(
    encoder.encode(
      form([model("x", "Content-Disposition: form-data; name=model; filename*=UTF-8''x")]),
    ),
    "b",
    ["model"],
  );
  assert.equal(named[0].filename, "UTF-8''x");
});

Deno.test("scanMultipart() refuses bodies whose framing is broken", async () => {
  const cases: [string, string, RegExp][] = [
    ["no delimiter at all", "hello", /no boundary delimiter/],
    ["another boundary", form([model("w")], "c"), /no boundary delimiter/],
    ["no close delimiter", form([model("w")]).slice(0, -"--b--\r\n".length - 2), /no closing/],
    ["cut inside the last part", form([model("w"), file("abc")]).slice(0, -10), /no closing/],
    [
      "a part whose headers never end",
      "--b\r\nContent-Disposition: form-data\r\n--b--",
      /do not end/,
    ],
    [
      "headers longer than the bound",
      `--b\r\nX: ${"a".repeat(MAX_PART_HEADERS)}\r\n\r\nw\r\n--b--`,
      /longer than/,
    ],
  ];
  for (const [name, text, message] of cases) {
    await assert.rejects(() => models(text), (error) => {
      assert.ok(error instanceof MultipartError, name);
      assert.match(error.message, /^the multipart form body cannot be parsed: /, name);
      assert.match(error.message, message, name);
      return true;
    });
  }
});

Deno.test("boundaryOf() reads the boundary parameter, quoted or not", () => {
  assert.equal(boundaryOf("multipart/form-data; boundary=abc"), "abc");
  assert.equal(boundaryOf('multipart/form-data; charset=utf-8; BOUNDARY="a b;c"'), "a b;c");
  assert.equal(boundaryOf("multipart/form-data;boundary=x ; charset=utf-8"), "x");
  for (
    const type of [
      "multipart/form-data",
      "multipart/form-data; boundary=",
      "multipart/form-data; charset=x",
    ]
  ) {
    assert.throws(() => boundaryOf(type), {
      name: "MultipartError",
      message: "the multipart Content-Type names no boundary",
    });
  }
});

Deno.test("scanMultipart() reads forms as Deno's own parser does", async () => {
  // File contents chosen to look like framing: delimiters with other text after them,
  // blank lines, and the start of a close delimiter.
  const contents = ["", "\r\n", "--", "\r\n--", "\r\n\r\n", "\r\n--bX", "--b\r\n", "\r\n--b-x"];
  for (const content of contents) {
    for (const parts of [[model("whisper"), file(content)], [file(content), model("whisper")]]) {
      const body = encoder.encode(form(parts));
      const type = "multipart/form-data; boundary=b";
      const found = await scanMultipart(body, boundaryOf(type), ["model", "file"]);
      const parsed = await new Response(body, { headers: { "content-type": type } }).formData();
      const byName = new Map(
        found.map((part) => [part.name, decoder.decode(body.subarray(part.start, part.end))]),
      );
      assert.equal(byName.get("model"), parsed.get("model"), JSON.stringify(content));
      assert.equal(byName.get("file"), await (parsed.get("file") as File).text());
    }
  }
  // What fetch writes, whatever boundary it picks.
  const data = new FormData();
  data.set("file", new Blob([new Uint8Array(1000).fill(0x0d)]), "a.wav");
  data.set("model", "whisper");
  const sent = new Request("http://127.0.0.1/", { method: "POST", body: data });
  const body = new Uint8Array(await sent.arrayBuffer());
  const found = await scanMultipart(body, boundaryOf(sent.headers.get("content-type")!), ["model"]);
  assert.equal(decoder.decode(body.subarray(found[0].start, found[0].end)), "whisper");
});

Deno.test("scanMultipart() reads 64 MiB in slices, letting timers run", async () => {
  const size = 64 << 20;
  const body = new Uint8Array(size);
  const head = encoder.encode(
    '--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n',
  );
  const tail = encoder.encode(
    '\r\n--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nw\r\n--b--\r\n',
  );
  // Near-delimiters everywhere: the slowest body for the search.
  const near = encoder.encode("\r\n--bX");
  for (let i = head.length; i + near.length < size - tail.length; i += near.length) {
    body.set(near, i);
  }
  body.set(head);
  body.set(tail, size - tail.length);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  try {
    const parts = await scanMultipart(body, "b", ["model"]);
    assert.equal(parts.length, 1);
    assert.ok(ticks >= 4, `timers ran ${ticks} times`);
  } finally {
    clearInterval(timer);
  }
});

Deno.test("scanMultipart() lets timers run between many small parts", async () => {
  // Empty parts, without even headers.
  const body = encoder.encode(`--b\r\n${"\r\n--b\r\n".repeat(100_000)}\r\n--b--`);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  try {
    assert.deepEqual(await scanMultipart(body, "b", ["model"]), []);
    assert.ok(ticks >= 2, `timers ran ${ticks} times`);
  } finally {
    clearInterval(timer);
  }
});
