"""Active-learning strategies: pure numpy scores plus selectors with an explicit rng.

``modal_adapter`` is the only module of al-loop that imports modAL (lazily);
this package never imports torch. See :mod:`al_loop.strategies.base` for the
contract every strategy meets.
"""

from __future__ import annotations

from al_loop.strategies.base import (
    COLD_START_METHODS,
    EMBEDDING_STRATEGIES,
    NER_ONLY,
    STRATEGIES,
    InformationDensityStrategy,
    PoolView,
    RandomStrategy,
    RankedBatchStrategy,
    Strategy,
    UncertaintyStrategy,
    cold_start,
    make_strategy,
    measure_scores,
    priorities,
    priority_from_rank,
    rank_scores,
    strategies_for,
)
from al_loop.strategies.scores import EMPTY_SCORE

__all__ = [
    "COLD_START_METHODS",
    "EMBEDDING_STRATEGIES",
    "EMPTY_SCORE",
    "NER_ONLY",
    "STRATEGIES",
    "InformationDensityStrategy",
    "PoolView",
    "RandomStrategy",
    "RankedBatchStrategy",
    "Strategy",
    "UncertaintyStrategy",
    "cold_start",
    "make_strategy",
    "measure_scores",
    "priorities",
    "priority_from_rank",
    "rank_scores",
    "strategies_for",
]
