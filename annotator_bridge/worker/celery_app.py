"""The Celery application: ``make_celery(settings)`` and the process-wide ``app``.

``make_celery`` builds an app configured from :class:`annotator_bridge.settings.Settings`
(:func:`annotator_bridge.worker.config.celery_config`: broker, queues, routes, delivery
guarantees, and the settings themselves under ``app.conf.al_loop_settings``); the tasks are
module-level ``shared_task`` functions in :mod:`annotator_bridge.worker.tasks`, bound to every
app. ``app`` (module attribute, for ``celery -A annotator_bridge.worker.celery_app``) is built
on first access from ``Settings.from_env()``. Importing this module connects to nothing and
loads no model.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from annotator_bridge.settings import Settings
from annotator_bridge.worker import tasks
from annotator_bridge.worker.config import (
    DEFAULT_QUEUE,
    INGEST_TASK,
    PUSH_ROUND_TASK,
    RECONCILE_TASK,
    RUN_ROUND_TASK,
    broker_of,
    celery_config,
)


def make_celery(settings: Settings | None = None) -> Celery:
    """A configured Celery app with the al-loop tasks (no connection is made)."""
    settings = settings if settings is not None else Settings.from_env()
    app = Celery("al_loop", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.include = [tasks.__name__]  # imported above, so its shared tasks are bound to this app too
    return app


_app: Celery | None = None


def get_app() -> Celery:
    """The process-wide app built from the environment on first use."""
    global _app
    if _app is None:
        _app = make_celery()
    return _app


def __getattr__(name: str) -> Any:  # PEP 562: ``celery -A annotator_bridge.worker.celery_app`` reads ``app``
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_QUEUE",
    "INGEST_TASK",
    "PUSH_ROUND_TASK",
    "RECONCILE_TASK",
    "RUN_ROUND_TASK",
    "broker_of",
    "get_app",
    "make_celery",
]
