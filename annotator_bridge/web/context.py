"""Where the views find the app's services and the broker probe (``app.extensions``).

The services object (:class:`annotator_bridge.web.app.Services`: ``.settings .store .loop
.predictor .dispatcher .queue_probe``) lives in ``app.extensions["al_loop"]``. The dashboard and
``/metrics`` ask ``get_queue_probe(app)`` about queues and workers: the services'
``queue_probe`` (``al-loop serve`` sets a Celery probe with ``set_queue_probe``), else a
:class:`~annotator_bridge.monitoring.NullQueueProbe` (no broker information); they ask it through
``get_status_cache(app)`` (a :class:`~annotator_bridge.monitoring.SnapshotCache`: snapshots per
project while nothing changed, the probe's answers for a few seconds).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from annotator_bridge.monitoring import NullQueueProbe, QueueProbe, SnapshotCache

SERVICES_KEY = "al_loop"
STATUS_CACHE_KEY = "al_loop_status_cache"


def services(app: Flask) -> Any:
    """The app's services object (``.settings .store .loop .predictor .dispatcher .queue_probe``)."""
    try:
        return app.extensions[SERVICES_KEY]
    except KeyError:
        raise RuntimeError("the al-loop services are not set up on this app (app.extensions['al_loop'])") from None


def set_queue_probe(app: Flask, probe: QueueProbe) -> None:
    """Tell the dashboard and ``/metrics`` how to ask the broker about queues and workers."""
    services(app).queue_probe = probe


def get_queue_probe(app: Flask) -> QueueProbe:
    probe = getattr(app.extensions.get(SERVICES_KEY), "queue_probe", None)
    return probe if probe is not None else NullQueueProbe()


def get_status_cache(app: Flask) -> SnapshotCache:
    """The app's dashboard snapshot cache and cached broker probe (made on first use; one per process)."""
    cache = app.extensions.get(STATUS_CACHE_KEY)
    if cache is None:
        cache = app.extensions.setdefault(STATUS_CACHE_KEY, SnapshotCache())
    return cache  # type: ignore[no-any-return]


__all__ = ["SERVICES_KEY", "STATUS_CACHE_KEY", "get_queue_probe", "get_status_cache", "services", "set_queue_probe"]
