"""Evaluation metrics: sklearn for classification, seqeval for NER.

No torch here, so the store, the rounds and the web layer can import it cheaply.
Every function returns a plain JSON-serialisable dict (Python floats and ints)
whose main number is under ``"score"`` (higher is better): accuracy for
classification (subset accuracy for multi-label), entity-level micro F1 for NER.

Id spaces: labels are class names / entity types of a
:class:`~al_loop.data.schema.LabelSchema`; spans are end-exclusive character
offsets into the matching text; nothing here uses positional item indices
outside one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from al_loop.data.align import spans_to_word_tags, words_of
from al_loop.errors import EmptyInputError, UnknownLabelError
from al_loop.types import Span

__all__ = ["classification_metrics", "ner_metrics"]


def _check_known(rows: Sequence[tuple[str, ...]], known: set[str], what: str) -> None:
    for i, row in enumerate(rows):
        for lb in row:
            if lb not in known:
                raise UnknownLabelError(f"{what}[{i}] has label {lb!r}, not one of: {', '.join(sorted(known))}")


def classification_metrics(
    gold: Sequence[tuple[str, ...]],
    pred: Sequence[tuple[str, ...]],
    labels: Sequence[str],
    multi_label: bool = False,
) -> dict[str, Any]:
    """Accuracy, macro F1, per-label P/R/F1 and a confusion matrix.

    ``gold[i]`` and ``pred[i]`` are the label names of item ``i`` (one name each
    for single-label; any number for multi-label). ``labels`` fixes the order of
    ``per_label`` and of the confusion matrix rows/columns.

    Returns ``{"score", "accuracy", "macro_f1", "micro_f1", "n", "per_label":
    {label: {"precision", "recall", "f1", "support"}}, "confusion": {"labels",
    "matrix"}}``. ``score == accuracy``. Single-label: ``matrix[i][j]`` counts
    items with gold ``labels[i]`` predicted as ``labels[j]``. Multi-label:
    accuracy is subset (exact-match) accuracy, and ``matrix[i][j]`` counts items
    whose gold set holds ``labels[i]`` and predicted set holds ``labels[j]``
    (the diagonal is the per-label true positives); ``support`` counts items
    carrying the label.

    Raises EmptyInputError for no items, ValueError for unequal lengths or (single
    label) an item without exactly one label, UnknownLabelError for a name not in
    ``labels``.
    """
    labels = list(labels)
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} items, pred has {len(pred)}")
    if not gold:
        raise EmptyInputError("no items to evaluate")
    known = set(labels)
    _check_known(gold, known, "gold")
    _check_known(pred, known, "pred")
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    index = {lb: i for i, lb in enumerate(labels)}
    if multi_label:
        y_true = np.zeros((len(gold), len(labels)), dtype=np.int64)
        y_pred = np.zeros_like(y_true)
        for i, (g, p) in enumerate(zip(gold, pred)):
            y_true[i, [index[lb] for lb in g]] = 1
            y_pred[i, [index[lb] for lb in p]] = 1
        accuracy = float(np.mean(np.all(y_true == y_pred, axis=1)))
        prec, rec, f1, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
        macro = float(f1_score(y_true, y_pred, average="macro", zero_division=0))
        micro = float(f1_score(y_true, y_pred, average="micro", zero_division=0))
        matrix = (y_true.T @ y_pred).tolist()
    else:
        for what, rows in (("gold", gold), ("pred", pred)):
            for i, row in enumerate(rows):
                if len(row) != 1:
                    raise ValueError(f"single-label {what}[{i}] needs exactly one label, got {len(row)}")
        t = [g[0] for g in gold]
        p_ = [p[0] for p in pred]
        accuracy = float(accuracy_score(t, p_))
        prec, rec, f1, support = precision_recall_fscore_support(t, p_, labels=labels, average=None, zero_division=0)
        macro = float(f1_score(t, p_, labels=labels, average="macro", zero_division=0))
        micro = accuracy
        matrix = confusion_matrix(t, p_, labels=labels).tolist()
    per_label = {
        lb: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, lb in enumerate(labels)
    }
    return {
        "score": accuracy,
        "accuracy": accuracy,
        "macro_f1": macro,
        "micro_f1": micro,
        "n": len(gold),
        "per_label": per_label,
        "confusion": {"labels": labels, "matrix": [[int(v) for v in row] for row in matrix]},
    }


def ner_metrics(
    texts: Sequence[str],
    gold: Sequence[Sequence[Span]],
    pred: Sequence[Sequence[Span]],
) -> dict[str, Any]:
    """Entity-level precision/recall/F1 (seqeval, conlleval rules) on word BIO tags.

    Each text is split with ``words_of(text, boundaries)`` where the boundaries
    are every start/end of its gold and predicted spans, so a character span
    maps onto whole words; the BIO tags of both sides are then compared by
    seqeval. An entity counts as correct only with the same type and the same
    word extent.

    Returns ``{"score" (= micro F1), "f1", "precision", "recall", "n" (texts),
    "n_gold", "n_pred" (entities), "per_label": {type: {"precision", "recall",
    "f1", "support"}}, "errors": {type: {"fp", "fn"}}}``. With no entity on
    either side every number is 0.0. Raises EmptyInputError for no texts,
    ValueError for unequal lengths.
    """
    if not (len(texts) == len(gold) == len(pred)):
        raise ValueError(f"texts/gold/pred lengths differ: {len(texts)}, {len(gold)}, {len(pred)}")
    if not texts:
        raise EmptyInputError("no texts to evaluate")
    from seqeval.metrics import classification_report
    from seqeval.metrics.sequence_labeling import get_entities

    y_true: list[list[str]] = []
    y_pred: list[list[str]] = []
    errors: dict[str, dict[str, int]] = {}
    n_gold = n_pred = 0
    for text, g, p in zip(texts, gold, pred):
        bounds = {s.start for s in (*g, *p)} | {s.end for s in (*g, *p)}
        words = words_of(text, sorted(bounds))
        tg = list(spans_to_word_tags(words, list(g)))
        tp_ = list(spans_to_word_tags(words, list(p)))
        y_true.append(tg)
        y_pred.append(tp_)
        eg = set(get_entities(tg))
        ep = set(get_entities(tp_))
        n_gold += len(eg)
        n_pred += len(ep)
        for typ, _, _ in ep - eg:
            errors.setdefault(typ, {"fp": 0, "fn": 0})["fp"] += 1
        for typ, _, _ in eg - ep:
            errors.setdefault(typ, {"fp": 0, "fn": 0})["fn"] += 1
        for typ, _, _ in eg & ep:
            errors.setdefault(typ, {"fp": 0, "fn": 0})
    if n_gold == 0 and n_pred == 0:
        return {
            "score": 0.0,
            "f1": 0.0,
            "precision": 0.0,
            "recall": 0.0,
            "n": len(texts),
            "n_gold": 0,
            "n_pred": 0,
            "per_label": {},
            "errors": {},
        }
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    micro = report["micro avg"]
    per_label = {
        typ: {
            "precision": float(r["precision"]),
            "recall": float(r["recall"]),
            "f1": float(r["f1-score"]),
            "support": int(r["support"]),
        }
        for typ, r in report.items()
        if not typ.endswith(" avg")
    }
    f1 = float(micro["f1-score"])
    return {
        "score": f1,
        "f1": f1,
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "n": len(texts),
        "n_gold": n_gold,
        "n_pred": n_pred,
        "per_label": dict(sorted(per_label.items())),
        "errors": dict(sorted(errors.items())),
    }
