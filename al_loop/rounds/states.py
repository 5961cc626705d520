"""Round and model-version statuses and their allowed transitions: the one place they are defined."""

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
        return self in (RoundStatus.PENDING, RoundStatus.RUNNING)


FINAL_ROUND_STATUSES = frozenset({RoundStatus.SUCCEEDED, RoundStatus.FAILED, RoundStatus.CANCELLED})

ROUND_TRANSITIONS: dict[RoundStatus, frozenset[RoundStatus]] = {
    RoundStatus.PENDING: frozenset({RoundStatus.RUNNING, RoundStatus.CANCELLED, RoundStatus.FAILED}),
    RoundStatus.RUNNING: frozenset({RoundStatus.RUNNING, RoundStatus.SUCCEEDED, RoundStatus.FAILED}),
    RoundStatus.SUCCEEDED: frozenset(),
    RoundStatus.FAILED: frozenset(),
    RoundStatus.CANCELLED: frozenset(),
}


class RoundPhase(StrEnum):
    """What a running round is doing (for progress display); not a status."""

    QUEUED = "queued"
    SNAPSHOT = "snapshot"
    TRAIN = "train"
    EVALUATE = "evaluate"
    PUBLISH = "publish"
    SCORE = "score"
    SELECT = "select"
    DONE = "done"


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


def check_round_transition(current: RoundStatus | str, new: RoundStatus | str) -> RoundStatus:
    cur, nxt = RoundStatus(current), RoundStatus(new)
    if nxt not in ROUND_TRANSITIONS[cur]:
        raise InvalidTransitionError(f"round cannot go from {cur.value} to {nxt.value}")
    return nxt


def check_version_transition(current: VersionStatus | str, new: VersionStatus | str) -> VersionStatus:
    cur, nxt = VersionStatus(current), VersionStatus(new)
    if nxt not in VERSION_TRANSITIONS[cur]:
        raise InvalidTransitionError(f"model version cannot go from {cur.value} to {nxt.value}")
    return nxt
