/**
 * @module
 * The status page's stylesheet and browser script, inlined into the page: the
 * router is one binary that reads no files at runtime, and the page must work in a
 * cluster with no internet (no CDN, no web fonts). The page's Content-Security-Policy
 * allows exactly these two by hash.
 */

/** Light and dark, readable from a phone (one column) to a laptop (a grid). */
export const STYLE = `
:root{--bg:#f6f7f9;--card:#fff;--fg:#1d2330;--muted:#667085;--line:#d9dde5;
--ok:#17803d;--ok-bg:#e3f5e8;--busy:#1f5fbf;--busy-bg:#e2ecfb;--warn:#a15c00;--warn-bg:#fdf0d9;
--bad:#b42318;--bad-bg:#fde6e4;--off:#667085;--off-bg:#eceef2;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--card:#1b2029;--fg:#e6e9ef;--muted:#98a2b3;
--line:#2e3542;--ok:#5fd08a;--ok-bg:#173524;--busy:#7eb0ff;--busy-bg:#182a47;--warn:#f5b450;
--warn-bg:#3b2a10;--bad:#ff8a80;--bad-bg:#44201d;--off:#98a2b3;--off-bg:#262c37}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{position:sticky;top:0;z-index:1;background:var(--card);border-bottom:1px solid var(--line);
padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center}
header h1{font-size:1.05rem;margin:0}
@media (max-width:40rem){header{position:static}}
main{padding:1rem;max-width:90rem;margin:0 auto}
h2{font-size:1rem;margin:1.4rem 0 .6rem}
h3{font-size:.9rem;margin:1rem 0 .4rem}
.summary{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center;color:var(--muted)}
.summary b{color:var(--fg)}
.spacer{flex:1}
.badge,.chip{display:inline-block;border-radius:999px;padding:.05rem .55rem;font-size:.8rem;
white-space:nowrap;border:1px solid transparent;max-width:100%;overflow:hidden;text-overflow:ellipsis;vertical-align:bottom}
.chip{border-radius:.35rem;margin:.1rem .2rem .1rem 0;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.78rem}
.ok{color:var(--ok);background:var(--ok-bg)}
.busy{color:var(--busy);background:var(--busy-bg)}
.warn{color:var(--warn);background:var(--warn-bg)}
.bad{color:var(--bad);background:var(--bad-bg)}
.off{color:var(--off);background:var(--off-bg)}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(17rem,100%),1fr));gap:.8rem}
.grid>*{min-width:0}
.pod{background:var(--card);border:1px solid var(--line);border-left:5px solid var(--off);
border-radius:.5rem;padding:.6rem .8rem}
.pod.state-ok{border-left-color:var(--ok)}.pod.state-busy{border-left-color:var(--busy)}
.pod.state-warn{border-left-color:var(--warn)}.pod.state-bad{border-left-color:var(--bad)}
.pod-head{display:flex;flex-wrap:wrap;justify-content:space-between;gap:.2rem .5rem;align-items:baseline}
.pod-name{font-weight:600;overflow-wrap:anywhere;min-width:0}
.model-name{font-weight:600;overflow-wrap:anywhere}
td.model{min-width:min(14rem,45vw)}
td b{overflow-wrap:anywhere}
.node,.muted{color:var(--muted);font-size:.82rem}
.row{margin-top:.35rem}
.label{color:var(--muted);font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;margin-right:.3rem}
.num{font-variant-numeric:tabular-nums;font-weight:600}
.error{color:var(--bad);overflow-wrap:anywhere;font-size:.82rem}
pre.error{background:var(--bad-bg);padding:.6rem .8rem;border-radius:.4rem;white-space:pre-wrap;margin:.4rem 0;font-size:.85rem}
.scroll{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:.5rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.75rem;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;font-weight:600}
tr:last-child td{border-bottom:0}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th.n{text-align:right}
ul.actions{margin:.2rem 0;padding-left:1.1rem}
.panel{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:.6rem .8rem}
button{font:inherit;border:1px solid var(--bad);color:var(--bad);background:transparent;border-radius:.4rem;padding:.25rem .7rem;cursor:pointer}
button:disabled{opacity:.5;cursor:wait}
#notice:empty{display:none}
dialog{border:1px solid var(--line);border-radius:.5rem;background:var(--card);color:var(--fg);width:min(26rem,calc(100vw - 2rem))}
dialog::backdrop{background:rgb(0 0 0 / .4)}
dialog p{margin:0 0 .5rem}
dialog input{width:100%;font:inherit;padding:.3rem .5rem;border:1px solid var(--line);border-radius:.3rem;background:var(--bg);color:var(--fg)}
.dialog-buttons{display:flex;justify-content:flex-end;gap:.5rem;margin-top:.7rem}
button.quiet{border-color:var(--line);color:var(--fg)}
#notice{margin:.6rem 0 0;padding:.4rem .7rem;border-radius:.4rem}
`;

/**
 * Follows `/router/events?view=html` (EventSource reconnects by itself, and is
 * restarted if the router answered with an error while restarting), swaps in the
 * sections the router rendered, keeps load timers ticking on the router's clock,
 * and runs the one state-changing action, asking for the admin token when needed.
 */
export const SCRIPT = `
(() => {
  "use strict";
  const TOKEN_KEY = "rkllama-router-admin-token";
  const base = location.pathname.replace(/ui\\/?$/, "");
  const live = document.getElementById("live");
  const notice = document.getElementById("notice");
  const button = document.querySelector("[data-action='force-unload']");
  const dialog = document.getElementById("token-dialog");
  const tokenInput = document.getElementById("token-input");
  let offset = 0;
  const duration = (ms) => {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  };
  const tick = () => {
    const now = Date.now() + offset;
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = duration(now - Number(el.dataset.since));
    }
    for (const el of document.querySelectorAll("[data-ago]")) {
      el.textContent = duration(now - Number(el.dataset.ago)) + " ago";
    }
  };
  const setLive = (on, text) => {
    live.textContent = text;
    live.className = "badge " + (on ? "ok" : "warn");
  };
  const say = (text, bad) => {
    notice.textContent = text;
    notice.className = bad ? "bad" : "ok";
  };
  // Sections as last applied, and those held back while the user selects text in them.
  const shown = new Map();
  const held = new Map();
  const selectingIn = (el) => {
    const selection = getSelection();
    return selection !== null && !selection.isCollapsed && selection.rangeCount > 0 &&
      el.contains(selection.getRangeAt(0).commonAncestorContainer);
  };
  const apply = (id, html) => {
    const el = document.getElementById(id);
    if (!el || shown.get(id) === html) return held.delete(id);
    if (selectingIn(el)) return held.set(id, html);
    held.delete(id);
    // Scrolled boxes keep their place (a phone scrolls the models table sideways).
    const places = [...el.querySelectorAll(".scroll")].map((box) => [box.scrollLeft, box.scrollTop]);
    el.innerHTML = html;
    shown.set(id, html);
    el.querySelectorAll(".scroll").forEach((box, i) => {
      if (places[i]) [box.scrollLeft, box.scrollTop] = places[i];
    });
  };
  document.addEventListener("selectionchange", () => {
    for (const [id, html] of [...held]) apply(id, html);
  });
  const tokenRequired = (required) => {
    button.dataset.tokenRequired = String(required);
    button.title = "POST /router/force_unload_all (asks to confirm" +
      (required ? ", then for the admin token)" : ")");
  };
  const connect = () => {
    const events = new EventSource(base + "router/events?view=html");
    events.addEventListener("html", (event) => {
      const { now, sections, adminTokenRequired } = JSON.parse(event.data);
      offset = now - Date.now();
      for (const [id, html] of Object.entries(sections)) apply(id, html);
      // The router may have restarted with (or without) --admin-token.
      if (typeof adminTokenRequired === "boolean") tokenRequired(adminTokenRequired);
      tick();
      setLive(true, "live");
    });
    events.addEventListener("open", () => setLive(true, "live"));
    events.addEventListener("error", () => {
      setLive(false, "reconnecting…");
      if (events.readyState === EventSource.CLOSED) {
        events.close();
        setTimeout(connect, 3000);
      }
    });
  };
  // A password field, not prompt(), which shows the token to anyone looking.
  const askToken = () => new Promise((resolve) => {
    const done = (token) => {
      dialog.removeEventListener("click", onClick);
      dialog.removeEventListener("keydown", onKey);
      dialog.removeEventListener("cancel", onCancel);
      tokenInput.value = "";
      if (dialog.open) dialog.close();
      resolve(token);
    };
    const onClick = (event) => {
      const choice = event.target.closest("[data-token]");
      if (choice) done(choice.dataset.token === "ok" ? tokenInput.value.trim() : "");
    };
    const onKey = (event) => {
      if (event.key === "Enter") done(tokenInput.value.trim());
    };
    const onCancel = () => done("");
    dialog.addEventListener("click", onClick);
    dialog.addEventListener("keydown", onKey);
    dialog.addEventListener("cancel", onCancel);
    tokenInput.value = "";
    dialog.showModal();
    tokenInput.focus();
  });
  button.addEventListener("click", async () => {
    if (!confirm("Unload every model from every reachable board? Requests running on them fail.")) {
      return;
    }
    const headers = {};
    let token = "";
    if (button.dataset.tokenRequired === "true") {
      token = sessionStorage.getItem(TOKEN_KEY) || await askToken();
      if (!token) return say("Nothing done: the router needs its admin token for this.", true);
      headers.authorization = "Bearer " + token;
    }
    button.disabled = true;
    say("Unloading…", false);
    try {
      const response = await fetch(base + "router/force_unload_all", { method: "POST", headers });
      const body = await response.json().catch(() => ({}));
      if (response.status === 401 || response.status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        say("The router refused the admin token: " + (body.error || response.status), true);
      } else if (!response.ok) {
        say("Force unload failed: " + (body.error || response.status), true);
      } else {
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
        // A board without the endpoint (Flask-generation RKLlama) is not a failure.
        const results = body.results || [];
        const failed = results.filter((r) => !r.success && !r.unsupported);
        const unsupported = results.filter((r) => r.unsupported).map((r) => r.pod_name);
        say(
          body.message +
            (unsupported.length > 0
              ? "; " + unsupported.join(", ") + " cannot force unload (Flask-generation RKLlama)"
              : "") +
            (failed.length > 0
              ? "; failed: " + failed.map((r) => r.pod_name + " (" + (r.error || "?") + ")").join(", ")
              : ""),
          failed.length > 0,
        );
      }
    } catch (error) {
      say("Force unload failed: " + error.message, true);
    } finally {
      button.disabled = false;
    }
  });
  setInterval(tick, 1000);
  tick();
  connect();
})();
`;
