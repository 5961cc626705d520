"""Stopping-criteria benchmark: where would each criterion have stopped, and what score was there?

    .venv/bin/python benchmarks/stopping.py trec         # classification (accuracy)
    .venv/bin/python benchmarks/stopping.py conll2003    # NER (entity micro-F1)
    .venv/bin/python benchmarks/stopping.py trec --rounds 4 --repeats 1 --max-pool 1000 --no-full-data  # small run

Runs ``al-loop simulate``'s code path (:func:`al_loop.simulate.run_simulation`: the same ``RoundService``
rounds, whose stopping phase predicts the fixed stop set) with a preset, then prints for each strategy and
criterion (:mod:`al_loop.rounds.stopping`) in how many repeats it fired, the labels at which it first held
and the score there (means over the repeats where it fired), against the final round's labels and score
and the full-data score (the same model and schedule trained on the whole pool), plus the mean kappa,
changed share and uncertainty per round. Results go to ``bench-results/stopping/<preset>/`` (the
simulation's results.json, results.csv, learning_curve.png, and stopping.json with the table's rows and
the machine). On demand only; not part of the test suite (a smoke test runs it with a fake model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from al_loop.config import TrainingConfig
from al_loop.rounds.stopping import CRITERIA
from al_loop.simulate import SimulationSpec, run_simulation, write_outputs
from al_loop.store import Store
from al_loop.types import TaskKind

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AL_LOOP_SHARED_DATA", REPO.parent / "shared" / "data"))

PRESETS: dict[str, SimulationSpec] = {
    # TREC coarse: the whole training set (5,452 questions) is the pool, the 500 test questions score the curve.
    "trec": SimulationSpec(
        train=DATA / "trec" / "TREC.train",
        test=DATA / "trec" / "TREC.test",
        task=TaskKind.CLASSIFICATION,
        strategies=("margin",),
        seed_size=25,
        batch_size=25,
        rounds=12,
        repeats=2,
        full_data=True,
        training=TrainingConfig(max_length=64),
    ),
    # CoNLL-2003: pool = 2,000 random training sentences, test = 800 random test sentences.
    "conll2003": SimulationSpec(
        train=DATA / "conll2003" / "train.txt",
        test=DATA / "conll2003" / "test.txt",
        task=TaskKind.NER,
        strategies=("least_confidence",),
        seed_size=50,
        batch_size=50,
        rounds=10,
        repeats=2,
        max_pool=2000,
        max_test=800,
        full_data=True,
        training=TrainingConfig(max_length=64),
    ),
}


def per_round(points: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
    """Mean labels, score, kappa, changed share and uncertainty per round of ``strategy`` (over repeats)."""
    rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        if p["strategy"] == strategy:
            rows[int(p["round"])].append(p)

    def mean(key: str, ps: list[dict[str, Any]]) -> float | None:
        values = [float(p[key]) for p in ps if isinstance(p.get(key), int | float)]
        return float(np.mean(values)) if values else None

    return [{"round": k, "labels": mean("labels", ps), "score": mean("score", ps), "kappa": mean("kappa", ps),
             "changed": mean("changed", ps), "uncertainty": mean("uncertainty", ps),
             "stops": sorted({s for p in ps for s in str(p.get("stops") or "").split("|") if s})}
            for k, ps in sorted(rows.items())]


def table_rows(summary: dict[str, Any], full: float | None) -> list[dict[str, Any]]:
    """One row per (strategy, criterion) from the simulation summary's ``stopping`` block."""
    out = []
    for strategy, entry in summary.items():
        if strategy.startswith("_") or not isinstance(entry, dict) or "stopping" not in entry:
            continue
        for name in CRITERIA:
            c = entry["stopping"][name]
            out.append({
                "strategy": strategy, "criterion": name, "fired": c["fired"], "repeats": c["repeats"],
                "labels": c["labels"], "score": c["score"], "final_labels": c["final_labels"],
                "final_score": c["final_score"], "full_data": full,
                "labels_share": c["labels"] / c["final_labels"] if c["labels"] and c["final_labels"] else None,
            })
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def render(name: str, rows: list[dict[str, Any]], rounds: dict[str, list[dict[str, Any]]], header: str) -> str:
    lines = [header, "", f"| {name}: strategy | criterion | fired | labels at stop | score there (%) | final labels "
             "| final score (%) | full data (%) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        labels = "never" if r["labels"] is None else f"{r['labels']:.0f} ({100 * r['labels_share']:.0f}%)"
        lines.append(f"| {r['strategy']} | {r['criterion']} | {r['fired']}/{r['repeats']} | {labels} | "
                     f"{_pct(r['score'])} | {r['final_labels']:.0f} | {_pct(r['final_score'])} | "
                     f"{_pct(r['full_data'])} |")
    for strategy, rs in rounds.items():
        lines += ["", f"{strategy}, mean per round: labels, score %, kappa, changed %, uncertainty, criteria holding"]
        for r in rs:
            kappa = "-" if r["kappa"] is None else f"{r['kappa']:.4f}"
            unc = "-" if r["uncertainty"] is None else f"{r['uncertainty']:.4f}"
            lines.append(f"  {r['labels']:.0f}: {_pct(r['score'])}, kappa {kappa}, changed {_pct(r['changed'])}, "
                         f"uncertainty {unc}, {', '.join(r['stops']) or '-'}")
    return "\n".join(lines)


def phase_cost(store: Store) -> dict[str, Any]:
    """What the stopping phase cost in the simulation's trained rounds (``timings["stopping"]``)."""
    stop, score, total = [], [], []
    for project in store.list_projects():
        for r in store.list_rounds(project.id):
            if isinstance(r.timings.get("stopping"), int | float):
                stop.append(float(r.timings["stopping"]))
                score.append(float(r.timings.get("score") or 0.0))
                total.append(float(r.timings.get("total") or 0.0))
    return {"rounds": len(stop), "stopping_median_s": float(np.median(stop)) if stop else None,
            "score_median_s": float(np.median(score)) if score else None,
            "stopping_share": sum(stop) / sum(total) if stop and sum(total) > 0 else None}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def run(spec: SimulationSpec, name: str, out: Path, model_factory: Any = None, progress: bool = True) -> dict[str, Any]:
    t0 = time.perf_counter()
    store = Store("sqlite://")
    result = run_simulation(spec, model_factory=model_factory, progress=progress, store=store)
    write_outputs(result, out, spec.task)
    rows = table_rows(result.summary, result.full_data_score)
    rounds = {s: per_round(result.points, s) for s in spec.strategies}
    cost = phase_cost(store)
    header = (f"# stopping criteria, {name}: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, "
              f"{len(spec.strategies)} strategies x {spec.repeats} repeats, seed {spec.seed_size} + "
              f"{spec.rounds - 1} x {spec.batch_size}, stop set {spec.stop_set_size}, "
              f"{time.perf_counter() - t0:.0f} s")
    text = render(name, rows, rounds, header)
    if cost["rounds"]:
        text += (f"\n\nstopping phase (predict the stop set, compare): median {cost['stopping_median_s']:.3f} s per "
                 f"trained round, {100 * cost['stopping_share']:.1f}% of the rounds' total time "
                 f"({cost['rounds']} rounds; pool scoring median {cost['score_median_s']:.3f} s)")
    payload = {"preset": name, "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
               "spec": result.spec, "rows": rows, "rounds": rounds, "full_data_score": result.full_data_score,
               "cost": cost, "seconds": time.perf_counter() - t0}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "stopping.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(out / "stopping.json")
    (out / "table.md").write_text(text + "\n")
    print(text)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--strategy", action="append", default=None, help="repeatable (default: the preset's)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--max-pool", type=int, default=None)
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--stop-set-size", type=int, default=1000)
    parser.add_argument("--no-full-data", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    spec = PRESETS[args.preset]
    changes: dict[str, Any] = {"stop_set_size": args.stop_set_size}
    for key in ("rounds", "repeats", "max_pool", "max_test"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.strategy:
        changes["strategies"] = tuple(args.strategy)
    if args.no_full_data:
        changes["full_data"] = False
    spec = replace(spec, **changes)
    out = args.out or REPO / "bench-results" / "stopping" / args.preset
    run(spec, args.preset, out, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
