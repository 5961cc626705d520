"""Prometheus ``/metrics`` for the al-loop server (prometheus_client, one registry per app).

Two kinds of series:

- **Read from the store at scrape time**, through the status model of
  :mod:`annotator_bridge.monitoring` (so rounds that Celery workers run in other processes are
  counted, and restarts lose nothing): rounds started/finished/failed, round duration by phase
  (histogram over finished rounds), active round progress and heartbeat age, labels ingested,
  labelled items, current metric per project, queue depth and workers (from the app's
  :class:`~annotator_bridge.monitoring.QueueProbe`).
- **Counted in this process** by small functions other code calls: :func:`observe_webhook`
  (webhook latency; ``init_metrics`` already times every ``/webhook`` request itself) and
  :func:`count_labels` (label ingest outcomes: created/updated/duplicate/stale/skipped/deleted).
  Both are no-ops outside an app context or on an app without metrics, so shared code
  (e.g. the ingest path that also runs in workers) may call them unconditionally.

With ``AL_LOOP_DASHBOARD_TOKEN`` set, ``/metrics`` needs it (or the API token) as a bearer token
(Prometheus: ``authorization: {credentials: ...}``); see :mod:`annotator_bridge.web.monitor_auth`.
The broker probe is asked through the app's cache (at most once per few seconds).

Projects are labelled by database id (``project="3"``); ``al_loop_project_info`` maps ids to
names and tasks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, has_app_context, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from al_loop.states import ACTIVE_ROUND_STATUSES, RoundStatus
from al_loop.store.repository import Store
from annotator_bridge import monitoring
from annotator_bridge.web.context import get_queue_probe, get_status_cache, services
from annotator_bridge.web.monitor_auth import is_authorized

log = logging.getLogger("annotator_bridge.web.metrics")

STATE_KEY = "al_loop_metrics"
WEBHOOK_PATH = "/webhook"
WEBHOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROUND_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
LABEL_OUTCOMES = ("created", "updated", "duplicate", "stale", "skipped", "deleted")

bp = Blueprint("metrics", __name__)


@dataclass
class MetricsState:
    """The per-app registry and the in-process instruments."""

    registry: CollectorRegistry
    webhook_latency: Histogram
    webhook_requests: Counter
    label_events: Counter


def _state(app: Flask | None = None) -> MetricsState | None:
    if app is None:
        if not has_app_context():
            return None
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    return app.extensions.get(STATE_KEY)  # type: ignore[no-any-return,union-attr]


def observe_webhook(latency_s: float, *, status: int | str | None = None, app: Flask | None = None) -> None:
    """Record one webhook request that took ``latency_s`` seconds (answered with ``status``)."""
    state = _state(app)
    if state is None or not isinstance(latency_s, int | float) or not math.isfinite(latency_s):
        return
    state.webhook_latency.observe(max(float(latency_s), 0.0))
    if status is not None:
        state.webhook_requests.labels(code=str(status)).inc()


def count_labels(n: int = 1, outcome: str = "created", *, app: Flask | None = None) -> None:
    """Count ``n`` label events with ``outcome`` (one of :data:`LABEL_OUTCOMES`; others count as "other")."""
    state = _state(app)
    if state is None or n <= 0:
        return
    state.label_events.labels(outcome=outcome if outcome in LABEL_OUTCOMES else "other").inc(n)


# ----------------------------------------------------------------- store collector
def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(float(v)) else None


class StoreCollector:
    """Computes round/label/model/queue series from the store and the probe at every scrape."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def describe(self) -> list[Metric]:  # no store access when registering
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("al_loop_store_up", "1 when the al-loop database answered this scrape")
        try:
            store: Store = services(self.app).store
            families = list(self._store_families(store))
            up.add_metric([], 1.0)
        except Exception as exc:  # a scrape must still answer when the database is down
            log.warning("metrics: store collection failed: %s", exc)
            families = []
            up.add_metric([], 0.0)
        yield up
        yield from families
        yield from self._probe_families()

    def _store_families(self, store: Store) -> Iterator[Metric]:
        now = store.clock()
        info = GaugeMetricFamily("al_loop_project_info", "Project id -> name and task (always 1)",
                                 labels=["project", "name", "task"])
        started = CounterMetricFamily("al_loop_rounds_started", "Rounds that a worker started (claimed)",
                                      labels=["project"])
        finished = CounterMetricFamily("al_loop_rounds_finished", "Rounds that reached a final status",
                                       labels=["project", "status"])
        failed = CounterMetricFamily("al_loop_rounds_failed", "Rounds that failed", labels=["project"])
        active = GaugeMetricFamily("al_loop_round_active", "1 while a round is pending or running",
                                   labels=["project", "status"])
        progress = GaugeMetricFamily("al_loop_round_progress", "Progress of the active round (0..1)",
                                     labels=["project", "phase"])
        heartbeat = GaugeMetricFamily("al_loop_round_heartbeat_age_seconds",
                                      "Seconds since the running round's worker last reported", labels=["project"])
        duration = HistogramMetricFamily("al_loop_round_duration_seconds",
                                         "Duration of finished rounds by phase (train, score, ..., total)",
                                         labels=["project", "phase"])
        last_duration = GaugeMetricFamily("al_loop_round_last_duration_seconds",
                                          "Phase durations of the newest succeeded round", labels=["project", "phase"])
        round_score = GaugeMetricFamily("al_loop_round_score",
                                        "Main metric (metrics.score) of the newest succeeded round",
                                        labels=["project"])
        round_labels = GaugeMetricFamily("al_loop_round_labels",
                                         "Labelled items the newest succeeded round trained on", labels=["project"])
        model_score = GaugeMetricFamily("al_loop_model_score", "Main metric of the promoted model version",
                                        labels=["project", "version"])
        items = GaugeMetricFamily("al_loop_items", "Items per split", labels=["project", "split"])
        for p in store.list_projects():
            pid = str(p.id)
            info.add_metric([pid, p.name, p.task.value], 1.0)
            # the status model the dashboard and `al-loop status` show, at this scrape
            rows = monitoring.rounds_table(store, p.id, now=now)
            dist = monitoring.label_distribution(store, p.id)
            summary = monitoring.project_summary(store, p, now=now, rounds=rows, labels=dist)
            started.add_metric([pid], float(sum(1 for r in rows if r["started_at"] is not None)))
            for st in (RoundStatus.SUCCEEDED, RoundStatus.FAILED, RoundStatus.CANCELLED):
                finished.add_metric([pid, st.value], float(sum(1 for r in rows if r["status"] is st)))
            failed.add_metric([pid], float(sum(1 for r in rows if r["status"] is RoundStatus.FAILED)))
            live = next((r for r in rows if r["status"] in ACTIVE_ROUND_STATUSES), None)
            for st in (RoundStatus.PENDING, RoundStatus.RUNNING):
                active.add_metric([pid, st.value], 1.0 if live is not None and live["status"] is st else 0.0)
            if live is not None:
                progress.add_metric([pid, str(live["phase"])], live["progress"])
                if live["heartbeat_age_s"] is not None:
                    heartbeat.add_metric([pid], max(float(live["heartbeat_age_s"]), 0.0))
            done = [r for r in rows if r["status"] is RoundStatus.SUCCEEDED]
            per_phase: dict[str, list[float]] = {}
            for r in done:
                for phase, v in r["timings"].items():
                    per_phase.setdefault(phase, []).append(float(v))
            for phase, values in sorted(per_phase.items()):
                buckets = [(str(float(b)), float(sum(1 for v in values if v <= b))) for b in ROUND_BUCKETS]
                buckets.append(("+Inf", float(len(values))))
                duration.add_metric([pid, phase], buckets, sum(values))
            if done:
                for phase, v in sorted(done[-1]["timings"].items()):
                    last_duration.add_metric([pid, phase], float(v))
                if done[-1]["labels"] is not None:
                    round_labels.add_metric([pid], float(done[-1]["labels"]))
            if summary["score"] is not None:
                round_score.add_metric([pid], float(summary["score"]))
            if summary["promoted"] is not None and summary["promoted_score"] is not None:
                model_score.add_metric([pid, summary["promoted"]], float(summary["promoted_score"]))
            items.add_metric([pid, "pool"], float(dist["pool"]))
            items.add_metric([pid, "test"], float(dist["test"]))
        yield from (info, started, finished, failed, active, progress, heartbeat, duration, last_duration,
                    round_score, round_labels, model_score, items)
        yield from self._label_families(store)

    def _label_families(self, store: Store) -> Iterator[Metric]:
        ingested = CounterMetricFamily("al_loop_labels_ingested",
                                       "Annotations received and stored (each annotation once; includes skipped "
                                       "and later deleted ones)", labels=["project", "source"])
        labelled = GaugeMetricFamily("al_loop_labelled_items", "Items with a live, non-skipped annotation",
                                     labels=["project"])
        for pid, counts in sorted(store.label_counts().items()):
            for source, n in sorted(counts["by_source"].items()):
                ingested.add_metric([str(pid), source], float(n))
            if counts["labelled"]:
                labelled.add_metric([str(pid)], float(counts["labelled"]))
        yield ingested
        yield labelled

    def _probe_families(self) -> Iterator[Metric]:
        probe = monitoring.probe_queues(get_status_cache(self.app).probe(get_queue_probe(self.app)))
        depth = GaugeMetricFamily("al_loop_queue_depth", "Messages waiting per broker queue", labels=["queue"])
        for name, n in sorted(probe["queues"].items()):
            depth.add_metric([name], float(n))
        workers = GaugeMetricFamily("al_loop_workers", "Workers that answered the probe")
        workers.add_metric([], float(len(probe["workers"])))
        probe_up = GaugeMetricFamily("al_loop_queue_probe_up",
                                     "1 when the broker/worker probe answered (0: error or no probe configured)")
        probe_up.add_metric([], 1.0 if probe["available"] and not probe["error"] else 0.0)
        yield depth
        yield workers
        yield probe_up


# ---------------------------------------------------------------------------- wiring
def init_metrics(app: Flask, *, time_webhook: bool = True) -> MetricsState:
    """Create the app's registry, register the collectors and the ``/metrics`` route.

    With ``time_webhook`` every request to ``/webhook`` is timed into
    ``al_loop_webhook_latency_seconds`` (so the webhook view need not call
    :func:`observe_webhook` itself).
    """
    existing = app.extensions.get(STATE_KEY)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    registry = CollectorRegistry(auto_describe=False)
    state = MetricsState(
        registry=registry,
        webhook_latency=Histogram("al_loop_webhook_latency_seconds", "Time to answer a Label Studio webhook",
                                  buckets=WEBHOOK_BUCKETS, registry=registry),
        webhook_requests=Counter("al_loop_webhook_requests", "Webhook requests by HTTP status", ["code"],
                                 registry=registry),
        label_events=Counter("al_loop_label_events", "Label ingest outcomes counted by this process", ["outcome"],
                             registry=registry),
    )
    registry.register(StoreCollector(app))  # type: ignore[arg-type]
    app.extensions[STATE_KEY] = state
    app.register_blueprint(bp)

    if time_webhook:
        @app.before_request
        def _start_timer() -> None:
            if request.path == WEBHOOK_PATH:
                g.al_loop_webhook_t0 = time.perf_counter()

        @app.after_request
        def _stop_timer(response: Response) -> Response:
            t0 = g.pop("al_loop_webhook_t0", None)
            if t0 is not None:
                observe_webhook(time.perf_counter() - t0, status=response.status_code, app=app)
            return response

    return state


@bp.get("/metrics")
def metrics_view() -> Response:
    if not is_authorized(services(current_app).settings, request):
        return Response("/metrics needs a token: send 'Authorization: Bearer <AL_LOOP_DASHBOARD_TOKEN>'\n",
                        status=401, mimetype="text/plain", headers={"WWW-Authenticate": 'Bearer realm="al-loop"'})
    state = _state()
    if state is None:  # blueprint registered without init_metrics
        return Response("metrics are not initialised\n", status=503, mimetype="text/plain")
    return Response(generate_latest(state.registry), content_type=CONTENT_TYPE_LATEST)


def scrape(app: Flask) -> str:
    """The exposition text of ``app``'s registry (for tests and ``al-loop status``)."""
    state = _state(app)
    return generate_latest(state.registry).decode("utf-8") if state is not None else ""


__all__ = ["LABEL_OUTCOMES", "MetricsState", "bp", "count_labels", "init_metrics", "observe_webhook", "scrape"]
