"""Facts for the dashboard, ``al-loop status`` and ``/metrics``, computed from the store.

The one status model: pure functions over :class:`~al_loop.store.Store` (plus an injectable
:class:`QueueProbe` for the broker and the workers). No Flask, no Celery: the API status
(``project_status``), the dashboard (``project_snapshot``), ``al-loop status`` (``project_summary``,
``project_snapshot``), ``/metrics`` (``rounds_table``, ``project_summary``) and the tests all
call the same functions, and every result is a JSON-ready ``dict``/``list``
(datetimes as ISO-8601 strings with a ``Z``, durations in seconds).

Id spaces: ``project_id`` and ``round_id`` are database ids; ``round["index"]`` is the
0-based round number inside its project (what people talk about); ``item_id`` is the
stable :class:`~al_loop.types.ItemId`; version ``id`` is the model-version database id and
``name`` the model_version string shown in Label Studio.
"""

from __future__ import annotations

from annotator_bridge.monitoring.adaptation import adaptation_line, adaptation_summary
from annotator_bridge.monitoring.cache import CachedProbe, SnapshotCache
from annotator_bridge.monitoring.common import DEFAULT_STALE_AFTER, PHASES, format_duration, iso, metric_name
from annotator_bridge.monitoring.history import (
    learning_curve,
    per_label_comparison,
    round_score,
    rounds_table,
    versions_table,
)
from annotator_bridge.monitoring.labels import annotation_rate, current_batch, label_distribution
from annotator_bridge.monitoring.probe import NullQueueProbe, QueueProbe, StaticQueueProbe, probe_queues
from annotator_bridge.monitoring.status import (
    confusion_top_errors,
    liveness,
    project_snapshot,
    project_status,
    project_summary,
    round_report,
)
from annotator_bridge.monitoring.stopping import stopping_summary

__all__ = [
    "DEFAULT_STALE_AFTER",
    "PHASES",
    "CachedProbe",
    "NullQueueProbe",
    "QueueProbe",
    "SnapshotCache",
    "StaticQueueProbe",
    "adaptation_line",
    "adaptation_summary",
    "annotation_rate",
    "confusion_top_errors",
    "current_batch",
    "format_duration",
    "iso",
    "label_distribution",
    "learning_curve",
    "liveness",
    "metric_name",
    "per_label_comparison",
    "probe_queues",
    "project_snapshot",
    "project_status",
    "project_summary",
    "round_report",
    "round_score",
    "rounds_table",
    "stopping_summary",
    "versions_table",
]
