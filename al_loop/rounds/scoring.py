"""Score the pool with a round's model and rank it: the selected batch first, then the rest by confidence.

Item ids in, :class:`~al_loop.store.records.ScoredItem` rows out (rank 0 = ask first); positions never
leave :func:`rank_pool`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from al_loop.data.schema import LabelSchema
from al_loop.store.records import ScoredItem
from al_loop.strategies import DedupedStrategy, PoolView, Strategy
from al_loop.types import ItemId, Span, TaskKind

__all__ = ["item_confidence", "prediction_payload", "rank_pool"]


def prediction_payload(task: TaskKind, predicted: Any, confidence: float) -> dict[str, Any]:
    """Stored model prediction for one item: spans or labels plus a confidence in [0, 1]."""
    if task is TaskKind.NER:
        return {"spans": [s.to_dict() if isinstance(s, Span) else dict(s) for s in predicted], "confidence": confidence}
    return {"labels": list(predicted), "confidence": confidence}


def item_confidence(output: Any, i: int, task: TaskKind, multi_label: bool) -> float:
    """Confidence of the model in its prediction for item ``i`` (probability of the best path/label set)."""
    if task is TaskKind.NER:
        tp = output.token_probs[i]
        if len(tp) == 0:
            return 1.0
        return float(np.exp(np.sum(np.log(np.clip(tp.max(axis=1), 1e-12, 1.0)))))
    p = output.probs[i]
    if multi_label:
        return float(np.prod(np.maximum(p, 1.0 - p)))
    return float(p.max())


def rank_pool(
    model: Any,
    strategy: Strategy,
    schema: LabelSchema,
    item_ids: Sequence[ItemId],
    texts: Sequence[str],
    labelled_texts: Sequence[str],
    n: int,
    rng: np.random.Generator,
    *,
    timings: dict[str, float],
    base_embed: Callable[[Sequence[str]], np.ndarray | None] | None = None,
    on_scored: Callable[[], None] | None = None,
) -> list[ScoredItem]:
    """Predict ``texts`` (row-aligned with ``item_ids``), select ``n`` with ``strategy`` and rank every item.

    ``base_embed`` gives frozen base-model embeddings in which the near-duplicate filter judges
    similarity (None: the model's own embeddings). Adds ``score`` and ``select`` seconds to ``timings``.
    """
    t0 = time.perf_counter()
    output = model.predict(list(texts), embeddings=True)
    labelled_emb = text_emb = labelled_text_emb = None
    # the model's labelled embeddings serve the inner strategy (ranked batch) or, without base embeddings, the filter
    inner = strategy.inner if isinstance(strategy, DedupedStrategy) else strategy
    wants_labelled = inner.needs_embeddings or (isinstance(strategy, DedupedStrategy) and base_embed is None)
    if wants_labelled and labelled_texts:
        labelled_emb = model.predict(list(labelled_texts), embeddings=True).embeddings
    if base_embed is not None:
        text_emb = base_embed(texts)
        if text_emb is not None and labelled_texts:
            labelled_text_emb = base_embed(labelled_texts)
    timings["score"] = time.perf_counter() - t0
    if on_scored is not None:
        on_scored()
    t0 = time.perf_counter()
    view = PoolView(
        item_ids=tuple(item_ids),
        probs=output.probs,
        token_probs=output.token_probs,
        embeddings=output.embeddings,
        labelled_embeddings=labelled_emb,
        multi_label=schema.multi_label,
        text_embeddings=text_emb,
        labelled_text_embeddings=labelled_text_emb,
    )
    selection = strategy.select(view, n, rng)
    conf = [item_confidence(output, i, schema.task, schema.multi_label) for i in range(len(view.item_ids))]
    pos = {item: i for i, item in enumerate(view.item_ids)}
    chosen = list(selection.item_ids)
    chosen_set = set(chosen)
    rest = sorted((i for i in view.item_ids if i not in chosen_set), key=lambda i: conf[pos[i]])
    sel_score = dict(zip(selection.item_ids, selection.scores))
    scored: list[ScoredItem] = []
    for rank, item in enumerate(chosen + rest):
        i = pos[item]
        scored.append(
            ScoredItem(
                item,
                rank,
                float(sel_score.get(item, 1.0 - conf[i])),
                item in chosen_set,
                prediction_payload(schema.task, output.predicted[i], conf[i]),
            )
        )
    timings["select"] = time.perf_counter() - t0
    return scored
