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


def _bench_scale():  # type: ignore[no-untyped-def]
    """benchmarks/bench_scale.py as a module registered in sys.modules (its dataclasses need that)."""
    import sys

    if "bench_scale" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_scale", REPO / "benchmarks" / "bench_scale.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_scale"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_scale"]


def test_bench_scale_import_and_memory_smoke(tmp_path: Path) -> None:
    """The scale benchmark's store-only parts at a tiny size (fresh child processes, no transformer)."""
    bench = _bench_scale()
    out = tmp_path / "scale.json"
    assert bench.main(["--part", "import", "--import-sizes", "500", "--import-batch", "200", "--part", "memory",
                       "--sizes", "300", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"import", "memory"} and doc["machine"]["cpus"] >= 1
    (imp,) = doc["results"]["import"]
    assert imp["items"] == 500 and imp["items_per_s"] > 0 and imp["peak_rss_mib"] >= imp["rss_before_mib"] > 0
    (mem,) = doc["results"]["memory"]
    assert mem["pool"] == 300 and mem["chunked"]["stored_rows"] == 300


def test_bench_scale_texts_are_unique_and_realistic() -> None:
    bench = _bench_scale()
    batches = list(bench.synthetic_batches(1000, 300))
    assert [len(b) for b in batches] == [300, 300, 300, 100]
    pairs = [p for b in batches for p in b]
    assert len({i for i, _ in pairs}) == 1000 and len({t for _, t in pairs}) == 1000
    words = [len(t.split()) for _, t in pairs]
    assert 5 < sum(words) / len(words) < 60  # sentences, not tokens or documents
    assert bench.synthetic_texts(50, seed=3) == bench.synthetic_texts(50, seed=3)


@pytest.mark.slow
def test_bench_scale_round_and_throughput_smoke(tmp_path: Path) -> None:
    """A real MiniLM round on a tiny pool split into phases, and the scoring-throughput comparison."""
    bench = _bench_scale()
    out = tmp_path / "scale.json"
    assert bench.main(["--part", "round", "--round-sizes", "120", "--labels", "12", "--fast-train",
                       "--part", "throughput", "--throughput-n", "16", "--naive-n", "4", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    (rnd,) = results["round"]
    assert rnd["pool"] == 120 and rnd["labels"] == 12 and rnd["stored_rows"] == rnd["payloads"] == 120
    assert all(rnd[k] is not None and rnd[k] >= 0 for k in ("train_s", "score_s", "select_s", "push_s", "wall_s"))
    paths = {r["path"]: r for r in results["throughput"]}
    peak = paths.pop("matmul_peak")
    assert peak["fp32_gflops"] > 0 and peak["bf16_gflops"] > 0 and 3 < peak["tokens_per_text"] < 128
    assert peak["linear_gflop_per_token"] == pytest.approx(2 * 6 * (4 * 384**2 + 2 * 384 * 1536) / 1e9)  # MiniLM-L6
    assert set(paths) == {"pipeline_naive", "pipeline_batched", "fixed_fp32", "alloop", "alloop_probs",
                          "alloop_fp32"}
    assert paths["pipeline_naive"]["texts"] == 4 and paths["alloop"]["texts"] == 16
    assert all(r["texts_per_s"] > 0 and r["linear_gflops"] > 0 for r in paths.values())
    assert paths["pipeline_naive"]["x_naive"] == 1.0


@pytest.mark.slow
def test_bench_scale_fanout_smoke(tmp_path: Path) -> None:
    """Two warm one-thread score workers against one two-thread process on a tiny pool."""
    bench = _bench_scale()
    out = tmp_path / "scale.json"
    assert bench.main(["--part", "fanout", "--fanout-size", "120", "--labels", "12", "--fast-train",
                       "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]["fanout"]
    assert row["pool"] == 120 and row["one_worker_2_threads_s"] > 0 and row["two_workers_1_thread_s"] > 0
    assert row["ratio"] > 0 and row["selection_overlap"] >= 0.5
    assert row["shard_jobs_on_workers"] == 2, "the two shards must have run on the worker processes"


@pytest.mark.slow
def test_bench_estimate_smoke(tmp_path: Path, shared_data: Path) -> None:
    """Two projects without a test split: round 2's estimate continues the chain in one, fits from the base model in
    the other (its estimate model deleted); both score on held-out labels."""
    spec = importlib.util.spec_from_file_location("bench_estimate", REPO / "benchmarks" / "bench_estimate.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "estimate.json"
    assert bench.main(["--labels", "40", "--step", "10", "--max-pool", "60", "--fast-train", "--data",
                       str(shared_data / "trec" / "TREC.train"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert all(r["estimate"]["warm_started"] is False for r in doc["round1"].values())
    (chain,), (baseline,) = doc["round2"]["chain"], doc["round2"]["baseline"]
    assert chain["estimate"]["warm_started"] is True and baseline["estimate"]["warm_started"] is False
    assert chain["warm_started"] and baseline["warm_started"]  # the final fit warm-starts in both
    assert all(r["eval_set"].startswith("held-out labels") for r in (chain, baseline))
    assert doc["chain_over_baseline"]["train_s"] > 0
