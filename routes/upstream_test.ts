import assert from "node:assert/strict";
import {
  type BodyEnd,
  downstreamHeaders,
  headerOf,
  podErrorMessage,
  relayBody,
  setHeader,
  upstreamHeaders,
} from "./upstream.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

function failingStream(first: string): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream({
    pull(controller) {
      if (sent) controller.error(new Error("connection reset"));
      else controller.enqueue(bytes(first));
      sent = true;
    },
  });
}

Deno.test("upstreamHeaders() drops hop-by-hop headers, including those named in Connection", () => {
  const headers = upstreamHeaders(
    new Headers({
      connection: "keep-alive, x-secret-hop",
      "x-secret-hop": "1",
      "keep-alive": "timeout=5",
      "transfer-encoding": "chunked",
      host: "router",
      "x-request-id": "abc",
      authorization: "Bearer t",
    }),
  );
  assert.deepEqual(headers.map(([name]) => name).sort(), [
    "accept-encoding",
    "authorization",
    "x-request-id",
  ]);
  assert.equal(headerOf(headers, "accept-encoding"), "identity");
});

Deno.test("downstreamHeaders() keeps the pod's headers, repeated ones too, less hop-by-hop ones and junk in Connection", () => {
  const pod = new Headers([
    ["connection", "close, not a header name"],
    ["content-type", "application/json"],
    ["set-cookie", "a=1"],
    ["set-cookie", "b=2"],
    ["transfer-encoding", "chunked"],
  ]);
  const headers = downstreamHeaders(pod);
  assert.deepEqual(headers, [
    ["content-type", "application/json"],
    ["set-cookie", "a=1"],
    ["set-cookie", "b=2"],
  ]);
});

Deno.test("setHeader() replaces every value of a header, or removes it", () => {
  const headers: [string, string][] = [["a", "1"], ["b", "2"], ["a", "3"]];
  setHeader(headers, "a", "4");
  assert.deepEqual(headers, [["b", "2"], ["a", "4"]]);
  setHeader(headers, "b", undefined);
  assert.deepEqual(headers, [["a", "4"]]);
  assert.equal(headerOf(headers, "b"), undefined);
});

Deno.test("relayBody() passes chunks through as they are and reports the end once", async () => {
  const ends: BodyEnd[] = [];
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes("a\n"));
      controller.enqueue(bytes("b\n"));
      controller.close();
    },
  });
  const relayed = relayBody(
    source,
    "application/x-ndjson",
    String,
    60_000,
    (end) => ends.push(end),
  );
  assert.equal(await new Response(relayed).text(), "a\nb\n");
  assert.equal(ends.length, 1);
  const { firstByteAt, ...end } = ends[0];
  assert.deepEqual(end, { kind: "done", bytes: 4 });
  assert.equal(typeof firstByteAt, "number");
});

Deno.test("relayBody() hands out each chunk of a byte stream as its own bytes, kept after later reads", async () => {
  const lines = ["first\n", "second\n", "third\n"];
  let sent = 0;
  const source = new ReadableStream({
    type: "bytes",
    pull(controller) {
      if (sent === lines.length) {
        // As fetch's bodies do: a read waiting with its own buffer ends with respond(0).
        controller.close();
        controller.byobRequest?.respond(0);
      } else {
        controller.enqueue(bytes(lines[sent++]));
      }
    },
  });
  const reader = relayBody(source, "application/x-ndjson", String, 60_000, () => {}).getReader();
  const chunks: Uint8Array[] = [];
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    chunks.push(read.value);
  }
  assert.deepEqual(chunks.map((chunk) => new TextDecoder().decode(chunk)), lines);
});

Deno.test("relayBody() ends a failed NDJSON stream with an error line on its own line", async () => {
  const ends: BodyEnd[] = [];
  const relayed = relayBody(
    failingStream('{"partial'),
    "application/x-ndjson",
    () => "pod rk-0 failed mid-stream",
    60_000,
    (end) => ends.push(end),
  );
  assert.equal(
    await new Response(relayed).text(),
    '{"partial\n{"error":"pod rk-0 failed mid-stream"}\n',
  );
  assert.equal(ends[0].kind, "failed");
});

Deno.test("relayBody() ends a failed SSE stream with an error event", async () => {
  const relayed = relayBody(
    failingStream("data: {}\n\n"),
    "text/event-stream",
    () => "gone",
    60_000,
    () => {},
  );
  assert.equal(
    await new Response(relayed).text(),
    'data: {}\n\n\ndata: {"error":{"message":"gone","type":"server_error"}}\n\n',
  );
});

Deno.test("relayBody() reports a client that stops reading as cancelled", async () => {
  const ends: BodyEnd[] = [];
  let cancelled = false;
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(bytes("x"));
    },
    cancel() {
      cancelled = true;
    },
  });
  const reader = relayBody(source, "text/plain", String, 60_000, (end) => ends.push(end))
    .getReader();
  await reader.read();
  await reader.cancel();
  assert.equal(cancelled, true);
  assert.deepEqual(ends.map(({ kind, bytes }) => ({ kind, bytes })), [
    { kind: "cancelled", bytes: 1 },
  ]);
});

Deno.test("podErrorMessage() reads FastAPI, Flask, OpenAI, plain-text and HTML errors", () => {
  assert.equal(podErrorMessage("p", 500, '{"detail":"Model x not found"}'), "Model x not found");
  assert.equal(podErrorMessage("p", 400, '{"error":"bad"}'), "bad");
  assert.equal(podErrorMessage("p", 400, '{"error":{"message":"worse"}}'), "worse");
  assert.equal(
    podErrorMessage("p", 422, '{"detail":[{"loc":["body","model"],"msg":"Field required"}]}'),
    "body.model: Field required",
  );
  assert.equal(
    podErrorMessage("p", 500, "Internal Server Error"),
    "pod p answered 500: Internal Server Error",
  );
  assert.equal(
    podErrorMessage("p", 404, "<html><title>404 Not Found</title></html>"),
    "pod p answered 404: 404 Not Found",
  );
});
