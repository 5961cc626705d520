from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from al_loop.config import TrainingConfig
from al_loop.errors import ConfigError, UnknownLabelError
from al_loop.simulate import POINT_FIELDS, SimulationSpec, curve_area, run_simulation, summarize, write_outputs
from al_loop.types import TaskKind
from annotator_bridge.cli import main
from tests.core.fakes import FakeModel


def _write_trec(path: Path, n: int, offset: int = 0) -> Path:
    words = {"NUM": "how many", "LOC": "where is", "HUM": "who was"}
    lines = []
    for i in range(n):
        label = list(words)[i % 3]
        lines.append(f"{label}:other {words[label]} thing {i + offset} ?")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_simulation_points_outputs_and_summary(tmp_path: Path) -> None:
    train = _write_trec(tmp_path / "q.train", 60)
    test = _write_trec(tmp_path / "q.test", 15, offset=1000)
    spec = SimulationSpec(train=train, test=test, task=TaskKind.CLASSIFICATION, strategies=("random", "margin"),
                          seed_size=6, batch_size=6, rounds=3, repeats=2, out=tmp_path / "out")
    result = run_simulation(spec, model_factory=FakeModel, progress=False)
    assert len(result.points) == 2 * 2 * 3
    assert {tuple(sorted(p)) for p in result.points} == {tuple(sorted(POINT_FIELDS))}
    assert [p["labels"] for p in result.points if p["strategy"] == "random" and p["repeat"] == 0] == [6, 12, 18]
    # round 0 (cold start) picks the same seed set for every strategy of a repeat
    first = {(p["strategy"], p["repeat"]): p["tokens"] for p in result.points if p["round"] == 1}
    assert first[("random", 0)] == first[("margin", 0)]
    paths = write_outputs(result, spec.out, spec.task)
    data = json.loads(paths["json"].read_text())
    assert data["points"] == result.points
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == len(result.points) and list(rows[0]) == list(POINT_FIELDS)
    assert paths["png"].stat().st_size > 5000
    assert set(data["summary"]) == {"random", "margin"}
    assert data["summary"]["random"]["labels_to_random_final"] is not None


def _write_conll(path: Path, n: int, types: tuple[str, ...] = ("PER", "LOC"), offset: int = 0) -> Path:
    names = {"PER": "Smith", "LOC": "Paris", "ORG": "Acme"}
    lines = ["-DOCSTART- -X- -X- O", ""]
    for i in range(n):
        kind = types[i % len(types)]
        lines += [f"word{i + offset} NN O", f"{names[kind]} NNP B-{kind}", "visited VBD O", ""]
    path.write_text("\n".join(lines))
    return path


def test_ner_simulation_accepts_test_labels_of_the_training_schema(tmp_path: Path) -> None:
    """Regression: every NER test file was refused as having 'unknown' labels (set-operator precedence)."""
    train = _write_conll(tmp_path / "train.txt", 40)
    test = _write_conll(tmp_path / "test.txt", 10, offset=500)
    spec = SimulationSpec(train=train, test=test, task=TaskKind.NER, strategies=("random", "mnlp"),
                          seed_size=5, batch_size=5, rounds=2, repeats=1)
    result = run_simulation(spec, model_factory=FakeModel, progress=False)
    assert [p["labels"] for p in result.points if p["strategy"] == "mnlp"] == [5, 10]
    assert all(p["tokens"] > 0 for p in result.points)
    unknown = _write_conll(tmp_path / "test2.txt", 4, types=("PER", "ORG"))
    with pytest.raises(UnknownLabelError, match="ORG") as err:
        run_simulation(replace(spec, test=unknown), model_factory=FakeModel, progress=False)
    assert "PER" not in str(err.value).split("(known")[0]


def test_summary_metrics() -> None:
    assert curve_area(np.array([0.0, 10.0]), np.array([0.0, 1.0])) == pytest.approx(0.5)
    points = [
        {"strategy": s, "repeat": 0, "round": r, "labels": 10 * r, "tokens": 0, "score": sc, "seconds": 1}
        for s, scores in {"random": [0.2, 0.4, 0.6], "al": [0.4, 0.6, 0.7]}.items()
        for r, sc in enumerate(scores, start=1)
    ]
    summary = summarize(points, full_data=0.9)
    assert "tokens_to_random_final" not in summary["al"]  # classification points carry no tokens
    assert summary["al"]["labels_to_random_final"] == 20.0
    assert summary["al"]["label_ratio_vs_random"] == pytest.approx(20 / 30)
    assert summary["al"]["auc"] > summary["random"]["auc"]
    assert summary["_full_data_score"] == 0.9


def test_summary_counts_tokens_for_ner() -> None:
    rows = {"random": ([0.2, 0.4, 0.6], [100, 200, 300]), "long": ([0.5, 0.6, 0.7], [250, 500, 750])}
    points = [
        {"strategy": s, "repeat": 0, "round": r, "labels": 10 * r, "tokens": tok[r - 1], "score": sc[r - 1],
         "seconds": 1}
        for s, (sc, tok) in rows.items()
        for r in (1, 2, 3)
    ]
    summary = summarize(points)
    assert summary["long"]["labels_to_random_final"] == 20.0  # 67% of random's sentences ...
    assert summary["long"]["tokens_to_random_final"] == 500.0  # ... but 167% of its tokens
    assert summary["long"]["token_ratio_vs_random"] == pytest.approx(500 / 300)
    assert summary["random"]["final_tokens"] == 300.0


def test_unknown_test_labels_and_bad_schedule_are_clear_errors(tmp_path: Path) -> None:
    train = _write_trec(tmp_path / "q.train", 30)
    test = tmp_path / "q.test"
    test.write_text("ABBR:exp what does NASA stand for ?\n")
    spec = SimulationSpec(train=train, test=test, task=TaskKind.CLASSIFICATION, strategies=("random",),
                          seed_size=5, batch_size=5, rounds=2, repeats=1)
    with pytest.raises(UnknownLabelError, match="ABBR"):
        run_simulation(spec, model_factory=FakeModel, progress=False)
    with pytest.raises(ConfigError):
        SimulationSpec(train=train, test=test, task=TaskKind.CLASSIFICATION, strategies=("mnlp",))
    too_big = SimulationSpec(train=train, test=_write_trec(tmp_path / "t2", 5), task=TaskKind.CLASSIFICATION,
                             strategies=("random",), seed_size=20, batch_size=20, rounds=3, repeats=1)
    with pytest.raises(ConfigError, match="pool has 30"):
        run_simulation(too_big, model_factory=FakeModel, progress=False)


def test_cli_reports_user_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.txt"
    rc = main(["simulate", "--train", str(missing), "--test", str(missing), "--task", "ner", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.txt" in err and "Traceback" not in err
    rc = main(["simulate", "--train", str(missing), "--test", str(missing), "--task", "ner", "--strategy", "bogus"])
    assert rc == 2 and "bogus" in capsys.readouterr().err


def test_cli_warm_start_options_follow_the_project_defaults(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from annotator_bridge.cli import build_parser

    base = ["simulate", "--train", "t.txt", "--test", "t.txt", "--task", "classification"]
    parser = build_parser()
    assert parser.parse_args(base).warm_start is None  # TrainingConfig's default (on), as in a project
    assert parser.parse_args([*base, "--no-warm-start"]).warm_start is False
    args = parser.parse_args([*base, "--warm-start", "--warm-schedule", "0.5", "--warm-refit", "2"])
    assert (args.warm_start, args.warm_schedule, args.warm_refit) == (True, 0.5, 2.0)
    train = _write_trec(tmp_path / "train.txt", 12)
    rc = main(["simulate", "--train", str(train), "--test", str(train), "--task", "classification",
               "--warm-schedule", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "warm_schedule" in err and "Traceback" not in err


@pytest.mark.slow
def test_real_minilm_simulation_score_rises(tmp_path: Path, shared_data: Path) -> None:
    """A short simulation with the real MiniLM on a few hundred TREC questions learns over rounds."""
    out = tmp_path / "sim"
    rc = main([
        "simulate", "--train", str(shared_data / "trec" / "TREC.train"),
        "--test", str(shared_data / "trec" / "TREC.test"), "--task", "classification",
        "--strategy", "margin", "--seed-size", "40", "--batch-size", "80", "--rounds", "3", "--repeats", "1",
        "--max-pool", "300", "--max-test", "150", "--max-length", "48", "--target-steps", "45",
        "--out", str(out), "--no-progress",
    ])
    assert rc == 0
    points = json.loads((out / "results.json").read_text())["points"]
    scores = [p["score"] for p in sorted(points, key=lambda p: p["round"])]
    assert [p["labels"] for p in points] == [40, 120, 200]
    assert scores[-1] > scores[0] + 0.1, scores
    assert (out / "learning_curve.png").exists()


@pytest.mark.slow
def test_real_minilm_head_learner_simulation(tmp_path: Path, shared_data: Path) -> None:
    """``--learner head``: every round fits the head on cached frozen features; the score rises, no drop."""
    out = tmp_path / "sim"
    rc = main([
        "simulate", "--train", str(shared_data / "trec" / "TREC.train"),
        "--test", str(shared_data / "trec" / "TREC.test"), "--task", "classification",
        "--strategy", "margin", "--seed-size", "30", "--batch-size", "60", "--rounds", "3", "--repeats", "1",
        "--max-pool", "400", "--max-test", "150", "--max-length", "48", "--learner", "head",
        "--dedupe-threshold", "0.9", "--out", str(out), "--no-progress",
    ])
    assert rc == 0
    points = sorted(json.loads((out / "results.json").read_text())["points"], key=lambda p: p["round"])
    assert [p["learner"] for p in points] == ["head"] * 3
    assert [p["labels"] for p in points] == [30, 90, 150]
    assert points[-1]["score"] > points[0]["score"], points


def test_spec_defaults_are_valid() -> None:
    spec = SimulationSpec(train=Path("a"), test=Path("b"), task=TaskKind.NER, strategies=("random", "mnlp"))
    assert isinstance(spec.training, TrainingConfig)
