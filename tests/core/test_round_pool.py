"""Rounds over chunked / sharded pool scoring: settings that must not change the selection, bounded stored rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from al_loop.config import LoopConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError
from al_loop.rounds import RoundService
from al_loop.store import Store
from al_loop.store.records import payload_from_example
from al_loop.types import Example, ItemId
from tests.core.fakes import FakeModel

WORDS = ["good", "great", "fine", "bad", "awful", "poor"]


def _examples(n: int) -> list[Example]:
    out = []
    for i in range(n):
        w = WORDS[i % len(WORDS)]
        text = f"{w} item number {i % 13}"  # repeats: near-duplicates and ties
        out.append(Example(ItemId(f"i{i}"), text, labels=("pos" if w in WORDS[:3] else "neg",)))
    return out


def _two_rounds(tmp_path: Path, name: str, shard_runner: Any = None,
                **loop: Any) -> tuple[Store, list[list[Any]], list[dict[str, Any]]]:
    """A cold start and a trained round; returns the stored rows of each round and their reports."""
    store = Store(f"sqlite:///{tmp_path / f'{name}.sqlite'}")
    schema = LabelSchema.build("classification", ["pos", "neg"])
    p = store.create_project(name, schema, loop=LoopConfig(batch_size=4, seed_size=6, **loop))
    data = _examples(40)
    store.add_items(p.id, data, "pool")
    gold = {e.item_id: payload_from_example(e) for e in data}
    service = RoundService(store, FakeModel, tmp_path / f"artifacts-{name}", shard_runner=shard_runner)
    rows, reports = [], []
    for _ in range(2):
        rnd = service.run_round(service.create_round(p.id).id).round
        assert rnd.status == "succeeded", rnd.error
        scored = store.get_scores(rnd.id)
        rows.append(scored)
        reports.append(rnd.report)
        for s in scored:
            if s.selected:
                store.record_label(p.id, s.item_id, f"o:{s.item_id}", payload=gold[s.item_id], source="oracle")
    assert not list((tmp_path / f"artifacts-{name}" / f"project-{p.id}" / "scoring").glob("*"))  # cleaned up
    return store, rows, reports


@pytest.mark.parametrize("strategy", ["least_confidence", "entropy", "random", "ranked_batch", "badge",
                                      "information_density"])
def test_chunk_size_and_shards_do_not_change_a_round(tmp_path: Path, strategy: str) -> None:
    _, want, _ = _two_rounds(tmp_path, "one", strategy=strategy)
    for chunk, shards in ((1, 1), (5, 3), (7, 2)):
        _, got, _ = _two_rounds(tmp_path, f"c{chunk}s{shards}", strategy=strategy, score_chunk_size=chunk,
                                score_shards=shards)
        assert got == want, (chunk, shards)


class _NoWorkers:
    """A shard runner that has nobody to run shards (no worker consumes the score queue)."""

    def __init__(self) -> None:
        self.asked = 0

    def available(self) -> bool:
        self.asked += 1
        return False

    def __call__(self, jobs: Any, progress: Any) -> Any:
        raise AssertionError("a runner without workers must not be sent shards")


def test_shards_without_workers_are_scored_in_the_round(tmp_path: Path) -> None:
    _, want, _ = _two_rounds(tmp_path, "one", strategy="least_confidence")
    runner = _NoWorkers()
    _, got, _ = _two_rounds(tmp_path, "fallback", shard_runner=runner, strategy="least_confidence", score_shards=3)
    assert got == want and runner.asked == 1  # the cold start scores nothing; the trained round asked once


def test_a_large_pool_stores_the_batch_and_its_neighbours(tmp_path: Path) -> None:
    _, want, _ = _two_rounds(tmp_path, "all")
    _, got, reports = _two_rounds(tmp_path, "bounded", max_scores_stored=10, score_chunk_size=4)
    assert [len(r) for r in got] == [10, 10]
    assert got[1] == want[1][:10] and got[0] == want[0][:10]
    assert reports[1]["scores"] == {"pool": 34, "stored": 10, "all_stored": False}
    _, _, small = _two_rounds(tmp_path, "small")
    assert small[1]["scores"] == {"pool": 34, "stored": 34, "all_stored": True}


@pytest.mark.parametrize("bad", [{"score_chunk_size": 0}, {"score_shards": 0}, {"max_scores_stored": 0},
                                 {"score_shards": 10_000}])
def test_scoring_settings_are_bounded(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        LoopConfig(**bad)


def test_the_candidate_subsample_is_drawn_as_before(tmp_path: Path) -> None:
    """max_pool_scored: the round scores np.sort(rng.choice(N, m)) of the unlabelled ids (the round's rng first)."""
    import numpy as np

    store, want, _ = _two_rounds(tmp_path, "sub", max_pool_scored=20, strategy="margin")
    _, got, _ = _two_rounds(tmp_path, "sub-chunked", max_pool_scored=20, strategy="margin", score_chunk_size=3,
                            score_shards=2)
    assert got == want and [len(r) for r in want] == [20, 20]
    rnd = store.list_rounds(1)[0]
    ids = [f"i{i}" for i in range(40)]
    keep = np.sort(np.random.default_rng([rnd.seed, rnd.index]).choice(40, size=20, replace=False))
    assert {s.item_id for s in want[0]} == {ids[i] for i in keep}
