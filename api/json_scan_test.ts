import assert from "node:assert/strict";
import { JsonError, MAX_DEPTH, scanJson } from "./json_scan.ts";

const encoder = new TextEncoder();
const scan = (text: string, wanted = ["model"]) => scanJson(encoder.encode(text), wanted);

/** Whether the scanner accepts `text`, as JSON.parse decides it. */
async function accepts(text: string): Promise<boolean> {
  try {
    await scan(text);
    return true;
  } catch (error) {
    if (error instanceof JsonError) return false;
    throw error;
  }
}

Deno.test("scanJson() finds top-level fields, the last of repeated ones, none nested", async () => {
  const text = '{"messages":[{"model":"inner"}], "model" : "a", "n":1e5,"model":"b"}';
  const found = await scan(text, ["model", "n"]);
  assert.equal(found.type, "object");
  const model = found.fields.get("model")!;
  assert.deepEqual(model, { type: "string", start: text.lastIndexOf('"b"'), end: text.length - 1 });
  assert.deepEqual(found.fields.get("n")?.type, "number");
  assert.equal((await scan('[{"model":"x"}]')).fields.size, 0);
  assert.equal((await scan('{"mod\\u0065l":"x"}')).fields.get("model")?.type, "string");
});

Deno.test("scanJson() accepts and refuses what JSON.parse does", async () => {
  const cases = [
    "{}",
    "[]",
    " 1 ",
    "-0.5e+3",
    '"\\u00e9\\n"',
    "true",
    "null",
    '{"a":[1,{"b":null}],"c":"d"}',
    "",
    "{",
    "[1,]",
    '{"a" 1}',
    '{"a":1,}',
    "01",
    "1.",
    "-",
    "tru",
    "nul",
    '"a\\x"',
    '"\\u12g4"',
    '"a\tb"',
    "{} {}",
    "[1 2]",
    '{"a":1]',
    "[}",
    "'a'",
    "1e",
    '"unterminated',
  ];
  for (const text of cases) {
    let parsed = true;
    try {
      JSON.parse(text);
    } catch {
      parsed = false;
    }
    assert.equal(await accepts(text), parsed, JSON.stringify(text));
  }
});

Deno.test("scanJson() agrees with JSON.parse on random mutations of a chat body", async () => {
  const base = JSON.stringify({
    model: "qwen:latest",
    messages: [{ role: "user", content: 'Hé "there"\n', images: [] }],
    options: { temperature: 0.7, stop: ["\u0000"], seed: -12 },
    stream: true,
  });
  const alphabet = '{}[]:,"\\ 0123456789.-+eEtrufalsn\t\n';
  let seed = 16;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let round = 0; round < 3000; round++) {
    const chars = [...base];
    for (let edits = 1 + Math.floor(next() * 3); edits > 0; edits--) {
      const at = Math.floor(next() * chars.length);
      const kind = next();
      const char = alphabet[Math.floor(next() * alphabet.length)];
      if (kind < 0.4) chars[at] = char;
      else if (kind < 0.7) chars.splice(at, 1);
      else chars.splice(at, 0, char);
    }
    const text = chars.join("");
    let parsed = true;
    try {
      JSON.parse(text);
    } catch {
      parsed = false;
    }
    assert.equal(await accepts(text), parsed, text);
  }
});

Deno.test("scanJson() refuses a byte order mark, bytes that are not UTF-8, and deep nesting", async () => {
  await assert.rejects(() => scanJson(new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), []), {
    reason: "bom",
  });
  await assert.rejects(() => scanJson(new Uint8Array([0x22, 0xff, 0x22]), []), { reason: "utf8" });
  await assert.rejects(() => scanJson(new Uint8Array([0x7b, 0xc3, 0x7d]), []), {
    reason: "syntax",
  });
  assert.equal((await scan("[".repeat(MAX_DEPTH) + "]".repeat(MAX_DEPTH))).type, "array");
  await assert.rejects(() => scan("[".repeat(MAX_DEPTH + 1) + "]".repeat(MAX_DEPTH + 1)), {
    reason: "depth",
  });
});

Deno.test("scanJson() scans a large body in slices, strings and keys cut across them", async () => {
  // A top-level key after megabytes of nesting, a string and a key longer than a slice.
  const long = "é".repeat(1_500_000);
  const text = `{"messages":[${'{"a":[1,2]},'.repeat(200_000)}{}],"${long}":1,"s":"${long}",` +
    `"model":"qwen"}`;
  const found = await scan(text);
  const bytes = encoder.encode(text);
  const model = found.fields.get("model")!;
  assert.equal(new TextDecoder().decode(bytes.subarray(model.start, model.end)), '"qwen"');
  await assert.rejects(() => scan(text.slice(0, -2)), { reason: "syntax" });
  // Other work runs while it scans: the timer fires before the scan ends.
  let ticked = false;
  setTimeout(() => ticked = true, 0);
  const scanning = scan(text).then(() => ticked);
  assert.equal(await scanning, true);
});
