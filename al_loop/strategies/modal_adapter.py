"""The one module of al-loop that imports modAL.

modAL 0.4.2's ``ActiveLearner`` cannot train on scikit-learn >= 1.8 (it passes
``force_all_finite`` to ``check_X_y``; modAL issue 196), and
``modAL.expected_error``, ``modAL.cluster`` and ``modAL.dropout`` fail to import.
So no learner is ever built: modAL's query functions run over probabilities and
embeddings the model already computed, through :class:`PrecomputedClassifier`,
a stand-in "fitted classifier" whose ``predict_proba`` looks rows up by index.

modAL is imported lazily, inside the functions: importing modAL imports pandas
and, when it is installed, torch (``modAL.utils.data``), which costs seconds, so
``import al_loop.strategies`` stays light and torch-free (the webhook/API
processes import it without scoring anything).

Indices here are positions in the arrays passed in; they never leave the
strategies package (strategies map them to item ids).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DENSE_LIMIT = 2048
"""Up to this many rows, modAL's all-pairs functions run as they are (an n x n
distance matrix); above it an equivalent chunked computation keeps memory
bounded (a 10k pool would need 800 MB at once)."""


class PrecomputedClassifier:
    """What modAL needs from a fitted classifier, over precomputed probabilities.

    ``predict_proba(X)`` reads the row index from the first column of ``X``
    (pass :func:`index_column`) and returns those rows of ``probs``.
    ``X_training`` (the labelled embeddings, or ``None`` for a cold start) and
    ``on_transformed = False`` are what ``modAL.batch.ranked_batch`` reads.
    """

    on_transformed = False

    def __init__(self, probs: np.ndarray | None = None, X_training: np.ndarray | None = None) -> None:
        self.probs = None if probs is None else np.asarray(probs, dtype=np.float64)
        self.X_training = X_training

    def predict_proba(self, X: Any, **_: Any) -> np.ndarray:
        if self.probs is None:
            raise ValueError("this stand-in classifier holds no probabilities")
        idx = np.asarray(X)
        idx = idx.reshape(idx.shape[0], -1)[:, 0].astype(np.intp)
        return self.probs[idx]

    def transform_without_estimating(self, X: Any) -> Any:
        return X


def index_column(n: int) -> np.ndarray:
    """``(n, 1)`` column of row indices 0..n-1: the ``X`` to pass with a :class:`PrecomputedClassifier`."""
    return np.arange(n, dtype=np.intp).reshape(-1, 1)


# ---------------------------------------------------------------- classification scores (modAL.uncertainty)


def classification_uncertainty(probs: np.ndarray) -> np.ndarray:
    """modAL ``classifier_uncertainty``: ``1 - max p`` per row."""
    from modAL.uncertainty import classifier_uncertainty

    clf = PrecomputedClassifier(probs)
    return np.asarray(classifier_uncertainty(clf, index_column(len(clf.probs))), dtype=np.float64)  # type: ignore[arg-type]


def classification_margin(probs: np.ndarray) -> np.ndarray:
    """modAL ``classifier_margin``: ``p_top1 - p_top2`` per row (LOW = informative)."""
    from modAL.uncertainty import classifier_margin

    clf = PrecomputedClassifier(probs)
    return np.asarray(classifier_margin(clf, index_column(len(clf.probs))), dtype=np.float64)  # type: ignore[arg-type]


def classification_entropy(probs: np.ndarray) -> np.ndarray:
    """modAL ``classifier_entropy``: entropy (nats) of each row, rows normalised to sum 1."""
    from modAL.uncertainty import classifier_entropy

    clf = PrecomputedClassifier(probs)
    return np.asarray(classifier_entropy(clf, index_column(len(clf.probs))), dtype=np.float64)  # type: ignore[arg-type]


# ---------------------------------------------------------------- selection


def top_n(scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``min(n, len)`` highest scores, highest first, ties in random order.

    This is modAL's ``shuffled_argmax`` (shuffle, then a stable sort), except
    that the shuffle draws from ``rng`` instead of the global ``np.random``
    state (so equal seeds give equal results, also across threads) and the
    result is in descending order (modAL returns ascending).
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError("scores must be 1-D")
    if np.isnan(values).any():
        raise ValueError("scores contain NaN")
    k = min(int(n), values.shape[0])
    perm = rng.permutation(values.shape[0])
    order = np.argsort(-values[perm], kind="stable")[:k]
    return perm[order]


def _row_means_of_distances(X: np.ndarray, transform: str, metric: str) -> np.ndarray:
    """Mean over j of ``d(x_i, x_j)`` (``transform="distance"``) or ``1/(1+d)`` (``"similarity"``), chunked."""
    from sklearn.metrics import pairwise_distances_chunked

    def reduce(chunk: np.ndarray, _start: int) -> np.ndarray:
        vals = chunk if transform == "distance" else 1.0 / (1.0 + chunk)
        return np.asarray(vals.mean(axis=1))

    return np.concatenate(list(pairwise_distances_chunked(X, X, reduce_func=reduce, metric=metric)))


def information_density(embeddings: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """modAL ``information_density``: mean similarity ``1/(1+d)`` of each row to all rows, in ``(0, 1]``.

    Above :data:`DENSE_LIMIT` rows the same values are computed in chunks.
    """
    X = np.asarray(embeddings)
    if X.shape[0] > DENSE_LIMIT:
        return _row_means_of_distances(X, "similarity", metric)
    from modAL.density import information_density as modal_information_density

    return np.asarray(modal_information_density(X, metric=metric), dtype=np.float64)


RANKED_BATCH_MODAL_LIMIT = 20_000_000
"""Above this many pool-to-known distance evaluations (``pool x (labelled + batch) x batch``),
ranked batch runs an exact incremental version of modAL's loop (modAL recomputes
all distances at every step: about 22 s for a 10k pool, 1k labelled, batch 50, d=384)."""


def _cold_start_index(X: np.ndarray, metric: str) -> int:
    """modAL ``select_cold_start_instance``: the row with the least mean distance to all rows."""
    if X.shape[0] > DENSE_LIMIT:
        return int(np.argmin(_row_means_of_distances(X, "distance", metric)))
    from modAL.batch import select_cold_start_instance

    idx, _ = select_cold_start_instance(X, metric=metric, n_jobs=None)
    return int(idx)


def ranked_batch(
    embeddings: np.ndarray,
    uncertainty: np.ndarray,
    n: int,
    rng: np.random.Generator,
    labelled_embeddings: np.ndarray | None = None,
    metric: str = "euclidean",
) -> np.ndarray:
    """Ranked batch-mode selection (Cardoso et al. 2017) with ``modAL.batch.ranked_batch``.

    Each step takes the row maximising ``alpha * (1 - 1/(1 + d_min)) + (1 - alpha) * u``,
    where ``d_min`` is the distance to the nearest labelled-or-already-chosen
    row, ``u`` the given uncertainty and ``alpha = |unchosen| / (|unchosen| + |labelled and chosen|)``.
    Returns ``min(n, len)`` distinct row indices in modAL's rank order.

    - Ties: modAL takes the first maximum; rows are shuffled with ``rng`` before
      the call (and the indices mapped back), so ties break at random, reproducibly.
    - Large problems (see :data:`RANKED_BATCH_MODAL_LIMIT`) run the same
      algorithm incrementally instead of through modAL (same result up to
      floating-point rounding of the distances).
    - Cold start (no labelled embeddings): modAL's own cold-start branch can
      return its first instance twice (it stays in the pool), so the adapter
      picks that instance itself (modAL's rule: least mean distance to the
      pool), then lets ``ranked_batch`` rank the rest with it as the labelled set.
    """
    X = np.asarray(embeddings)
    u = np.asarray(uncertainty, dtype=np.float64)
    n_pool = X.shape[0]
    if X.ndim != 2 or u.shape != (n_pool,):
        raise ValueError("embeddings must be (n, d) and uncertainty (n,)")
    k = min(int(n), n_pool)
    if k <= 0:
        return np.zeros(0, dtype=np.intp)
    perm = rng.permutation(n_pool)
    Xp, up = X[perm], u[perm]

    labelled = None if labelled_embeddings is None else np.asarray(labelled_embeddings)
    if labelled is not None and labelled.shape[0] == 0:
        labelled = None
    if labelled is not None and (labelled.ndim != 2 or labelled.shape[1] != X.shape[1]):
        raise ValueError("labelled_embeddings must be (m, d) with the pool's d")

    head: list[int] = []
    rest = np.arange(n_pool)
    if labelled is None:
        first = _cold_start_index(Xp, metric)
        head = [first]
        labelled = Xp[[first]]
        rest = np.delete(rest, first)
    k_rest = k - len(head)
    ranked: list[int] = []
    if k_rest > 0:
        labelled = labelled.astype(Xp.dtype, copy=False)
        if len(rest) * (len(labelled) + k_rest) * k_rest <= RANKED_BATCH_MODAL_LIMIT:
            from modAL.batch import ranked_batch as modal_ranked_batch

            idx, _ = modal_ranked_batch(
                PrecomputedClassifier(X_training=labelled),
                unlabeled=Xp[rest],
                uncertainty_scores=up[rest],
                n_instances=k_rest,
                metric=metric,
                n_jobs=None,
            )
        else:
            idx = _ranked_batch_incremental(Xp[rest], up[rest], k_rest, labelled, metric)
        ranked = [int(rest[i]) for i in np.asarray(idx, dtype=np.intp)]
    return perm[np.asarray(head + ranked, dtype=np.intp)]


def _ranked_batch_incremental(X: np.ndarray, u: np.ndarray, k: int, labelled: np.ndarray, metric: str) -> np.ndarray:
    """modAL's ``ranked_batch`` loop with the nearest-known distance updated incrementally.

    Same formula, same alpha, same first-maximum rule as ``modAL.batch.select_instance``;
    modAL recomputes every pool-to-known distance at each step, this keeps the
    running minimum and adds the distances to the newly chosen row only.
    """
    from sklearn.metrics import pairwise_distances, pairwise_distances_argmin_min

    n, m = X.shape[0], labelled.shape[0]
    _, d_min = pairwise_distances_argmin_min(X, labelled, metric=metric)
    d_min = np.asarray(d_min, dtype=np.float64)
    available = np.ones(n, dtype=bool)
    out = np.empty(k, dtype=np.intp)
    for t in range(k):
        alpha = (n - t) / ((n - t) + (m + t))
        cand = np.flatnonzero(available)
        score = alpha * (1 - 1 / (1 + d_min[cand])) + (1 - alpha) * u[cand]
        best = int(cand[int(np.argmax(score))])
        out[t] = best
        available[best] = False
        d_new = pairwise_distances(X, X[[best]], metric=metric)[:, 0]
        np.minimum(d_min, d_new, out=d_min)
    return out
