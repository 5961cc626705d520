"""benchmarks/domain_adaptation.py on tiny synthetic NER files with the word-vote model (the real run is on demand)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tests.core.fakes import FakeModel

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("domain_adaptation", REPO / "benchmarks" / "domain_adaptation.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _conll(path: Path, n: int, offset: int = 0) -> Path:
    """CoNLL-2003 style: ``TOKEN POS CHUNK TAG``, PER and LOC entities."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for i in range(n):
        name, place = ("alice", "paris") if i % 2 else ("bob", "rome")
        lines += [f"{name} NNP B-NP B-PER", "visited VBD B-VP O", f"{place} NNP B-NP B-LOC",
                  f"day{i + offset} NN B-NP O", ""]
    path.write_text("\n".join(lines) + "\n")
    return path


def _target(path: Path, n: int, offset: int = 0) -> Path:
    """NCBI-disease style: ``TOKEN<TAB>TAG``, one Disease entity in most sentences."""
    lines = []
    for i in range(n):
        disease = ("breast", "cancer") if i % 3 else ("cystic", "fibrosis")
        lines += ["patients\tO", "with\tO", f"{disease[0]}\tB-Disease", f"{disease[1]}\tI-Disease",
                  f"case{i + offset}\tO", ""]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def data(bench, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    src = bench.Corpus(_conll(tmp_path / "conll.train", 40), _conll(tmp_path / "conll.test", 10, offset=900))
    tgt = bench.Corpus(_target(tmp_path / "t.tsv", 60), _target(tmp_path / "t.test.tsv", 12, offset=500))
    monkeypatch.setattr(bench, "SOURCE", src)
    monkeypatch.setattr(bench, "DOMAINS", {"ncbi_disease": tgt})
    return tmp_path


class Adapter:
    """Stands in for al_loop.models.adapt: writes a folder, counts its calls, caches by base model."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, base_model: str, texts: list[str], cache_root: Path, **budget: Any) -> dict[str, Any]:
        self.calls.append({"base_model": base_model, "texts": len(texts), **budget})
        folder = Path(cache_root) / f"mlm-{len(self.calls)}"
        folder.mkdir(parents=True, exist_ok=True)
        return {"folder": folder, "steps": budget["max_steps"], "seconds": 30.0, "texts": len(texts),
                "loss_first": 4.0, "loss_last": 3.0, "cached": False}


def test_main_runs_every_start_and_retables(bench, data, capsys) -> None:  # type: ignore[no-untyped-def]
    adapter = Adapter()
    out = data / "out"
    argv = ["ncbi_disease", "--repeats", "2", "--rounds", "3", "--seed-size", "4", "--batch-size", "4",
            "--max-pool", "40", "--max-test", "10", "--source-sentences", "30", "--adapt-steps", "7",
            "--starts", "a,b,c", "--out", str(out), "--no-progress"]
    assert bench.main(argv, model_factory=FakeModel, adapter=adapter) == 0
    text = capsys.readouterr().out
    assert "estimated" in text and "start b: training the source model on 30 CoNLL-2003 sentences" in text
    assert "head rows of O are kept by name" in text
    assert adapter.calls == [{"base_model": "default", "texts": 60, "max_steps": 7, "max_seconds": 600.0,
                              "max_texts": 60, "max_length": 64, "seed": 13}]

    payload = json.loads((out / "ncbi_disease" / "results.json").read_text())
    assert set(payload["starts"]) == {"a", "b", "c"}
    assert payload["starts"]["b"]["shared_tags"] == ["O"]
    assert payload["starts"]["b"]["source"]["sentences"] == 30 and not payload["starts"]["b"]["source"]["cached"]
    assert payload["starts"]["c"]["model"].endswith("mlm-1")
    for start in ("a", "b", "c"):
        assert len(payload["starts"][start]["points"]) == 2 * 2 * 3
        assert (out / "ncbi_disease" / start / "results.json").is_file()
    assert (out / "ncbi_disease" / "learning_curve.png").is_file()
    assert payload["machine"]["torch"] and "commit" in payload

    table = (out / "ncbi_disease" / "table.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head == bench.COLUMNS
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[:2]: [c.strip() for c in line.strip("|").split("|")]
            for line in lines[2:]}
    assert set(rows) == {(s, g) for s in ("a", "b", "c") for g in ("random", "least_confidence")}
    assert all(len(r) == len(head) for r in rows.values())
    assert rows[("a", "random")][5].endswith("(reference)")
    assert rows[("b", "random")][9] != "0" and rows[("c", "random")][9] == "0.5"  # 30 s of adaptation
    assert "Target (issue 12): from the better start" in table and "Starts:" in table
    assert "Overall: the target is" in text

    # a second run reuses the cached source model
    assert bench.main([*argv, "--starts", "b"], model_factory=FakeModel, adapter=adapter) == 0
    text = capsys.readouterr().out
    assert "source model found in the cache" in text and "kept from the previous run" in text
    again = json.loads((out / "ncbi_disease" / "results.json").read_text())
    assert list(again["starts"]) == ["a", "b", "c"] and again["starts"]["b"]["source"]["cached"]
    assert again["starts"]["a"] == payload["starts"]["a"] and len(adapter.calls) == 1

    # --retable reprints from results.json without running
    json_before = (out / "ncbi_disease" / "results.json").read_text()
    assert bench.main(["ncbi_disease", "--retable", "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert "| b | random |" in again and "Overall: the target is" in again
    assert (out / "ncbi_disease" / "results.json").read_text() == json_before


def test_start_c_is_skipped_without_an_adapter(bench, data, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bench, "default_adapter", lambda: None)
    out = data / "out2"
    argv = ["ncbi_disease", "--repeats", "1", "--rounds", "2", "--seed-size", "4", "--batch-size", "4",
            "--max-pool", "30", "--max-test", "10", "--starts", "a,c", "--out", str(out), "--no-progress"]
    assert bench.main(argv, model_factory=FakeModel) == 0
    text = capsys.readouterr().out
    assert "start c: skipped: al_loop.models.adapt is not importable" in text
    assert "- c: base MiniLM + pool-adaptive pretraining: skipped" in text
    assert "not judged" in text


def _points(scores: dict[str, list[list[float]]]) -> list[dict[str, Any]]:
    return [{"strategy": s, "repeat": rep, "round": r, "labels": 50 * r, "tokens": None, "score": score,
             "seconds": 10.0} for s, reps in scores.items() for rep, curve in enumerate(reps)
            for r, score in enumerate(curve, start=1)]


def test_labels_to_reach_the_base_paths_final_f1(bench) -> None:  # type: ignore[no-untyped-def]
    # a: mean 0.30 0.40 0.50 0.60 (final 0.60 at 200 labels); b reaches 0.60 at 100 labels (50%); c never
    starts = {
        "a": {"points": _points({"random": [[0.2, 0.4, 0.5, 0.7], [0.4, 0.4, 0.5, 0.5]]})},
        "b": {"points": _points({"random": [[0.5, 0.6, 0.6, 0.7], [0.5, 0.6, 0.7, 0.7]]})},
        "c": {"points": _points({"random": [[0.3, 0.4, 0.5, 0.55], [0.3, 0.4, 0.5, 0.55]]})},
    }
    stats = bench.domain_stats(starts)
    a, b, c = (stats[k]["random"] for k in "abc")
    assert a["reference_final"] == pytest.approx(0.6) and a["labels_to_reference_final"] == 200.0
    assert a["ratio_vs_reference"] == pytest.approx(1.0)
    assert b["labels_to_reference_final"] == 100.0 and b["ratio_vs_reference"] == pytest.approx(0.5)
    assert c["labels_to_reference_final"] is None and c["ratio_vs_reference"] is None
    assert b["round_minutes"] == pytest.approx(8 * 10 / 60)
    better, met, lines = bench.verdict(stats)
    assert better == "b" and met
    assert "reached at 100 labels (50% of a's 200)" in lines[0] and lines[0].endswith("- met")
    assert bench.first_reach([{"labels": 50, "mean": 0.2}], 0.3) is None
    assert bench.first_reach([{"labels": 50, "mean": 0.2}], None) is None
