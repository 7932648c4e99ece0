import assert from "node:assert/strict";
import { toSend } from "./request_body.ts";

Deno.test("toSend(): a small body goes whole; a large one as a stream over it, which can be sent again", async () => {
  const small = new Uint8Array(64 * 1024).fill(1);
  assert.equal(toSend(small), small);
  assert.equal(toSend(null), null);
  const large = new Uint8Array(64 * 1024 * 5 + 3).map((_, i) => i % 251);
  for (let attempt = 1; attempt <= 2; attempt++) {
    const sent = toSend(large);
    assert.ok(sent instanceof ReadableStream, `attempt ${attempt}`);
    const received = new Uint8Array(await new Response(sent).arrayBuffer());
    assert.deepEqual(received, large, `attempt ${attempt}`);
  }
  assert.equal(large.buffer.detached, false);
});

Deno.test("toSend(): a body in pieces goes as their concatenation, whole when small", async () => {
  const held = new Uint8Array(64 * 1024 * 3).map((_, i) => i % 251);
  const pieces = [
    held.subarray(0, 10),
    new Uint8Array([7, 7]),
    new Uint8Array(0),
    held.subarray(12),
  ];
  const expected = held.slice();
  expected.set([7, 7], 10);
  const sent = toSend(pieces);
  assert.ok(sent instanceof ReadableStream);
  assert.deepEqual(new Uint8Array(await new Response(sent).arrayBuffer()), expected);
  const small = toSend([held.subarray(0, 3), new Uint8Array([9])]);
  assert.deepEqual(small, new Uint8Array([0, 1, 2, 9]));
});
