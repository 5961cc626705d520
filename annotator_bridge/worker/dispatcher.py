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
from annotator_bridge.worker.celery_app import (
    DEFAULT_QUEUE,
    INGEST_TASK,
    PUSH_ROUND_TASK,
    RECONCILE_TASK,
    RUN_ROUND_TASK,
    make_celery,
    train_queue_of,
)

if TYPE_CHECKING:
    from celery import Celery

    from annotator_bridge.settings import Settings

log = logging.getLogger("annotator_bridge.worker")


class BrokerUnavailable(AlLoopError):
    """The task broker (Redis / filesystem queue) did not accept a task message."""


class CeleryDispatcher:
    """Sends ``ingest_event`` / ``push_round`` / ``reconcile`` to ``default`` and ``run_round`` to the train queue."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        settings = getattr(app, "al_loop_settings", None)
        self.train_queue = train_queue_of(settings) if settings is not None else "train"

    @classmethod
    def from_settings(cls, settings: Settings) -> CeleryDispatcher:
        return cls(make_celery(settings))

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


class CeleryQueueProbe:
    """``annotator_bridge.monitoring.QueueProbe`` over Celery: queue depths and live workers.

    ``depth()`` declares each queue passively (Redis: ``LLEN``; filesystem: files waiting);
    ``workers()`` broadcasts ``ping`` and ``active_queues`` with a short ``timeout`` (seconds),
    so a dashboard request never waits long. Both raise on a broker error (callers show it).
    """

    available = True

    def __init__(self, app: Celery, timeout: float = 0.5) -> None:
        self.app = app
        self.timeout = timeout
        settings = getattr(app, "al_loop_settings", None)
        self.queues = (DEFAULT_QUEUE, train_queue_of(settings) if settings is not None else "train")

    def depth(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            for name in self.queues:
                try:
                    out[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except Exception:  # a queue nobody declared yet holds nothing
                    out[name] = 0
        return out

    def workers(self) -> list[dict[str, Any]]:
        inspect = self.app.control.inspect(timeout=self.timeout)
        queues = inspect.active_queues() or {}
        active = inspect.active() or {}
        out = []
        for name in sorted(set(queues) | set(active)):
            out.append({"name": name, "status": "online",
                        "queues": [q.get("name") for q in queues.get(name) or []],
                        "active": len(active.get(name) or [])})
        return out
