"""Label-efficiency benchmark: active-learning strategies vs random on a shared data set.

    .venv/bin/python benchmarks/label_efficiency.py conll2003    # NER (entity micro-F1)
    .venv/bin/python benchmarks/label_efficiency.py trec         # classification (accuracy)

Runs ``al-loop simulate`` with a fixed preset (below), then prints the README table: per
strategy the area under the learning curve, the final score, the labels needed to reach
random's final score, and the full-data score of the same model and schedule for reference.
Results go to ``bench-results/<dataset>/`` (results.json, results.csv, learning_curve.png).
The data is read from ``../shared/data`` (or ``$AL_LOOP_SHARED_DATA``); nothing is copied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

from al_loop.config import TrainingConfig
from al_loop.simulate import SimulationSpec, run_simulation, summarize, write_outputs
from al_loop.types import TaskKind

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AL_LOOP_SHARED_DATA", REPO.parent / "shared" / "data"))

PRESETS: dict[str, SimulationSpec] = {
    # CoNLL-2003: pool = 2,000 random training sentences, test = 800 random test sentences (to fit 45 min on 2 cores).
    "conll2003": SimulationSpec(
        train=DATA / "conll2003" / "train.txt",
        test=DATA / "conll2003" / "test.txt",
        task=TaskKind.NER,
        strategies=("random", "mnlp", "least_confidence"),
        seed_size=50,
        batch_size=50,
        rounds=7,
        repeats=3,
        max_pool=2000,
        max_test=800,
        full_data=True,
        training=TrainingConfig(max_length=64, target_steps=100, max_epochs=15, min_epochs=3),
    ),
    # TREC: the whole training set (5,452 questions) is the pool, the whole test set (500) is scored.
    "trec": SimulationSpec(
        train=DATA / "trec" / "TREC.train",
        test=DATA / "trec" / "TREC.test",
        task=TaskKind.CLASSIFICATION,
        strategies=("random", "margin", "entropy"),
        seed_size=30,
        batch_size=30,
        rounds=7,
        repeats=3,
        max_pool=0,
        max_test=0,
        full_data=True,
        training=TrainingConfig(max_length=48, target_steps=100, max_epochs=15, min_epochs=3),
    ),
}


def table(summary: dict, task: TaskKind) -> str:
    """The README table: one row per strategy, random first (it is the reference)."""
    ner = task is TaskKind.NER
    metric = "F1" if ner else "accuracy"
    head = (f"| strategy | AUC ({metric}, %) | final {metric} (%) | labels to reach random's final "
            "| vs random's labels |")
    rule = "|---|---|---|---|---|"
    if ner:
        head += " tokens at the end | tokens to reach random's final | vs random's tokens |"
        rule += "---|---|---|"
    rows = [head, rule]
    names = sorted((n for n in summary if not n.startswith("_")), key=lambda n: (n != "random", n))
    for name in names:
        s = summary[name]
        row = f"| {name} | {100 * s['auc']:.1f} | {100 * s['final_score']:.1f} ± {100 * s['final_std']:.1f} | "
        if name == "random":
            row += f"{int(s['final_labels'])} (reference) | 100% |"
        else:
            row += f"{_count(s.get('labels_to_random_final'))} | {_pct(s.get('label_ratio_vs_random'))} |"
        if ner:
            row += f" {_count(s.get('final_tokens'))} | "
            if name == "random":
                row += f"{_count(s.get('final_tokens'))} (reference) | 100% |"
            else:
                row += f"{_count(s.get('tokens_to_random_final'))} | {_pct(s.get('token_ratio_vs_random'))} |"
        rows.append(row)
    return "\n".join(rows)


def _count(value: float | None) -> str:
    return "not reached" if value is None else f"{value:,.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def retable(results: Path) -> str:
    """Recompute the summary and table of a finished run from its ``results.json`` points."""
    data = json.loads(results.read_text())
    summary = summarize(data["points"], data.get("full_data_score"))
    return table(summary, TaskKind(data["spec"]["task"]))


def _print_point(point: dict) -> None:
    """One line per trained round, so a long run shows where it is (and what it has so far)."""
    print(json.dumps(point), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, help="override the preset")
    parser.add_argument("--rounds", type=int, help="override the preset")
    parser.add_argument("--strategy", action="append", help="override the preset's strategies")
    parser.add_argument("--no-full-data", action="store_true", help="skip the full-data reference run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--retable", action="store_true",
                        help="do not run: print the table of the finished run in --out (its results.json)")
    args = parser.parse_args(argv)
    if args.retable:
        print(retable((args.out or REPO / "bench-results" / args.dataset) / "results.json"))
        return 0

    spec = PRESETS[args.dataset]
    changes: dict = {}
    if args.repeats:
        changes["repeats"] = args.repeats
    if args.rounds:
        changes["rounds"] = args.rounds
    if args.strategy:
        changes["strategies"] = tuple(args.strategy)
    if args.no_full_data:
        changes["full_data"] = False
    out = args.out or REPO / "bench-results" / args.dataset
    spec = replace(spec, out=out, **changes)
    t0 = time.perf_counter()
    result = run_simulation(spec, progress=sys.stderr.isatty(), on_point=_print_point)
    write_outputs(result, out, spec.task)
    minutes = (time.perf_counter() - t0) / 60
    import torch

    print(f"# {args.dataset}: {date.today()} on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {minutes:.1f} min")
    print(table(result.summary, spec.task))
    if result.full_data_score is not None:
        print(f"\nfull-data score (same model and schedule, whole pool of {len(result.points) and ''}"
              f"{spec.max_pool or 'all'} items): {100 * result.full_data_score:.1f}%")
    (out / "table.md").write_text(table(result.summary, spec.task) + "\n")
    print(json.dumps({"minutes": round(minutes, 1), "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
