/**
 * @module
 * `GET /ui`: the status page, rendered on the server with Hono JSX from the same
 * snapshot `/router/events` streams. The page's script swaps in sections rendered
 * here ({@linkcode renderSections}) as events arrive, so there is one renderer.
 */

import { Hono } from "hono";
import { raw } from "hono/html";
import type { Child } from "hono/jsx";
import type { StatusFeed } from "./status_feed.ts";
import type {
  ActionView,
  ModelView,
  OnDemandCopyView,
  PodView,
  ReconcilerView,
  StatusSnapshot,
} from "./status_snapshot.ts";
// The page's own files, inlined into it: the router is one binary that reads no files at run
// time, and the page must work in a cluster with no internet (no CDN, no web fonts).
import STYLE from "./page/style.css" with { type: "text" };
import SCRIPT from "./page/app.js" with { type: "text" };

/** What the status page needs. */
export interface UiOptions {
  feed: StatusFeed;
  /** The router checks an admin token on state-changing endpoints; the page asks for it. */
  adminTokenRequired: boolean;
}

/** The Hono app for `/ui`. */
export function uiRoutes(options: UiOptions): Hono {
  const app = new Hono();
  let policy: Promise<string> | undefined;
  app.get("/ui", async (c) => {
    policy ??= contentSecurityPolicy();
    const page = <Page snapshot={options.feed.snapshot()} now={Date.now()} options={options} />;
    return c.html("<!doctype html>" + String(page), 200, {
      "content-security-policy": await policy,
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
    });
  });
  // A trailing slash would otherwise reach a board (and 404 there). Relative, so
  // the page also works behind a proxy that serves the router under a prefix.
  app.get("/ui/", (c) => c.redirect("../ui", 308));
  return app;
}

/**
 * The page's sections (element id → HTML), as the page's script swaps them in.
 *
 * @param now the router's clock, for the elapsed times rendered before the script ticks
 */
export function renderSections(snapshot: StatusSnapshot, now = Date.now()): Record<string, string> {
  return {
    summary: String(<Summary snapshot={snapshot} />),
    pods: String(<Pods pods={snapshot.pods} now={now} />),
    models: String(<Models models={snapshot.models} onDemand={snapshot.onDemand} now={now} />),
    reconciler: String(<Reconciler view={snapshot.reconciler} now={now} />),
  };
}

/** Only this page's own style and script may run, and it may talk only to its router. */
async function contentSecurityPolicy(): Promise<string> {
  const hash = async (text: string) => {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
    return `'sha256-${btoa(String.fromCharCode(...new Uint8Array(digest)))}'`;
  };
  return [
    "default-src 'none'",
    `style-src ${await hash(STYLE)}`,
    `script-src ${await hash(SCRIPT)}`,
    "connect-src 'self'",
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

function Page(props: { snapshot: StatusSnapshot; now: number; options: UiOptions }) {
  const { snapshot, now, options } = props;
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>rkllama-router status</title>
        <link rel="icon" href="data:," />
        <style>{raw(STYLE)}</style>
      </head>
      <body>
        <header>
          <h1>rkllama-router</h1>
          <div id="summary" class="summary">
            <Summary snapshot={snapshot} />
          </div>
          <span class="spacer"></span>
          <span id="live" class="badge off" title="whether the page follows /router/events">
            connecting…
          </span>
          <button
            type="button"
            data-action="force-unload"
            data-token-required={String(options.adminTokenRequired)}
            title={options.adminTokenRequired
              ? "POST /router/force_unload_all (asks to confirm, then for the admin token)"
              : "POST /router/force_unload_all (asks to confirm)"}
          >
            Force unload all
          </button>
        </header>
        <main>
          <p id="notice" role="status" aria-live="polite"></p>
          <h2>Pods</h2>
          <div id="pods">
            <Pods pods={snapshot.pods} now={now} />
          </div>
          <h2>Models</h2>
          <div id="models">
            <Models models={snapshot.models} onDemand={snapshot.onDemand} now={now} />
          </div>
          <h2>Reconciler</h2>
          <div id="reconciler">
            <Reconciler view={snapshot.reconciler} now={now} />
          </div>
        </main>
        <dialog id="token-dialog" aria-labelledby="token-title">
          <p id="token-title">
            <b>Admin token</b>
            <br />
            <span class="muted">The router runs with --admin-token; kept in this tab only.</span>
          </p>
          <input
            type="password"
            id="token-input"
            autocomplete="off"
            spellcheck={false}
            aria-labelledby="token-title"
          />
          <div class="dialog-buttons">
            <button type="button" data-token="cancel" class="quiet">Cancel</button>
            <button type="button" data-token="ok">Unload all</button>
          </div>
        </dialog>
        <script>{raw(SCRIPT)}</script>
      </body>
    </html>
  );
}

const STATUS_CLASS: Record<string, string> = { ok: "ok", degraded: "bad", no_pods: "off" };

function Summary({ snapshot }: { snapshot: StatusSnapshot }) {
  const routable = snapshot.pods.filter((pod) => pod.state === "routable").length;
  const loaded = snapshot.pods.reduce((sum, pod) => sum + pod.loaded.length, 0);
  const loading = snapshot.pods.reduce((sum, pod) => sum + pod.loading.length, 0);
  const inflight = snapshot.pods.reduce((sum, pod) => sum + pod.inflight, 0);
  const waiting = snapshot.models.reduce((sum, model) => sum + model.waiting, 0);
  const perMinute = snapshot.models.reduce((sum, model) => sum + model.requestsPerMinute, 0);
  const { discovery } = snapshot;
  return (
    <>
      <span class={`badge ${STATUS_CLASS[snapshot.status] ?? "off"}`} data-status={snapshot.status}>
        {snapshot.status.replace("_", " ")}
      </span>
      <span>
        <b class="num">{routable}</b>/{snapshot.pods.length} pods ready
      </span>
      <span>
        <b class="num">{loaded}</b> loaded{loading > 0
          ? (
            <>
              , <b class="num">{loading}</b> loading
            </>
          )
          : ""}
      </span>
      <span>
        <b class="num">{inflight}</b> in flight
      </span>
      <span title="requests waiting in the router for a free board">
        <b class="num" data-waiting>{waiting}</b> queued
      </span>
      <span>
        <b class="num">{perMinute}</b> req/min
      </span>
      <span title={discovery.error ?? ""}>
        {discovery.mode === "static" ? "static backends" : `kubernetes ${discovery.source}`}
        {discovery.connected ? "" : <span class="badge bad">disconnected</span>}
      </span>
    </>
  );
}

/** How a pod's state reads and which colour it gets. */
function stateLook(pod: PodView): { text: string; tone: string } {
  switch (pod.state) {
    case "routable":
      return { text: "ready", tone: "ok" };
    case "loading":
      return { text: pod.busy || "busy", tone: "busy" };
    case "ejected":
      return { text: "ejected", tone: "warn" };
    case "unreachable":
      return { text: "unreachable", tone: "bad" };
    default:
      return { text: pod.state, tone: "off" };
  }
}

function Pods({ pods, now }: { pods: PodView[]; now: number }) {
  if (pods.length === 0) {
    return <p class="muted">No pods yet: discovery has found no RKLlama pod.</p>;
  }
  return (
    <div class="grid">
      {pods.map((pod) => <PodCard key={pod.name} pod={pod} now={now} />)}
    </div>
  );
}

function PodCard({ pod, now }: { pod: PodView; now: number }) {
  const look = stateLook(pod);
  const idle = pod.onDisk.filter((model) =>
    !pod.loaded.includes(model) && !pod.loading.some((entry) => entry.model === model)
  );
  return (
    <article class={`pod state-${look.tone}`} data-pod={pod.name} data-state={pod.state}>
      <div class="pod-head">
        <span class="pod-name">{pod.name}</span>
        <span class={`badge ${look.tone} state`} title={look.text}>{look.text}</span>
      </div>
      <div class="node">
        node {pod.node || "?"} · <span class="num" data-inflight>{pod.inflight}</span> in flight ·
        {" "}
        <span class="num" data-slots>{pod.slotsBusy}</span> slots busy
      </div>
      <div class="row">
        <span class="label">loaded</span>
        {pod.loaded.length === 0 ? <span class="muted">none</span> : ""}
        {pod.loaded.map((model) => (
          <span key={model} class="chip ok" data-loaded={model} title={model}>{model}</span>
        ))}
      </div>
      {pod.loading.length > 0
        ? (
          <div class="row">
            <span class="label">loading</span>
            {pod.loading.map((entry) => (
              <span
                key={entry.model}
                class="chip busy"
                data-loading={entry.model}
                title={entry.model}
              >
                {entry.model}{" "}
                <span data-since={String(entry.since)}>{duration(now - entry.since)}</span>
              </span>
            ))}
          </div>
        )
        : ""}
      <div class="row">
        <span class="label">also on disk</span>
        {idle.length === 0 ? <span class="muted">nothing else</span> : ""}
        {idle.map((model) => <span key={model} class="chip off" title={model}>{model}</span>)}
      </div>
      {pod.ejectedReason !== null ? <div class="row error">ejected: {pod.ejectedReason}</div> : ""}
      {pod.lastError !== null ? <div class="row error">last poll: {pod.lastError}</div> : ""}
    </article>
  );
}

/**
 * Green when the config is met (or, for a model not in the config, when a copy
 * serves), amber while short or loading, red when nothing serves a wanted model.
 * Only copies on pods that answer count, as the reconciler counts them.
 */
function modelTone(model: ModelView): string {
  const loaded = model.copies;
  if (model.wanted === null) return loaded > 0 ? "ok" : "off";
  if (model.problems.length > 0) return loaded > 0 ? "warn" : "bad";
  if (loaded === model.wanted) return "ok";
  if (model.loadingOn.length > 0 || loaded > 0) return "warn";
  return model.wanted === 0 ? "ok" : "bad";
}

function Models(
  { models, onDemand, now }: { models: ModelView[]; onDemand: OnDemandCopyView[]; now: number },
) {
  const extra = new Set(onDemand.map((copy) => `${copy.model}\u0000${copy.pod}`));
  if (models.length === 0) return <p class="muted">No models on any pod.</p>;
  return (
    <div class="scroll">
      <table>
        <thead>
          <tr>
            <th>model</th>
            <th>wants</th>
            <th class="n">loaded</th>
            <th>where</th>
            <th class="n">queued</th>
            <th class="n">req/min</th>
            <th class="n">p95 first byte</th>
            <th>notes</th>
          </tr>
        </thead>
        <tbody>
          {models.map((model) => (
            <tr key={model.name} data-model={model.name}>
              <td class="model">
                <span class="model-name">{model.name}</span>
                {model.priority ? <div class="muted">priority {model.priority}</div> : ""}
              </td>
              <td>{model.want ?? <span class="muted">not in config</span>}</td>
              <td class="n">
                <span class={`badge ${modelTone(model)}`} data-count>
                  {model.copies}
                  {model.wanted === null ? "" : ` / ${model.wanted}`}
                </span>
              </td>
              <td>
                {model.loadedOn.map((copy) =>
                  copy.counts
                    ? (
                      extra.has(`${model.name}\u0000${copy.pod}`)
                        ? (
                          <span
                            key={copy.pod}
                            class="chip ok"
                            data-on-demand={copy.pod}
                            title={`node ${copy.node}; loaded on demand for a long queue, unloaded once idle`}
                          >
                            {copy.pod} (on demand)
                          </span>
                        )
                        : (
                          <span key={copy.pod} class="chip ok" title={`node ${copy.node}`}>
                            {copy.pod}
                          </span>
                        )
                    )
                    : (
                      <span
                        key={copy.pod}
                        class="chip bad"
                        data-dead-copy={copy.pod}
                        title={`node ${copy.node}; the pod is ${copy.state}: this copy serves nobody and is not counted`}
                      >
                        {copy.pod} ({copy.state})
                      </span>
                    )
                )}
                {model.loadingOn.map((copy) => (
                  <span key={copy.pod} class="chip busy">
                    {copy.pod}{" "}
                    <span data-since={String(copy.since)}>{duration(now - copy.since)}</span>
                  </span>
                ))}
                {model.loadedOn.length + model.loadingOn.length === 0
                  ? <span class="muted">{onDiskText(model.onDiskOn.length)}</span>
                  : ""}
              </td>
              <td class="n" data-queue={String(model.waiting)}>
                {model.waiting === 0 ? <span class="muted">0</span> : (
                  <span
                    class="badge busy"
                    title={`the oldest has waited ${
                      duration(model.oldestWaitMs)
                    }; ${model.serving} being answered`}
                  >
                    {model.waiting}
                  </span>
                )}
              </td>
              <td class="n" data-rate>{model.requestsPerMinute}</td>
              <td class="n">{model.p95TtfbMs === null ? "–" : `${model.p95TtfbMs} ms`}</td>
              <td>
                {model.problems.map((problem) => <div key={problem} class="error">{problem}</div>)}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Reconciler({ view, now }: { view: ReconcilerView | null; now: number }) {
  if (!view) {
    return (
      <p class="muted">
        No placement config: models load on demand. Give --models-file, or run with Kubernetes
        discovery and a models.yaml ConfigMap.
      </p>
    );
  }
  return (
    <div class="panel">
      <div class="summary">
        <span>
          config <b>{view.source || "not read yet"}</b>
        </span>
        {view.valid
          ? <span class="badge ok" data-config="valid">valid</span>
          : <span class="badge bad" data-config="invalid">refused</span>}
        {view.leader
          ? <span class="badge ok" data-role="leader">leader</span>
          : (
            <span class="badge off" data-role="follower">
              follower{view.holder ? ` of ${view.holder}` : ", no leader yet"}
            </span>
          )}
        <span>{view.identity}</span>
        {view.planChangedAt !== null
          ? (
            <span title="the reconciler plans again on every change and every --sync-interval">
              plan changed{" "}
              <span data-ago={String(view.planChangedAt)}>
                {duration(now - view.planChangedAt)} ago
              </span>
            </span>
          )
          : ""}
      </div>
      {view.error !== null
        ? (
          <pre class="error" data-config-error>
            {view.error}
            {"\n"}Nothing changes until it is fixed: the last good config, if any, stays in force.
          </pre>
        )
        : ""}
      {view.leaderError ? <div class="error">leader election: {view.leaderError}</div> : ""}
      <h3>running</h3>
      <Actions actions={view.running} empty="nothing" />
      <h3>pending</h3>
      <Actions
        actions={view.pending}
        empty="nothing planned"
        note={view.leader
          ? "waiting for their pod or a retry delay"
          : "the leader acts; this replica only plans"}
      />
      <h3>recent</h3>
      {view.recent.length === 0 ? <p class="muted">no action yet</p> : (
        <div class="scroll">
          <table>
            <tbody>
              {view.recent.map((result) => (
                <tr
                  key={`${result.at}-${result.pod}-${result.model}`}
                  data-outcome={result.outcome}
                >
                  <td class="muted">
                    <span data-ago={String(result.at)}>{duration(now - result.at!)} ago</span>
                  </td>
                  <td>
                    {result.kind} <b>{result.model}</b> on {result.pod}
                  </td>
                  <td>
                    <span class={`badge ${OUTCOME_CLASS[result.outcome!] ?? "off"}`}>
                      {result.outcome}
                    </span>
                  </td>
                  <td class="n">{took(result.durationMs!)}</td>
                  <td class={result.outcome === "done" ? "muted" : "error"}>{result.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

const OUTCOME_CLASS: Record<string, string> = {
  done: "ok",
  postponed: "warn",
  failed: "bad",
  refused: "bad",
};

function Actions(props: { actions: ActionView[]; empty: string; note?: string }): Child {
  if (props.actions.length === 0) return <p class="muted">{props.empty}</p>;
  return (
    <>
      {props.note ? <div class="muted">{props.note}</div> : ""}
      <ul class="actions">
        {props.actions.map((action) => (
          <li key={`${action.kind}-${action.pod}-${action.model}`} data-action-kind={action.kind}>
            <span class={`badge ${action.kind === "load" ? "busy" : "warn"}`}>{action.kind}</span>
            {" "}
            <b>{action.model}</b> on {action.pod} <span class="muted">({action.reason})</span>
          </li>
        ))}
      </ul>
    </>
  );
}

function onDiskText(pods: number): string {
  if (pods === 0) return "on no pod's disk";
  return `not loaded; on disk on ${pods} ${pods === 1 ? "pod" : "pods"}`;
}

/** How long an action took: short ones in ms, the rest as {@linkcode duration}. */
function took(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : duration(ms);
}

/** Elapsed time in words, as the page's script writes it. */
function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
