import assert from "node:assert/strict";
import { Store } from "../cluster/store.ts";
import { ModelActivity } from "./model_activity.ts";
import { routerSnapshot, StatusFeed } from "./status_feed.ts";
import { uiRoutes } from "./ui.tsx";
import STYLE from "./page/style.css" with { type: "text" };
import SCRIPT from "./page/app.js" with { type: "text" };

function pageApp(
  adminTokenRequired: boolean,
  models: string[],
  onDemand: { pod: string; model: string; loadedAt: number }[] = [],
) {
  const store = new Store();
  store.upsertPod({ name: "rk-a", node: "board-1", url: "http://127.0.0.1:9", ready: true });
  store.applyPolls([{
    pod: "rk-a",
    ok: true,
    at: 1,
    onDisk: new Map(models.map((name) => [name, { name }])),
    loaded: new Map([[models[0], { name: models[0] }]]),
    otherModels: new Set(),
  }]);
  const build = routerSnapshot({
    store,
    placement: () => undefined,
    onDemand: () => onDemand,
    activity: new ModelActivity(),
    adminTokenRequired,
  });
  return uiRoutes({ feed: new StatusFeed(build), adminTokenRequired });
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

Deno.test("/ui is one self-contained page: inline style and script, allowed by hash only", async () => {
  const response = await pageApp(false, ["qwen"]).request("/ui");
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^text\/html/);
  const html = await response.text();
  assert.match(html, /^<!doctype html>/);
  const policy = response.headers.get("content-security-policy")!;
  assert.match(policy, /default-src 'none'/);
  assert.ok(policy.includes(`'sha256-${await sha256(STYLE)}'`));
  assert.ok(policy.includes(`'sha256-${await sha256(SCRIPT)}'`));
  // The files are inlined whole: the page carries them byte for byte, and nothing in them ends
  // their element early.
  assert.ok(html.includes(`<style>${STYLE}</style>`));
  assert.ok(html.includes(`<script>${SCRIPT}</script>`));
  assert.doesNotMatch(STYLE, /<\/style/i);
  assert.doesNotMatch(SCRIPT, /<\/script/i);
  // Nothing is fetched from anywhere but the router itself.
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
  assert.match(html, /data-pod="rk-a"/);
  assert.match(html, /data-loaded="qwen"/);
  assert.match(html, /data-token-required="false"/);
});

Deno.test("/ui escapes what pods report, and says when the admin token is needed", async () => {
  const response = await pageApp(true, ["<img src=x onerror=alert(1)>"]).request("/ui");
  const html = await response.text();
  assert.ok(!html.includes("<img src=x"));
  assert.match(html, /&lt;img src=x onerror=alert\(1\)&gt;/);
  assert.match(html, /data-token-required="true"/);
});

Deno.test("/ui/ redirects to /ui instead of reaching a board", async () => {
  const response = await pageApp(false, ["qwen"]).request("/ui/");
  assert.equal(response.status, 308);
  assert.equal(response.headers.get("location"), "../ui");
  assert.equal(new URL("../ui", "http://router:8080/ui/").pathname, "/ui");
});

Deno.test("/ui marks a copy loaded on demand", async () => {
  const loadedAt = Date.now();
  const html = await (await pageApp(false, ["qwen"], [{ pod: "rk-a", model: "qwen", loadedAt }])
    .request("/ui")).text();
  assert.match(html, /data-on-demand="rk-a"[^>]*>rk-a \(on demand\)</);
  const plain = await (await pageApp(false, ["qwen"]).request("/ui")).text();
  assert.doesNotMatch(plain, /data-on-demand/);
});
