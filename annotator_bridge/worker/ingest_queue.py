"""The ingest queue: webhook events in one Redis list, drained in batches by one task at a time.

With a Redis broker the web process does not publish one Celery task per webhook: it appends
``[project_id, payload]`` to the list ``al_loop:ingest:events`` and, in the same round trip,
tries to take the drain lock ``al_loop:ingest:drain`` (``SET NX`` with a TTL). Only the caller
that took the lock sends one ``drain_ingest`` task carrying the lock's token, so at most one
drain is queued or running at any time, and a burst of webhooks costs one Redis round trip each.

The drain (:func:`drain`) reads up to ``batch_size`` events (``LRANGE``, nothing removed), applies
them per project in one transaction (``LoopService.handle_events``), and only then removes them
(``LTRIM``, done by a script only while its token still holds the lock); after a batch smaller than
``batch_size`` it waits ``GATHER`` seconds, so a steady stream of webhooks is applied in batches of
about rate x ``GATHER`` events (at 200 webhooks/s the drain worker's CPU per event fell by about a
third, CPU the web process and Redis share on a small machine), each event waiting at most about
``GATHER`` longer. Events leave the list only once applied, so a worker killed mid-batch leaves them
there: the next drain applies them again (ingest is idempotent). When the list is empty the drain
releases the lock and looks once more, so an event appended while it was releasing is never stranded
(its producer either took the lock itself or saw it held by a drain that then finds the event). A
lock whose holder died expires after ``LOCK_TTL`` seconds; the next webhook, or a worker that
starts, schedules a new drain. Events of one project keep their order (one drain at a time, first in
first out).

Other brokers (the filesystem transport) keep one ``ingest_event`` task per webhook.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from al_loop.errors import NotFoundError
from annotator_bridge.labelstudio.connection import LabelStudioUnavailable

log = logging.getLogger("annotator_bridge.worker")

EVENTS_KEY = "al_loop:ingest:events"
LOCK_KEY = "al_loop:ingest:drain"
LOCK_TTL = 60
"""Seconds the drain lock lives without a refresh (a drain refreshes it before every batch)."""
BATCH_SIZE = 200
"""Events per batch (one transaction per project in it)."""
MAX_SECONDS = 30.0
"""A drain hands over to a new drain task (a new token) after this long, so no task runs near the visibility
timeout (Redis would deliver it again, and two drains would share one token)."""
LINGER = 0.25
"""Seconds an idle drain keeps polling before it releases the lock (fewer drain tasks under load)."""
GATHER = 0.1
"""Seconds a drain lets events gather after a batch smaller than ``BATCH_SIZE`` (under a steady stream the
batches hold many events, so the per-batch work, a transaction and three Redis calls, is paid rarely)."""

_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end
return 0
"""
_TRIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[2], ARGV[2], -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
_HANDOVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return redis.call('LLEN', KEYS[2])
"""

Handler = Callable[[int, Sequence[Mapping[str, Any]]], Any]


def uses_ingest_queue(broker_url: str) -> bool:
    """Whether events go through the Redis ingest list for this broker URL."""
    return broker_url.startswith(("redis://", "rediss://"))


class IngestQueue:
    """The Redis list of webhook events and its drain lock (thread-safe; connects on first use)."""

    def __init__(self, url: str, *, timeout: float = 2.0, lock_ttl: int = LOCK_TTL) -> None:
        self.redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.lock_ttl = int(lock_ttl)
        self._claim = self.redis.register_script(_CLAIM)
        self._trim = self.redis.register_script(_TRIM)
        self._release = self.redis.register_script(_RELEASE)
        self._handover = self.redis.register_script(_HANDOVER)

    def push(self, project_id: int, payload: Mapping[str, Any]) -> str | None:
        """Append one event; returns a drain token when no drain holds the lock (send a drain task with it).

        ``redis.RedisError`` when Redis does not answer (the caller maps it to BrokerUnavailable).
        """
        token = uuid.uuid4().hex
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(EVENTS_KEY, json.dumps([int(project_id), payload], separators=(",", ":")))
        pipe.set(LOCK_KEY, token, nx=True, ex=self.lock_ttl)
        _, took = pipe.execute()
        return token if took else None

    def schedule(self) -> str | None:
        """A drain token when events are waiting and no drain holds the lock (worker start-up, recovery)."""
        if not self.depth():
            return None
        token = uuid.uuid4().hex
        return token if self.redis.set(LOCK_KEY, token, nx=True, ex=self.lock_ttl) else None

    def release_token(self, token: str) -> None:
        """Give the lock back (a drain task could not be sent for it)."""
        self._release(keys=[LOCK_KEY, EVENTS_KEY], args=[token])

    def claim(self, token: str) -> bool:
        """Hold the lock with ``token`` (refreshes it; takes it when free). False: another drain holds it."""
        return bool(self._claim(keys=[LOCK_KEY], args=[token, self.lock_ttl]))

    def peek(self, n: int) -> list[bytes | str]:
        """The first ``n`` raw events (nothing is removed)."""
        return list(self.redis.lrange(EVENTS_KEY, 0, max(0, n - 1)))

    def trim(self, token: str, n: int) -> bool:
        """Remove the first ``n`` events if ``token`` still holds the lock (False: it lost the lock)."""
        return bool(self._trim(keys=[LOCK_KEY, EVENTS_KEY], args=[token, int(n), self.lock_ttl]))

    def handover(self, token: str) -> str | None:
        """Move the lock from ``token`` to a new token (returned; None when ``token`` no longer holds it)."""
        new = uuid.uuid4().hex
        return new if self._handover(keys=[LOCK_KEY], args=[token, new, self.lock_ttl]) else None

    def release(self, token: str) -> int:
        """Release the lock if ``token`` holds it; returns how many events are waiting."""
        return int(self._release(keys=[LOCK_KEY, EVENTS_KEY], args=[token]))

    def depth(self) -> int:
        return int(self.redis.llen(EVENTS_KEY))

    def close(self) -> None:
        self.redis.close()


def _decode(raw: Sequence[bytes | str]) -> dict[int, list[Mapping[str, Any]]]:
    """Raw events -> payloads per project, in order (unreadable entries are dropped, logged)."""
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for entry in raw:
        try:
            project_id, payload = json.loads(entry)
            if isinstance(project_id, bool) or not isinstance(project_id, int) or not isinstance(payload, dict):
                raise ValueError("not [project_id, payload]")
        except (ValueError, TypeError) as exc:
            log.error("ingest queue: unreadable entry dropped (%s)", exc)
            continue
        groups.setdefault(project_id, []).append(payload)
    return groups


def drain(queue: IngestQueue, handle: Handler, token: str, *, batch_size: int = BATCH_SIZE,
          linger: float = LINGER, poll: float = 0.05, max_seconds: float = MAX_SECONDS,
          gather: float = GATHER, handover: Callable[[str], Any] | None = None) -> int:
    """Apply waiting events in batches while ``token`` holds the lock; returns how many were applied.

    After ``max_seconds`` with events still waiting, the lock moves to a new token and
    ``handover(new_token)`` sends the drain task that goes on (the caller's task then ends).

    ``handle(project_id, payloads)`` is ``LoopService.handle_events``. LabelStudioUnavailable
    propagates with the batch still in the list (the task retries); a project that no longer
    exists loses its events; any other error of one project's events is logged and they are
    dropped (reconciliation re-reads them from Label Studio), so one bad event never blocks the queue.
    """
    applied = 0
    idle_since: float | None = None
    started = time.monotonic()
    while queue.claim(token):
        if handover is not None and time.monotonic() - started >= max_seconds and queue.depth():
            new = queue.handover(token)
            if new is not None:
                handover(new)
            return applied
        raw = queue.peek(batch_size)
        if not raw:
            now = time.monotonic()
            idle_since = now if idle_since is None else idle_since
            if now - idle_since < linger:
                time.sleep(poll)
                continue
            if queue.release(token) == 0:
                return applied
            idle_since = None
            continue  # an event came in while releasing: take the lock again (or its producer did)
        idle_since = None
        for project_id, payloads in _decode(raw).items():
            try:
                handle(project_id, payloads)
            except LabelStudioUnavailable:
                raise
            except NotFoundError as exc:
                log.warning("ingest queue: %d events of project %s dropped: %s", len(payloads), project_id, exc)
            except Exception:
                log.exception("ingest queue: %d events of project %s failed; dropped (reconcile re-reads them)",
                              len(payloads), project_id)
        applied += len(raw)
        if not queue.trim(token, len(raw)):
            log.warning("ingest queue: the drain lock was lost; the new holder re-reads the last batch")
            return applied
        if len(raw) < batch_size and gather > 0:
            time.sleep(gather)
    return applied


__all__ = ["BATCH_SIZE", "EVENTS_KEY", "GATHER", "LOCK_KEY", "LOCK_TTL", "IngestQueue", "drain", "uses_ingest_queue"]
