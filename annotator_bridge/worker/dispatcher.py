"""``CeleryDispatcher``: the ``Dispatcher`` protocol (annotator_bridge.dispatch) over Celery.

Each call publishes one task message (ids only) with ``apply_async`` to its queue and
returns at once; the web process never waits for a worker. With a Redis broker a webhook
event is appended to the ingest list instead, and a ``drain_ingest`` task is sent only when
no drain holds the lock (:mod:`annotator_bridge.worker.ingest_queue`). Publishing fails fast
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
    ADAPT_TASK,
    DEFAULT_QUEUE,
    DRAIN_INGEST_TASK,
    IMPORT_TASK,
    INGEST_TASK,
    PUSH_ROUND_TASK,
    RECONCILE_TASK,
    RUN_ROUND_TASK,
    SETTINGS_KEY,
)
from annotator_bridge.worker.ingest_queue import IngestQueue, uses_ingest_queue

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("annotator_bridge.worker")


class BrokerUnavailable(AlLoopError):
    """The task broker (Redis / filesystem queue) did not accept a task message."""


class CeleryDispatcher:
    """Sends ``ingest_event`` / ``push_round`` / ``reconcile`` / ``run_import`` to ``default``, ``run_round`` and
    ``run_adaptation`` to the train queue."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        settings = app.conf.get(SETTINGS_KEY)
        self.train_queue = settings.train_queue if isinstance(settings, Settings) else "train"
        broker = str(app.conf.get("broker_url") or "")
        self.ingest_queue = IngestQueue(broker, timeout=1.0) if uses_ingest_queue(broker) else None

    def _send(self, name: str, args: list[Any], queue: str) -> None:
        try:
            self.app.tasks[name].apply_async(args=args, queue=queue, routing_key=queue)
        except AlLoopError:
            raise
        except Exception as exc:  # kombu OperationalError, redis ConnectionError, OSError ...
            log.error("could not publish %s to queue %s: %s", name, queue, exc)
            raise BrokerUnavailable(f"the task queue is unavailable ({type(exc).__name__}: {exc})") from exc

    def ingest_event(self, project_id: int, payload: dict[str, Any]) -> None:
        if self.ingest_queue is None:
            self._send(INGEST_TASK, [int(project_id), payload], DEFAULT_QUEUE)
            return
        try:
            token = self.ingest_queue.push(project_id, payload)
        except Exception as exc:  # redis ConnectionError / TimeoutError
            log.error("could not append to the ingest queue: %s", exc)
            raise BrokerUnavailable(f"the task queue is unavailable ({type(exc).__name__}: {exc})") from exc
        if token is not None:
            self.send_drain(token)

    def send_drain(self, token: str) -> None:
        """Send the ``drain_ingest`` task for a token that holds the drain lock (released if sending fails:
        the event stays in the list and the next webhook schedules the drain)."""
        try:
            self._send(DRAIN_INGEST_TASK, [token], DEFAULT_QUEUE)
        except BrokerUnavailable:
            if self.ingest_queue is not None:
                try:
                    self.ingest_queue.release_token(token)
                except Exception as exc:
                    log.warning("could not release the ingest drain lock: %s", exc)
            raise

    def run_round(self, project_id: int, round_id: int) -> None:
        self._send(RUN_ROUND_TASK, [int(project_id), int(round_id)], self.train_queue)

    def push_round(self, round_id: int) -> None:
        self._send(PUSH_ROUND_TASK, [int(round_id)], DEFAULT_QUEUE)

    def reconcile(self, project_id: int) -> None:
        self._send(RECONCILE_TASK, [int(project_id)], DEFAULT_QUEUE)

    def run_import(self, import_id: int) -> None:
        self._send(IMPORT_TASK, [int(import_id)], DEFAULT_QUEUE)

    def run_adaptation(self, adaptation_id: int) -> None:
        self._send(ADAPT_TASK, [int(adaptation_id)], self.train_queue)

    def close(self) -> None:
        """Release the broker connection pool (the app stays usable)."""
        pool = getattr(self.app, "_pool", None)
        if pool is not None:
            pool.force_close_all()
        if self.ingest_queue is not None:
            self.ingest_queue.close()
