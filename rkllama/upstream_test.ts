import assert from "node:assert/strict";
import {
  type BodyEnd,
  discardBody,
  downstreamHeaders,
  headerOf,
  OpenStreams,
  podErrorMessage,
  relayBody,
  type RelayOptions,
  setHeader,
  StreamIdle,
  upstreamHeaders,
} from "./upstream.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

/** Relay options for a test: a long idle timeout, and a pod's drain on a client's leaving. */
function relay(contentType: string, onEnd: (end: BodyEnd) => void = () => {}): RelayOptions {
  return {
    contentType,
    describeFailure: String,
    idleTimeoutMs: 60_000,
    onEnd,
    whenClientLeaves: "drain",
  };
}

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
  const relayed = relayBody(source, relay("application/x-ndjson", (end) => ends.push(end)));
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
  const reader = relayBody(source, relay("application/x-ndjson")).getReader();
  const chunks: Uint8Array[] = [];
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    chunks.push(read.value);
  }
  assert.deepEqual(chunks.map((chunk) => new TextDecoder().decode(chunk)), lines);
});

Deno.test("relayBody() ends a failed NDJSON stream with an error line on its own line", async () => {
  const ends: BodyEnd[] = [];
  const relayed = relayBody(failingStream('{"partial'), {
    ...relay("application/x-ndjson", (end) => ends.push(end)),
    describeFailure: () => "pod rk-0 failed mid-stream",
  });
  assert.equal(
    await new Response(relayed).text(),
    '{"partial\n{"error":"pod rk-0 failed mid-stream"}\n',
  );
  assert.equal(ends[0].kind, "failed");
});

Deno.test("relayBody() ends a failed SSE stream with an error event", async () => {
  const relayed = relayBody(failingStream("data: {}\n\n"), {
    ...relay("text/event-stream"),
    describeFailure: () => "gone",
  });
  assert.equal(
    await new Response(relayed).text(),
    'data: {}\n\n\ndata: {"error":{"message":"gone","type":"server_error"}}\n\n',
  );
});

Deno.test("relayBody() cuts the sender when its client leaves, if told to (another replica drains)", async () => {
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
  const reader = relayBody(source, {
    ...relay("text/plain", (end) => ends.push(end)),
    whenClientLeaves: "cancel",
  }).getReader();
  await reader.read();
  await reader.cancel();
  assert.equal(cancelled, true);
  assert.deepEqual(ends.map(({ kind, bytes }) => ({ kind, bytes })), [
    { kind: "cancelled", bytes: 1 },
  ]);
});

/** A pod's answer in `count` chunks, each sent when `next()` is called; counts cancels. */
function pacedAnswer(count: number) {
  let sent = 0;
  let cancelled = 0;
  const waiting: (() => void)[] = [];
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      await new Promise<void>((resolve) => waiting.push(resolve));
      if (sent === count) controller.close();
      else controller.enqueue(bytes(`chunk ${sent++}\n`));
    },
    cancel() {
      cancelled++;
    },
  });
  return {
    stream,
    get cancelled() {
      return cancelled;
    },
    /** Lets the pod send its next chunk (or its end), once a read waits for it. */
    async next() {
      while (waiting.length === 0) await new Promise((resolve) => setTimeout(resolve, 1));
      waiting.shift()!();
    },
  };
}

Deno.test("relayBody() reads the rest of a pod's answer to its end when its client leaves, and reports it abandoned", async () => {
  const answer = pacedAnswer(4);
  const ended = Promise.withResolvers<BodyEnd>();
  const reader = relayBody(answer.stream, relay("application/x-ndjson", ended.resolve))
    .getReader();
  const first = reader.read();
  await answer.next();
  assert.equal(new TextDecoder().decode((await first).value), "chunk 0\n");
  // The client leaves while the relay waits for the pod's next chunk.
  const pending = reader.read();
  await reader.cancel();
  await pending;
  for (let i = 0; i < 4; i++) await answer.next();
  const end = await ended.promise;
  assert.equal(end.kind, "abandoned");
  assert.equal(end.bytes, 4 * "chunk 0\n".length);
  assert.equal(end.kind === "abandoned" && end.error, undefined);
  assert.equal(answer.cancelled, 0);
});

Deno.test("discardBody() reads an answer nobody will see to its end; the idle timeout still ends a silent one", async () => {
  const answer = pacedAnswer(2);
  const ended = Promise.withResolvers<BodyEnd>();
  discardBody(answer.stream, { idleTimeoutMs: 60_000, onEnd: ended.resolve }, 123);
  for (let i = 0; i < 3; i++) await answer.next();
  const end = await ended.promise;
  assert.deepEqual({ kind: end.kind, bytes: end.bytes }, { kind: "abandoned", bytes: 16 });
  assert.equal(end.kind === "abandoned" && end.leftAt, 123);

  const silent = pacedAnswer(2);
  const idle = Promise.withResolvers<BodyEnd>();
  discardBody(silent.stream, { idleTimeoutMs: 20, onEnd: idle.resolve }, 0);
  const stopped = await idle.promise;
  assert.equal(stopped.kind, "abandoned");
  assert.ok(stopped.kind === "abandoned" && stopped.error instanceof StreamIdle);
  assert.equal(silent.cancelled, 1);
});

Deno.test("OpenStreams.none() waits for every registered relay, abandoned ones included", async () => {
  const open = new OpenStreams();
  await open.none();
  const answer = pacedAnswer(1);
  const ended = Promise.withResolvers<BodyEnd>();
  discardBody(answer.stream, { idleTimeoutMs: 60_000, onEnd: ended.resolve, open }, 0);
  let none = false;
  const waiting = open.none().then(() => none = true);
  await answer.next();
  assert.equal(none, false);
  await answer.next();
  await ended.promise;
  await waiting;
  assert.equal(none, true);
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
