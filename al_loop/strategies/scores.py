"""Pure numpy informativeness scores (higher = more informative = ask first).

Every function takes model probabilities and returns one float64 score per
item, in the input order. Logarithms are natural (entropies are in nats).
Nothing here draws random numbers, imports modAL or imports torch.

Single-label classification (``probs`` of shape ``(n, k)``, rows are softmax
distributions): :func:`least_confidence` ``1 - max p``, :func:`margin`
``1 - (p_top1 - p_top2)``, :func:`entropy` ``-sum p log p``. The strategies
compute these through modAL (``modal_adapter``); the numpy versions here are the
reference and are reused per word for NER.

Multi-label classification (``probs`` of shape ``(n, k)``, each column an
independent sigmoid ``p_j = P(label j applies)``): each label is a binary
decision and an item is as uncertain as its least certain decision:

- :func:`multilabel_least_confidence` = ``max_j (1 - max(p_j, 1 - p_j))``
  = ``0.5 - min_j |p_j - 0.5|``, in ``[0, 0.5]``;
- :func:`multilabel_margin` = ``1 - min_j |p_j - (1 - p_j)|``
  = ``1 - 2 min_j |p_j - 0.5|``, in ``[0, 1]`` (ranks items exactly like
  least confidence, as for binary single-label classification);
- :func:`multilabel_entropy` = mean over labels of the binary entropy, in
  ``[0, log 2]``.

NER (``token_probs``: one ``(n_words, n_tags)`` array per item, the tag
distribution of each word's first subword): sequence scores reduce per-word
values, see :func:`ner_scores`. Items with zero words get :data:`EMPTY_SCORE`,
strictly below every real score, so they are asked last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

EMPTY_SCORE = -1.0
"""Score of an NER item without words: below every real score (all are >= 0)."""

_TINY = np.finfo(np.float64).tiny

NER_MEASURES = ("least_confidence", "margin", "entropy", "mnlp", "mean_entropy", "max_entropy")
CLASSIFICATION_MEASURES = ("least_confidence", "margin", "entropy")


def _as_probs(probs: np.ndarray, what: str = "probs") -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (items x outputs), got shape {arr.shape}")
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise ValueError(f"{what} must hold finite probabilities in [0, 1]")
    return np.clip(arr, 0.0, 1.0)


def _xlogx(p: np.ndarray) -> np.ndarray:
    """``p * log p`` with ``0 log 0 = 0``."""
    return np.where(p > 0, p * np.log(np.maximum(p, _TINY)), 0.0)


def _top2_margin(probs: np.ndarray) -> np.ndarray:
    """``p_top1 - p_top2`` per row (1.0 when there is a single output)."""
    if probs.shape[1] < 2:
        return np.ones(probs.shape[0])
    part = -np.partition(-probs, 1, axis=1)
    return part[:, 0] - part[:, 1]


# ---------------------------------------------------------------- single-label classification (and per word)


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c`` per row (modAL's ``classifier_uncertainty``)."""
    p = _as_probs(probs)
    if p.shape[1] == 0:
        return np.zeros(p.shape[0])
    return 1.0 - p.max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)`` per row: 1 for a tie at the top, 0 for a certain prediction.

    (modAL's ``classifier_margin`` returns the raw margin, low = informative.)
    """
    return 1.0 - _top2_margin(_as_probs(probs))


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy ``-sum_c p_c log p_c`` per row, in nats."""
    return -_xlogx(_as_probs(probs)).sum(axis=1)


# ---------------------------------------------------------------- multi-label classification


def multilabel_least_confidence(probs: np.ndarray) -> np.ndarray:
    """``0.5 - min_j |p_j - 0.5|``: one minus the confidence of the least certain label decision."""
    p = _as_probs(probs)
    if p.shape[1] == 0:
        return np.zeros(p.shape[0])
    return 0.5 - np.abs(p - 0.5).min(axis=1)


def multilabel_margin(probs: np.ndarray) -> np.ndarray:
    """``1 - 2 min_j |p_j - 0.5|``: one minus the smallest yes/no margin over labels."""
    p = _as_probs(probs)
    if p.shape[1] == 0:
        return np.zeros(p.shape[0])
    return 1.0 - 2.0 * np.abs(p - 0.5).min(axis=1)


def multilabel_entropy(probs: np.ndarray) -> np.ndarray:
    """Mean binary entropy ``-(p log p + (1-p) log(1-p))`` over labels, in nats."""
    p = _as_probs(probs)
    if p.shape[1] == 0:
        return np.zeros(p.shape[0])
    return -(_xlogx(p) + _xlogx(1.0 - p)).mean(axis=1)


# ---------------------------------------------------------------- NER sequence scores


def ner_scores(token_probs: Sequence[np.ndarray], measure: str) -> np.ndarray:
    """Sequence-level score per item from per-word tag distributions.

    ``token_probs[i]`` has shape ``(n_words_i, n_tags)`` (word order, tags in
    the schema's tag order). With ``m_w = max_t p_wt`` for word ``w``:

    - ``least_confidence``: ``1 - prod_w m_w``, one minus the probability of the
      best tag path (per-word argmax; words are scored independently, no BIO
      transition constraint), computed in log space so long texts do not
      underflow; in ``[0, 1]``, grows with length;
    - ``mnlp``: ``-(1/n) sum_w log m_w`` (maximum normalized log-probability,
      Shen et al. 2017, negated so that higher = more uncertain); ``>= 0``;
    - ``mean_entropy`` / ``entropy``: mean over words of the tag entropy;
    - ``max_entropy``: the largest word entropy;
    - ``margin``: ``1 - min_w (p_top1 - p_top2)``, the least certain word.

    Items with zero words score :data:`EMPTY_SCORE`.
    """
    if measure not in NER_MEASURES:
        raise ValueError(f"unknown NER measure {measure!r}; known: {', '.join(NER_MEASURES)}")
    n_items = len(token_probs)
    out = np.full(n_items, EMPTY_SCORE, dtype=np.float64)
    lengths = np.zeros(n_items, dtype=np.int64)
    blocks: list[np.ndarray] = []
    n_tags: int | None = None
    for i, tp in enumerate(token_probs):
        arr = np.asarray(tp, dtype=np.float64)
        if arr.size == 0:
            continue
        if arr.ndim != 2:
            raise ValueError(f"token_probs[{i}] must have shape (n_words, n_tags), got {arr.shape}")
        if n_tags is None:
            n_tags = arr.shape[1]
        elif arr.shape[1] != n_tags:
            raise ValueError(f"token_probs[{i}] has {arr.shape[1]} tags, expected {n_tags}")
        lengths[i] = arr.shape[0]
        blocks.append(arr)
    if not blocks:
        return out
    words = _as_probs(np.concatenate(blocks), "token_probs")
    has_words = lengths > 0
    seg_len = lengths[has_words].astype(np.float64)
    starts = np.concatenate(([0], np.cumsum(lengths[has_words])[:-1]))

    if measure in ("least_confidence", "mnlp"):
        log_max = np.log(np.maximum(words.max(axis=1), _TINY))
        total = np.add.reduceat(log_max, starts)
        out[has_words] = -np.expm1(total) if measure == "least_confidence" else -total / seg_len
    elif measure in ("entropy", "mean_entropy", "max_entropy"):
        word_ent = -_xlogx(words).sum(axis=1)
        if measure == "max_entropy":
            out[has_words] = np.maximum.reduceat(word_ent, starts)
        else:
            out[has_words] = np.add.reduceat(word_ent, starts) / seg_len
    else:  # margin
        out[has_words] = 1.0 - np.minimum.reduceat(_top2_margin(words), starts)
    return out


def ner_least_confidence(token_probs: Sequence[np.ndarray]) -> np.ndarray:
    return ner_scores(token_probs, "least_confidence")


def ner_mnlp(token_probs: Sequence[np.ndarray]) -> np.ndarray:
    return ner_scores(token_probs, "mnlp")


def ner_mean_entropy(token_probs: Sequence[np.ndarray]) -> np.ndarray:
    return ner_scores(token_probs, "mean_entropy")


def ner_max_entropy(token_probs: Sequence[np.ndarray]) -> np.ndarray:
    return ner_scores(token_probs, "max_entropy")


def ner_margin(token_probs: Sequence[np.ndarray]) -> np.ndarray:
    return ner_scores(token_probs, "margin")


MULTILABEL_SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": multilabel_least_confidence,
    "margin": multilabel_margin,
    "entropy": multilabel_entropy,
}
