"""Stopping criteria: advice on when more labels are unlikely to change the model (pure numpy).

After every trained round the model predicts a **stop set**: items drawn once per project from the
unlabelled pool (seeded, :func:`draw_stop_set`) and kept fixed across rounds. Stop-set items that get
labelled later drop out; two rounds are compared only on the items both predicted. Three criteria:

- **Stabilizing predictions** (Bloodgood & Vijay-Shanker 2009, "A method for stopping active learning
  based on stabilizing predictions and the need for user-adjustable stopping", CoNLL): Cohen's kappa
  between the predicted labels of successive models on the stop set; the criterion holds when the mean
  kappa of the last :data:`KAPPA_WINDOW` (3) rounds is at least :data:`KAPPA_THRESHOLD` (0.99), the
  paper's defaults. For NER the observations are the words of the compared sentences (each word's
  predicted BIO tag), for classification the items (multi-label: the predicted label set is one
  category). small-text's ``KappaAverage`` stops instead when the mean absolute *change* of kappa in
  its window is below ``1 - kappa`` (kappa has stopped moving, whatever its level); al-loop keeps the
  paper's rule, which also needs the models to agree.
- **Classification change** (Zhu, Wang & Hovy 2008): the share of compared stop-set items whose
  prediction (label set, or the sentence's whole tag sequence) changed since the previous round; holds
  at or below :data:`CHANGE_THRESHOLD` (1%). The paper (and small-text's ``ClassificationChange``
  default, threshold 0) asks for no change at all, which a re-trained transformer over a thousand items
  almost never gives.
- **Overall uncertainty** (Zhu, Wang & Hovy 2008): the mean over the stop set of ``1 - confidence``, the
  confidence al-loop stores with every prediction (:func:`al_loop.rounds.scoring.item_confidence`: ``max p``
  for single-label classification, ``prod max(p, 1 - p)`` over the labels for multi-label, the probability of
  the best tag path for NER); holds below :data:`UNCERTAINTY_THRESHOLD` (0.05). small-text's
  ``OverallUncertainty`` uses normalised entropy with the same 0.05.

All three are advice: nothing stops the loop unless the project sets ``loop.pause_when_stable``, which
only pauses *automatic* retraining once stabilizing predictions holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from al_loop.data.align import spans_to_word_tags, words_of
from al_loop.types import ItemId, Span, TaskKind

__all__ = [
    "CHANGE_THRESHOLD",
    "CRITERIA",
    "KAPPA_THRESHOLD",
    "KAPPA_WINDOW",
    "UNCERTAINTY_THRESHOLD",
    "advice",
    "cohen_kappa",
    "compare_predictions",
    "criteria_record",
    "draw_stop_set",
    "first_stops",
    "point_fields",
    "prediction_code",
    "stopping_summary",
]

KAPPA_THRESHOLD = 0.99
KAPPA_WINDOW = 3
CHANGE_THRESHOLD = 0.01
UNCERTAINTY_THRESHOLD = 0.05
CRITERIA: tuple[str, ...] = ("stabilizing_predictions", "classification_change", "overall_uncertainty")
"""Names of the criteria, in the order they are shown."""


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' categories, row-aligned; None for no observations.

    ``(p_o - p_e) / (1 - p_e)``, ``p_o`` the observed agreement, ``p_e`` the agreement expected from the
    two marginal distributions. When ``p_e`` is 1 (both raters gave one and the same category to every
    observation) the formula is 0/0: that is perfect agreement, and 1.0 is returned (as small-text does).
    """
    if len(a) != len(b):
        raise ValueError(f"kappa of {len(a)} against {len(b)} observations")
    n = len(a)
    if n == 0:
        return None
    codes: dict[Hashable, int] = {}
    x = np.fromiter((codes.setdefault(v, len(codes)) for v in a), dtype=np.int64, count=n)
    y = np.fromiter((codes.setdefault(v, len(codes)) for v in b), dtype=np.int64, count=n)
    k = len(codes)
    p_o = float(np.mean(x == y))
    p_e = float(np.dot(np.bincount(x, minlength=k) / n, np.bincount(y, minlength=k) / n))
    if p_e >= 1.0 - 1e-12:
        return 1.0 if p_o >= 1.0 - 1e-12 else 0.0
    return (p_o - p_e) / (1.0 - p_e)


def prediction_code(task: TaskKind, predicted: Any, text: str, labels: Sequence[str],
                    tags: Sequence[str]) -> list[int]:
    """One item's prediction as integers: classification, the sorted indices in ``labels`` of the predicted label
    names; NER, each word's BIO tag index in ``tags`` (the predicted spans, :class:`Span` or their dicts, laid
    over ``words_of(text)``). The same code whether the prediction comes from ``model.predict`` or from the
    payload the round stored for the item."""
    if task is TaskKind.NER:
        spans = [s if isinstance(s, Span) else Span.from_dict(s) for s in predicted or ()]
        index = {t: i for i, t in enumerate(tags)}
        return [index.get(t, -1) for t in spans_to_word_tags(words_of(text), spans)]
    index = {lb: i for i, lb in enumerate(labels)}
    return sorted(index[str(lb)] for lb in predicted or () if str(lb) in index)


def compare_predictions(
    previous: Mapping[ItemId, Sequence[int]], current: Mapping[ItemId, Sequence[int]], task: TaskKind
) -> dict[str, Any]:
    """Kappa and the changed share between two rounds' stop-set predictions, on the items both predicted.

    Returns ``{"compared": n items, "kappa": float | None, "changed": share | None}`` (None without
    common items). NER kappa is over the words of the common sentences (a sentence predicted with a
    different number of words, which the same text never gives, is counted as changed and left out of
    kappa).
    """
    common = [i for i in current if i in previous]
    if not common:
        return {"compared": 0, "kappa": None, "changed": None}
    changed = sum(1 for i in common if list(previous[i]) != list(current[i]))
    if task is TaskKind.NER:
        a: list[Hashable] = []
        b: list[Hashable] = []
        for i in common:
            if len(previous[i]) == len(current[i]):
                a.extend(previous[i])
                b.extend(current[i])
        kappa = cohen_kappa(a, b)
    else:
        kappa = cohen_kappa([tuple(previous[i]) for i in common], [tuple(current[i]) for i in common])
    return {"compared": len(common), "kappa": kappa, "changed": changed / len(common)}


def criteria_record(
    earlier_kappas: Sequence[float], comparison: Mapping[str, Any], uncertainty: float | None, *,
    stop_set: int, predicted: int,
) -> dict[str, Any]:
    """The round's ``metrics["stopping"]``: the three measures, whether each criterion holds, the advice.

    ``earlier_kappas``: the kappas of the earlier rounds, oldest first (rounds without one left out).
    """
    kappa = comparison.get("kappa")
    kappas = [*earlier_kappas, kappa] if kappa is not None else list(earlier_kappas)
    window = [float(k) for k in kappas[-KAPPA_WINDOW:]] if kappa is not None else []
    kappa_mean = float(np.mean(window)) if len(window) == KAPPA_WINDOW else None
    stable_rounds = 0
    if kappa is not None:
        for k in reversed(kappas):
            if k < KAPPA_THRESHOLD:
                break
            stable_rounds += 1
    changed = comparison.get("changed")
    holds = {
        "stabilizing_predictions": kappa_mean is not None and kappa_mean >= KAPPA_THRESHOLD,
        "classification_change": changed is not None and changed <= CHANGE_THRESHOLD,
        "overall_uncertainty": uncertainty is not None and uncertainty < UNCERTAINTY_THRESHOLD,
    }
    record: dict[str, Any] = {
        "stop_set": int(stop_set),
        "predicted": int(predicted),
        "compared": int(comparison.get("compared") or 0),
        "kappa": None if kappa is None else round(float(kappa), 6),
        "kappa_window": [round(k, 6) for k in window],
        "kappa_mean": None if kappa_mean is None else round(kappa_mean, 6),
        "stable_rounds": stable_rounds,
        "changed": None if changed is None else round(float(changed), 6),
        "uncertainty": None if uncertainty is None else round(float(uncertainty), 6),
        "holds": holds,
    }
    record["advice"] = advice(record)
    return record


def advice(record: Mapping[str, Any]) -> str:
    """A plain sentence for people: what the criteria say about labelling more."""
    holds = record.get("holds") or {}
    mean = record.get("kappa_mean")
    if holds.get("stabilizing_predictions"):
        return (f"predictions have been stable for {KAPPA_WINDOW} rounds (mean kappa {mean:.3f} between successive "
                "models on the stop set): more labels are unlikely to change the model much")
    kappa = record.get("kappa")
    if kappa is None:
        return "too early to tell: the stop-set predictions of two trained rounds are needed"
    rounds = len(record.get("kappa_window") or [])
    if mean is None:
        return (f"kappa between the last two models is {kappa:.3f}; stabilizing predictions needs {KAPPA_WINDOW} "
                f"rounds of kappa (has {rounds}) with a mean of at least {KAPPA_THRESHOLD}: keep labelling")
    changed = record.get("changed")
    moved = f", {changed * 100:.1f}% of the stop set changed label" if isinstance(changed, float) else ""
    return (f"predictions are still moving (mean kappa {mean:.3f} over the last {KAPPA_WINDOW} rounds, below "
            f"{KAPPA_THRESHOLD}{moved}): more labels are still changing the model")


def draw_stop_set(id_chunks: Iterable[Sequence[ItemId]], size: int, seed: int) -> list[ItemId]:
    """A seeded uniform sample of ``size`` ids (all of them when fewer), read chunk by chunk (reservoir
    sampling: memory follows ``size``, not the pool); returned in their pool order."""
    if size <= 0:
        return []
    rng = np.random.default_rng([int(seed), 0x5709])
    reservoir: list[tuple[int, ItemId]] = []
    seen = 0
    for chunk in id_chunks:
        ids = list(chunk)
        if not ids:
            continue
        fill = max(0, min(size - len(reservoir), len(ids)))
        reservoir.extend((seen + j, ids[j]) for j in range(fill))
        rest = len(ids) - fill
        if rest:
            positions = np.arange(seen + fill, seen + len(ids), dtype=np.int64)
            slots = rng.integers(0, positions + 1)
            for j in np.flatnonzero(slots < size):
                reservoir[int(slots[j])] = (int(positions[j]), ids[fill + int(j)])
        seen += len(ids)
    return [item for _, item in sorted(reservoir)]


def first_stops(rounds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """Per criterion, the first of ``rounds`` (oldest first; each ``{"labels", "score", "stops"}``, ``stops``
    the criteria holding after it) at which it holds: ``{"labels", "score", "round"}``, or None."""
    out: dict[str, dict[str, Any] | None] = {}
    for name in CRITERIA:
        hit = next((r for r in rounds if name in (r.get("stops") or ())), None)
        out[name] = None if hit is None else {"labels": hit.get("labels"), "score": hit.get("score"),
                                               "round": hit.get("round")}
    return out


# ------------------------------------------------------------------ simulation (al-loop simulate)
def point_fields(stopping: Any) -> dict[str, Any]:
    """A point's stopping columns from a round's ``metrics["stopping"]`` (None / "" when not measured)."""
    record = stopping if isinstance(stopping, dict) else {}
    holds = record.get("holds") or {}
    return {
        "kappa": record.get("kappa"),
        "changed": record.get("changed"),
        "uncertainty": record.get("uncertainty"),
        "stops": "|".join(name for name in CRITERIA if holds.get(name)),
    }


def stopping_summary(points: Sequence[dict[str, Any]], strategy: str) -> dict[str, Any]:
    """Per criterion, where it would have stopped ``strategy``'s runs: per repeat the first round at which it
    holds (labels, score there, the repeat's final labels and score), and over the repeats where it fired the
    mean labels, mean score there and mean final score (``fired`` of ``repeats``)."""
    runs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        if p["strategy"] == strategy:
            runs[int(p["repeat"])].append(p)
    out: dict[str, Any] = {}
    for name in CRITERIA:
        per_repeat = []
        for repeat in sorted(runs):
            rows = sorted(runs[repeat], key=lambda p: p["round"])
            stops = [{"round": p["round"], "labels": p["labels"], "score": p["score"],
                      "stops": str(p.get("stops") or "").split("|")} for p in rows]
            hit = first_stops(stops)[name]
            per_repeat.append({"repeat": repeat, "labels": hit["labels"] if hit else None,
                               "score": hit["score"] if hit else None, "final_labels": rows[-1]["labels"],
                               "final_score": rows[-1]["score"]})
        fired = [r for r in per_repeat if r["labels"] is not None]
        out[name] = {"fired": len(fired), "repeats": len(per_repeat), "labels": _mean_of("labels", fired),
                     "score": _mean_of("score", fired), "final_score_fired": _mean_of("final_score", fired),
                     "final_labels": _mean_of("final_labels", per_repeat),
                     "final_score": _mean_of("final_score", per_repeat),
                     "per_repeat": per_repeat}
    return out


def _mean_of(key: str, rows: Sequence[dict[str, Any]]) -> float | None:
    values = [r[key] for r in rows]
    return float(np.mean(values)) if values and all(isinstance(v, int | float) for v in values) else None
