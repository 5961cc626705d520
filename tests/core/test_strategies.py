"""Strategies: the shared contract test over every strategy x task, plus score and adapter unit tests.

No model is loaded: pools are synthetic probabilities and embeddings.
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from al_loop.errors import ConfigError, EmptyPoolError
from al_loop.strategies import (
    CLASSIFICATION_ONLY,
    EMBEDDING_STRATEGIES,
    EMPTY_SCORE,
    NER_ONLY,
    STRATEGIES,
    PoolView,
    Strategy,
    cold_start,
    make_strategy,
    modal_adapter,
    priority_from_rank,
    scores,
    strategies_for,
)
from al_loop.types import ItemId, Selection, TaskKind

REPO = Path(__file__).resolve().parents[2]

# "kind" = task plus label mode: single-label classification, multi-label classification, NER
KINDS = {"single": TaskKind.CLASSIFICATION, "multi": TaskKind.CLASSIFICATION, "ner": TaskKind.NER}
CASES = [(name, kind) for kind, task in KINDS.items() for name in strategies_for(task)]
CASE_IDS = [f"{name}-{kind}" for name, kind in CASES]
N_CLASSES, N_TAGS, DIM = 4, 5, 8


def ids(n: int) -> tuple[ItemId, ...]:
    return tuple(ItemId(f"item-{i}") for i in range(n))


def make_pool(kind: str, n: int, seed: int = 0, *, embeddings: bool = True, labelled: bool = True) -> PoolView:
    """A random pool; NER pools include items with zero words."""
    rng = np.random.default_rng(seed)
    probs = token_probs = None
    if kind == "single":
        probs = rng.dirichlet(np.ones(N_CLASSES) * 0.5, size=n)
    elif kind == "multi":
        probs = rng.random((n, N_CLASSES))
    else:
        token_probs = [rng.dirichlet(np.ones(N_TAGS) * 0.5, size=int(rng.integers(0, 7))) for _ in range(n)]
        token_probs = [tp if len(tp) else np.zeros((0, N_TAGS)) for tp in token_probs]
    emb = rng.normal(size=(n, DIM)).astype(np.float32) if embeddings else None
    lab = rng.normal(size=(6, DIM)).astype(np.float32) if (embeddings and labelled) else None
    return PoolView(ids(n), probs, token_probs, emb, lab, multi_label=kind == "multi")


def empty_pool(kind: str) -> PoolView:
    if kind == "ner":
        return PoolView((), token_probs=(), embeddings=np.zeros((0, DIM)), labelled_embeddings=np.zeros((2, DIM)))
    return PoolView((), probs=np.zeros((0, N_CLASSES)), embeddings=np.zeros((0, DIM)), multi_label=kind == "multi")


def check_selection(sel: Selection, pool: PoolView, n: int, name: str) -> None:
    assert isinstance(sel, Selection)
    assert sel.strategy == name
    assert len(sel.item_ids) == min(n, len(pool))
    assert len(set(sel.item_ids)) == len(sel.item_ids)
    assert set(sel.item_ids) <= set(pool.item_ids)
    assert all(isinstance(s, float) and math.isfinite(s) for s in sel.scores)
    assert all(a >= b for a, b in zip(sel.scores, sel.scores[1:])), sel.scores


# ============================================================ shared contract test


@pytest.mark.parametrize(("name", "kind"), CASES, ids=CASE_IDS)
class TestStrategyContract:
    @pytest.mark.parametrize("n", [1, 5, 30, 100])
    def test_returns_min_n_distinct_pool_ids_in_rank_order(self, name: str, kind: str, n: int) -> None:
        pool = make_pool(kind, 30)
        strategy = make_strategy(name, KINDS[kind])
        check_selection(strategy.select(pool, n, np.random.default_rng(3)), pool, n, name)

    def test_deterministic_for_equal_seeds(self, name: str, kind: str) -> None:
        pool = make_pool(kind, 40, seed=1)
        strategy = make_strategy(name, KINDS[kind])
        a = strategy.select(pool, 10, np.random.default_rng(11))
        b = strategy.select(pool, 10, np.random.default_rng(11))
        assert a == b

    def test_empty_pool_raises(self, name: str, kind: str) -> None:
        with pytest.raises(EmptyPoolError):
            make_strategy(name, KINDS[kind]).select(empty_pool(kind), 3, np.random.default_rng(0))

    @pytest.mark.parametrize("n", [0, -2])
    def test_n_below_one_raises(self, name: str, kind: str, n: int) -> None:
        with pytest.raises(ConfigError):
            make_strategy(name, KINDS[kind]).select(make_pool(kind, 5), n, np.random.default_rng(0))

    def test_pool_of_one(self, name: str, kind: str) -> None:
        pool = make_pool(kind, 1, seed=2)
        sel = make_strategy(name, KINDS[kind]).select(pool, 5, np.random.default_rng(0))
        check_selection(sel, pool, 5, name)
        assert sel.item_ids == pool.item_ids

    def test_protocol_and_embedding_needs(self, name: str, kind: str) -> None:
        strategy = make_strategy(name, KINDS[kind])
        assert isinstance(strategy, Strategy)
        assert strategy.name == name
        assert strategy.needs_embeddings == (name in EMBEDDING_STRATEGIES)
        pool = make_pool(kind, 12, embeddings=False)
        if strategy.needs_embeddings:
            with pytest.raises(ValueError, match="embeddings"):
                strategy.select(pool, 3, np.random.default_rng(0))
        else:
            check_selection(strategy.select(pool, 3, np.random.default_rng(0)), pool, 3, name)

    def test_without_labelled_embeddings(self, name: str, kind: str) -> None:
        pool = make_pool(kind, 25, seed=4, labelled=False)
        strategy = make_strategy(name, KINDS[kind])
        check_selection(strategy.select(pool, 8, np.random.default_rng(5)), pool, 8, name)
        check_selection(strategy.select(pool, 25, np.random.default_rng(5)), pool, 25, name)

    def test_uncertain_item_first(self, name: str, kind: str) -> None:
        """The uniform-probability item beats confident ones (all embeddings equal, so diversity cannot decide);
        ``random`` ignores uncertainty, so it must not always put that item first."""
        n = 12
        firsts: list[bool] = []
        for seed in range(4 if name != "random" else 40):
            rng = np.random.default_rng(seed)
            target = int(rng.integers(n))
            probs: np.ndarray | None = None
            token_probs: list[np.ndarray] | None = None
            if kind == "single":
                probs = np.full((n, N_CLASSES), 0.02 / (N_CLASSES - 1))
                probs[np.arange(n), rng.integers(0, N_CLASSES, n)] = 0.98
                probs[target] = 1.0 / N_CLASSES
            elif kind == "multi":
                multi = np.where(rng.random((n, N_CLASSES)) < 0.5, 0.03, 0.97)
                multi[target] = 0.5
                probs = multi
            else:
                token_probs = []
                for i in range(n):
                    words = np.full((4, N_TAGS), 0.01 / (N_TAGS - 1))
                    words[np.arange(4), rng.integers(0, N_TAGS, 4)] = 0.99
                    token_probs.append(np.full((4, N_TAGS), 1.0 / N_TAGS) if i == target else words)
            emb = np.ones((n, DIM), dtype=np.float32)
            pool = PoolView(ids(n), probs, token_probs, emb, np.zeros((3, DIM)), multi_label=kind == "multi")
            sel = make_strategy(name, KINDS[kind]).select(pool, 3, rng)
            firsts.append(sel.item_ids[0] == pool.item_ids[target])
            if name != "random":
                assert firsts[-1], (seed, sel)
        if name == "random":
            assert not all(firsts), "random put the uncertain item first 40 times out of 40"


# ============================================================ strategy-specific behaviour


@pytest.mark.parametrize("name", [s for s in strategies_for(TaskKind.NER) if s != "random"])
def test_ner_items_without_words_come_last(name: str) -> None:
    pool = make_pool("ner", 30, seed=7)
    empty = {pool.item_ids[i] for i in np.flatnonzero(~pool.nonempty_mask())}
    assert 0 < len(empty) < 30
    sel = make_strategy(name, TaskKind.NER).select(pool, 30, np.random.default_rng(0))
    assert set(sel.item_ids[-len(empty) :]) == empty


def test_ner_all_items_empty() -> None:
    pool = PoolView(ids(4), token_probs=[np.zeros((0, N_TAGS))] * 4, embeddings=np.eye(4, DIM))
    for name in strategies_for(TaskKind.NER):
        check_selection(make_strategy(name, TaskKind.NER).select(pool, 3, np.random.default_rng(0)), pool, 3, name)


@pytest.mark.parametrize("kind", list(KINDS))
def test_ranked_batch_prefers_diversity_over_a_duplicate(kind: str) -> None:
    """A and A2 share an embedding and are most uncertain; B is distinct and nearly as uncertain: B comes second."""
    emb = np.array([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.1, 0.0], [0.0, 0.1]])
    labelled = np.zeros((1, 2))
    if kind == "single":
        probs, tp = np.array([[0.5, 0.5], [0.5, 0.5], [0.55, 0.45], [0.99, 0.01], [0.99, 0.01]]), None
    elif kind == "multi":
        probs, tp = np.array([[0.5], [0.5], [0.55], [0.99], [0.01]]), None
    else:
        unc, sure, nearly = np.full((3, 3), 1 / 3), np.array([[0.98, 0.01, 0.01]] * 3), np.full((3, 3), 1 / 3)
        nearly[:, 0] += 0.02
        nearly[:, 1:] -= 0.01
        probs, tp = None, [unc, unc, nearly, sure, sure]
    pool = PoolView(ids(5), probs, tp, emb, labelled, multi_label=kind == "multi")
    for seed in range(5):
        sel = make_strategy("ranked_batch", KINDS[kind]).select(pool, 2, np.random.default_rng(seed))
        assert set(sel.item_ids) != {"item-0", "item-1"}
        assert sel.item_ids[1] == "item-2"


def _reference_ranked_batch(X: np.ndarray, u: np.ndarray, labelled: np.ndarray, n: int) -> list[int]:
    """Cardoso et al. ranked batch written out plainly (no ties in the test data)."""
    known = [row for row in labelled]
    available = list(range(len(X)))
    out: list[int] = []
    for _ in range(min(n, len(X))):
        alpha = len(available) / (len(available) + len(known))
        d = np.array([min(np.linalg.norm(X[i] - k) for k in known) for i in available])
        score = alpha * (1 - 1 / (1 + d)) + (1 - alpha) * u[available]
        best = available[int(np.argmax(score))]
        out.append(best)
        available.remove(best)
        known.append(X[best])
    return out


@pytest.mark.parametrize("seed", range(3))
def test_ranked_batch_matches_reference_algorithm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    X, u, lab = rng.normal(size=(40, 3)), rng.random(40), rng.normal(size=(5, 3))
    got = modal_adapter.ranked_batch(X, u, 12, np.random.default_rng(99), lab)
    assert got.tolist() == _reference_ranked_batch(X, u, lab, 12)


@pytest.mark.parametrize("labelled", [True, False])
def test_ranked_batch_incremental_path_matches_modal(monkeypatch: pytest.MonkeyPatch, labelled: bool) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    u, lab = rng.random(60), (rng.normal(size=(7, 5)).astype(np.float32) if labelled else None)
    via_modal = modal_adapter.ranked_batch(X, u, 20, np.random.default_rng(8), lab)
    monkeypatch.setattr(modal_adapter, "RANKED_BATCH_MODAL_LIMIT", 0)
    assert modal_adapter.ranked_batch(X, u, 20, np.random.default_rng(8), lab).tolist() == via_modal.tolist()


def test_ranked_batch_cold_start_takes_most_central_first_and_never_repeats() -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(10, 2)), [[0.0, 0.0]], [[0.0, 0.0]]])
    u = np.ones(12)
    central = int(np.argmin(np.linalg.norm(X[:, None] - X[None], axis=2).mean(axis=1)))
    got = modal_adapter.ranked_batch(X, u, 12, np.random.default_rng(1))
    assert sorted(got.tolist()) == list(range(12))
    assert got[0] in (10, 11) and central in (10, 11)
    # modAL's own cold-start branch would return its first instance twice here:
    # the adapter picks it itself, so two identical items are never both first
    assert set(got[:2].tolist()) != {10, 11}


def test_ranked_batch_cold_start_chunked_path_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    X, u = rng.normal(size=(30, 4)), rng.random(30)
    dense = modal_adapter.ranked_batch(X, u, 6, np.random.default_rng(3))
    monkeypatch.setattr(modal_adapter, "DENSE_LIMIT", 0)
    assert modal_adapter.ranked_batch(X, u, 6, np.random.default_rng(3)).tolist() == dense.tolist()


def test_information_density_chunked_path_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    X = np.random.default_rng(0).normal(size=(50, 6))
    dense = modal_adapter.information_density(X)
    monkeypatch.setattr(modal_adapter, "DENSE_LIMIT", 0)
    np.testing.assert_allclose(modal_adapter.information_density(X), dense, rtol=1e-9)
    assert np.all((dense > 0) & (dense <= 1))


def test_information_density_prefers_dense_region_at_equal_uncertainty() -> None:
    emb = np.vstack([np.zeros((5, 2)), [[0.1, 0.0]], [[50.0, 50.0]]])
    probs = np.full((7, 2), 0.5)
    pool = PoolView(ids(7), probs=probs, embeddings=emb)
    sel = make_strategy("information_density", TaskKind.CLASSIFICATION).select(pool, 7, np.random.default_rng(0))
    assert sel.item_ids[-1] == "item-6"


def _badge_pool(seed: int) -> tuple[PoolView, np.ndarray, np.ndarray]:
    """4 well separated clusters of 20; half of each cluster uncertain, half confident (p = 0.999).

    Cluster 0 holds the most uncertain items (uniform probabilities), so a pure
    uncertainty ranking takes its whole batch from cluster 0.
    """
    rng = np.random.default_rng(seed)
    n_clusters, per, d = 4, 20, 16
    emb = np.vstack([10.0 * np.eye(d)[c] + rng.normal(scale=0.3, size=(per, d)) for c in range(n_clusters)])
    cluster = np.repeat(np.arange(n_clusters), per)
    probs = np.full((len(emb), N_CLASSES), 0.001 / (N_CLASSES - 1))
    probs[np.arange(len(emb)), rng.integers(0, N_CLASSES, len(emb))] = 0.999
    uncertain = np.zeros(len(emb), dtype=bool)
    for c in range(n_clusters):
        rows = np.flatnonzero(cluster == c)[: per // 2]
        uncertain[rows] = True
        if c == 0:
            probs[rows] = 1.0 / N_CLASSES
        else:
            top = np.eye(N_CLASSES)[rng.integers(0, N_CLASSES, len(rows))]
            probs[rows] = 0.5 * rng.dirichlet(np.ones(N_CLASSES) * 2, size=len(rows)) + 0.5 * top
    return PoolView(ids(len(emb)), probs=probs, embeddings=emb.astype(np.float32)), cluster, uncertain


@pytest.mark.parametrize("seed", range(6))
def test_badge_is_diverse_and_prefers_uncertain_items(seed: int) -> None:
    pool, cluster, uncertain = _badge_pool(seed)
    row = {item_id: i for i, item_id in enumerate(pool.item_ids)}
    sel = make_strategy("badge", TaskKind.CLASSIFICATION).select(pool, 8, np.random.default_rng(seed))
    check_selection(sel, pool, 8, "badge")
    picked = np.array([row[i] for i in sel.item_ids])
    assert cluster[picked[0]] == 0 and uncertain[picked[0]]  # the largest gradient comes first
    assert len(set(cluster[picked].tolist())) >= 3, cluster[picked]
    assert uncertain[picked].sum() >= 7, uncertain[picked]  # confident items collapse near 0: at most one
    # the pool is built so that either property alone fails: uncertainty ranks cluster 0 only
    margin = make_strategy("margin", TaskKind.CLASSIFICATION).select(pool, 8, np.random.default_rng(seed))
    assert {int(cluster[row[i]]) for i in margin.item_ids} == {0}


def test_badge_multilabel_prefers_undecided_labels_and_is_diverse() -> None:
    pool, cluster, uncertain = _badge_pool(0)
    assert pool.probs is not None and pool.embeddings is not None
    multi = np.where(pool.probs > 0.5, 0.995, 0.005)
    multi[uncertain] = np.random.default_rng(1).uniform(0.35, 0.65, size=(int(uncertain.sum()), N_CLASSES))
    multi[uncertain & (cluster == 0)] = 0.5  # the largest gradients, all in cluster 0
    mpool = PoolView(pool.item_ids, probs=multi, embeddings=pool.embeddings, multi_label=True)
    row = {item_id: i for i, item_id in enumerate(pool.item_ids)}
    for seed in range(4):
        sel = make_strategy("badge", TaskKind.CLASSIFICATION).select(mpool, 8, np.random.default_rng(seed))
        picked = np.array([row[i] for i in sel.item_ids])
        assert uncertain[picked].sum() >= 7 and len(set(cluster[picked].tolist())) >= 3, (seed, picked)


def test_badge_gradient_factors() -> None:
    from al_loop.strategies import badge

    np.testing.assert_allclose(
        badge.gradient_factors(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])), [[-0.3, 0.2, 0.1], [0.1, 0.1, -0.2]]
    )
    np.testing.assert_allclose(badge.gradient_factors(np.array([[0.8, 0.3]]), multi_label=True), [[-0.2, 0.3]])


def _reference_kmeans_pp(G: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """k-means++ over explicit gradient embeddings, with the same draws as the factorised version."""
    norm2 = (G**2).sum(axis=1)
    out = [int(modal_adapter.top_n(norm2, 1, rng)[0])]
    while len(out) < n:
        d2 = np.min(((G[:, None, :] - G[None, out, :]) ** 2).sum(axis=2), axis=1)
        d2[out] = 0.0
        cumulative = np.cumsum(d2)
        out.append(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_badge_factorised_distances_match_explicit_gradient_embeddings(seed: int) -> None:
    from al_loop.strategies import badge

    rng = np.random.default_rng(seed)
    probs, h = rng.dirichlet(np.ones(5), size=60), rng.normal(size=(60, 7))
    a = badge.gradient_factors(probs)
    G = (a[:, :, None] * h[:, None, :]).reshape(60, -1)  # g_i = a_i (outer) h_i, flattened
    got = badge.kmeans_pp(a, h, 15, np.random.default_rng(100 + seed))
    assert got.tolist() == _reference_kmeans_pp(G, 15, np.random.default_rng(100 + seed))
    assert len(set(got.tolist())) == 15


def test_badge_deterministic_for_a_seed_and_random_across_seeds() -> None:
    pool, _, _ = _badge_pool(3)
    strategy = make_strategy("badge", TaskKind.CLASSIFICATION)
    a = strategy.select(pool, 10, np.random.default_rng(7))
    assert a == strategy.select(pool, 10, np.random.default_rng(7))
    assert len({strategy.select(pool, 10, np.random.default_rng(s)).item_ids for s in range(5)}) > 1
    # exact duplicates everywhere: D² is 0 for all, the rest is uniform and still distinct
    dup = PoolView(ids(6), probs=np.full((6, 3), 1 / 3), embeddings=np.ones((6, 4)))
    check_selection(strategy.select(dup, 6, np.random.default_rng(0)), dup, 6, "badge")


def test_badge_is_classification_only() -> None:
    from al_loop.strategies import BadgeStrategy

    with pytest.raises(ConfigError):
        BadgeStrategy(TaskKind.NER)
    with pytest.raises(ValueError, match="probs"):
        BadgeStrategy().select(PoolView(ids(2), embeddings=np.ones((2, 3))), 1, 0)


# ============================================================ selection, tie-breaking


def test_top_n_descending_with_random_reproducible_tie_break() -> None:
    values = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    got = modal_adapter.top_n(values, 3, np.random.default_rng(0))
    assert set(got[:2].tolist()) == {1, 3} and got[2] == 2
    flat = np.zeros(50)
    orders = {tuple(modal_adapter.top_n(flat, 50, np.random.default_rng(s)).tolist()) for s in range(5)}
    assert len(orders) == 5
    assert modal_adapter.top_n(flat, 50, np.random.default_rng(4)).tolist() == list(
        modal_adapter.top_n(flat, 50, np.random.default_rng(4))
    )
    with pytest.raises(ValueError, match="NaN"):
        modal_adapter.top_n(np.array([np.nan, 1.0]), 1, np.random.default_rng(0))


def test_strategy_uses_only_the_given_rng() -> None:
    pool = PoolView(ids(30), probs=np.full((30, 3), 1 / 3))
    strategy = make_strategy("least_confidence", TaskKind.CLASSIFICATION)
    np.random.seed(0)
    a = strategy.select(pool, 10, np.random.default_rng(5))
    np.random.seed(1)
    b = strategy.select(pool, 10, np.random.default_rng(5))
    assert a == b
    assert strategy.select(pool, 10, np.random.default_rng(6)) != a


# ============================================================ scores


def test_classification_scores_numpy_match_modal() -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=20)
    np.testing.assert_allclose(modal_adapter.classification_uncertainty(probs), scores.least_confidence(probs))
    np.testing.assert_allclose(1 - modal_adapter.classification_margin(probs), scores.margin(probs))
    np.testing.assert_allclose(modal_adapter.classification_entropy(probs), scores.entropy(probs))


def test_classification_score_values() -> None:
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.7, 0.3]])
    np.testing.assert_allclose(scores.least_confidence(probs), [0.5, 0.0, 0.3])
    np.testing.assert_allclose(scores.margin(probs), [1.0, 0.0, 0.6])
    np.testing.assert_allclose(scores.entropy(probs), [math.log(2), 0.0, -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))])


def test_multilabel_scores() -> None:
    probs = np.array([[0.5, 0.99], [0.9, 0.2], [0.0, 1.0]])
    np.testing.assert_allclose(scores.multilabel_least_confidence(probs), [0.5, 0.2, 0.0])
    np.testing.assert_allclose(scores.multilabel_margin(probs), [1.0, 0.4, 0.0])
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    np.testing.assert_allclose(
        scores.multilabel_entropy(probs), [(math.log(2) + h(0.99)) / 2, (h(0.9) + h(0.2)) / 2, 0]
    )


def test_ner_scores_values() -> None:
    a = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1]])
    b = np.full((3, 3), 1 / 3)
    empty = np.zeros((0, 3))
    tp = [a, empty, b]
    np.testing.assert_allclose(scores.ner_least_confidence(tp), [1 - 0.9 * 0.6, EMPTY_SCORE, 1 - (1 / 3) ** 3])
    np.testing.assert_allclose(
        scores.ner_mnlp(tp), [-(math.log(0.9) + math.log(0.6)) / 2, EMPTY_SCORE, math.log(3)], rtol=1e-12
    )
    ent = [-sum(p * math.log(p) for p in row) for row in a]
    np.testing.assert_allclose(scores.ner_mean_entropy(tp), [sum(ent) / 2, EMPTY_SCORE, math.log(3)])
    np.testing.assert_allclose(scores.ner_max_entropy(tp), [max(ent), EMPTY_SCORE, math.log(3)])
    np.testing.assert_allclose(scores.ner_margin(tp), [1 - 0.3, EMPTY_SCORE, 1.0])
    np.testing.assert_allclose(scores.ner_scores(tp, "entropy"), scores.ner_mean_entropy(tp))


def test_ner_least_confidence_is_stable_for_long_texts() -> None:
    long = np.tile([[0.999, 0.0005, 0.0005]], (5000, 1))
    tiny = np.tile([[0.4, 0.3, 0.3]], (2000, 1))  # product underflows to 0 in linear space
    got = scores.ner_least_confidence([long, tiny])
    np.testing.assert_allclose(got[0], 1 - 0.999**5000, rtol=1e-9)
    assert got[1] == 1.0
    np.testing.assert_allclose(scores.ner_mnlp([tiny]), [-math.log(0.4)])


def test_ner_scores_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        scores.ner_scores([np.ones((2, 3)) / 3, np.ones((2, 4)) / 4], "mnlp")
    with pytest.raises(ValueError):
        scores.ner_scores([np.ones(3)], "mnlp")
    with pytest.raises(ValueError):
        scores.ner_scores([np.ones((1, 3)) / 3], "nope")
    with pytest.raises(ValueError):
        scores.least_confidence(np.array([[np.nan, 1.0]]))


def test_scores_are_informativeness_higher_is_more_uncertain() -> None:
    sure, unsure = np.array([[0.97, 0.01, 0.01, 0.01]]), np.array([[0.25] * 4])
    for fn in (scores.least_confidence, scores.margin, scores.entropy):
        assert fn(unsure)[0] > fn(sure)[0]
    for measure in scores.NER_MEASURES:
        s = scores.ner_scores([sure, unsure, np.zeros((0, 4))], measure)
        assert s[1] > s[0] > s[2] == EMPTY_SCORE


# ============================================================ registry, priorities


def test_registry_names() -> None:
    assert STRATEGIES == (
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
    assert CLASSIFICATION_ONLY == ("badge",)
    assert strategies_for("ner") == tuple(s for s in STRATEGIES if s != "badge")
    assert set(strategies_for(TaskKind.CLASSIFICATION)) == set(STRATEGIES) - set(NER_ONLY)
    assert "badge" in EMBEDDING_STRATEGIES


def test_make_strategy_errors() -> None:
    with pytest.raises(ConfigError, match="least_confidence"):
        make_strategy("bald", TaskKind.CLASSIFICATION)
    for name in NER_ONLY:
        with pytest.raises(ConfigError, match="does not apply"):
            make_strategy(name, TaskKind.CLASSIFICATION)
    with pytest.raises(ConfigError, match="does not apply to ner"):
        make_strategy("badge", TaskKind.NER)
    with pytest.raises(ConfigError):
        make_strategy("random", "images")
    assert make_strategy("mnlp", "ner").name == "mnlp"


def test_priority_from_rank() -> None:
    assert priority_from_rank(0, 5) == 0.0
    values = [priority_from_rank(r, 5) for r in range(5)]
    assert values == sorted(values) and len(set(values)) == 5
    assert all(0.0 <= v < 1.0 for v in values)
    for bad in [(5, 5), (-1, 5), (0, 0)]:
        with pytest.raises(ValueError):
            priority_from_rank(*bad)


# ============================================================ cold start


def test_cold_start_random() -> None:
    pool = make_pool("single", 20)
    a = cold_start(pool, 5, np.random.default_rng(0))
    check_selection(a, pool, 5, "random")
    assert a == cold_start(pool, 5, np.random.default_rng(0), "random")
    check_selection(cold_start(pool, 50, 1), pool, 50, "random")


def test_cold_start_diversity_covers_clusters() -> None:
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], dtype=float)
    sizes = [12, 9, 6, 3]
    emb = np.vstack([c + rng.normal(scale=0.5, size=(s, 2)) for c, s in zip(centers, sizes)])
    cluster = np.repeat(np.arange(4), sizes)
    pool = PoolView(ids(len(emb)), embeddings=emb)
    sel = cold_start(pool, 4, np.random.default_rng(1), "diversity")
    check_selection(sel, pool, 4, "diversity")
    picked = [cluster[pool.item_ids.index(i)] for i in sel.item_ids]
    assert picked == [0, 1, 2, 3]  # one per cluster, largest cluster first
    assert sel == cold_start(pool, 4, np.random.default_rng(1), "diversity")


def test_cold_start_diversity_with_duplicates_and_edge_sizes() -> None:
    pool = PoolView(ids(6), embeddings=np.zeros((6, 3)))
    check_selection(cold_start(pool, 4, 0, "diversity"), pool, 4, "diversity")
    check_selection(cold_start(pool, 9, 0, "diversity"), pool, 9, "diversity")
    one = PoolView(ids(1), embeddings=np.zeros((1, 3)))
    assert cold_start(one, 3, 0, "diversity").item_ids == one.item_ids


def test_cold_start_diversity_falls_back_to_random(caplog: pytest.LogCaptureFixture) -> None:
    pool = make_pool("ner", 10, embeddings=False)
    sel = cold_start(pool, 3, np.random.default_rng(0), "diversity")
    check_selection(sel, pool, 3, "random")
    assert "falling back to random" in caplog.text


def test_cold_start_errors() -> None:
    with pytest.raises(ConfigError):
        cold_start(make_pool("single", 5), 2, 0, "kmeans++")
    with pytest.raises(ConfigError):
        cold_start(make_pool("single", 5), 0, 0)
    with pytest.raises(EmptyPoolError):
        cold_start(empty_pool("single"), 2, 0, "diversity")


# ============================================================ pool view validation


def test_pool_view_validation() -> None:
    with pytest.raises(ValueError, match="twice"):
        PoolView((ItemId("a"), ItemId("a")))
    with pytest.raises(ValueError):
        PoolView(ids(3), probs=np.ones((2, 2)) / 2)
    with pytest.raises(ValueError):
        PoolView(ids(3), token_probs=[np.ones((1, 3))])
    with pytest.raises(ValueError):
        PoolView(ids(2), embeddings=np.ones((2, 3)), labelled_embeddings=np.ones((1, 4)))
    with pytest.raises(ValueError):
        PoolView(ids(1), token_probs=[np.ones((1, 3))], multi_label=True)
    pool = PoolView([ItemId("x")], probs=[[0.2, 0.8]])  # type: ignore[arg-type]
    assert pool.item_ids == ("x",) and isinstance(pool.probs, np.ndarray) and len(pool) == 1


def test_missing_probabilities_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="token_probs"):
        make_strategy("mnlp", TaskKind.NER).select(PoolView(ids(2), probs=np.ones((2, 2)) / 2), 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probs"):
        make_strategy("entropy", TaskKind.CLASSIFICATION).select(PoolView(ids(2)), 1, 0)  # type: ignore[arg-type]


# ============================================================ import hygiene


def test_import_is_light_and_torch_free() -> None:
    code = (
        "import sys, al_loop.strategies\n"
        "bad = [m for m in ('torch', 'modAL', 'sklearn', 'pandas') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_adapter_imports_modal_and_strategies_never_import_torch() -> None:
    adapter = REPO / "al_loop" / "strategies" / "modal_adapter.py"
    for path in (REPO / "al_loop").rglob("*.py"):
        mods = _imported_modules(path)
        if path != adapter:
            assert "modAL" not in mods, f"{path} imports modAL; only {adapter.name} may"
        if "strategies" in path.parts:
            assert "torch" not in mods, f"{path} imports torch"
    assert "modAL" in _imported_modules(adapter)
