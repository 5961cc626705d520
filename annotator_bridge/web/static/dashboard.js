/* al-loop dashboard: live refresh and authenticated actions. Hand-written, no dependencies.
 *
 * - Polls the page's fragment URL (every data-poll-active ms while a round is pending or running,
 *   else every data-poll-idle ms; paused while the tab is hidden) and swaps the live section when
 *   the server's X-Dashboard-Digest changes.
 * - Buttons with data-action POST to their data-url with "Authorization: Bearer <token>"; the token
 *   comes from the token field and is kept in this tab's sessionStorage only.
 */
(function () {
  "use strict";

  var TOKEN_KEY = "al-loop-api-token";
  var live = document.getElementById("live");
  var message = document.getElementById("action-message");
  var refreshState = document.getElementById("refresh-state");
  var tokenForm = document.getElementById("token-form");
  var tokenInput = document.getElementById("api-token");
  var tokenState = document.getElementById("token-state");
  var tokenForget = document.getElementById("token-forget");
  var timer = null;
  var inFlight = false;

  function getToken() {
    try { return window.sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function setToken(value) {
    try {
      if (value) { window.sessionStorage.setItem(TOKEN_KEY, value); } else { window.sessionStorage.removeItem(TOKEN_KEY); }
    } catch (e) { /* storage disabled: the token lives only in the field */ }
    showTokenState();
  }

  function showTokenState() {
    if (!tokenState) { return; }
    var has = !!getToken();
    tokenState.textContent = has ? "token set for this tab" : "not set";
    tokenState.className = has ? "ok" : "muted";
    if (tokenForget) { tokenForget.hidden = !has; }
  }

  function say(text, kind) {
    if (!message) { return; }
    message.textContent = text;
    message.className = "message " + (kind || "");
    message.hidden = !text;
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function stamp(ok) {
    if (!refreshState) { return; }
    var d = new Date();
    var t = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    refreshState.textContent = ok ? "updated " + t : "connection lost at " + t + ", retrying";
    refreshState.className = ok ? "" : "warn";
  }

  function interval() {
    var active = live && live.getAttribute("data-active") === "1";
    var ms = parseInt(live.getAttribute(active ? "data-poll-active" : "data-poll-idle"), 10);
    return isNaN(ms) || ms < 500 ? 5000 : ms;
  }

  function schedule(ms) {
    if (timer !== null) { window.clearTimeout(timer); }
    timer = window.setTimeout(refresh, ms === undefined ? interval() : ms);
  }

  function refresh() {
    timer = null;
    if (!live || document.hidden) { schedule(); return Promise.resolve(); }
    if (inFlight) { schedule(); return Promise.resolve(); }
    inFlight = true;
    return window.fetch(live.getAttribute("data-fragment-url"), {
      headers: { "Accept": "text/html" }, cache: "no-store", credentials: "same-origin"
    }).then(function (res) {
      if (res.status === 401) { window.location.reload(); return; }  // signed out: the page shows the sign-in form
      if (!res.ok) { throw new Error("HTTP " + res.status); }
      var digest = res.headers.get("X-Dashboard-Digest") || "";
      var active = res.headers.get("X-Dashboard-Active") === "1" ? "1" : "0";
      return res.text().then(function (html) {
        if (digest !== live.getAttribute("data-digest")) {
          live.innerHTML = html;
          live.setAttribute("data-digest", digest);
        }
        live.setAttribute("data-active", active);
        stamp(true);
      });
    }).catch(function () {
      stamp(false);
    }).then(function () {
      inFlight = false;
      schedule();
    });
  }

  function errorText(res, body) {
    var detail = "";
    if (body && typeof body === "object") {
      var e = body.error;
      detail = (e && typeof e === "object" ? (e.message || e.detail || e.code) : e) || body.message || body.detail || "";
    }
    if (res.status === 401 || res.status === 403) {
      return "The server refused the token (HTTP " + res.status + "). " + (detail || "Check AL_LOOP_API_TOKEN.");
    }
    return "HTTP " + res.status + (detail ? ": " + detail : "");
  }

  function act(button) {
    var token = getToken() || (tokenInput ? tokenInput.value.trim() : "");
    if (!token) {
      say("Enter the API token (AL_LOOP_API_TOKEN) first; it is kept in this tab only.", "error");
      if (tokenInput) { tokenInput.focus(); }
      return;
    }
    if (!getToken()) { setToken(token); }
    var question = button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { return; }
    var label = button.textContent;
    button.disabled = true;
    say(label + "…", "busy");
    window.fetch(button.getAttribute("data-url"), {
      method: "POST",
      headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json", "Accept": "application/json" },
      body: button.getAttribute("data-body") || "{}",
      cache: "no-store",
      credentials: "same-origin"
    }).then(function (res) {
      return res.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (!res.ok) { throw new Error(errorText(res, body)); }
        return body;
      });
    }).then(function (body) {
      var action = button.getAttribute("data-action");
      var version = body && body.version ? body.version : null;
      var round = body && body.round ? body.round : null;
      var what = action === "promote" ? "Promoted " + (version && version.name ? version.name : button.getAttribute("data-version"))
        : action === "rollback" ? "Rolled back" + (version && version.name ? " to " + version.name : "")
        : action === "start-round" ? "Round " + (round && round.index !== undefined ? round.index + " " : "") + "queued"
        : "Done";
      say(what + ".", "ok");
      if (action === "start-round" && live) { live.setAttribute("data-active", "1"); }
      return refresh();
    }).catch(function (err) {
      say(err && err.message ? err.message : "The request failed.", "error");
    }).then(function () {
      if (document.body.contains(button)) { button.disabled = false; }
    });
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    var button = target && target.closest ? target.closest("button[data-action]") : null;
    if (button && !button.disabled) {
      event.preventDefault();
      act(button);
    }
  });

  if (tokenForm) {
    tokenForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var value = tokenInput ? tokenInput.value.trim() : "";
      setToken(value);
      if (tokenInput) { tokenInput.value = ""; }
      say(value ? "Token kept for this tab; actions are enabled." : "", value ? "ok" : "");
    });
  }
  if (tokenForget) {
    tokenForget.addEventListener("click", function () { setToken(""); say("Token forgotten.", "ok"); });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { schedule(0); }
  });

  showTokenState();
  if (live) { schedule(); }

  window.alLoopDashboard = { refresh: refresh };
})();
