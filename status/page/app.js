/**
 * The status page's browser script, inlined into the page by status/ui.tsx (its
 * Content-Security-Policy allows it by hash). Follows `/router/events?view=html`
 * (EventSource reconnects by itself, and is restarted if the router answered with an
 * error while restarting), swaps in the sections the router rendered, keeps load
 * timers ticking on the router's clock, and runs the one state-changing action,
 * asking for the admin token when needed.
 *
 * Type-checked against the browser's types (status/page/check.json, run by `deno task check`),
 * not Deno's: the two cannot share one program.
 */
(() => {
  "use strict";
  const TOKEN_KEY = "rkllama-router-admin-token";
  const base = location.pathname.replace(/ui\/?$/, "");
  /**
   * The page's element for `selector` (status/ui.tsx renders each), of the type the script uses.
   *
   * @template {Element} T
   * @param {string} selector
   * @param {{ new (): T; prototype: T }} type
   * @returns {T}
   */
  const element = (selector, type) => {
    const found = document.querySelector(selector);
    if (!(found instanceof type)) throw new Error("the page has no " + selector);
    return found;
  };
  const live = element("#live", HTMLElement);
  const notice = element("#notice", HTMLElement);
  const button = element("[data-action='force-unload']", HTMLButtonElement);
  const dialog = element("#token-dialog", HTMLDialogElement);
  const tokenInput = element("#token-input", HTMLInputElement);
  let offset = 0;
  /** @param {number} ms */
  const duration = (ms) => {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  };
  const tick = () => {
    const now = Date.now() + offset;
    for (const el of document.querySelectorAll("[data-since]")) {
      if (!(el instanceof HTMLElement)) continue;
      el.textContent = duration(now - Number(el.dataset.since));
    }
    for (const el of document.querySelectorAll("[data-ago]")) {
      if (!(el instanceof HTMLElement)) continue;
      el.textContent = duration(now - Number(el.dataset.ago)) + " ago";
    }
  };
  /** @type {(on: boolean, text: string) => void} */
  const setLive = (on, text) => {
    live.textContent = text;
    live.className = "badge " + (on ? "ok" : "warn");
  };
  /** @type {(text: string, bad: boolean) => void} */
  const say = (text, bad) => {
    notice.textContent = text;
    notice.className = bad ? "bad" : "ok";
  };
  // Sections as last applied, and those held back while the user selects text in them.
  /** @type {Map<string, string>} */
  const shown = new Map();
  /** @type {Map<string, string>} */
  const held = new Map();
  /** @param {Element} el */
  const selectingIn = (el) => {
    const selection = getSelection();
    return selection !== null && !selection.isCollapsed && selection.rangeCount > 0 &&
      el.contains(selection.getRangeAt(0).commonAncestorContainer);
  };
  /** @type {(id: string, html: string) => void} */
  const apply = (id, html) => {
    const el = document.getElementById(id);
    if (!el || shown.get(id) === html) {
      held.delete(id);
      return;
    }
    if (selectingIn(el)) {
      held.set(id, html);
      return;
    }
    held.delete(id);
    // Scrolled boxes keep their place (a phone scrolls the models table sideways).
    const places = [...el.querySelectorAll(".scroll")].map((box) => [
      box.scrollLeft,
      box.scrollTop,
    ]);
    el.innerHTML = html;
    shown.set(id, html);
    el.querySelectorAll(".scroll").forEach((box, i) => {
      if (places[i]) [box.scrollLeft, box.scrollTop] = places[i];
    });
  };
  document.addEventListener("selectionchange", () => {
    for (const [id, html] of [...held]) apply(id, html);
  });
  /** @param {boolean} required */
  const tokenRequired = (required) => {
    button.dataset.tokenRequired = String(required);
    button.title = "POST /router/force_unload_all (asks to confirm" +
      (required ? ", then for the admin token)" : ")");
  };
  const connect = () => {
    const events = new EventSource(base + "router/events?view=html");
    events.addEventListener("html", (event) => {
      /** @type {{ now: number, sections: Record<string, string>, adminTokenRequired?: boolean }} */
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
  /** @type {() => Promise<string>} */
  const askToken = () =>
    new Promise((resolve) => {
      /** @param {string} token */
      const done = (token) => {
        dialog.removeEventListener("click", onClick);
        dialog.removeEventListener("keydown", onKey);
        dialog.removeEventListener("cancel", onCancel);
        tokenInput.value = "";
        if (dialog.open) dialog.close();
        resolve(token);
      };
      /** @param {MouseEvent} event */
      const onClick = (event) => {
        const choice = event.target instanceof Element
          ? event.target.closest("[data-token]")
          : null;
        if (choice instanceof HTMLElement) {
          done(choice.dataset.token === "ok" ? tokenInput.value.trim() : "");
        }
      };
      /** @param {KeyboardEvent} event */
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
    /** @type {Record<string, string>} */
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
        /** @type {{ pod_name: string, success: boolean, unsupported?: boolean, error?: string }[]} */
        const results = body.results || [];
        const failed = results.filter((r) => !r.success && !r.unsupported);
        const unsupported = results.filter((r) => r.unsupported).map((r) => r.pod_name);
        say(
          body.message +
            (unsupported.length > 0
              ? "; " + unsupported.join(", ") + " cannot force unload (Flask-generation RKLlama)"
              : "") +
            (failed.length > 0
              ? "; failed: " +
                failed.map((r) => r.pod_name + " (" + (r.error || "?") + ")").join(", ")
              : ""),
          failed.length > 0,
        );
      }
    } catch (error) {
      say("Force unload failed: " + (error instanceof Error ? error.message : String(error)), true);
    } finally {
      button.disabled = false;
    }
  });
  setInterval(tick, 1000);
  tick();
  connect();
})();
