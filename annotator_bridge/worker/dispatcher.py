"""``CeleryDispatcher``: the ``Dispatcher`` protocol (annotator_bridge.dispatch) over Celery.

Each call publishes one task message (ids only) with ``apply_async`` to its queue and
returns at once; the web process never waits for a worker. Publishing fails fast
(``task_publish_retry_policy``: 2 retries within about 1 s) and raises
``BrokerUnavailable`` so a webhook answers an error instead of hanging past Label Studio's
webhook timeout; reconciliation at the start of every round picks the lost event up later.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from al_loop.errors import AlLoopError
from annotator_bridge.settings import Settings
from annotator_bridge.worker.config import (
    DEFAULT_QUEUE,
    INGEST_TASK,
    PUSH_ROUND_TASK,
    RECONCILE_TASK,
    RUN_ROUND_TASK,
    SETTINGS_KEY,
)

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("annotator_bridge.worker")


class BrokerUnavailable(AlLoopError):
    """The task broker (Redis / filesystem queue) did not accept a task message."""


class CeleryDispatcher:
    """Sends ``ingest_event`` / ``push_round`` / ``reconcile`` to ``default`` and ``run_round`` to the train queue."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        settings = app.conf.get(SETTINGS_KEY)
        self.train_queue = settings.train_queue if isinstance(settings, Settings) else "train"

    def _send(self, name: str, args: list[Any], queue: str) -> None:
        try:
            self.app.tasks[name].apply_async(args=args, queue=queue, routing_key=queue)
        except AlLoopError:
            raise
        except Exception as exc:  # kombu OperationalError, redis ConnectionError, OSError ...
            log.error("could not publish %s to queue %s: %s", name, queue, exc)
            raise BrokerUnavailable(f"the task queue is unavailable ({type(exc).__name__}: {exc})") from exc

    def ingest_event(self, project_id: int, payload: dict[str, Any]) -> None:
        self._send(INGEST_TASK, [int(project_id), payload], DEFAULT_QUEUE)

    def run_round(self, project_id: int, round_id: int) -> None:
        self._send(RUN_ROUND_TASK, [int(project_id), int(round_id)], self.train_queue)

    def push_round(self, round_id: int) -> None:
        self._send(PUSH_ROUND_TASK, [int(round_id)], DEFAULT_QUEUE)

    def reconcile(self, project_id: int) -> None:
        self._send(RECONCILE_TASK, [int(project_id)], DEFAULT_QUEUE)

    def close(self) -> None:
        """Release the broker connection pool (the app stays usable)."""
        pool = getattr(self.app, "_pool", None)
        if pool is not None:
            pool.force_close_all()
