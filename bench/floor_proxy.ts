/**
 * @module
 * The least a reverse proxy on Deno can do: `Deno.serve` in, `fetch` out, the
 * answer's body passed back untouched. The benchmark runs it beside the router to
 * show what Deno's HTTP server and client cost by themselves (the router cannot
 * be faster than this), and so what the router's own work adds.
 *
 * `deno run --allow-net bench/floor_proxy.ts --upstream http://127.0.0.1:8080` prints
 * one JSON line `{"urls": [...]}` once it listens, and exits when its stdin closes.
 */

const upstream = Deno.args[Deno.args.indexOf("--upstream") + 1];

const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen: () => {} },
  async (request) => {
    const url = new URL(request.url);
    const answer = await fetch(upstream + url.pathname + url.search, {
      method: request.method,
      headers: request.headers,
      body: request.body ? await request.bytes() : null,
    });
    return new Response(answer.body, { status: answer.status, headers: answer.headers });
  },
);
console.log(JSON.stringify({ urls: [`http://127.0.0.1:${server.addr.port}`] }));
for await (const _ of Deno.stdin.readable) { /* drain */ }
Deno.exit(0);
