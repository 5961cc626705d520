"""What the status model asks the broker: queue depths and workers (``QueueProbe``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from annotator_bridge.monitoring.common import log


@runtime_checkable
class QueueProbe(Protocol):
    """What the dashboard needs to know about the broker and the workers.

    ``depth()`` maps queue name -> number of waiting messages (e.g. ``{"default": 0, "train": 1}``).
    ``workers()`` lists live workers, each a dict with at least ``"name"``; optional keys the
    dashboard shows: ``"status"`` ("online"/"offline"), ``"queues"`` (list of names),
    ``"active"`` (tasks running now), ``"heartbeat_age_s"`` (seconds since the worker last
    answered). Both may raise; callers catch and show "unavailable". Implementations must not
    block for long (use short broker timeouts).
    """

    def depth(self) -> dict[str, int]: ...

    def workers(self) -> list[dict[str, Any]]: ...


class NullQueueProbe:
    """No broker to ask (inline dispatcher, tests): no queues, no workers."""

    available = False

    def depth(self) -> dict[str, int]:
        return {}

    def workers(self) -> list[dict[str, Any]]:
        return []


@dataclass
class StaticQueueProbe:
    """A probe with fixed answers (tests, demos)."""

    queues: dict[str, int] = field(default_factory=dict)
    worker_list: list[dict[str, Any]] = field(default_factory=list)

    def depth(self) -> dict[str, int]:
        return dict(self.queues)

    def workers(self) -> list[dict[str, Any]]:
        return [dict(w) for w in self.worker_list]


def probe_queues(probe: QueueProbe | None) -> dict[str, Any]:
    """Ask the probe, never raising: ``{"available", "queues", "workers", "error"}``."""
    probe = probe or NullQueueProbe()
    out: dict[str, Any] = {"available": getattr(probe, "available", True), "queues": {}, "workers": [], "error": None}
    errors = []
    try:
        out["queues"] = {str(k): int(v) for k, v in dict(probe.depth()).items()}
    except Exception as exc:  # a broker outage must not break the dashboard
        log.warning("queue probe depth() failed: %s", exc)
        errors.append(f"queue depth: {type(exc).__name__}: {exc}")
    try:
        out["workers"] = [dict(w) for w in probe.workers()]
    except Exception as exc:
        log.warning("queue probe workers() failed: %s", exc)
        errors.append(f"workers: {type(exc).__name__}: {exc}")
    if errors:
        out["error"] = "; ".join(errors)
    return out
