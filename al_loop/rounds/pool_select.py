"""Selection and ranking from a merged :class:`~al_loop.rounds.pool_scoring.ShardResult`.

The result is the one :func:`~al_loop.rounds.scoring.rank_pool` gives over the whole pool at once
(same selection for the same ``rng``; the same stored rows while the pool has at most ``stored``
items): the selected batch in rank order, then the other items by confidence, least confident
first. Above ``stored`` items only the first ``stored`` rows are returned: the batch and its
neighbours, the next candidates by confidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from al_loop.rounds.pool_scoring import ScoringSpec, ShardResult, dedupe_attempts, open_spools
from al_loop.store.records import ScoredItem
from al_loop.strategies import RANK_SCORED, DedupedStrategy, PoolView, Strategy, rank_scores
from al_loop.strategies.dedupe import fill_positions, unique_prefix
from al_loop.types import ItemId, Selection

__all__ = ["LabelledSpaces", "NeedMoreCandidates", "rank_result"]

Row = tuple[str, float, dict[str, Any]]


class NeedMoreCandidates(Exception):
    """The near-duplicate filter walked past the kept candidates: score again keeping ``size`` or more."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the near-duplicate filter needs {size} candidates")
        self.size = size


@dataclass(frozen=True)
class LabelledSpaces:
    """Labelled items' embeddings: the model's (ranked batch's known set; the filter without base
    embeddings) and the frozen base model's (the filter's labelled set when base embeddings are used)."""

    model: np.ndarray | None = None
    base: np.ndarray | None = None


def _stream_selection(
    result: ShardResult, spec: ScoringSpec, strategy: Strategy, n: int, labelled: LabelledSpaces
) -> tuple[Selection, dict[str, Row]]:
    if result.top is None:
        raise ValueError("a stream result without its top-k")
    top = result.top.sorted()
    k = min(int(n), result.n)
    if isinstance(strategy, DedupedStrategy):
        lab = labelled.base if result.used_base else labelled.model
        lab = lab if strategy.against_labelled else None
        size = min(result.n, dedupe_attempts(k))
        while True:
            if size > len(top):
                raise NeedMoreCandidates(size)
            kept = unique_prefix(np.asarray(top.matrix), np.arange(size), k, strategy.threshold, lab)
            if len(kept) >= k or size >= result.n:
                break
            size = min(result.n, 4 * size)
        picks = fill_positions(kept, size, k)
    else:
        picks = np.arange(k)
    name = strategy.name
    scores = rank_scores(k) if name in RANK_SCORED else tuple(float(top.primary[int(p)]) for p in picks)
    rows = [top.rows[int(p)] for p in picks]
    return Selection(tuple(ItemId(r[0]) for r in rows), tuple(scores), name), {r[0]: r for r in rows}


def _full_selection(
    result: ShardResult,
    spec: ScoringSpec,
    strategy: Strategy,
    n: int,
    rng: np.random.Generator,
    labelled: LabelledSpaces,
    item_ids: Callable[[], Sequence[ItemId]],
    folder: str | Path,
) -> Selection:
    spools = open_spools(result.spools, folder)
    view = PoolView(
        item_ids=tuple(item_ids()),
        probs=spools.get("probs"),
        embeddings=spools["embeddings"],
        labelled_embeddings=labelled.model,
        multi_label=spec.multi_label,
        text_embeddings=spools.get("space"),
        labelled_text_embeddings=labelled.base if result.used_base else None,
        measures={spec.base_measure: spools["measure"]} if spec.base_measure else None,
        nonempty=spools.get("nonempty"),
    )
    return strategy.select(view, n, rng)


def rank_result(
    result: ShardResult,
    spec: ScoringSpec,
    strategy: Strategy,
    n: int,
    rng: np.random.Generator,
    labelled: LabelledSpaces,
    *,
    item_ids: Callable[[], Sequence[ItemId]],
    predict_rows: Callable[[Sequence[ItemId]], Sequence[Row]],
    folder: str | Path,
) -> tuple[list[ScoredItem], Selection]:
    """Select ``n`` items and rank the stored rows.

    ``item_ids()``: every pool id in position order (full mode only). ``predict_rows(ids)``: rows for
    selected items that are not among the kept least-confident ones (full mode, pools above ``stored``).
    Raises :class:`NeedMoreCandidates` when the stream mode kept too few candidates for the filter.
    """
    known: dict[str, Row] = {}
    if spec.mode == "stream":
        selection, known = _stream_selection(result, spec, strategy, n, labelled)
    else:
        selection = _full_selection(result, spec, strategy, n, rng, labelled, item_ids, folder)
    low = result.low.sorted()
    chosen = {str(i) for i in selection.item_ids}
    known.update({r[0]: r for r in low.rows if r[0] in chosen})
    missing = [i for i in selection.item_ids if str(i) not in known]
    if missing:
        known.update({r[0]: r for r in predict_rows(missing)})
    scored = [
        ScoredItem(item, rank, float(score), True, known[str(item)][2])
        for rank, (item, score) in enumerate(zip(selection.item_ids, selection.scores))
    ]
    budget = max(spec.stored, len(scored)) - len(scored)
    for row in low.rows:
        if budget <= 0:
            break
        if row[0] in chosen:
            continue
        scored.append(ScoredItem(ItemId(row[0]), len(scored), float(1.0 - row[1]), False, row[2]))
        budget -= 1
    return scored, selection
