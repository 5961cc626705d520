"""Hook that the app factory calls to add the monitoring blueprints (dashboard, /metrics).

``create_app`` calls ``annotator_bridge.web.register_extensions(app)``, which the package
re-exports from here: ``from annotator_bridge.web.register import register_extensions``.

The queue/worker probe for the dashboard and ``/metrics`` is looked up at request time, first
match wins: ``app.extensions["al_loop_queue_probe"]`` (set it with :func:`set_queue_probe`),
an attribute ``queue_probe`` on ``app.extensions["al_loop"]`` (the services object), else a
:class:`~annotator_bridge.monitoring.NullQueueProbe` (no broker information).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from annotator_bridge.monitoring import NullQueueProbe, QueueProbe

PROBE_KEY = "al_loop_queue_probe"


def set_queue_probe(app: Flask, probe: QueueProbe) -> None:
    """Tell the dashboard and ``/metrics`` how to ask the broker about queues and workers."""
    app.extensions[PROBE_KEY] = probe


def get_queue_probe(app: Flask) -> QueueProbe:
    probe = app.extensions.get(PROBE_KEY)
    if probe is not None:
        return probe  # type: ignore[no-any-return]
    services = app.extensions.get("al_loop")
    probe = getattr(services, "queue_probe", None) if services is not None else None
    return probe if probe is not None else NullQueueProbe()


def services(app: Flask) -> Any:
    """The app's services object (``.settings .store .loop .dispatcher``)."""
    try:
        return app.extensions["al_loop"]
    except KeyError:
        raise RuntimeError("the al-loop services are not set up on this app (app.extensions['al_loop'])") from None


def register_extensions(app: Flask) -> None:
    """Register the dashboard (``/dashboard/...``) and Prometheus (``/metrics``) blueprints on ``app``.

    Idempotent: a second call on the same app does nothing.
    """
    if app.extensions.get("al_loop_monitoring_registered"):
        return
    from annotator_bridge.web import dashboard, metrics

    app.register_blueprint(dashboard.bp)
    metrics.init_metrics(app)
    app.extensions["al_loop_monitoring_registered"] = True


__all__ = ["get_queue_probe", "register_extensions", "services", "set_queue_probe"]
