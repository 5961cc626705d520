"""The round, push and model-version statuses, as the rounds package names them.

They are defined, with their transitions, in :mod:`al_loop.states` (below the store, which
checks every change); this module only re-exports them for ``al_loop.rounds`` users.
"""

from __future__ import annotations

from al_loop.states import (
    FINAL_ROUND_STATUSES,
    ROUND_TRANSITIONS,
    VERSION_TRANSITIONS,
    PushStatus,
    RoundPhase,
    RoundStatus,
    VersionStatus,
    check_round_transition,
    check_version_transition,
)

__all__ = [
    "FINAL_ROUND_STATUSES",
    "ROUND_TRANSITIONS",
    "VERSION_TRANSITIONS",
    "PushStatus",
    "RoundPhase",
    "RoundStatus",
    "VersionStatus",
    "check_round_transition",
    "check_version_transition",
]
