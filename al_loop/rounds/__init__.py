"""Rounds: the state machine, the round service and the prediction service.

Attributes are resolved lazily so that ``al_loop.store`` (which needs ``rounds.states``) can
be imported first without an import cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelFactory": "al_loop.rounds.service",
    "RoundOutcome": "al_loop.rounds.service",
    "RoundService": "al_loop.rounds.service",
    "version_name": "al_loop.rounds.service",
    "PredictService": "al_loop.rounds.predict",
    "RoundPhase": "al_loop.rounds.states",
    "RoundStatus": "al_loop.rounds.states",
    "VersionStatus": "al_loop.rounds.states",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'al_loop.rounds' has no attribute {name!r}")
