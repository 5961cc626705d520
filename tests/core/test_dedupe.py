"""Near-duplicate filter: ``make_strategy(..., dedupe_threshold=...)``, ``dedupe_selection``, the numpy core."""

from __future__ import annotations

import numpy as np
import pytest

from al_loop.errors import ConfigError, EmptyPoolError
from al_loop.strategies import (
    DEFAULT_DEDUPE_THRESHOLD,
    EMBEDDING_STRATEGIES,
    RANK_SCORED,
    DedupedStrategy,
    PoolView,
    dedupe_selection,
    make_strategy,
    rank_scores,
    strategies_for,
)
from al_loop.strategies import dedupe as dd
from al_loop.types import Selection, TaskKind
from tests.core.test_strategies import CASE_IDS, CASES, KINDS, N_CLASSES, N_TAGS, check_selection, empty_pool, ids

DIM = 64


def dup_pool(kind: str, n: int = 60, copies: int = 10, seed: int = 0, *, labelled: bool = True) -> PoolView:
    """Random pool (DIM-dim normal embeddings, confident predictions) whose ``copies + 1`` most uncertain
    items are one text: item-0 (uniform probabilities) and item-1..item-copies (nearly uniform, the same
    embedding up to 1e-3 noise). No other pair of items is anywhere near cosine 0.95."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    emb[1 : copies + 1] = emb[0] + rng.normal(scale=1e-3, size=(copies, DIM))
    probs = token_probs = None
    if kind == "ner":
        token_probs = []
        for i in range(n):
            words = np.full((3, N_TAGS), 0.02 / (N_TAGS - 1))
            words[np.arange(3), rng.integers(0, N_TAGS, 3)] = 0.98
            if i <= copies:
                words = np.full((3, N_TAGS), 1 / N_TAGS)
                words[:, 0] += 0.001 * i
                words[:, 1:] -= 0.001 * i / (N_TAGS - 1)
            token_probs.append(words)
    elif kind == "multi":
        probs = np.where(rng.random((n, N_CLASSES)) < 0.5, 0.02, 0.98)
        probs[: copies + 1] = 0.5 + 0.001 * np.arange(copies + 1)[:, None]
    else:
        probs = np.full((n, N_CLASSES), 0.02 / (N_CLASSES - 1))
        probs[np.arange(n), rng.integers(0, N_CLASSES, n)] = 0.98
        for i in range(copies + 1):
            probs[i] = 1 / N_CLASSES
            probs[i, 0] += 0.003 * i
            probs[i, 1:] -= 0.003 * i / (N_CLASSES - 1)
    lab = rng.normal(size=(6, DIM)).astype(np.float32) if labelled else None
    return PoolView(ids(n), probs, token_probs, emb, lab, multi_label=kind == "multi")


def copies_in(sel: Selection, copies: int = 10) -> int:
    group = {f"item-{i}" for i in range(copies + 1)}
    return sum(i in group for i in sel.item_ids)


# ============================================================ near-duplicates do not fill a batch


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy"])
def test_uncertainty_batch_fills_with_copies_without_the_filter_and_not_with_it(name: str, kind: str) -> None:
    pool = dup_pool(kind)
    plain = make_strategy(name, KINDS[kind]).select(pool, 10, np.random.default_rng(0))
    assert copies_in(plain) == 10  # the complaint: one text, ten times
    deduped = make_strategy(name, KINDS[kind], dedupe_threshold=0.95).select(pool, 10, np.random.default_rng(0))
    check_selection(deduped, pool, 10, name)
    assert copies_in(deduped) == 1
    assert deduped.item_ids[0] == plain.item_ids[0] == "item-0"  # the best of the copies stays first
    # the rest of the batch is the plain ranking with the copies left out, in order
    full = make_strategy(name, KINDS[kind]).select(pool, len(pool), np.random.default_rng(0))
    rest = [i for i in full.item_ids if i not in {f"item-{j}" for j in range(11)}]
    assert list(deduped.item_ids[1:]) == rest[:9]


@pytest.mark.parametrize(("name", "kind"), CASES, ids=CASE_IDS)
def test_every_strategy_keeps_copies_out_with_the_filter(name: str, kind: str) -> None:
    pool = dup_pool(kind)
    for seed in range(3):
        sel = make_strategy(name, KINDS[kind], dedupe_threshold=0.95).select(pool, 20, np.random.default_rng(seed))
        check_selection(sel, pool, 20, name)
        assert copies_in(sel) <= 1


@pytest.mark.parametrize(("name", "kind"), CASES, ids=CASE_IDS)
def test_without_near_duplicates_the_filter_changes_nothing(name: str, kind: str) -> None:
    pool = dup_pool(kind, copies=0, seed=3)
    for n in (1, 7, 60):
        a = make_strategy(name, KINDS[kind]).select(pool, n, np.random.default_rng(n))
        b = make_strategy(name, KINDS[kind], dedupe_threshold=0.95).select(pool, n, np.random.default_rng(n))
        assert a == b


def test_labelled_near_duplicates_are_skipped_unless_asked_not_to() -> None:
    pool = dup_pool("single", copies=0, seed=1)
    assert pool.embeddings is not None and pool.probs is not None
    probs = pool.probs.copy()
    probs[0], probs[5] = probs[6], 1 / N_CLASSES  # the most uncertain item is (nearly) a labelled text
    lab = np.vstack([pool.embeddings[5] * 2.0 + 1e-3, np.ones((1, DIM))])  # cosine ~1, scale does not matter
    pool = PoolView(pool.item_ids, probs=probs, embeddings=pool.embeddings, labelled_embeddings=lab)
    plain = make_strategy("margin", TaskKind.CLASSIFICATION).select(pool, 5, np.random.default_rng(0))
    assert plain.item_ids[0] == "item-5"
    sel = make_strategy("margin", TaskKind.CLASSIFICATION, dedupe_threshold=0.95).select(
        pool, 5, np.random.default_rng(0)
    )
    assert "item-5" not in sel.item_ids
    sixth = make_strategy("margin", TaskKind.CLASSIFICATION).select(pool, 6, np.random.default_rng(0)).item_ids[5]
    assert sel.item_ids == (*plain.item_ids[1:], sixth)
    inner = make_strategy("margin", TaskKind.CLASSIFICATION)
    assert DedupedStrategy(inner, 0.95, against_labelled=False).select(pool, 5, 0) == plain


def test_too_few_distinct_items_fill_from_the_skipped_in_rank_order() -> None:
    pool = PoolView(ids(12), probs=np.random.default_rng(0).dirichlet(np.ones(3), 12), embeddings=np.ones((12, 5)))
    for name in strategies_for(TaskKind.CLASSIFICATION):
        for n in (5, 12, 20):
            plain = make_strategy(name, TaskKind.CLASSIFICATION).select(pool, n, np.random.default_rng(2))
            sel = make_strategy(name, TaskKind.CLASSIFICATION, dedupe_threshold=0.95).select(
                pool, n, np.random.default_rng(2)
            )
            check_selection(sel, pool, n, name)
            assert sel == plain  # one distinct text: the rest comes back in the plain order


def test_prefix_retry_when_the_first_candidates_are_all_copies() -> None:
    """60 copies lead the ranking, so the first candidate prefix (1.5 n + 8) holds one distinct item."""
    pool = dup_pool("single", n=200, copies=59, seed=4)
    strategy = make_strategy("margin", TaskKind.CLASSIFICATION, dedupe_threshold=0.95)
    sel = strategy.select(pool, 6, np.random.default_rng(0))
    check_selection(sel, pool, 6, "margin")
    assert copies_in(sel, 59) == 1
    assert sel == strategy.select(pool, 6, np.random.default_rng(0))
    # also for a strategy that draws from the rng along its ranking
    badge = make_strategy("badge", TaskKind.CLASSIFICATION, dedupe_threshold=0.95)
    b = badge.select(pool, 30, np.random.default_rng(1))
    check_selection(b, pool, 30, "badge")
    assert copies_in(b, 59) <= 1
    assert b == badge.select(pool, 30, np.random.default_rng(1))


def test_threshold_decides_what_counts_as_a_near_duplicate() -> None:
    base = np.array([1.0, 0.0, 0.0])
    close = np.array([1.0, 0.2, 0.0])  # cosine 0.981 to base
    far = np.array([0.0, 1.0, 0.0])
    pool = PoolView(
        ids(3), probs=np.array([[0.5, 0.5], [0.55, 0.45], [0.9, 0.1]]), embeddings=np.stack([base, close, far])
    )
    at = {
        thr: make_strategy("margin", "classification", dedupe_threshold=thr).select(pool, 2, np.random.default_rng(0))
        for thr in (0.95, 0.99)
    }
    assert at[0.95].item_ids == ("item-0", "item-2")
    assert at[0.99].item_ids == ("item-0", "item-1")
    exact = PoolView(ids(2), probs=np.array([[0.5, 0.5], [0.6, 0.4]]), embeddings=np.array([[0.3, 0.4], [0.3, 0.4]]))
    assert make_strategy("margin", "classification", dedupe_threshold=1.0).select(
        exact, 1, np.random.default_rng(0)
    ).item_ids == ("item-0",)
    assert dedupe_selection(exact, Selection(exact.item_ids, (1.0, 0.5)), 2, 1.0).item_ids == exact.item_ids  # fill


# ============================================================ the shared contract, with the filter


@pytest.mark.parametrize(("name", "kind"), CASES, ids=CASE_IDS)
class TestContractWithTheFilter:
    @pytest.mark.parametrize("n", [1, 5, 30, 100])
    def test_min_n_distinct_ids_in_rank_order(self, name: str, kind: str, n: int) -> None:
        pool = dup_pool(kind, n=30, copies=8, seed=n)
        sel = make_strategy(name, KINDS[kind], dedupe_threshold=0.9).select(pool, n, np.random.default_rng(3))
        check_selection(sel, pool, n, name)
        if name in RANK_SCORED:
            assert sel.scores == rank_scores(len(sel))

    def test_deterministic_and_the_rng_matters_where_it_should(self, name: str, kind: str) -> None:
        pool = dup_pool(kind, n=40, seed=1)
        strategy = make_strategy(name, KINDS[kind], dedupe_threshold=0.95)
        assert strategy.select(pool, 10, np.random.default_rng(11)) == strategy.select(
            pool, 10, np.random.default_rng(11)
        )

    def test_errors_and_tiny_pools(self, name: str, kind: str) -> None:
        strategy = make_strategy(name, KINDS[kind], dedupe_threshold=0.95)
        with pytest.raises(EmptyPoolError):
            strategy.select(empty_pool(kind), 3, np.random.default_rng(0))
        for n in (0, -1):
            with pytest.raises(ConfigError):
                strategy.select(dup_pool(kind, n=5, copies=2), n, np.random.default_rng(0))
        one = dup_pool(kind, n=1, copies=0)
        assert strategy.select(one, 4, np.random.default_rng(0)).item_ids == one.item_ids

    def test_needs_embeddings_and_selects_as_before_without_them(self, name: str, kind: str) -> None:
        strategy = make_strategy(name, KINDS[kind], dedupe_threshold=0.95)
        assert isinstance(strategy, DedupedStrategy)
        assert strategy.name == name and strategy.needs_embeddings
        full = dup_pool(kind, n=15, copies=3)
        bare = PoolView(full.item_ids, full.probs, full.token_probs, multi_label=full.multi_label)
        plain = make_strategy(name, KINDS[kind])
        if name in EMBEDDING_STRATEGIES:
            with pytest.raises(ValueError, match="embeddings"):
                strategy.select(bare, 3, np.random.default_rng(0))
        else:
            assert strategy.select(bare, 3, np.random.default_rng(0)) == plain.select(bare, 3, np.random.default_rng(0))


# ============================================================ factory, dedupe_selection, numpy core


def test_make_strategy_default_is_unchanged_and_threshold_is_validated() -> None:
    for off in (None, 0, 0.0):
        strategy = make_strategy("margin", "classification", dedupe_threshold=off)
        assert not isinstance(strategy, DedupedStrategy) and not strategy.needs_embeddings
    assert not isinstance(make_strategy("margin", "classification"), DedupedStrategy)
    assert DEFAULT_DEDUPE_THRESHOLD == 0.95
    wrapped = make_strategy("ranked_batch", "ner", dedupe_threshold=0.9)
    assert isinstance(wrapped, DedupedStrategy) and wrapped.threshold == 0.9
    for bad in (-0.1, 1.5, True, "0.9", float("nan")):
        with pytest.raises(ConfigError):
            make_strategy("margin", "classification", dedupe_threshold=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        DedupedStrategy(make_strategy("margin", "classification"), 0)
    with pytest.raises(ConfigError, match="does not apply"):
        make_strategy("badge", "ner", dedupe_threshold=0.95)


def test_dedupe_selection_over_a_given_ranking() -> None:
    pool = dup_pool("single", copies=4)
    ranking = make_strategy("entropy", "classification").select(pool, len(pool), np.random.default_rng(0))
    sel = dedupe_selection(pool, ranking, 8)
    assert copies_in(sel, 4) == 1 and len(sel) == 8 and sel.strategy == "entropy"
    assert all(a >= b for a, b in zip(sel.scores, sel.scores[1:]))
    assert dedupe_selection(pool, ranking, 8, None) == Selection(ranking.item_ids[:8], ranking.scores[:8], "entropy")
    bare = PoolView(pool.item_ids, probs=pool.probs)
    assert dedupe_selection(bare, ranking, 3).item_ids == ranking.item_ids[:3]
    with pytest.raises(ValueError, match="not in the pool"):
        dedupe_selection(pool, Selection(("nope",), (1.0,)), 1)  # type: ignore[arg-type]


def _reference_walk(X: np.ndarray, order: np.ndarray, n: int, thr: float, lab: np.ndarray | None) -> list[int]:
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    known = [] if lab is None else list(lab / np.linalg.norm(lab, axis=1, keepdims=True))
    kept: list[int] = []
    for pos, row in enumerate(order):
        if len(kept) == n:
            break
        if any(float(unit[row] @ k) >= thr for k in known):
            continue
        kept.append(pos)
        known.append(unit[row])
    return kept


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_chunked_walk_matches_a_plain_loop(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    rng = np.random.default_rng(chunk)
    centres = rng.normal(size=(40, 12))
    X = centres[rng.integers(0, 40, 600)] + rng.normal(scale=0.15, size=(600, 12))  # many groups of near-copies
    lab = centres[:5] + rng.normal(scale=0.1, size=(5, 12))
    order = rng.permutation(600)
    monkeypatch.setattr(dd, "_CHUNK", chunk)
    monkeypatch.setattr(dd, "_LABELLED_CHUNK", 2)
    for n, labelled in [(10, None), (30, lab), (200, lab), (600, None)]:
        got = dd.unique_prefix(X, order, n, 0.9, labelled)
        assert got.tolist() == _reference_walk(X, order, n, 0.9 - 1e-6, labelled)
    assert 0 < len(dd.unique_prefix(X, order, 600, 0.9)) < 80  # 40 groups of near-copies: about one item each
    np.testing.assert_array_equal(dd.fill_positions(np.array([0, 4]), 6, 4), [0, 1, 2, 4])
