"""The label-efficiency benchmark's new figures (drops, median round time, area) and its report, on synthetic points."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from al_loop.types import TaskKind

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("label_efficiency", REPO / "benchmarks" / "label_efficiency.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# strategy -> repeat -> scores at 25, 50, 75 labels
SCORES = {
    "random": {0: [0.5, 0.7, 0.6], 1: [0.4, 0.5, 0.8]},  # mean 0.45, 0.60, 0.70: never drops; repeat 0 drops 10
    "margin": {0: [0.6, 0.95, 0.9], 1: [0.6, 0.93, 0.92]},  # mean 0.60, 0.94, 0.91: drops 3; repeat 0 drops 5
}
SECONDS = {"random": [10, 30, 20, 12, 40, 14], "margin": [5, 6, 7, 8, 9, 100]}


def _points() -> list[dict[str, object]]:
    points: list[dict[str, object]] = []
    for s, reps in SCORES.items():
        secs = iter(SECONDS[s])
        for rep, scores in reps.items():
            # a cold-start round 0 (no score, slow): never part of the curve nor of the round times
            points.append({"strategy": s, "repeat": rep, "round": 0, "labels": 0, "tokens": None, "score": None,
                           "seconds": 999.0})
            for r, score in enumerate(scores, start=1):
                points.append({"strategy": s, "repeat": rep, "round": r, "labels": 25 * r, "tokens": None,
                               "score": score, "seconds": float(next(secs))})
    return points


def test_drops_median_and_area(bench) -> None:  # type: ignore[no-untyped-def]
    stats = bench.bench_summary(_points(), reach=0.92)
    assert list(stats) == ["random", "margin"]
    rnd, mar = stats["random"], stats["margin"]
    assert rnd["largest_drop_mean"] == {"points": 0.0, "from_labels": None, "to_labels": None}
    assert rnd["largest_drop_repeat"]["points"] == pytest.approx(10.0)
    assert (rnd["largest_drop_repeat"]["repeat"], rnd["largest_drop_repeat"]["from_labels"],
            rnd["largest_drop_repeat"]["to_labels"]) == (0, 50.0, 75.0)
    assert mar["largest_drop_mean"]["points"] == pytest.approx(3.0)
    assert (mar["largest_drop_mean"]["from_labels"], mar["largest_drop_mean"]["to_labels"]) == (50.0, 75.0)
    assert mar["largest_drop_repeat"]["points"] == pytest.approx(5.0) and mar["largest_drop_repeat"]["repeat"] == 0
    assert rnd["median_round_seconds"] == pytest.approx(17.0)  # median of 10 30 20 12 40 14; round 0 left out
    assert mar["median_round_seconds"] == pytest.approx(7.5) and mar["max_round_seconds"] == 100.0
    assert rnd["area"] == pytest.approx(1.75 / 3)  # mean of the mean curve 0.45, 0.60, 0.70
    assert rnd["area_std"] == pytest.approx(0.05 / 3)  # repeats' own means 0.6 and 0.5667
    assert rnd["auc"] == pytest.approx((0.525 + 0.65) / 2)  # trapezoids, kept beside the area
    assert mar["labels_to_random_final"] == 50.0 and mar["label_ratio_vs_random"] == pytest.approx(2 / 3)
    assert rnd["labels_to_reach"]["labels"] is None and mar["labels_to_reach"] == {"score": 0.92, "labels": 50.0}


def test_table_peer_rows_and_targets(bench) -> None:  # type: ignore[no-untyped-def]
    extras = bench.EXTRAS["trec-peer"]
    stats = bench.bench_summary(_points(), reach=extras.reach)
    lines = bench.bench_table(stats, TaskKind.CLASSIFICATION, extras).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:4] == ["strategy", "area: mean of the points (accuracy, %)",
                        "AUC: trapezoid over labels (accuracy, %)", "final accuracy (%)"]
    assert head[-4:] == ["labels to reach 92%", "largest drop, mean curve (points)",
                         "largest drop, one repeat (points)", "median round (s)"]
    assert lines[1] == "|" + "---|" * len(head)
    cells = {line.split(" | ")[0][2:]: [c.strip() for c in line.strip("|").split("|")] for line in lines[2:]}
    assert cells["random"][1] == "58.3 ± 1.7" and cells["random"][3] == "70.0 ± 10.0"
    assert cells["random"][4:] == ["75 (reference)", "100%", "not reached", "0.0", "10.0 (50→75, repeat 0)", "17.0"]
    assert cells["margin"][4:] == ["50", "67%", "50", "3.0 (50→75)", "5.0 (50→75, repeat 0)", "7.5"]
    quoted = [c for name, c in cells.items() if name.endswith("(quoted, not measured in this run)")]
    assert [c[1:6] for c in quoted] == [["72.1 ± 0.8", "-", "92.1", "275 (reference)", "100%"],
                                        ["77.2 ± 1.1", "-", "93.4", "172", "63%"]]
    assert all(len(c) == len(head) for c in cells.values())
    goals = "\n".join(bench.targets(stats, extras))
    assert "best strategy's area (margin): 81.7 (target: >= 82) - NOT met" in goals
    assert "random's area: 58.3 (target: >= 77) - NOT met" in goals
    assert "labels to reach 92% (best: margin): 50 (target: <= 120 labels) - met" in goals
    assert "largest drop of a mean curve (margin): 3.0 points (target: <= 1) - NOT met" in goals
    assert "largest drop in one repeat (random): 10.0 points (target: <= 5) - NOT met" in goals
    assert "median round time (slowest: random): 17.0 s (target: <= 20 s) - met" in goals


def test_report_reprints_from_results_json(bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = {"task": "classification", "seed_size": 25, "batch_size": 25, "rounds": 3, "repeats": 2,
            "strategies": ["random", "margin"], "max_pool": 0, "max_test": 0, "training": {"max_length": 64}}
    (tmp_path / "results.json").write_text(json.dumps({"spec": spec, "points": _points(), "seconds": 600.0}))
    text = bench.rereport(tmp_path, "trec-peer")
    assert text.startswith("# trec-peer: date and machine not recorded") and "; 10.0 min" in text
    machine = {"cpu": "Test CPU", "cpus": 2, "usable_cpus": 2, "torch_threads": 2, "torch": "9.9",
               "device": "cpu", "precision": "fp32", "precision_setting": "auto"}
    (tmp_path / "bench.json").write_text(json.dumps({"date": "2026-12-01", "machine": machine, "pool": 5452,
                                                     "test": 500}))
    text = bench.rereport(tmp_path, "trec-peer")
    first, second = text.splitlines()[:2]
    assert first == ("# trec-peer: 2026-12-01 on Test CPU, 2 CPUs (2 usable, torch threads 2); torch 9.9, device cpu, "
                     "precision fp32 (setting auto); 10.0 min")
    assert second.startswith("# pool 5,452, test 500; seed 25 + batch 25, 3 trained rounds (25..75 labels), 2 repeats")
    assert "| margin | 81.7 ± 0.0 |" in text and "Quoted rows: small-text 1.4.1" in text
    assert "Targets (issue 8):" in text
    assert bench.cpu_model()


def test_trec_peer_preset_is_the_peer_protocol(bench) -> None:  # type: ignore[no-untyped-def]
    spec = bench.PRESETS["trec-peer"]
    last = spec.seed_size + spec.batch_size * (spec.rounds - 1)
    assert (spec.seed_size, spec.batch_size, spec.rounds, last, spec.repeats) == (25, 25, 11, 275, 3)
    assert spec.strategies == ("random", "margin") and not spec.full_data and spec.max_pool == 0
    assert spec.training == bench.TrainingConfig(max_length=64)
