"""Cheap repeated status: the dashboard snapshot cached per project, the broker probe cached for a few seconds.

A project's snapshot (:func:`~annotator_bridge.monitoring.project_snapshot`) reads every label,
round and version; the broker probe waits on the workers' replies (up to a second each). A page
polls both every few seconds, so :class:`SnapshotCache` keeps one snapshot per project and hands
it out again while the store's :meth:`~al_loop.store.Store.change_marker` for the project is
unchanged (a new, updated or deleted label, any change of a round or a version, an import or a
settings change makes a new one) and the entry is younger than ``max_age`` seconds (times relative
to now: ages, the hourly annotation buckets). The liveness part (broker, workers, the active round's
heartbeat) is refreshed on every call from a :class:`CachedProbe`. One cache per web app (process).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import annotator_bridge.monitoring.status as status
from al_loop.store.repository import Store
from annotator_bridge.monitoring.probe import NullQueueProbe, QueueProbe

DEFAULT_MAX_AGE_S = 60.0
DEFAULT_PROBE_TTL_S = 5.0


class CachedProbe:
    """A :class:`QueueProbe` that asks the one it wraps at most once per ``ttl`` seconds (failures included)."""

    def __init__(self, probe: QueueProbe, ttl: float = DEFAULT_PROBE_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.ttl = ttl
        self.available = getattr(probe, "available", True)
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, Any, BaseException | None]] = {}

    def _ask(self, name: str, call: Callable[[], Any]) -> Any:
        now = self._clock()
        with self._lock:
            hit = self._answers.get(name)
        if hit is None or now - hit[0] >= self.ttl:
            try:
                hit = (now, call(), None)
            except Exception as exc:  # remembered too: a broker outage must not cost every request a timeout
                hit = (now, None, exc)
            with self._lock:
                self._answers[name] = hit
        if hit[2] is not None:
            raise hit[2]
        return hit[1]

    def depth(self) -> dict[str, int]:
        return dict(self._ask("depth", self.probe.depth))

    def workers(self) -> list[dict[str, Any]]:
        return [dict(w) for w in self._ask("workers", self.probe.workers)]


@dataclass
class _Entry:
    marker: tuple[Any, ...]
    at: float
    snapshot: dict[str, Any]


class SnapshotCache:
    """Per-project dashboard snapshots, recomputed only when the project changed (see the module docstring)."""

    def __init__(self, *, max_age: float = DEFAULT_MAX_AGE_S, probe_ttl: float = DEFAULT_PROBE_TTL_S,
                 max_projects: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.probe_ttl = probe_ttl
        self.max_projects = max_projects
        self.computed = 0
        """How many snapshots were computed (not served from the cache)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self._probe: CachedProbe | None = None

    def probe(self, probe: QueueProbe | None) -> CachedProbe:
        """``probe`` behind a cache of ``probe_ttl`` seconds (the same wrapper while the probe is the same)."""
        probe = probe if probe is not None else NullQueueProbe()
        with self._lock:
            if self._probe is None or self._probe.probe is not probe:
                self._probe = CachedProbe(probe, self.probe_ttl, self._clock)
            return self._probe

    def snapshot(self, store: Store, project_id: int, probe: QueueProbe | None = None) -> dict[str, Any]:
        """The project's snapshot; NotFoundError for an unknown project (never cached)."""
        marker = store.change_marker(project_id)
        key = (id(store), project_id)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (entry.marker != marker or now - entry.at >= self.max_age):
                entry = None
            if entry is not None:
                self._entries.move_to_end(key)
        cached_probe = self.probe(probe)
        if entry is None:
            snap = status.project_snapshot(store, project_id, cached_probe)
            entry = _Entry(marker, now, snap)
            with self._lock:
                self.computed += 1
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_projects:
                    self._entries.popitem(last=False)
            return snap
        return {**entry.snapshot, "liveness": status.liveness(store, project_id, cached_probe)}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._probe = None


__all__ = ["DEFAULT_MAX_AGE_S", "DEFAULT_PROBE_TTL_S", "CachedProbe", "SnapshotCache"]
