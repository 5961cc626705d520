"""A round's stopping phase: predict the project's fixed stop set and record the stopping criteria.

The stop set is drawn once per project (the first trained round with ``loop.stop_set_size`` > 0) from
the unlabelled pool, seeded by ``loop.seed``, and stored in that round's report (``report["stop_set"]``:
``ids``, plus ``predicted``: each id's prediction code, or None for an item labelled by then); every later
round reads the ids back from the newest earlier round that has them, so the set never changes. The
criteria (:mod:`al_loop.rounds.stopping`) go to ``metrics["stopping"]``.

Cost: the stop-set items the round's pool scoring stored (every pool item up to ``loop.max_scores_stored``,
20,000) are read from those rows, not predicted again; the others (a larger or subsampled pool, or a round that
scores no pool: the last round of a simulation) get one extra ``predict`` without embeddings, in chunks of
``score_chunk_size``. ``timings["stopping"]`` records the phase, ``metrics["stopping"]["reused"]`` how many came
from the stored rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from al_loop.rounds.scoring import item_confidence
from al_loop.rounds.stopping import compare_predictions, criteria_record, draw_stop_set, prediction_code
from al_loop.states import RoundStatus
from al_loop.store.records import Project, Round, ScoredItem
from al_loop.store.repository import Store, unlabelled_id_chunks
from al_loop.types import ItemId, TaskKind

__all__ = ["StopPhaseResult", "run_stop_phase", "stop_set_of"]

log = logging.getLogger("al_loop.rounds")

StopPhaseResult = tuple[dict[str, Any], dict[str, Any]]
"""(``metrics["stopping"]``, ``report["stop_set"]``)."""


def _earlier(store: Store, project_id: int, index: int) -> list[Round]:
    return [r for r in store.list_rounds(project_id) if r.index < index and r.status is RoundStatus.SUCCEEDED]


def stop_set_of(rounds: Sequence[Round]) -> list[ItemId] | None:
    """The stop-set ids stored by the newest of ``rounds`` that has them (None: not drawn yet)."""
    for r in reversed(rounds):
        stored = (r.report or {}).get("stop_set")
        if isinstance(stored, dict) and isinstance(stored.get("ids"), list):
            return [ItemId(str(i)) for i in stored["ids"]]
    return None


def _previous_predictions(rounds: Sequence[Round]) -> dict[ItemId, list[int]]:
    """The stop-set predictions of the newest earlier round that predicted it (the previous model)."""
    for r in reversed(rounds):
        stored = (r.report or {}).get("stop_set")
        if isinstance(stored, dict) and isinstance(stored.get("predicted"), list):
            ids, codes = stored.get("ids") or [], stored["predicted"]
            return {ItemId(str(i)): list(c) for i, c in zip(ids, codes) if isinstance(c, list)}
    return {}


def _earlier_kappas(rounds: Sequence[Round]) -> list[float]:
    out = []
    for r in rounds:
        stopping = (r.metrics or {}).get("stopping")
        kappa = stopping.get("kappa") if isinstance(stopping, dict) else None
        if isinstance(kappa, int | float):
            out.append(float(kappa))
    return out


def run_stop_phase(store: Store, project: Project, rnd: Round, model: Any, labelled_ids: Sequence[ItemId],
                   scored: Sequence[ScoredItem] = ()) -> StopPhaseResult | None:
    """Predict the stop set with the round's ``model`` and compare with the previous round; None when
    ``loop.stop_set_size`` is 0 or the pool was empty when the set would be drawn.

    ``scored``: the rows the round stored; a stop-set item among them with a prediction is not predicted again
    (the stored payload is the same model's prediction and confidence).
    """
    loop = project.loop
    if loop.stop_set_size <= 0:
        return None
    earlier = _earlier(store, project.id, rnd.index)
    ids = stop_set_of(earlier)
    if ids is None:
        ids = draw_stop_set(unlabelled_id_chunks(store, project.id, max(loop.score_chunk_size, 1024)),
                            loop.stop_set_size, loop.seed)
        log.info("project %s: stop set of %d items drawn in round %s", project.id, len(ids), rnd.index)
    if not ids:
        return None
    schema = project.schema
    labelled = set(labelled_ids)
    stored = {s.item_id: s.prediction for s in scored if isinstance(s.prediction, dict)}
    todo = [i for i in ids if i not in labelled]
    codes: dict[ItemId, list[int]] = {}
    confidence: dict[ItemId, float] = {}
    ner = schema.task is TaskKind.NER
    size = max(1, loop.score_chunk_size)
    reused = [i for i in todo if i in stored]
    for start in range(0, len(reused), size):
        chunk = reused[start : start + size]
        texts = [it.text for it in store.get_items(project.id, chunk)] if ner else [""] * len(chunk)
        for item, text in zip(chunk, texts):
            payload = stored[item]
            codes[item] = prediction_code(schema.task, payload.get("spans" if ner else "labels"), text,
                                          schema.labels, schema.tags)
            confidence[item] = float(payload.get("confidence", 1.0))
    missing = [i for i in todo if i not in stored]
    for start in range(0, len(missing), size):
        chunk = missing[start : start + size]
        texts = [it.text for it in store.get_items(project.id, chunk)]
        out = model.predict(texts, embeddings=False)
        for j, (item, text) in enumerate(zip(chunk, texts)):
            codes[item] = prediction_code(schema.task, out.predicted[j], text, schema.labels, schema.tags)
            confidence[item] = item_confidence(out, j, schema.task, schema.multi_label)
    uncertainty = float(np.mean([1.0 - c for c in confidence.values()])) if confidence else None
    comparison = compare_predictions(_previous_predictions(earlier), codes, schema.task)
    record = criteria_record(_earlier_kappas(earlier), comparison, uncertainty, stop_set=len(ids),
                             predicted=len(codes))
    record["reused"] = len(reused)
    return record, {"ids": [str(i) for i in ids], "predicted": [codes.get(i) for i in ids]}
