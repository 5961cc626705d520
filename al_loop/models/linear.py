"""Logistic regression on L2-normalised features: the head learner's fit and the fine-tuned classifier's start.

:class:`~al_loop.models.head.HeadModel` fits these on frozen features and keeps them;
:class:`~al_loop.models.model.TextModel` (mean-pooled classifier) fits them on the
base model's features of the training texts and starts fine-tuning from them
(linear probing, then fine-tuning: LP-FT, Kumar et al. 2022), so the first
fine-tuning steps refine a head that already separates the classes instead of a
random one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from al_loop.data.schema import LabelSchema
from al_loop.types import Example

__all__ = [
    "ABSENT_CLASS_BIAS",
    "fit_binary",
    "fit_label_head",
    "fit_multilabel",
    "fit_softmax",
    "normalise",
    "softmax",
]

ABSENT_CLASS_BIAS = -20.0
"""Bias of a class with no training example: never predicted until it has one."""


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; all-zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, float32."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression over ``k`` classes: ``coef`` (k, d), ``intercept`` (k,).

    Classes absent from ``y`` get :data:`ABSENT_CLASS_BIAS`; with one class present it wins everywhere.
    """
    from sklearn.linear_model import LogisticRegression

    coef = np.zeros((k, x.shape[1]), dtype=np.float32)
    intercept = np.full(k, ABSENT_CLASS_BIAS, dtype=np.float32)
    present = np.unique(y)
    if len(present) == 1:
        intercept[int(present[0])] = 0.0
        return coef, intercept
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence warnings on tiny, separable sets
        clf.fit(x, y)
    rows = clf.coef_ if len(present) > 2 else np.vstack([-clf.coef_[0] / 2, clf.coef_[0] / 2])
    bias = clf.intercept_ if len(present) > 2 else np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2])
    for r, cls in enumerate(clf.classes_):
        coef[int(cls)] = rows[r]
        intercept[int(cls)] = bias[r]
    return coef, intercept


def fit_binary(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, float]:
    """One-vs-rest column for multi-label: ``(coef (d,), intercept)``; constant log-odds when ``y`` holds one value."""
    from sklearn.linear_model import LogisticRegression

    rate = float(np.clip(y.mean(), 0.01, 0.99))
    if y.min() == y.max():
        return np.zeros(x.shape[1], dtype=np.float32), float(np.log(rate / (1 - rate)))
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(x, y)
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])


def fit_multilabel(x: np.ndarray, hot: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One binary logistic regression per column of the multi-hot ``hot`` (n, k): coef (k, d), intercept (k,)."""
    k = hot.shape[1]
    coef = np.zeros((k, x.shape[1]), dtype=np.float32)
    intercept = np.zeros(k, dtype=np.float32)
    for j in range(k):
        coef[j], intercept[j] = fit_binary(x, hot[:, j], c, seed)
    return coef, intercept


def fit_label_head(
    x: np.ndarray, examples: Sequence[Example], schema: LabelSchema, c: float, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Logistic regression from one feature row per labelled classification example (``x`` normalised by the
    caller) to its labels: ``(coef (k, d), intercept (k,), number of classes seen)``; multi-label: one-vs-rest."""
    label2id = schema.label2id
    k = schema.num_outputs
    if schema.multi_label:
        hot = np.zeros((len(examples), k), dtype=np.int64)
        for i, ex in enumerate(examples):
            for lb in ex.labels or ():
                hot[i, label2id[lb]] = 1
        coef, intercept = fit_multilabel(x, hot, c, seed)
        return coef, intercept, int((hot.sum(axis=0) > 0).sum())
    y = np.array([label2id[(ex.labels or ("",))[0]] for ex in examples], dtype=np.int64)
    coef, intercept = fit_softmax(x, y, k, c, seed)
    return coef, intercept, len(np.unique(y))
