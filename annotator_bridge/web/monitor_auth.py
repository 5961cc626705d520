"""The optional token of the read-only pages: ``/dashboard/...`` and ``/metrics``.

With ``AL_LOOP_DASHBOARD_TOKEN`` unset both are open (as before; keep the server on loopback or
behind a proxy). With it set, a request needs either that token or the API token, sent as

- ``Authorization: Bearer <token>`` (scripts, Prometheus' ``authorization`` setting), or
- the browser cookie ``al_loop_dashboard``, which the dashboard's sign-in form sets: the token is
  typed into the form and POSTed (so it is in no URL and no access log); the cookie holds an HMAC
  of the token, never the token itself (HttpOnly, SameSite=Strict, Secure over HTTPS).

Tokens in the query string are not accepted (they would end up in logs and browser history).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Request, current_app, jsonify, redirect, render_template, request, url_for

from annotator_bridge.web.auth import secrets_match
from annotator_bridge.web.context import services

log = logging.getLogger("annotator_bridge.web")

COOKIE_NAME = "al_loop_dashboard"
COOKIE_MAX_AGE_S = 12 * 3600
_COOKIE_CONTEXT = b"al-loop dashboard session v1"


def accepted_tokens(settings: Any) -> tuple[str, ...]:
    """The tokens that open the read-only pages; empty = they are open to anyone who reaches the server."""
    dashboard = getattr(settings, "dashboard_token", None)
    if not dashboard:
        return ()
    api = getattr(settings, "api_token", None)
    return (dashboard, api) if api else (dashboard,)


def cookie_value(token: str) -> str:
    """What the sign-in cookie holds for ``token`` (an HMAC: the cookie never reveals the token)."""
    return hmac.new(token.encode("utf-8"), _COOKIE_CONTEXT, hashlib.sha256).hexdigest()


def token_is_accepted(settings: Any, token: str | None) -> bool:
    return token is not None and any(secrets_match(t, token) for t in accepted_tokens(settings))


def is_authorized(settings: Any, request: Request) -> bool:
    """Whether ``request`` may read the dashboard and ``/metrics`` (always, without a dashboard token)."""
    tokens = accepted_tokens(settings)
    if not tokens:
        return True
    scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token_is_accepted(settings, given.strip() or None):
        return True
    cookie = request.cookies.get(COOKIE_NAME)
    return cookie is not None and any(secrets_match(cookie_value(t), cookie) for t in tokens)


def safe_next(target: str | None, default: str) -> str:
    """Where to go after signing in: a path of this server's dashboard or ``/metrics`` only (no open redirect)."""
    if (isinstance(target, str) and target.startswith(("/dashboard", "/metrics")) and "//" not in target
            and "\\" not in target and all(32 < ord(c) < 127 for c in target)):
        return target
    return default


def install(bp: Blueprint, *, json_endpoints: Iterable[str], home: str) -> None:
    """Guard every view of ``bp`` but its static files and add ``/sign-in`` (GET form, POST token) and
    ``/sign-out`` (POST). Refused JSON views answer 401 JSON; refused pages answer 401 with the form."""
    as_json = frozenset(json_endpoints)
    name = bp.name
    open_endpoints = {f"{name}.static", f"{name}.sign_in", f"{name}.sign_out"}

    @bp.record_once
    def _warn_when_open(state: Any) -> None:
        settings = getattr(state.app.extensions.get("al_loop"), "settings", None)
        if settings is not None and not accepted_tokens(settings):
            log.info("AL_LOOP_DASHBOARD_TOKEN is not set: /dashboard and /metrics are open to anyone who reaches "
                     "this server (fine on loopback; set it when the server is reachable from elsewhere)")

    def page(next_url: str | None, error: str | None, code: int) -> Any:
        target = safe_next(next_url, url_for(home))
        return render_template("dashboard/sign_in.html", next=target, error=error, sign_in=f"{name}.sign_in"), code

    @bp.before_request
    def _require_token() -> Any:
        if request.endpoint in open_endpoints or is_authorized(services(current_app).settings, request):
            return None
        if request.endpoint in as_json:
            body = {"error": {"type": "Unauthorized", "message": "this needs a token: send 'Authorization: Bearer "
                              "<AL_LOOP_DASHBOARD_TOKEN>' or sign in at /dashboard/sign-in"}}
            return jsonify(body), 401, {"WWW-Authenticate": 'Bearer realm="al-loop"'}
        return page(request.full_path.rstrip("?"), None, 401)

    @bp.route("/sign-in", methods=["GET", "POST"])
    def sign_in() -> Any:
        settings = services(current_app).settings
        target = safe_next(request.values.get("next"), url_for(home))
        if request.method == "GET":
            return page(target, None, 200)
        if not accepted_tokens(settings):
            return redirect(target, 303)  # nothing to sign in to: the pages are open
        token = request.form.get("token")
        if not token_is_accepted(settings, token):
            log.warning("dashboard sign-in refused (wrong token) from %s", request.remote_addr)
            return page(target, "That token is not accepted.", 401)
        resp = redirect(target, 303)
        resp.set_cookie(COOKIE_NAME, cookie_value(str(token)), max_age=COOKIE_MAX_AGE_S, path="/", httponly=True,
                        samesite="Strict", secure=request.is_secure)
        return resp

    @bp.post("/sign-out")
    def sign_out() -> Any:
        resp = redirect(url_for(f"{name}.sign_in"), 303)
        resp.delete_cookie(COOKIE_NAME, path="/")
        return resp


__all__ = ["COOKIE_MAX_AGE_S", "COOKIE_NAME", "accepted_tokens", "cookie_value", "install", "is_authorized",
           "safe_next", "token_is_accepted"]
