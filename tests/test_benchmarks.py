"""The label-efficiency benchmark's table (the README's table is printed by it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from al_loop.types import TaskKind

REPO = Path(__file__).resolve().parents[1]


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("label_efficiency", REPO / "benchmarks" / "label_efficiency.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _points(task: TaskKind) -> list[dict[str, object]]:
    rows = {"random": ([0.2, 0.4, 0.6], [100, 200, 300]), "mnlp": ([0.5, 0.6, 0.7], [150, 250, 400])}
    return [
        {"strategy": s, "repeat": rep, "round": r, "labels": 10 * r,
         "tokens": tok[r - 1] if task is TaskKind.NER else None, "score": sc[r - 1] + 0.01 * rep, "seconds": 1.0}
        for s, (sc, tok) in rows.items() for rep in (0, 1) for r in (1, 2, 3)
    ]


def test_ner_table_counts_labels_and_tokens(tmp_path: Path) -> None:
    bench = _bench()
    (tmp_path / "results.json").write_text(json.dumps({"spec": {"task": "ner"}, "points": _points(TaskKind.NER),
                                                       "full_data_score": 0.8}))
    lines = bench.retable(tmp_path / "results.json").splitlines()
    assert "tokens to reach random's final" in lines[0]
    assert lines[2].startswith("| random | ") and "30 (reference)" in lines[2]
    # mnlp reaches random's final mean (0.605) at round 2: 20 labels (67%), 250 tokens (83%)
    assert lines[3] == "| mnlp | 60.5 | 70.5 ± 0.5 | 20 | 67% | 400 | 250 | 83% |"


def test_classification_table_has_no_token_columns(tmp_path: Path) -> None:
    bench = _bench()
    summary = bench.summarize(_points(TaskKind.CLASSIFICATION))
    table = bench.table(summary, TaskKind.CLASSIFICATION)
    assert "tokens" not in table and "| mnlp | 60.5 | 70.5 ± 0.5 | 20 | 67% |" in table


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_bench_ingest_smoke(tmp_path: Path) -> None:
    """The ingest load benchmark on a few events (real redis-server, workers and server; no training round)."""
    bench = _load("bench_ingest")
    out = tmp_path / "ingest.json"
    assert bench.main(["--rate", "20", "--duration", "1", "--no-round", "--items", "20", "--labelled", "4",
                       "--drain-timeout", "60", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["sent"] == 20 and figures["acked"] == 20, figures
    assert figures["http_5xx"] == 0 and figures["errors"] == {} and figures["lost"] == 0, figures
    assert figures["drain_s"] is not None and figures["ack_p99_ms"] >= figures["ack_p50_ms"] > 0
