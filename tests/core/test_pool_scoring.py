"""Chunked / sharded pool scoring: streaming top-k, exact merge, equality with the one-shot ``rank_pool``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from al_loop.config import LoopConfig
from al_loop.data.schema import LabelSchema
from al_loop.rounds.pool_phase import score_pool
from al_loop.rounds.pool_round import PoolSnapshot, ShardJob, run_shard_job, shard_ranges
from al_loop.rounds.pool_scoring import load_result, open_spools, plan_scoring, save_result
from al_loop.rounds.scoring import rank_pool
from al_loop.strategies import DedupedStrategy, make_strategy, strategies_for
from al_loop.strategies.modal_adapter import top_n
from al_loop.strategies.topk import TopK, inverse_permutation, order_of
from al_loop.types import Example, ItemId, Span, TaskKind
from tests.core.fakes import FakeModel

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "Paris", "Berlin", "Anna", "the"]


# ---------------------------------------------------------------- streaming top-k


@pytest.mark.parametrize("seed", range(8))
def test_topk_in_chunks_equals_the_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    primary = rng.integers(0, 5, n).astype(np.float64)  # many ties
    key = rng.permutation(n * 3)[:n]
    k = int(rng.integers(0, n + 5))
    want = order_of(primary, key)[:k]
    t = TopK(k)
    pos = 0
    while pos < n:
        step = int(rng.integers(1, 40))
        t.push(primary[pos : pos + step], key[pos : pos + step], list(range(pos, min(n, pos + step))))
        pos += step
    got = t.sorted()
    assert got.rows == [int(i) for i in want]
    assert t.seen == n


@pytest.mark.parametrize("seed", range(6))
def test_topk_merge_of_shards_equals_one_pass(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, k = 200, int(rng.integers(1, 60))
    primary = np.round(rng.random(n), 1)
    key = rng.permutation(n)
    emb = rng.random((n, 3)).astype(np.float32)
    one = TopK(k)
    one.push(primary, key, list(range(n)), emb)
    merged = TopK(k)
    for start, stop in shard_ranges(n, 3):
        part = TopK(k)
        part.push(primary[start:stop], key[start:stop], list(range(start, stop)), emb[start:stop])
        merged.merge(part)
    a, b = one.sorted(), merged.sorted()
    assert a.rows == b.rows and np.array_equal(a.matrix, b.matrix) and merged.seen == n


@pytest.mark.parametrize("seed", range(6))
def test_shuffle_keys_reproduce_top_n_ties_included(seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, 4, 97).astype(np.float64)
    want = top_n(values, 30, np.random.default_rng(seed))
    keys = inverse_permutation(np.random.default_rng(seed).permutation(len(values)))
    t = TopK(30)
    for start in range(0, len(values), 8):
        t.push(values[start : start + 8], keys[start : start + 8], list(range(start, min(97, start + 8))))
    assert t.sorted().rows == [int(i) for i in want]


def test_topk_rejects_nan_and_mismatched_rows() -> None:
    t = TopK(3)
    with pytest.raises(ValueError, match="NaN"):
        t.push(np.array([np.nan]), np.array([0]))
    with pytest.raises(ValueError, match="same length"):
        t.push(np.array([1.0, 2.0]), np.array([0, 1]), ["a"])


def test_shard_ranges_cover_the_pool() -> None:
    assert shard_ranges(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert shard_ranges(2, 5) == [(0, 1), (1, 2)]
    assert shard_ranges(0, 4) == [(0, 0)]


# ---------------------------------------------------------------- chunked vs one-shot


class RecordingModel(FakeModel):
    """FakeModel that records how many texts each predict call gets."""

    sizes: list[int]

    def predict(self, texts: Sequence[str], *, embeddings: bool = True) -> Any:
        self.sizes.append(len(texts))
        return super().predict(texts, embeddings=embeddings)


def _texts(n: int, seed: int, ner: bool) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 7 == 3 and out:
            out.append(out[int(rng.integers(0, len(out)))])  # exact duplicates (near-duplicate filter)
            continue
        if ner and i % 11 == 5:
            out.append(" ")  # no words
            continue
        k = int(rng.integers(1, 6))
        out.append(" ".join(WORDS[int(j)] for j in rng.integers(0, len(WORDS), k)))
    return out


def _model(task: str, multi_label: bool = False) -> tuple[RecordingModel, LabelSchema, list[str]]:
    if task == "ner":
        schema = LabelSchema.build("ner", ["PER", "LOC"])
        model = RecordingModel(schema)
        train = [Example(ItemId("a"), "Anna likes Paris", spans=(Span(0, 4, "PER"), Span(11, 16, "LOC"))),
                 Example(ItemId("b"), "Berlin is fine", spans=(Span(0, 6, "LOC"),))]
    else:
        schema = LabelSchema.build("classification", ["pos", "neg", "meh"], multi_label=multi_label)
        model = RecordingModel(schema)
        train = [Example(ItemId("a"), "good great fine", labels=("pos",)),
                 Example(ItemId("b"), "bad awful poor", labels=("neg", "meh") if multi_label else ("neg",)),
                 Example(ItemId("c"), "the fine Paris", labels=("meh",))]
    model.fit(train)
    model.sizes = []
    return model, schema, [e.text for e in train]


def _base_embed(texts: Sequence[str]) -> np.ndarray:
    """A deterministic stand-in for the frozen encoder: a bag of words."""
    return np.array([[t.lower().split().count(w.lower()) for w in WORDS] for t in texts], dtype=np.float32)


def _chunked(model: Any, strategy: Any, schema: LabelSchema, ids: list[ItemId], texts: list[str],
             labelled: list[str], n: int, seed: int, folder: Path, *, chunk: int, shards: int = 1,
             stored: int = 20_000, base_embed: Any = None) -> list[Any]:
    snapshot = PoolSnapshot.write(folder, [ids[:5], ids[5:]])
    by_id = dict(zip(ids, texts))
    loop = LoopConfig(score_chunk_size=chunk, score_shards=shards, max_scores_stored=stored)
    return score_pool(model, strategy, schema, loop, snapshot, folder, n, labelled, np.random.default_rng(seed),
                      lambda xs: [by_id[x] for x in xs], timings={}, base_embed=base_embed)


CASES = [("classification", False), ("classification", True), ("ner", False)]


@pytest.mark.parametrize(("task", "multi_label"), CASES)
@pytest.mark.parametrize("dedupe", [False, True])
def test_chunked_scoring_equals_one_shot_for_every_strategy(tmp_path: Path, task: str, multi_label: bool,
                                                            dedupe: bool) -> None:
    model, schema, labelled = _model(task, multi_label)
    texts = _texts(37, 1, task == "ner")
    ids = [ItemId(f"x{i}") for i in range(len(texts))]
    names = [s for s in strategies_for(TaskKind(task)) if not (multi_label and s == "information_density" and dedupe)]
    for name in names:
        for base_embed in ([None, _base_embed] if dedupe else [None]):
            strategy = make_strategy(name, task, dedupe_threshold=0.99 if dedupe else None)
            for seed in (0, 7):
                want = rank_pool(model, strategy, schema, ids, texts, labelled, 6, np.random.default_rng(seed),
                                 timings={}, base_embed=base_embed)
                for chunk, shards in ((1, 1), (4, 1), (37, 1), (5000, 1), (3, 2), (7, 3)):
                    folder = tmp_path / f"{name}-{seed}-{chunk}-{shards}-{base_embed is not None}"
                    got = _chunked(model, strategy, schema, ids, texts, labelled, 6, seed, folder, chunk=chunk,
                                   shards=shards, base_embed=base_embed)
                    assert got == want, (name, seed, chunk, shards)


@pytest.mark.parametrize("name", ["least_confidence", "random", "ranked_batch", "badge"])
def test_large_pools_store_the_batch_and_its_neighbours(tmp_path: Path, name: str) -> None:
    model, schema, labelled = _model("classification")
    texts = _texts(50, 2, False)
    ids = [ItemId(f"x{i}") for i in range(len(texts))]
    strategy = make_strategy(name, "classification")
    want = rank_pool(model, strategy, schema, ids, texts, labelled, 5, np.random.default_rng(3), timings={})
    got = _chunked(model, strategy, schema, ids, texts, labelled, 5, 3, tmp_path, chunk=8, stored=12)
    assert len(got) == 12 and sum(s.selected for s in got) == 5
    assert got == want[:12]


def test_the_scorer_never_predicts_more_than_a_chunk(tmp_path: Path) -> None:
    model, schema, labelled = _model("classification")
    labelled = labelled * 5  # 15 labelled texts: their embeddings are chunked too
    texts = _texts(103, 4, False)
    ids = [ItemId(f"x{i}") for i in range(len(texts))]
    for name in ("least_confidence", "ranked_batch"):
        model.sizes = []
        strategy = make_strategy(name, "classification", dedupe_threshold=0.99)
        got = _chunked(model, strategy, schema, ids, texts, labelled, 4, 0, tmp_path / name, chunk=10, stored=20)
        assert len(got) == 20
        assert model.sizes and max(model.sizes) <= 10, model.sizes
        assert sum(model.sizes) <= len(texts) + len(labelled) + 4  # each text once (+ a re-predicted batch)


def test_near_duplicate_filter_rescans_when_the_candidates_run_out(tmp_path: Path) -> None:
    model, schema, labelled = _model("classification")
    # 300 copies of the most uncertain text, then distinct ones: the filter walks past 16 * (1.5 n + 8)
    texts = ["the"] * 300 + _texts(60, 5, False)
    ids = [ItemId(f"x{i}") for i in range(len(texts))]
    strategy = make_strategy("least_confidence", "classification", dedupe_threshold=0.99)
    assert plan_scoring(strategy, schema, 3, stored=10, chunk_size=16, base_embed=False).candidates < 300
    want = rank_pool(model, strategy, schema, ids, texts, labelled, 3, np.random.default_rng(1), timings={})
    model.sizes = []
    got = _chunked(model, strategy, schema, ids, texts, labelled, 3, 1, tmp_path, chunk=16, stored=10)
    assert got == want[:10]
    assert sum(model.sizes) > 2 * len(texts)  # scored again with more candidates


def test_a_redelivered_shard_reads_its_result_back(tmp_path: Path) -> None:
    model, schema, _ = _model("classification")
    texts = _texts(20, 6, False)
    ids = [ItemId(f"x{i}") for i in range(len(texts))]
    snapshot = PoolSnapshot.write(tmp_path, [ids])
    spec = plan_scoring(make_strategy("margin", "classification"), schema, 3, stored=5, chunk_size=4,
                        base_embed=False)
    assert spec is not None
    np.save(tmp_path / "keys.npy", np.arange(20, dtype=np.int64))
    job = ShardJob(1, 1, str(tmp_path), 1, 10, 20, snapshot.n, spec.to_dict())
    by_id = dict(zip(ids, texts))
    first = run_shard_job(job, model, lambda xs: [by_id[x] for x in xs])
    calls = len(model.sizes)
    again = run_shard_job(ShardJob.from_dict(job.to_dict()), model, lambda xs: [by_id[x] for x in xs])
    assert len(model.sizes) == calls  # nothing predicted the second time
    assert again.low.sorted().rows == first.low.sorted().rows and again.n == first.n == 10
    assert again.top is not None and first.top is not None
    assert again.top.sorted().rows == first.top.sorted().rows


def test_unknown_strategies_keep_the_one_call_path(tmp_path: Path) -> None:
    class Custom:
        name = "custom"
        needs_embeddings = False

        def select(self, pool: Any, n: int, rng: Any) -> Any:
            return make_strategy("margin", "classification").select(pool, n, rng)

    model, schema, labelled = _model("classification")
    texts = _texts(12, 8, False)
    ids = [ItemId(f"x{i}") for i in range(len(texts))]
    assert plan_scoring(Custom(), schema, 3, stored=5, chunk_size=4, base_embed=False) is None
    assert plan_scoring(DedupedStrategy(Custom()), schema, 3, stored=5, chunk_size=4, base_embed=False) is None
    want = rank_pool(model, Custom(), schema, ids, texts, labelled, 3, np.random.default_rng(0), timings={})
    assert _chunked(model, Custom(), schema, ids, texts, labelled, 3, 0, tmp_path, chunk=4) == want


def test_two_runs_of_one_shard_do_not_mix(tmp_path: Path) -> None:
    """A shard redelivered while its first run still goes writes its own spool files; the second result to
    finish finds the first in place and leaves it."""
    model, schema, _ = _model("classification")
    texts = _texts(12, 9, False)
    ids = [ItemId(f"x{i}") for i in range(len(texts))]
    snapshot = PoolSnapshot.write(tmp_path, [ids])
    spec = plan_scoring(make_strategy("ranked_batch", "classification"), schema, 3, stored=5, chunk_size=4,
                        base_embed=False)
    assert spec is not None and spec.mode == "full"
    by_id = dict(zip(ids, texts))
    job = ShardJob(1, 1, str(tmp_path), 0, 0, 12, snapshot.n, spec.to_dict())
    first = run_shard_job(job, model, lambda xs: [by_id[x] for x in xs], persist=False)
    second = run_shard_job(job, model, lambda xs: [by_id[x] for x in xs], persist=False)
    assert first.spools[0]["embeddings"]["path"] != second.spools[0]["embeddings"]["path"]
    save_result(first, job.result_dir)
    save_result(second, job.result_dir)
    assert load_result(job.result_dir).spools == first.spools
    assert open_spools(first.spools, tmp_path)["embeddings"].shape == (12, 3)


def test_the_base_model_embeds_only_the_kept_candidates(tmp_path: Path) -> None:
    """Stream mode judges near-duplicates on base embeddings of its candidates only, not of every pool text
    (the second pass over a large pool cost as much as scoring it); the selection is the one-shot one."""
    model, schema, labelled = _model("classification")
    texts = _texts(400, 5, False)
    ids = [ItemId(f"x{i}") for i in range(len(texts))]
    embedded: list[str] = []

    def counting(batch: Sequence[str]) -> np.ndarray:
        embedded.extend(batch)
        return _base_embed(batch)

    strategy = make_strategy("least_confidence", "classification", dedupe_threshold=0.99)
    want = rank_pool(model, strategy, schema, ids, texts, labelled, 2, np.random.default_rng(1), timings={},
                     base_embed=_base_embed)
    for shards in (1, 2):
        embedded.clear()
        got = _chunked(model, strategy, schema, ids, texts, labelled, 2, 1, tmp_path / f"s{shards}", chunk=16,
                       shards=shards, base_embed=counting)
        assert got == want
        candidates = plan_scoring(strategy, schema, 2, stored=0, chunk_size=16, base_embed=True).candidates
        pool_texts = [t for t in embedded if t not in labelled]
        assert 0 < len(pool_texts) <= shards * candidates < len(texts), (len(pool_texts), candidates)
