"""Pool view, the Strategy protocol, the strategies and their registry, cold start.

A strategy is a pure score plus a selector with an explicit ``rng``: it returns
an :class:`~al_loop.types.Selection` whose ``item_ids`` are most informative
first and whose ``scores`` are informativeness (higher = ask first,
non-increasing along the selection). Label Studio serves the *lowest* score
first: convert at the edge with :func:`priority_from_rank`.

Contract shared by every strategy (``tests/core/test_strategies.py``):
``select(pool, n, rng)`` returns exactly ``min(n, len(pool))`` distinct ids of
the pool, in rank order, with non-increasing scores; equal ``rng`` seeds give
equal selections; an empty pool raises :class:`~al_loop.errors.EmptyPoolError`;
``n < 1`` raises :class:`~al_loop.errors.ConfigError`.

Scores by strategy (see :mod:`al_loop.strategies.scores` for formulas):

- ``random``: a uniform random order; scores are rank-derived ``1 - i/k``.
- ``least_confidence``, ``margin``, ``entropy``: single-label classification
  through modAL's ``classifier_uncertainty`` / ``classifier_margin`` (reported
  as ``1 - margin``) / ``classifier_entropy``; multi-label and NER via
  :mod:`~al_loop.strategies.scores` (NER ``margin`` = least certain word,
  NER ``entropy`` = mean word entropy).
- ``mnlp``, ``mean_entropy``, ``max_entropy``: NER only.
- ``ranked_batch``: modAL's ranked batch (uncertainty + diversity over
  embeddings, with the labelled embeddings as the known set); the base
  uncertainty is ``least_confidence``. The order is modAL's; scores are
  rank-derived ``1 - i/k`` because the combined batch score is not monotone
  along the ranking.
- ``information_density``: ``uncertainty x density`` with modAL's
  ``information_density`` (mean ``1/(1+euclidean distance)`` to the pool);
  base uncertainty ``least_confidence``.
- ``badge``: BADGE (Ash et al., ICLR 2020; :mod:`~al_loop.strategies.badge`),
  classification only (single- and multi-label): k-means++ seeding over the
  gradient embeddings ``(p - onehot(argmax p)) ⊗ h`` of a linear head on the
  pool embeddings ``h`` (multi-label: ``p - [p >= 0.5]``), first the largest
  gradient, then D² sampling through ``rng``. Scores are rank-derived ``1 - i/k``.

Near-duplicates: ``make_strategy(name, task, dedupe_threshold=0.95)`` wraps
any strategy in :class:`DedupedStrategy` (:mod:`~al_loop.strategies.dedupe`), which
keeps items whose embeddings have cosine similarity ``>= threshold`` to an item
already in the batch (or to a labelled item) out of the batch, filling from
them only when too few others remain. Off by default (``None`` or 0).

NER items without words always come last (score :data:`~al_loop.strategies.scores.EMPTY_SCORE`
or, for rank-derived scores, after every item with words). Ties break at random
through ``rng``.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from al_loop.errors import ConfigError, EmptyPoolError
from al_loop.strategies import badge, dedupe, modal_adapter, scores
from al_loop.types import ItemId, Selection, TaskKind

logger = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = (
    "random",
    "least_confidence",
    "margin",
    "entropy",
    "ranked_batch",
    "information_density",
    "badge",
    "mnlp",
    "mean_entropy",
    "max_entropy",
)
NER_ONLY: tuple[str, ...] = ("mnlp", "mean_entropy", "max_entropy")
CLASSIFICATION_ONLY: tuple[str, ...] = ("badge",)
EMBEDDING_STRATEGIES: tuple[str, ...] = ("ranked_batch", "information_density", "badge")
RANK_SCORED: tuple[str, ...] = ("random", "ranked_batch", "badge")
"""Strategies whose scores are rank-derived ``(k - i)/k`` (their order is the information)."""
COLD_START_METHODS: tuple[str, ...] = ("random", "diversity")

RngLike = np.random.Generator | int | None


# ---------------------------------------------------------------- pool view


@dataclass(frozen=True, eq=False)
class PoolView:
    """What a strategy may look at: the unlabelled candidates and model outputs, row-aligned.

    Row ``i`` of ``probs`` / ``token_probs`` / ``embeddings`` belongs to
    ``item_ids[i]``. ``probs``: classification ``(n, k)``, softmax rows or,
    with ``multi_label``, independent sigmoids. ``token_probs``: NER, one
    ``(n_words, n_tags)`` array per item (``(0, n_tags)`` for a text without
    words). ``embeddings``: ``(n, d)``. ``labelled_embeddings``: ``(m, d)`` of
    the already labelled items (the known set for ranked batch; ``None`` = cold start).
    ``measures``: precomputed per-item scores by measure name (what :func:`measure_scores` would
    compute; the chunked scorer fills it so a pool need not keep its ``token_probs``) and
    ``nonempty``: the matching :meth:`nonempty_mask`. Shapes are validated here (``ValueError``);
    an empty pool is allowed and is rejected by ``select``.
    """

    item_ids: tuple[ItemId, ...]
    probs: np.ndarray | None = None
    token_probs: Sequence[np.ndarray] | None = None
    embeddings: np.ndarray | None = None
    labelled_embeddings: np.ndarray | None = None
    multi_label: bool = False
    text_embeddings: np.ndarray | None = None
    labelled_text_embeddings: np.ndarray | None = None
    measures: Mapping[str, np.ndarray] | None = None
    nonempty: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids = tuple(self.item_ids)
        object.__setattr__(self, "item_ids", ids)
        n = len(ids)
        if len(set(ids)) != n:
            raise ValueError("PoolView.item_ids holds an id twice")
        if self.probs is not None:
            probs = np.asarray(self.probs, dtype=np.float64)
            if probs.ndim != 2 or probs.shape[0] != n:
                raise ValueError(f"probs must have shape ({n}, k), got {probs.shape}")
            object.__setattr__(self, "probs", probs)
        if self.token_probs is not None:
            if self.multi_label:
                raise ValueError("multi_label applies to classification pools, not token_probs")
            token_probs = tuple(np.asarray(tp) for tp in self.token_probs)
            if len(token_probs) != n:
                raise ValueError(f"token_probs has {len(token_probs)} entries for {n} items")
            object.__setattr__(self, "token_probs", token_probs)
        if self.embeddings is not None:
            emb = np.asarray(self.embeddings)
            if emb.ndim != 2 or emb.shape[0] != n or not np.issubdtype(emb.dtype, np.floating):
                raise ValueError(f"embeddings must be a float array of shape ({n}, d), got {emb.shape} {emb.dtype}")
            object.__setattr__(self, "embeddings", emb)
        if self.labelled_embeddings is not None:
            lab = np.asarray(self.labelled_embeddings)
            if lab.ndim != 2 or (self.embeddings is not None and lab.shape[1] != np.shape(self.embeddings)[1]):
                raise ValueError("labelled_embeddings must have shape (m, d) with the pool embeddings' d")
            object.__setattr__(self, "labelled_embeddings", lab)
        if self.text_embeddings is not None:
            text = np.asarray(self.text_embeddings)
            if text.ndim != 2 or text.shape[0] != n:
                raise ValueError(f"text_embeddings must have shape ({n}, d), got {text.shape}")
            lab_text = self.labelled_text_embeddings
            if lab_text is not None and (np.ndim(lab_text) != 2 or np.shape(lab_text)[1] != text.shape[1]):
                raise ValueError("labelled_text_embeddings must have shape (m, d) with text_embeddings' d")

    def __len__(self) -> int:
        return len(self.item_ids)

    def duplicate_space(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(pool, labelled) embeddings in which near-duplicates are judged: the frozen base-model
        ``text_embeddings`` when given (a fine-tuned model's embeddings crowd each class together),
        else ``embeddings``."""
        if self.text_embeddings is not None:
            return np.asarray(self.text_embeddings), (
                None if self.labelled_text_embeddings is None else np.asarray(self.labelled_text_embeddings)
            )
        return self.embeddings, self.labelled_embeddings

    def nonempty_mask(self) -> np.ndarray:
        """Boolean per item: False for NER items without words (always True without token_probs)."""
        if self.nonempty is not None:
            return np.asarray(self.nonempty, dtype=bool)
        if self.token_probs is None:
            return np.ones(len(self), dtype=bool)
        return np.array([np.size(tp) > 0 for tp in self.token_probs], dtype=bool)


# ---------------------------------------------------------------- protocol and helpers


@runtime_checkable
class Strategy(Protocol):
    """Chooses the next items to label; see the module docstring for the contract.

    ``name`` is the registry name (also ``Selection.strategy``); ``needs_embeddings``
    tells the caller to fill ``PoolView.embeddings`` (and ``labelled_embeddings``).
    """

    @property
    def name(self) -> str: ...

    @property
    def needs_embeddings(self) -> bool: ...

    def select(self, pool: PoolView, n: int, rng: np.random.Generator) -> Selection: ...


def priority_from_rank(rank: int, n: int) -> float:
    """Label Studio priority of the item at 0-based ``rank`` of a batch of ``n``: ``rank / n`` in ``[0, 1)``.

    Label Studio's "Uncertainty sampling" serves the lowest prediction score
    first, so rank 0 (most informative) gets 0.0 and the order is kept.
    """
    if n < 1 or not 0 <= rank < n:
        raise ValueError(f"need 0 <= rank < n, got rank={rank}, n={n}")
    return rank / n


def rank_scores(k: int) -> tuple[float, ...]:
    """Rank-derived informativeness ``(k - i)/k`` for ranks ``0..k-1`` (1.0 first, strictly decreasing, > 0)."""
    return tuple((k - i) / k for i in range(k))


def _check_request(pool: PoolView, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"the number of items to select must be an integer >= 1, got {n!r}")
    if len(pool) == 0:
        raise EmptyPoolError("the pool has no unlabelled item to select from")


def _as_task(task: TaskKind | str) -> TaskKind:
    try:
        return TaskKind(task)
    except ValueError:
        raise ConfigError(f"unknown task {task!r}; expected one of: {', '.join(t.value for t in TaskKind)}") from None


def _selection(pool: PoolView, idx: np.ndarray, values: Sequence[float], name: str) -> Selection:
    return Selection(tuple(pool.item_ids[int(i)] for i in idx), tuple(float(v) for v in values), name)


def measure_scores(pool: PoolView, measure: str, task: TaskKind | str) -> np.ndarray:
    """Informativeness of every pool item under ``measure`` (row order of the pool; higher = more informative).

    Single-label classification goes through modAL (:mod:`~al_loop.strategies.modal_adapter`),
    multi-label and NER through :mod:`~al_loop.strategies.scores`. ``ValueError``
    when the pool lacks the probabilities the task needs.
    """
    task = _as_task(task)
    if pool.measures is not None and measure in pool.measures:
        return np.array(pool.measures[measure], dtype=np.float64)  # a copy: callers may write into it
    if task is TaskKind.NER:
        if pool.token_probs is None:
            raise ValueError("an NER strategy needs pool.token_probs")
        return scores.ner_scores(pool.token_probs, measure)
    if pool.probs is None:
        raise ValueError("a classification strategy needs pool.probs")
    if measure not in scores.CLASSIFICATION_MEASURES:
        raise ValueError(f"measure {measure!r} does not apply to classification")
    if pool.multi_label:
        return scores.MULTILABEL_SCORES[measure](pool.probs)
    probs = scores._as_probs(pool.probs)
    if measure == "least_confidence":
        return modal_adapter.classification_uncertainty(probs)
    if measure == "margin":
        return 1.0 - modal_adapter.classification_margin(probs)
    if probs.shape[0] and (probs.sum(axis=1) <= 0).any():
        raise ValueError("a probability row sums to zero")
    return modal_adapter.classification_entropy(probs)


# ---------------------------------------------------------------- strategies


@dataclass(frozen=True)
class RandomStrategy:
    """A uniform random order (the baseline); scores are rank-derived ``1 - i/k``."""

    name: str = "random"
    needs_embeddings: bool = False

    def select(self, pool: PoolView, n: int, rng: RngLike) -> Selection:
        _check_request(pool, n)
        gen = np.random.default_rng(rng)
        k = min(int(n), len(pool))
        idx = gen.permutation(len(pool))[:k]
        return _selection(pool, idx, rank_scores(k), self.name)


@dataclass(frozen=True)
class UncertaintyStrategy:
    """Top-n by one uncertainty measure (``least_confidence``, ``margin``, ``entropy``, ``mnlp``, ...)."""

    name: str
    task: TaskKind
    measure: str = ""
    needs_embeddings: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", _as_task(self.task))
        if not self.measure:
            object.__setattr__(self, "measure", self.name)

    def scores(self, pool: PoolView) -> np.ndarray:
        """Informativeness of every pool item (pool row order)."""
        return measure_scores(pool, self.measure, self.task)

    def select(self, pool: PoolView, n: int, rng: RngLike) -> Selection:
        _check_request(pool, n)
        values = self.scores(pool)
        idx = modal_adapter.top_n(values, int(n), np.random.default_rng(rng))
        return _selection(pool, idx, values[idx], self.name)


def _require_embeddings(pool: PoolView, name: str) -> np.ndarray:
    if pool.embeddings is None:
        raise ValueError(f"strategy {name!r} needs pool.embeddings")
    return pool.embeddings


@dataclass(frozen=True)
class RankedBatchStrategy:
    """modAL ranked batch: uncertainty (``base`` measure) + diversity against labelled and chosen items.

    Scores are rank-derived ``1 - i/k`` (modAL's order). NER items without words
    are left out of the ranking and appended last (random order).
    """

    task: TaskKind
    base: str = "least_confidence"
    metric: str = "euclidean"
    name: str = "ranked_batch"
    needs_embeddings: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", _as_task(self.task))

    def select(self, pool: PoolView, n: int, rng: RngLike) -> Selection:
        _check_request(pool, n)
        gen = np.random.default_rng(rng)
        emb = _require_embeddings(pool, self.name)
        uncertainty = measure_scores(pool, self.base, self.task)
        k = min(int(n), len(pool))
        valid = np.flatnonzero(pool.nonempty_mask())
        empty = np.flatnonzero(~pool.nonempty_mask())
        chosen = (
            valid[
                modal_adapter.ranked_batch(
                    emb[valid], uncertainty[valid], k, gen, pool.labelled_embeddings, self.metric
                )
            ]
            if len(valid)
            else np.zeros(0, dtype=np.intp)
        )
        if len(chosen) < k:
            chosen = np.concatenate([chosen, gen.permutation(empty)[: k - len(chosen)]])
        return _selection(pool, chosen, rank_scores(k), self.name)


@dataclass(frozen=True)
class InformationDensityStrategy:
    """``uncertainty(base) x density ** beta`` (Settles & Craven 2008), density from modAL over the pool embeddings."""

    task: TaskKind
    base: str = "least_confidence"
    beta: float = 1.0
    metric: str = "euclidean"
    name: str = "information_density"
    needs_embeddings: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", _as_task(self.task))

    def scores(self, pool: PoolView) -> np.ndarray:
        emb = _require_embeddings(pool, self.name)
        uncertainty = measure_scores(pool, self.base, self.task)
        out = uncertainty * modal_adapter.information_density(emb, self.metric) ** self.beta
        out[~pool.nonempty_mask()] = scores.EMPTY_SCORE
        return out

    def select(self, pool: PoolView, n: int, rng: RngLike) -> Selection:
        _check_request(pool, n)
        values = self.scores(pool)
        idx = modal_adapter.top_n(values, int(n), np.random.default_rng(rng))
        return _selection(pool, idx, values[idx], self.name)


@dataclass(frozen=True)
class BadgeStrategy:
    """BADGE (Ash et al., ICLR 2020): k-means++ over gradient embeddings of a linear head; classification only.

    See :mod:`al_loop.strategies.badge`. Single-label pools use the softmax
    gradient ``p - onehot(argmax p)``, multi-label pools the sigmoid one
    ``p - [p >= 0.5]``; the features are ``pool.embeddings``. Labelled items are
    not used (the original algorithm has no known set). Scores are rank-derived.
    """

    task: TaskKind = TaskKind.CLASSIFICATION
    name: str = "badge"
    needs_embeddings: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", _as_task(self.task))
        if self.task is not TaskKind.CLASSIFICATION:
            raise ConfigError(f"strategy {self.name!r} applies to classification only")

    def select(self, pool: PoolView, n: int, rng: RngLike) -> Selection:
        _check_request(pool, n)
        gen = np.random.default_rng(rng)
        emb = _require_embeddings(pool, self.name)
        if pool.probs is None:
            raise ValueError("a classification strategy needs pool.probs")
        factors = badge.gradient_factors(scores._as_probs(pool.probs), pool.multi_label)
        k = min(int(n), len(pool))
        return _selection(pool, badge.kmeans_pp(factors, emb, k, gen), rank_scores(k), self.name)


# ---------------------------------------------------------------- near-duplicate filter


def _rows_of(pool: PoolView, ranking: Selection) -> np.ndarray:
    index = {item_id: i for i, item_id in enumerate(pool.item_ids)}
    try:
        return np.fromiter((index[i] for i in ranking.item_ids), dtype=np.intp, count=len(ranking))
    except KeyError as exc:
        raise ValueError(f"the ranking holds {exc.args[0]!r}, which is not in the pool") from None


def dedupe_selection(
    pool: PoolView,
    ranking: Selection,
    n: int,
    threshold: float | None = dedupe.DEFAULT_DEDUPE_THRESHOLD,
    *,
    against_labelled: bool = True,
) -> Selection:
    """The first ``min(n, len(ranking))`` items of ``ranking`` without near-duplicates among them or of labelled items.

    ``ranking``: items of ``pool`` in rank order with non-increasing scores
    (the strategy's full ranking, or a long enough prefix of it). Near-duplicate
    = cosine similarity of ``pool.embeddings`` ``>= threshold`` to an item kept
    before it or, with ``against_labelled``, to a row of ``pool.labelled_embeddings``.
    Skipped items fill the batch in rank order when too few remain. Scores and
    ``strategy`` are those of ``ranking`` (so they stay non-increasing). With
    ``threshold`` 0/``None`` or without ``pool.embeddings`` this is the plain top ``n``.
    See :mod:`~al_loop.strategies.dedupe`.
    """
    thr = dedupe.check_dedupe_threshold(threshold)
    want = min(int(n), len(ranking))
    space, labelled_space = pool.duplicate_space()
    if thr is None or space is None:
        return Selection(ranking.item_ids[:want], ranking.scores[:want], ranking.strategy)
    rows = _rows_of(pool, ranking)
    labelled = labelled_space if against_labelled else None
    positions = dedupe.fill_positions(dedupe.unique_prefix(space, rows, want, thr, labelled), len(rows), want)
    return Selection(
        tuple(ranking.item_ids[int(p)] for p in positions),
        tuple(ranking.scores[int(p)] for p in positions),
        ranking.strategy,
    )


@dataclass(frozen=True)
class DedupedStrategy:
    """``inner``'s selection with near-duplicates kept out of the batch (see :mod:`~al_loop.strategies.dedupe`).

    ``name`` is the inner strategy's. ``needs_embeddings`` is True so the caller
    fills ``PoolView.embeddings`` (and ``labelled_embeddings``); a pool without
    embeddings is selected by ``inner`` unchanged. Rank-derived scores
    (``random``, ``ranked_batch``, ``badge``) are re-derived for the batch, others
    are the inner strategy's. Without near-duplicates the selection equals
    ``inner``'s for the same ``rng`` (every registered strategy ranks prefix-consistently).
    """

    inner: Strategy
    threshold: float = dedupe.DEFAULT_DEDUPE_THRESHOLD
    against_labelled: bool = True
    needs_embeddings: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        thr = dedupe.check_dedupe_threshold(self.threshold)
        if thr is None:
            raise ConfigError(
                "DedupedStrategy needs a threshold in (0, 1]; select with the inner strategy for no filter"
            )
        object.__setattr__(self, "threshold", thr)

    @property
    def name(self) -> str:
        return self.inner.name

    def select(self, pool: PoolView, n: int, rng: RngLike) -> Selection:
        _check_request(pool, n)
        gen = np.random.default_rng(rng)
        space, labelled_space = pool.duplicate_space()
        if space is None:
            return self.inner.select(pool, n, gen)
        k = min(int(n), len(pool))
        saved = copy.deepcopy(gen)
        size = min(len(pool), k + k // 2 + 8)
        attempt = gen
        labelled = labelled_space if self.against_labelled else None
        while True:
            ranking = self.inner.select(pool, size, attempt)
            rows = _rows_of(pool, ranking)
            kept = dedupe.unique_prefix(space, rows, k, self.threshold, labelled)
            if len(kept) >= k or size >= len(pool):
                break
            size = min(len(pool), 4 * size)
            attempt = copy.deepcopy(saved)
        positions = dedupe.fill_positions(kept, len(rows), k)
        ids = tuple(ranking.item_ids[int(p)] for p in positions)
        if self.inner.name in RANK_SCORED:
            return Selection(ids, rank_scores(k), ranking.strategy)
        return Selection(ids, tuple(ranking.scores[int(p)] for p in positions), ranking.strategy)


# ---------------------------------------------------------------- registry


def strategies_for(task: TaskKind | str) -> tuple[str, ...]:
    """The strategy names that apply to ``task``, in :data:`STRATEGIES` order."""
    task = _as_task(task)
    excluded = CLASSIFICATION_ONLY if task is TaskKind.NER else NER_ONLY
    return tuple(s for s in STRATEGIES if s not in excluded)


def make_strategy(name: str, task: TaskKind | str, *, dedupe_threshold: float | None = None) -> Strategy:
    """The strategy called ``name`` for ``task``.

    :class:`~al_loop.errors.ConfigError` for an unknown name or one that does
    not apply to the task (``mnlp``, ``mean_entropy``, ``max_entropy`` are NER
    only, ``badge`` is classification only); the message lists the valid names.

    ``dedupe_threshold``: a cosine similarity in ``(0, 1]`` wraps the strategy in
    :class:`DedupedStrategy` (near-duplicates kept
    out of a batch; ``needs_embeddings`` becomes True, a pool without embeddings
    is selected as without the filter); ``None`` or 0 (the default) = off.
    """
    threshold = dedupe.check_dedupe_threshold(dedupe_threshold)
    strategy = _make_plain_strategy(name, task)
    return strategy if threshold is None else DedupedStrategy(strategy, threshold)


def _make_plain_strategy(name: str, task: TaskKind | str) -> Strategy:
    kind = _as_task(task)
    valid = strategies_for(kind)
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of: {', '.join(valid)}")
    if name not in valid:
        raise ConfigError(f"strategy {name!r} does not apply to {kind.value}; choose one of: {', '.join(valid)}")
    if name == "random":
        return RandomStrategy()
    if name == "ranked_batch":
        return RankedBatchStrategy(kind)
    if name == "information_density":
        return InformationDensityStrategy(kind)
    if name == "badge":
        return BadgeStrategy(kind)
    return UncertaintyStrategy(name, kind)


# ---------------------------------------------------------------- cold start


def cold_start(pool: PoolView, n: int, rng: RngLike, method: str = "random") -> Selection:
    """First batch, before any model: ``"random"`` or ``"diversity"``.

    ``"diversity"`` runs scikit-learn k-means with ``min(n, len(pool))``
    clusters on ``pool.embeddings`` (seeded from ``rng``) and takes, for each
    centroid, the nearest item not taken yet; clusters are ranked largest first
    (ties at random). Without embeddings it falls back to ``"random"`` (logged
    as a warning; the selection's ``strategy`` then says ``"random"``). Scores
    are rank-derived ``1 - i/k``. ``strategy`` of the result is the method used.
    """
    if method not in COLD_START_METHODS:
        raise ConfigError(f"unknown cold-start method {method!r}; choose one of: {', '.join(COLD_START_METHODS)}")
    _check_request(pool, n)
    gen = np.random.default_rng(rng)
    if method == "random" or pool.embeddings is None:
        if method == "diversity":
            logger.warning("diversity cold start needs embeddings; falling back to random selection")
        return RandomStrategy().select(pool, n, gen)
    k = min(int(n), len(pool))
    if k == len(pool):
        return _selection(pool, gen.permutation(k), rank_scores(k), "diversity")

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    X = np.asarray(pool.embeddings, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than clusters
        km = KMeans(n_clusters=k, n_init=1, random_state=int(gen.integers(2**31 - 1))).fit(X)
    sizes = np.bincount(km.labels_, minlength=k)
    cluster_order = modal_adapter.top_n(sizes.astype(np.float64), k, gen)
    dist = _squared_distances(X, km.cluster_centers_[cluster_order])  # (items, clusters in rank order)
    taken = np.zeros(len(pool), dtype=bool)
    picked: list[int] = []
    for c in range(k):
        d = np.where(taken, np.inf, dist[:, c])
        i = int(np.argmin(d))
        taken[i] = True
        picked.append(i)
    return _selection(pool, np.asarray(picked), rank_scores(k), "diversity")


def _squared_distances(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    x2 = (X**2).sum(axis=1)[:, None]
    c2 = (C**2).sum(axis=1)[None, :]
    return np.maximum(x2 + c2 - 2.0 * X @ C.T, 0.0)
