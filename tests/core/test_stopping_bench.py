"""benchmarks/stopping.py on a tiny synthetic TREC file with the word-vote model (the real run is on demand)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

from al_loop.rounds.stopping import CRITERIA
from tests.core.fakes import FakeModel

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("stopping_bench", REPO / "benchmarks" / "stopping.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_trec(path: Path, n: int, offset: int = 0) -> Path:
    words = {"NUM": "how many", "LOC": "where is", "HUM": "who was"}
    path.write_text("".join(f"{list(words)[i % 3]}:other {words[list(words)[i % 3]]} thing {i + offset} ?\n"
                            for i in range(n)))
    return path


def test_bench_prints_where_each_criterion_fires(bench, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    spec = replace(bench.PRESETS["trec"], train=_write_trec(tmp_path / "t.train", 90),
                   test=_write_trec(tmp_path / "t.test", 12, offset=500), seed_size=6, batch_size=6, rounds=6,
                   repeats=2, stop_set_size=30, strategies=("random", "margin"))
    payload = bench.run(spec, "tiny", tmp_path / "out", model_factory=FakeModel, progress=False)
    text = capsys.readouterr().out
    assert "| tiny: strategy | criterion |" in text and "stopping phase" in text
    assert {(r["strategy"], r["criterion"]) for r in payload["rows"]} == {
        (s, c) for s in ("random", "margin") for c in CRITERIA}
    for r in payload["rows"]:
        assert r["final_labels"] == 36 and r["full_data"] is not None
        assert (r["labels"] is None) == (r["fired"] == 0)
    assert [r["round"] for r in payload["rounds"]["margin"]] == [1, 2, 3, 4, 5, 6]
    assert payload["rounds"]["margin"][0]["kappa"] is None and payload["rounds"]["margin"][1]["kappa"] is not None
    assert payload["cost"]["rounds"] == 2 * 2 * 6 and payload["cost"]["stopping_share"] < 1
    saved = json.loads((tmp_path / "out" / "stopping.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(payload["rows"]))
    assert (tmp_path / "out" / "table.md").read_text().startswith("# stopping criteria, tiny")
