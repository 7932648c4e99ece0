import assert from "node:assert/strict";
import {
  findModel,
  replaceFormModel,
  replaceJsonModel,
  resolveModel,
  stripNamespace,
} from "./model_name.ts";

const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

Deno.test("findModel() reads model, then name, from a JSON body", async () => {
  assert.deepEqual(await findModel("/api/chat", "application/json", json({ model: "qwen" })), {
    from: "json",
    key: "model",
    value: "qwen",
    start: 9,
    end: 15,
    values: 2,
  });
  assert.deepEqual(await findModel("/api/show", "application/json", json({ name: "phi" })), {
    from: "json",
    key: "name",
    value: "phi",
    start: 8,
    end: 13,
    values: 2,
  });
});

Deno.test("findModel() reads model_name on /load_model and /unload_model", async () => {
  const body = json({ model_name: "qwen", model: "other" });
  assert.deepEqual(await findModel("/load_model", "application/json", body), {
    from: "json",
    key: "model_name",
    value: "qwen",
    start: 14,
    end: 20,
    values: 3,
  });
});

Deno.test("findModel() reads JSON that curl -d labelled as a form", async () => {
  const source = await findModel(
    "/api/generate",
    "application/x-www-form-urlencoded",
    json({ model: "qwen" }),
  );
  assert.equal(source.from, "json");
});

Deno.test("findModel() does not treat /api/pull's download source as a model", async () => {
  const body = json({ model: "owner/repo/file.rkllm" });
  assert.deepEqual(await findModel("/api/pull", "application/x-www-form-urlencoded", body), {
    from: "none",
    json: true,
  });
});

Deno.test("findModel() reads the multipart form field model", async () => {
  const form = new FormData();
  form.set("model", "whisper");
  form.set("file", new Blob([new Uint8Array(100)]), "a.wav");
  const request = new Request("http://x/", { method: "POST", body: form });
  const body = new Uint8Array(await request.arrayBuffer());
  const source = await findModel(
    "/v1/audio/transcriptions",
    request.headers.get("content-type")!,
    body,
  );
  const text = new TextDecoder().decode(body);
  const start = text.indexOf("whisper");
  assert.deepEqual(source, { from: "form", value: "whisper", start, end: start + 7 });
});

Deno.test("findModel() refuses forms it cannot route by, and routes empty models nowhere", async () => {
  const find = (text: string, type = "multipart/form-data; boundary=b") =>
    findModel("/v1/audio/transcriptions", type, new TextEncoder().encode(text));
  const field = (headers: string, value: string) => `--b\r\n${headers}\r\n\r\n${value}\r\n`;
  const model = (value: string) => field('Content-Disposition: form-data; name="model"', value);
  assert.deepEqual(await find(`${model("")}--b--`), { from: "none" });
  assert.deepEqual(await find(`${field('Content-Disposition: form-data; name="x"', "y")}--b--`), {
    from: "none",
  });
  const refusals: [string, string, string][] = [
    [
      `${field('Content-Disposition: form-data; name="model"; filename="m"', "w")}--b--`,
      "multipart/form-data; boundary=b",
      "the form field 'model' must be text, not a file",
    ],
    [
      `${model("a")}${model("b")}--b--`,
      "multipart/form-data; boundary=b",
      "the form field 'model' is given more than once",
    ],
    [
      model("a"),
      "multipart/form-data; boundary=b",
      "the multipart form body cannot be parsed: it has no closing boundary delimiter",
    ],
    [`${model("a")}--b--`, "multipart/form-data", "the multipart Content-Type names no boundary"],
  ];
  for (const [text, type, message] of refusals) {
    await assert.rejects(() => find(text, type), { name: "BadRequest", status: 400, message });
  }
});

Deno.test("replaceFormModel() changes the field's bytes and keeps the rest of the form", async () => {
  const data = new FormData();
  data.set("model", "library/whisper:latest");
  data.set("file", new Blob(["RIFF\r\n--x"]), "a.wav");
  const request = new Request("http://127.0.0.1/", { method: "POST", body: data });
  const type = request.headers.get("content-type")!;
  const body = new Uint8Array(await request.arrayBuffer());
  const source = await findModel("/v1/audio/transcriptions", type, body);
  assert.equal(source.from, "form");
  const replaced = replaceFormModel(body, source as { start: number; end: number }, "whisper");
  const form = await new Response(new Blob(replaced), { headers: { "content-type": type } })
    .formData();
  assert.equal(form.get("model"), "whisper");
  assert.equal(await (form.get("file") as File).text(), "RIFF\r\n--x");
  assert.equal(replaced[0].buffer, body.buffer, "the file is not copied");
  assert.equal(new Blob(replaced).size, body.length - "library/:latest".length);
});

Deno.test("findModel() reads the model from /files and /api/modelfile paths", async () => {
  assert.deepEqual(await findModel("/files/sd-turbo/images/a.png", "", null), {
    from: "path",
    value: "sd-turbo",
    prefix: "/files/",
    rest: "/images/a.png",
  });
  const modelfile = await findModel("/api/modelfile/qwen%3Alatest/TEMPERATURE", "", null);
  assert.equal((modelfile as { value: string }).value, "qwen:latest");
});

Deno.test("findModel() refuses malformed JSON, non-string models and path traversal", async () => {
  await assert.rejects(
    () => findModel("/api/chat", "application/json", new TextEncoder().encode("{oops")),
    {
      name: "BadRequest",
      message: "the request body is not valid JSON: expected a key in double quotes at byte 1",
    },
  );
  await assert.rejects(
    () => findModel("/api/chat", "application/json", json({ model: 42 })),
    { name: "BadRequest", message: "'model' must be a string, got a number" },
  );
  await assert.rejects(
    () => findModel("/api/chat", "application/json", json(["qwen"])),
    { name: "BadRequest", message: "the request body must be a JSON object" },
  );
  await assert.rejects(() => findModel("/files/../images/x", "", null), { name: "BadRequest" });
  await assert.rejects(
    () => findModel("/api/chat", "application/json", new Uint8Array([0x7b, 0xff, 0x7d])),
    { name: "BadRequest" },
  );
});

Deno.test("stripNamespace() drops everything up to the first slash, as RKLlama does", () => {
  assert.equal(stripNamespace("library/qwen"), "qwen");
  assert.equal(stripNamespace("a/b/c"), "b/c");
  assert.equal(stripNamespace("qwen"), "qwen");
});

Deno.test("resolveModel() matches names exactly after the namespace, with :latest implied", () => {
  const known = new Set(["qwen", "phi:latest", "Llama"]);
  assert.equal(resolveModel("qwen", known), "qwen");
  assert.equal(resolveModel("library/qwen:latest", known), "qwen");
  assert.equal(resolveModel("phi", known), "phi:latest");
  assert.equal(resolveModel("llama", known), undefined);
  assert.equal(resolveModel("qwe", known), undefined);
  assert.equal(resolveModel("qwen:7b", known), undefined);
});

Deno.test("replaceJsonModel() changes only the top-level field, keeping every other byte", async () => {
  const text =
    '{"messages":[{"model":"inner"}],  "model" : "qwen:latest","n":12345678901234567890,"s":"<&>"}';
  const body = new TextEncoder().encode(text);
  const source = await findModel("/api/chat", "application/json", body);
  assert.equal(source.from, "json");
  assert.equal(
    new TextDecoder().decode(
      await new Blob(replaceJsonModel(body, source as { start: number; end: number }, "qwen"))
        .bytes(),
    ),
    '{"messages":[{"model":"inner"}],  "model" : "qwen","n":12345678901234567890,"s":"<&>"}',
  );
});

Deno.test("findModel() takes the last of repeated keys, as the boards' parser does", async () => {
  const body = new TextEncoder().encode('{"model":"a","x":"\\"model\\"","model":"b"}');
  const source = await findModel("/api/chat", "application/json", body);
  assert.equal((source as { value: string }).value, "b");
});

Deno.test("findModel() refuses a body that starts with a byte order mark, as Ollama does", async () => {
  const body = new Uint8Array([0xef, 0xbb, 0xbf, ...json({ model: "qwen" })]);
  await assert.rejects(() => findModel("/api/chat", "application/json", body), {
    name: "BadRequest",
    message: /byte order mark/,
  });
});
