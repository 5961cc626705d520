"""The broker/worker probe: queue depths and the Celery workers that are running.

``make_queue_probe(settings)`` is what ``al-loop serve`` gives the dashboard and ``/metrics``
and what ``al-loop status`` asks; it implements :class:`annotator_bridge.monitoring.QueueProbe`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from annotator_bridge.settings import Settings
from annotator_bridge.worker.celery_app import make_celery
from annotator_bridge.worker.config import SETTINGS_KEY, queues_of


class CeleryQueueProbe:
    """``annotator_bridge.monitoring.QueueProbe`` over Celery: queue depths and live workers.

    ``depth()`` declares each queue passively (Redis: ``LLEN``; filesystem: files waiting);
    ``workers()`` broadcasts ``active_queues`` and ``active`` with a short ``timeout`` (seconds),
    so a dashboard request never waits long. Both raise on a broker error (callers show it).
    """

    available = True

    def __init__(self, app: Celery, timeout: float = 0.5) -> None:
        self.app = app
        self.timeout = timeout
        settings = app.conf.get(SETTINGS_KEY)
        self.queues = queues_of(settings) if isinstance(settings, Settings) else ("default", "train")

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


def make_queue_probe(settings: Settings, app: Celery | None = None, timeout: float = 1.0) -> CeleryQueueProbe:
    """A probe of the broker and workers that ``settings`` (or the given ``app``) point at."""
    return CeleryQueueProbe(app if app is not None else make_celery(settings), timeout=timeout)


__all__ = ["CeleryQueueProbe", "make_queue_probe"]
