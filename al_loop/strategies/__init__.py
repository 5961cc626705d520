"""Active-learning strategies: pure numpy scores plus selectors with an explicit rng.

``modal_adapter`` is the only module of al-loop that imports modAL (lazily);
this package never imports torch. See :mod:`al_loop.strategies.base` for the
contract every strategy meets.
"""

from __future__ import annotations

from al_loop.strategies.base import (
    CLASSIFICATION_ONLY,
    COLD_START_METHODS,
    EMBEDDING_STRATEGIES,
    NER_ONLY,
    RANK_SCORED,
    STRATEGIES,
    BadgeStrategy,
    DedupedStrategy,
    InformationDensityStrategy,
    PoolView,
    RandomStrategy,
    RankedBatchStrategy,
    Strategy,
    UncertaintyStrategy,
    cold_start,
    dedupe_selection,
    make_strategy,
    measure_scores,
    priority_from_rank,
    rank_scores,
    strategies_for,
)
from al_loop.strategies.dedupe import DEFAULT_DEDUPE_THRESHOLD
from al_loop.strategies.scores import EMPTY_SCORE

__all__ = [
    "CLASSIFICATION_ONLY",
    "COLD_START_METHODS",
    "DEFAULT_DEDUPE_THRESHOLD",
    "EMBEDDING_STRATEGIES",
    "EMPTY_SCORE",
    "NER_ONLY",
    "RANK_SCORED",
    "STRATEGIES",
    "BadgeStrategy",
    "DedupedStrategy",
    "InformationDensityStrategy",
    "PoolView",
    "RandomStrategy",
    "RankedBatchStrategy",
    "Strategy",
    "UncertaintyStrategy",
    "cold_start",
    "dedupe_selection",
    "make_strategy",
    "measure_scores",
    "priority_from_rank",
    "rank_scores",
    "strategies_for",
]
