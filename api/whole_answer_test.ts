import assert from "node:assert/strict";
import { takeWholeAnswer, WholeAnswer } from "./whole_answer.ts";

const bytes = () => new TextEncoder().encode('{"message":{"content":"hi"},"done":true}');
const init = {
  status: 201,
  statusText: "Made",
  headers: [["content-type", "application/json"], ["x-pod", "a"]] as [string, string][],
};

Deno.test("a WholeAnswer reads as a plain Response with the same bytes would, every way", async () => {
  const expected = new TextDecoder().decode(bytes());
  const reads: [string, (r: Response) => Promise<string>][] = [
    ["text", (r) => r.text()],
    ["json", async (r) => JSON.stringify(await r.json())],
    ["bytes", async (r) => new TextDecoder().decode(await r.bytes())],
    ["arrayBuffer", async (r) => new TextDecoder().decode(await r.arrayBuffer())],
    ["blob", async (r) => await (await r.blob()).text()],
    ["body", (r) => new Response(r.body).text()],
    ["clone", (r) => r.clone().text()],
  ];
  for (const [how, read] of reads) {
    const answer = new WholeAnswer(bytes(), init);
    assert.equal(answer.status, 201);
    assert.equal(answer.statusText, "Made");
    assert.equal(answer.headers.get("x-pod"), "a");
    assert.equal(answer.bodyUsed, false, how);
    assert.equal(await read(answer), expected, how);
    const plain = new Response(bytes(), init);
    await read(plain);
    assert.equal(answer.bodyUsed, plain.bodyUsed, how);
    // Once read, the server gets nothing to write beside it: it reads the Response.
    assert.equal(takeWholeAnswer(answer), undefined, how);
  }
});

Deno.test("takeWholeAnswer() gives the server the bytes themselves, once; the body is used after", async () => {
  const held = bytes();
  const answer = new WholeAnswer(held, init);
  answer.headers.set("x-request-id", "r1");
  assert.equal(takeWholeAnswer(answer), held);
  assert.equal(takeWholeAnswer(answer), undefined);
  assert.equal(answer.bodyUsed, true);
  await assert.rejects(() => answer.text(), TypeError);
  assert.equal(answer.headers.get("x-request-id"), "r1");
  assert.equal(takeWholeAnswer(new Response(held)), undefined);
});

Deno.test("a WholeAnswer with a status that has no body reads as none", async () => {
  const answer = new WholeAnswer(new Uint8Array(0), { status: 204 });
  assert.equal(answer.body, null);
  assert.equal(await answer.text(), "");
});
