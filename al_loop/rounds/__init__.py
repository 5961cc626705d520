"""Rounds: the state machine, the round service and the prediction service."""

from al_loop.rounds.predict import PredictService
from al_loop.rounds.service import ModelFactory, RoundOutcome, RoundService, version_name
from al_loop.rounds.states import RoundPhase, RoundStatus, VersionStatus

__all__ = [
    "ModelFactory",
    "PredictService",
    "RoundOutcome",
    "RoundPhase",
    "RoundService",
    "RoundStatus",
    "VersionStatus",
    "version_name",
]
