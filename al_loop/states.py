"""Statuses of rounds, pushes, model versions, imports and adaptations, and every allowed transition: one place.

This module sits below the store (it needs nothing but ``al_loop.errors``): the store checks
each status change against these tables, and the rounds, the bridge and the monitoring read
the enums from the records.
"""

from __future__ import annotations

from enum import StrEnum

from al_loop.errors import InvalidTransitionError


class RoundStatus(StrEnum):
    """Life cycle of a round.

    ``pending`` (created, queued) -> ``running`` (a worker owns it) -> ``succeeded`` | ``failed``;
    ``pending`` -> ``cancelled``. A ``running`` round whose owner stopped sending heartbeats
    may be taken over by another worker (``running`` -> ``running``), which is what makes
    redelivered ``acks_late`` tasks safe after a worker is killed mid-training.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_ROUND_STATUSES

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_ROUND_STATUSES


FINAL_ROUND_STATUSES = frozenset({RoundStatus.SUCCEEDED, RoundStatus.FAILED, RoundStatus.CANCELLED})
ACTIVE_ROUND_STATUSES = frozenset({RoundStatus.PENDING, RoundStatus.RUNNING})

ROUND_TRANSITIONS: dict[RoundStatus, frozenset[RoundStatus]] = {
    RoundStatus.PENDING: frozenset({RoundStatus.RUNNING, RoundStatus.CANCELLED, RoundStatus.FAILED}),
    RoundStatus.RUNNING: frozenset({RoundStatus.RUNNING, RoundStatus.SUCCEEDED, RoundStatus.FAILED}),
    RoundStatus.SUCCEEDED: frozenset(),
    RoundStatus.FAILED: frozenset(),
    RoundStatus.CANCELLED: frozenset(),
}


class RoundPhase(StrEnum):
    """What a round is doing (for progress display); not a status."""

    QUEUED = "queued"
    SNAPSHOT = "snapshot"
    TRAIN = "train"
    EVALUATE = "evaluate"
    PUBLISH = "publish"
    SCORE = "score"
    SELECT = "select"
    DONE = "done"


class PushStatus(StrEnum):
    """Whether a round's predictions reached Label Studio.

    ``none`` until the round succeeds, then ``pending``; a push ends ``done``, ``failed``
    (retried automatically or through the API), ``skipped`` (no Label Studio project or
    nothing to push) or ``superseded`` (a newer round succeeded first: never roll the queue back).
    """

    NONE = "none"
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"

    @property
    def is_outstanding(self) -> bool:
        """Still to be (re)tried: ``pending`` or ``failed``."""
        return self in (PushStatus.PENDING, PushStatus.FAILED)


_PUSH_RESULTS = frozenset({PushStatus.DONE, PushStatus.FAILED, PushStatus.SKIPPED, PushStatus.SUPERSEDED})

PUSH_TRANSITIONS: dict[PushStatus, frozenset[PushStatus]] = {
    PushStatus.NONE: frozenset({PushStatus.PENDING, PushStatus.SKIPPED}),
    PushStatus.PENDING: _PUSH_RESULTS,
    PushStatus.FAILED: _PUSH_RESULTS,
    # a push may be repeated (idempotent): it lands again, or finds a newer round, or fails
    PushStatus.DONE: _PUSH_RESULTS,
    PushStatus.SKIPPED: _PUSH_RESULTS,
    PushStatus.SUPERSEDED: frozenset({PushStatus.SUPERSEDED}),
}


class VersionStatus(StrEnum):
    """Model versions: a new one is a ``candidate``; one per project is ``promoted`` (serves predictions)."""

    CANDIDATE = "candidate"
    PROMOTED = "promoted"
    ARCHIVED = "archived"


VERSION_TRANSITIONS: dict[VersionStatus, frozenset[VersionStatus]] = {
    VersionStatus.CANDIDATE: frozenset({VersionStatus.PROMOTED, VersionStatus.ARCHIVED}),
    VersionStatus.PROMOTED: frozenset({VersionStatus.ARCHIVED}),
    VersionStatus.ARCHIVED: frozenset({VersionStatus.PROMOTED}),
}


class ImportStatus(StrEnum):
    """Life cycle of a file import job (``POST /api/projects/<id>/items`` with a large ``path``, ``al-loop import``).

    ``pending`` (created, queued) -> ``running`` (a worker reads the file, one transaction per batch) ->
    ``succeeded`` | ``failed``; ``pending`` -> ``failed`` (the job could not start). A failed import keeps the
    batches stored before the error (importing the fixed file again adds only the rest).
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (ImportStatus.SUCCEEDED, ImportStatus.FAILED)


IMPORT_TRANSITIONS: dict[ImportStatus, frozenset[ImportStatus]] = {
    ImportStatus.PENDING: frozenset({ImportStatus.RUNNING, ImportStatus.FAILED}),
    ImportStatus.RUNNING: frozenset({ImportStatus.RUNNING, ImportStatus.SUCCEEDED, ImportStatus.FAILED}),
    ImportStatus.SUCCEEDED: frozenset(),
    ImportStatus.FAILED: frozenset(),
}


class AdaptStatus(StrEnum):
    """Life cycle of a project's pool-adaptive pretraining (masked-LM training of the base encoder on the pool).

    ``pending`` (created, queued) -> ``running`` (a worker trains; progress written as it goes) -> ``done`` |
    ``failed``; ``pending`` -> ``failed`` (could not be queued, or abandoned). ``running`` -> ``running`` is a
    progress write. A ``running`` adaptation whose progress stopped (the worker died) is marked ``failed`` when a
    new one is asked for.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (AdaptStatus.DONE, AdaptStatus.FAILED)

    @property
    def is_active(self) -> bool:
        return not self.is_final


ADAPT_TRANSITIONS: dict[AdaptStatus, frozenset[AdaptStatus]] = {
    AdaptStatus.PENDING: frozenset({AdaptStatus.RUNNING, AdaptStatus.FAILED}),
    AdaptStatus.RUNNING: frozenset({AdaptStatus.RUNNING, AdaptStatus.DONE, AdaptStatus.FAILED}),
    AdaptStatus.DONE: frozenset(),
    AdaptStatus.FAILED: frozenset(),
}


def check_adapt_transition(current: AdaptStatus | str, new: AdaptStatus | str) -> AdaptStatus:
    cur, nxt = AdaptStatus(current), AdaptStatus(new)
    if nxt not in ADAPT_TRANSITIONS[cur]:
        raise InvalidTransitionError(f"an adaptation cannot go from {cur.value} to {nxt.value}")
    return nxt


def check_import_transition(current: ImportStatus | str, new: ImportStatus | str) -> ImportStatus:
    cur, nxt = ImportStatus(current), ImportStatus(new)
    if nxt not in IMPORT_TRANSITIONS[cur]:
        raise InvalidTransitionError(f"an import cannot go from {cur.value} to {nxt.value}")
    return nxt


def check_round_transition(current: RoundStatus | str, new: RoundStatus | str) -> RoundStatus:
    cur, nxt = RoundStatus(current), RoundStatus(new)
    if nxt not in ROUND_TRANSITIONS[cur]:
        raise InvalidTransitionError(f"round cannot go from {cur.value} to {nxt.value}")
    return nxt


def check_push_transition(current: PushStatus | str, new: PushStatus | str) -> PushStatus:
    cur, nxt = PushStatus(current), PushStatus(new)
    if nxt not in PUSH_TRANSITIONS[cur]:
        raise InvalidTransitionError(f"a round's push cannot go from {cur.value} to {nxt.value}")
    return nxt


def check_version_transition(current: VersionStatus | str, new: VersionStatus | str) -> VersionStatus:
    cur, nxt = VersionStatus(current), VersionStatus(new)
    if nxt not in VERSION_TRANSITIONS[cur]:
        raise InvalidTransitionError(f"model version cannot go from {cur.value} to {nxt.value}")
    return nxt


__all__ = [
    "ACTIVE_ROUND_STATUSES",
    "ADAPT_TRANSITIONS",
    "FINAL_ROUND_STATUSES",
    "IMPORT_TRANSITIONS",
    "PUSH_TRANSITIONS",
    "ROUND_TRANSITIONS",
    "VERSION_TRANSITIONS",
    "AdaptStatus",
    "ImportStatus",
    "PushStatus",
    "RoundPhase",
    "RoundStatus",
    "VersionStatus",
    "check_adapt_transition",
    "check_import_transition",
    "check_push_transition",
    "check_round_transition",
    "check_version_transition",
]
