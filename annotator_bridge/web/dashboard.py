"""The dashboard blueprint: server-rendered HTML pages per project, live-updated by polling.

Routes (GET, read-only; open unless ``AL_LOOP_DASHBOARD_TOKEN`` is set, then they need it or the
API token as a bearer token or the sign-in cookie: :mod:`annotator_bridge.web.monitor_auth`):

- ``/dashboard/``                                   project list
- ``/dashboard/<project_id>``                       the project page
- ``/dashboard/<project_id>/fragment``              the live part of the page as HTML (polled by
                                                    ``static/dashboard.js``; headers ``X-Dashboard-Digest``
                                                    and ``X-Dashboard-Active``)
- ``/dashboard/<project_id>/data.json``             the same facts as JSON (:func:`project_snapshot`)
- ``/dashboard/<project_id>/rounds/<round_id>``     a round's report page
- ``/dashboard/<project_id>/rounds/<round_id>/report.json``  the round report as JSON
- ``/dashboard/static/...``                         the page's own CSS and JS (no third-party code; always open)
- ``/dashboard/sign-in`` (GET form, POST token)     sets the sign-in cookie; ``POST /dashboard/sign-out`` clears it

Snapshots come from the app's :class:`~annotator_bridge.monitoring.SnapshotCache`: recomputed only
when the project changed (a label, a round, a version) or after a minute, so a poll costs milliseconds.

Actions (promote, roll back, start a round) are buttons that call the authenticated
management API (``/api/projects/<id>/...``) from the browser with ``Authorization: Bearer
<token>``; the token is typed once into the page's token field and kept in the tab's
``sessionStorage`` (never in a cookie, so no CSRF exposure; gone when the tab closes).
Charts are SVG generated here (:mod:`annotator_bridge.web.svg`).
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, url_for
from markupsafe import Markup

from al_loop.errors import NotFoundError
from annotator_bridge import monitoring
from annotator_bridge.web import monitor_auth, svg
from annotator_bridge.web.context import get_queue_probe, get_status_cache, services

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

POLL_ACTIVE_MS = 2000
POLL_IDLE_MS = 15000
"""Refresh intervals of the page while a round is pending/running and otherwise; override with the app config
keys ``AL_LOOP_DASHBOARD_POLL_ACTIVE_MS`` / ``AL_LOOP_DASHBOARD_POLL_IDLE_MS``."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)


# ------------------------------------------------------------------------- formatting
class Fmt:
    """Number/time formatting for the templates (exposed as ``fmt``)."""

    @staticmethod
    def score(v: Any, digits: int = 3) -> str:
        return "—" if not _ok(v) else f"{float(v):.{digits}f}"

    @staticmethod
    def delta(v: Any, digits: int = 3) -> str:
        if not _ok(v):
            return ""
        return f"{float(v):+.{digits}f}" if abs(float(v)) >= 0.5 * 10 ** -digits else f"±{0:.{digits}f}"

    @staticmethod
    def delta_class(v: Any) -> str:
        if not _ok(v) or abs(float(v)) < 5e-4:
            return "flat"
        return "up" if float(v) > 0 else "down"

    @staticmethod
    def num(v: Any) -> str:
        return "—" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:,.1f}" if _ok(v) else str(v)

    @staticmethod
    def pct(v: Any) -> str:
        return "—" if not _ok(v) else f"{float(v) * 100:.0f}%"

    @staticmethod
    def dur(v: Any) -> str:
        """Seconds -> '850 ms', '12.3 s', '4 m 05 s', '2 h 03 m'."""
        return monitoring.format_duration(v, missing="—")

    @staticmethod
    def when(iso: str | None) -> str:
        """ISO UTC -> '2026-01-02 03:04 UTC'."""
        if not iso:
            return "—"
        try:
            return datetime.fromisoformat(iso.rstrip("Z")).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            return iso

    @staticmethod
    def hour(iso: str | None) -> str:
        if not iso:
            return ""
        try:
            return datetime.fromisoformat(iso.rstrip("Z")).strftime("%H:%M")
        except ValueError:
            return iso

    @staticmethod
    def ago(seconds: Any) -> str:
        """Seconds -> '4 s ago', '12 min ago', '3 h 05 m ago' (coarse, so an idle page's HTML stays the same)."""
        if not _ok(seconds):
            return "—"
        s = max(float(seconds), 0.0)
        if s < 90:
            return f"{s:.0f} s ago"
        if s < 3600:
            return f"{s // 60:.0f} min ago"
        return f"{s // 3600:.0f} h {s % 3600 // 60:02.0f} m ago"


def _ok(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


@bp.context_processor
def _inject() -> dict[str, Any]:
    return {"fmt": Fmt, "svg_progress": lambda f, label="": Markup(svg.progress_bar(f, label=label))}


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype in ("text/html", "application/json"):
        response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------------------- charts
def curve_chart(curve: dict[str, Any]) -> str:
    """Learning curve: the live project's main metric vs labels, simulation curves (mean + min/max band) beneath."""
    series: list[svg.Series] = []
    sim = curve.get("simulation")
    if sim:
        colors = iter(svg.PALETTE[1:])
        for s in sim["series"]:
            random = s["strategy"] == "random"
            pts = s["points"]
            series.append(
                svg.Series(
                    name=f"{s['strategy']} (simulation)",
                    key=f"sim:{s['strategy']}",
                    points=[(p["labels"], p["score"]) for p in pts],
                    band=[(p["labels"], p["lo"], p["hi"]) for p in pts] if any(p["n"] > 1 for p in pts) else (),
                    color=svg.BASELINE_COLOR if random else next(colors, svg.PALETTE[-1]),
                    dashed=True,
                    width=1.6,
                    labels=[f"{s['strategy']} simulation, round {p['round']}: {p['labels']:g} labels → "
                            f"{p['score']:.3f} (min {p['lo']:.3f}, max {p['hi']:.3f}, {p['n']} runs)" for p in pts],
                )
            )
    live = curve.get("live") or []
    series.append(
        svg.Series(
            name="this project",
            key="live",
            points=[(p["labels"], p["score"]) for p in live],
            color=svg.PALETTE[0],
            width=2.6,
            labels=[f"round {p['round']}: {p['labels']:,} labels → {p['score']:.4f}" for p in live],
        )
    )
    return svg.line_chart(
        series,
        title=f"Learning curve: {curve.get('metric', 'score')} vs labels",
        x_label="labelled items",
        y_label=curve.get("metric", "score"),
        y_min=0.0,
        y_max=1.0,
        empty_text="the curve starts after the first trained round",
        css_class="chart line-chart curve",
    )


def label_chart(labels: dict[str, Any]) -> str:
    per = labels.get("per_label") or {}
    return svg.bar_chart(
        list(per),
        [svg.BarSeries("count", [float(v) for v in per.values()], key="labels")],
        title=f"Label distribution ({labels.get('unit', 'items')})",
        value_label=str(labels.get("unit", "")),
        empty_text="no labels yet",
        css_class="chart bar-chart label-dist",
    )


def per_label_chart(cmp: dict[str, Any]) -> str:
    rows = cmp.get("rows") or []
    cats = [r["label"] for r in rows]
    series = [
        svg.BarSeries(f"current ({cmp.get('current') or '—'})",
                      [r["current"]["f1"] if r["current"] else None for r in rows], key="current",
                      color=svg.PALETTE[0])
    ]
    if cmp.get("previous"):
        series.append(svg.BarSeries(f"previous ({cmp['previous']})",
                                    [r["previous"]["f1"] if r["previous"] else None for r in rows], key="previous",
                                    color="#9ca3af"))
    return svg.bar_chart(cats, series, title="F1 per label: current vs previous model version", value_max=1.0,
                         value_format="{:.2f}", value_label="F1", empty_text="no per-label scores yet",
                         css_class="chart bar-chart per-label")


def rate_chart(rate: dict[str, Any]) -> str:
    buckets = rate.get("buckets") or []
    return svg.bar_chart(
        [Fmt.hour(b["start"]) for b in buckets],
        [svg.BarSeries("annotations", [float(b["count"]) for b in buckets], key="per-hour", color=svg.PALETTE[2])],
        title=f"Annotations per hour, last {rate.get('hours', 24)} h (UTC)",
        horizontal=False,
        width=560,
        height=200,
        label_every=max(len(buckets) // 8, 1),
        show_values=False,
        css_class="chart bar-chart rate",
    )


def stopping_chart(stopping: dict[str, Any] | None) -> str:
    """Kappa between successive models on the stop set vs labels (and its mean over the window), with the
    stabilizing-predictions threshold as a reference line."""
    trend = [p for p in (stopping or {}).get("trend") or [] if p.get("labels") is not None]
    kappa = [p for p in trend if _ok(p.get("kappa"))]
    mean = [p for p in trend if _ok(p.get("kappa_mean"))]
    thresholds = (stopping or {}).get("thresholds") or {}
    series = [
        svg.Series(name="kappa vs previous model", key="kappa", points=[(p["labels"], p["kappa"]) for p in kappa],
                   color=svg.PALETTE[0], width=2.2,
                   labels=[f"round {p['round']}: {p['labels']:,} labels → kappa {p['kappa']:.4f}" for p in kappa]),
        svg.Series(name=f"mean of {thresholds.get('kappa_window', 3)} rounds", key="kappa-mean",
                   points=[(p["labels"], p["kappa_mean"]) for p in mean], color=svg.PALETTE[1], dashed=True,
                   width=1.6,
                   labels=[f"round {p['round']}: mean kappa {p['kappa_mean']:.4f}" for p in mean]),
    ]
    limit = _num(thresholds.get("kappa"))
    return svg.line_chart(
        series,
        title="Stabilizing predictions: Cohen's kappa between successive models on the stop set",
        x_label="labelled items",
        y_label="kappa",
        y_max=1.0,
        hline=(limit, f"stable at {limit:g}") if limit is not None else None,
        empty_text="kappa needs two trained rounds",
        css_class="chart line-chart stopping",
    )


def _num(v: Any) -> float | None:
    return float(v) if _ok(v) else None


def _charts(snap: dict[str, Any]) -> dict[str, Markup]:
    return {
        "stopping": Markup(stopping_chart(snap.get("stopping"))),
        "curve": Markup(curve_chart(snap["curve"])),
        "labels": Markup(label_chart(snap["labels"])),
        "per_label": Markup(per_label_chart(snap["per_label"])),
        "rate": Markup(rate_chart(snap["annotation"])),
    }


# ---------------------------------------------------------------------------- views
def _store() -> Any:
    return services(current_app).store


def _snapshot(project_id: int) -> dict[str, Any]:
    return get_status_cache(current_app).snapshot(_store(), project_id, get_queue_probe(current_app))


# the optional token: a before_request check and the sign-in form (monitor_auth)
monitor_auth.install(bp, json_endpoints=("dashboard.data", "dashboard.round_json", "dashboard.fragment"),
                     home="dashboard.projects")


def _api(project_id: int) -> dict[str, str]:
    base = f"/api/projects/{project_id}"
    return {
        "promote": base + "/versions/{id}/promote",
        "rollback": base + "/rollback",
        "start_round": base + "/rounds",
    }


def _not_found(message: str) -> tuple[str, int]:
    return render_template("dashboard/not_found.html", message=message), 404


@bp.get("/")
def projects() -> Any:
    store = _store()
    probe = monitoring.probe_queues(get_status_cache(current_app).probe(get_queue_probe(current_app)))
    rows = [monitoring.project_summary(store, p) for p in store.list_projects()]
    return render_template("dashboard/projects.html", projects=rows, probe=probe)


@bp.get("/<int:project_id>")
def project(project_id: int) -> Any:
    try:
        snap = _snapshot(project_id)
    except NotFoundError as exc:
        return _not_found(str(exc))
    live = render_template("dashboard/_live.html", s=snap, charts=_charts(snap), api=_api(project_id))
    return render_template(
        "dashboard/project.html",
        ls_url=_label_studio_url(snap),
        s=snap,
        live=Markup(live),
        digest=_digest(live),
        api=_api(project_id),
        poll_active_ms=int(current_app.config.get("AL_LOOP_DASHBOARD_POLL_ACTIVE_MS", POLL_ACTIVE_MS)),
        poll_idle_ms=int(current_app.config.get("AL_LOOP_DASHBOARD_POLL_IDLE_MS", POLL_IDLE_MS)),
    )


def _label_studio_url(snap: dict[str, Any]) -> str | None:
    """Link to the project in Label Studio, when the server knows Label Studio's URL."""
    settings = getattr(services(current_app), "settings", None)
    base = getattr(settings, "label_studio_url", None)
    ls_id = snap["summary"].get("label_studio_project")
    return f"{base}/projects/{ls_id}/data" if base and ls_id is not None else None


def _digest(html: str) -> str:
    return hashlib.sha1(html.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]


@bp.get("/<int:project_id>/fragment")
def fragment(project_id: int) -> Any:
    try:
        snap = _snapshot(project_id)
    except NotFoundError as exc:
        return _not_found(str(exc))
    html = render_template("dashboard/_live.html", s=snap, charts=_charts(snap), api=_api(project_id))
    resp = Response(html, mimetype="text/html")
    resp.headers["X-Dashboard-Digest"] = _digest(html)
    resp.headers["X-Dashboard-Active"] = "1" if snap["summary"]["active"] else "0"
    resp.headers["X-Dashboard-Generated"] = snap["generated_at"] or ""
    return resp


@bp.get("/<int:project_id>/data.json")
def data(project_id: int) -> Any:
    return jsonify(_snapshot(project_id))


def _report(project_id: int, round_id: int) -> dict[str, Any]:
    return monitoring.round_report(_store(), project_id, round_id)


@bp.get("/<int:project_id>/rounds/<int:round_id>")
def round_page(project_id: int, round_id: int) -> Any:
    try:
        rep = _report(project_id, round_id)
    except NotFoundError as exc:
        return _not_found(str(exc))
    conf = rep.get("confusion") or {}
    per = rep.get("per_label") or {}
    charts = {
        "confusion": Markup(svg.heatmap(conf.get("labels") or [], conf.get("labels") or [], conf.get("matrix") or []))
        if conf.get("matrix") else None,
        "per_label": Markup(svg.bar_chart(
            list(per), [svg.BarSeries("F1", [_f1(v) for v in per.values()], key="f1")],
            title="F1 per label", value_max=1.0, value_format="{:.2f}", value_label="F1",
            css_class="chart bar-chart per-label")) if per else None,
    }
    return render_template(
        "dashboard/round.html",
        r=rep,
        charts=charts,
        top_confusions=monitoring.confusion_top_errors(conf),
        back=url_for("dashboard.project", project_id=project_id),
    )


def _f1(v: Any) -> float | None:
    f1 = v.get("f1") if isinstance(v, dict) else None
    return float(f1) if isinstance(f1, int | float) and _ok(f1) else None


@bp.get("/<int:project_id>/rounds/<int:round_id>/report.json")
def round_json(project_id: int, round_id: int) -> Any:
    return jsonify(_report(project_id, round_id))


__all__ = ["bp", "curve_chart", "label_chart", "per_label_chart", "rate_chart", "stopping_chart"]
