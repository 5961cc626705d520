"""Shared helpers of the status model: times, numbers, metric names."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from al_loop.store.repository import Store
from al_loop.types import TaskKind

log = logging.getLogger("annotator_bridge.monitoring")

DEFAULT_STALE_AFTER = timedelta(minutes=10)
"""A running round whose heartbeat is older than this is considered dead (same default as RoundService)."""

PHASES = ("snapshot", "train", "evaluate", "publish", "score", "select", "push", "total")
"""Phase names that rounds record in ``round.timings`` (seconds)."""


def iso(value: datetime | None) -> str | None:
    """Naive-UTC datetime -> ``2026-01-02T03:04:05Z`` (None stays None)."""
    return value.replace(microsecond=0).isoformat() + "Z" if value is not None else None


def _num(value: Any) -> float | None:
    """A finite float, or None (metrics may hold None, strings or NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def format_duration(seconds: Any, *, sep: str = " ", missing: str = "-") -> str:
    """Seconds -> ``850 ms``, ``12.3 s``, ``4 m 05 s``, ``2 h 03 m`` (``sep=""``: ``4m05s``, for terminals)."""
    s = _num(seconds)
    if s is None:
        return missing
    if s < 1:
        return f"{s * 1000:.0f}{sep}ms"
    if s < 60:
        return f"{s:.1f}{sep}s"
    if s < 3600:
        return f"{int(s // 60)}{sep}m{sep}{int(s % 60):02d}{sep}s"
    return f"{int(s // 3600)}{sep}h{sep}{int(s % 3600 // 60):02d}{sep}m"


def _age(now: datetime, then: datetime | None) -> float | None:
    return round((now - then).total_seconds(), 1) if then is not None else None


def metric_name(task: TaskKind | str, multi_label: bool = False) -> str:
    """Human name of ``metrics["score"]`` for a task (see ``al_loop.training.metrics``)."""
    if TaskKind(task) is TaskKind.NER:
        return "entity micro-F1"
    return "subset accuracy" if multi_label else "accuracy"


def _now(store: Store, now: datetime | None) -> datetime:
    return now if now is not None else store.clock()
