"""Rounds: the round service (train, evaluate, publish, score, select) and the prediction service.

The statuses they move through are defined in :mod:`al_loop.states` (re-exported here).
"""

from __future__ import annotations

from al_loop.rounds.predict import PredictService
from al_loop.rounds.service import ModelFactory, RoundOutcome, RoundService, version_name
from al_loop.states import PushStatus, RoundPhase, RoundStatus, VersionStatus

__all__ = [
    "ModelFactory",
    "PredictService",
    "PushStatus",
    "RoundOutcome",
    "RoundPhase",
    "RoundService",
    "RoundStatus",
    "VersionStatus",
    "version_name",
]
