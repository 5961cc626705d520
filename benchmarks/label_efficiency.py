"""Label-efficiency benchmark: active-learning strategies vs random on a shared data set.

    .venv/bin/python benchmarks/label_efficiency.py conll2003    # NER (entity micro-F1)
    .venv/bin/python benchmarks/label_efficiency.py trec         # classification (accuracy)
    .venv/bin/python benchmarks/label_efficiency.py trec-peer    # small-text's TREC protocol, peer figures beside
    .venv/bin/python benchmarks/label_efficiency.py trec --retable   # reprint a finished run from results.json

Runs ``al-loop simulate`` with a fixed preset (below), then prints the header (date, CPU model,
cores, torch version, device and precision) and the table: per strategy the area (mean of the
per-round mean scores), the trapezoid AUC, the final score, the labels needed to reach random's
final score, the largest drop between consecutive rounds (mean curve and any single repeat), and
the median round time; then the full-data score when the preset has one, the peer's quoted
figures and the issue's targets with met / not met. Results go to ``bench-results/<dataset>/``
(results.json, results.csv, learning_curve.png, bench.json with the machine and ``bench_summary``,
table.md). The data is read from ``../shared/data`` (or ``$AL_LOOP_SHARED_DATA``); nothing is copied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from al_loop.config import TrainingConfig
from al_loop.simulate import SimulationSpec, load_data, run_simulation, summarize, write_outputs
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
    # small-text's protocol (issue 8): TREC coarse, whole training set as the pool, whole test set, 25 seed labels
    # + 10 queries of 25. al-loop counts *trained* rounds (each evaluated), so 11 rounds = 11 points, 25..275 labels.
    # Training settings are the defaults apart from the max length (the lead chooses them).
    "trec-peer": SimulationSpec(
        train=DATA / "trec" / "TREC.train",
        test=DATA / "trec" / "TREC.test",
        task=TaskKind.CLASSIFICATION,
        strategies=("random", "margin"),
        seed_size=25,
        batch_size=25,
        rounds=11,
        repeats=3,
        max_pool=0,
        max_test=0,
        full_data=False,
        training=TrainingConfig(max_length=64),
    ),
}


class PeerRow(NamedTuple):
    """Figures quoted from another tool's run (not measured by this script)."""

    name: str
    area: float  # mean of the points, %
    area_std: float | None
    final: float  # %
    final_labels: float
    labels_to_random_final: float | None  # None: the reference (random) row


class Extras(NamedTuple):
    """What a preset prints beyond the table: quoted peer rows, a score to reach, targets.

    (NamedTuples, not dataclasses: the tests load this script by path, outside ``sys.modules``.)
    """

    peer_source: str = ""
    peers: tuple[PeerRow, ...] = ()
    reach: float | None = None  # print "labels to reach <reach>" per strategy (a fraction)
    target_best_area: float | None = None  # % (area = mean of the points)
    target_random_area: float | None = None  # %
    target_reach_labels: float | None = None  # the best strategy reaches `reach` with at most this many labels
    target_median_round_s: float | None = None
    target_mean_drop: float | None = 1.0  # points, every strategy (issue 8, item 1)
    target_repeat_drop: float | None = 5.0  # points, every strategy and repeat


EXTRAS: dict[str, Extras] = {
    "trec-peer": Extras(
        peer_source="small-text 1.4.1, same MiniLM, same protocol, 2 repeats, measured on a 2-core CPU 2026-11-25",
        peers=(
            PeerRow("small-text random", 72.1, 0.8, 92.1, 275.0, None),
            PeerRow("small-text breaking ties (margin)", 77.2, 1.1, 93.4, 275.0, 172.0),
        ),
        reach=0.92,
        target_best_area=82.0,
        target_random_area=77.0,
        target_reach_labels=120.0,
        target_median_round_s=20.0,
    ),
}


# --- the figures, from results.json points -------------------------------------------------------------------


def _strategies(summary: dict[str, Any]) -> list[str]:
    return sorted((n for n in summary if not n.startswith("_")), key=lambda n: (n != "random", n))


def _largest_drop(labels: Sequence[float], scores: Sequence[float]) -> dict[str, Any]:
    """The largest fall between consecutive points, in percentage points (0 when the curve never falls)."""
    best: dict[str, Any] = {"points": 0.0, "from_labels": None, "to_labels": None}
    for i in range(1, len(scores)):
        drop = 100.0 * (scores[i - 1] - scores[i])
        if drop > best["points"]:
            best = {"points": drop, "from_labels": float(labels[i - 1]), "to_labels": float(labels[i])}
    return best


def bench_summary(points: Sequence[dict[str, Any]], reach: float | None = None) -> dict[str, Any]:
    """Per strategy, from the points: what :func:`summarize` gives plus the curve's shape and the round times.

    ``area`` is the mean of the per-round mean scores (for 11 evenly spaced points: the mean accuracy of
    the 11 points), ``area_std`` the standard deviation over repeats of each repeat's mean score;
    ``auc`` is summarize's trapezoid area over the label range. ``largest_drop_mean`` is the largest fall
    of the mean curve between consecutive rounds and ``largest_drop_repeat`` the largest in any single
    repeat, both in percentage points. ``median_round_seconds`` is the median ``seconds`` of every point
    except a cold-start round 0 (simulate records none today: its points start at the first training round).
    """
    base = summarize(points)
    out: dict[str, Any] = {}
    for name in _strategies(base):
        s = base[name]
        curve = s["curve"]
        mine = [p for p in points if p["strategy"] == name and p["score"] is not None]
        per_repeat: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for p in mine:
            per_repeat[p["repeat"]].append(p)
        repeat_areas = [float(np.mean([p["score"] for p in ps])) for ps in per_repeat.values()]
        worst: dict[str, Any] = {"points": 0.0, "from_labels": None, "to_labels": None, "repeat": None}
        for rep, ps in sorted(per_repeat.items()):
            ps = sorted(ps, key=lambda p: p["round"])
            drop = _largest_drop([p["labels"] for p in ps], [p["score"] for p in ps])
            if drop["points"] > worst["points"]:
                worst = {**drop, "repeat": rep}
        seconds = [float(p["seconds"]) for p in points
                   if p["strategy"] == name and p.get("seconds") is not None and p["round"] != 0]
        entry: dict[str, Any] = {
            "area": float(np.mean([c["mean"] for c in curve])) if curve else None,
            "area_std": float(np.std(repeat_areas)) if repeat_areas else None,
            "auc": s["auc"],
            "final_score": s["final_score"],
            "final_std": s["final_std"],
            "final_labels": s["final_labels"],
            "labels_to_random_final": s.get("labels_to_random_final"),
            "label_ratio_vs_random": s.get("label_ratio_vs_random"),
            "largest_drop_mean": _largest_drop([c["labels"] for c in curve], [c["mean"] for c in curve]),
            "largest_drop_repeat": worst,
            "median_round_seconds": float(np.median(seconds)) if seconds else None,
            "max_round_seconds": max(seconds) if seconds else None,
            "repeats": len(per_repeat),
        }
        for key in ("final_tokens", "tokens_to_random_final", "token_ratio_vs_random"):
            if key in s:
                entry[key] = s[key]
        if reach is not None:
            first = next((c["labels"] for c in curve if c["mean"] >= reach), None)
            entry["labels_to_reach"] = {"score": reach, "labels": first}
        out[name] = entry
    return out


# --- the tables --------------------------------------------------------------------------------------------------


def table(summary: dict, task: TaskKind) -> str:
    """The README's table of ``summarize`` output: one row per strategy, random first (it is the reference)."""
    ner = task is TaskKind.NER
    metric = "F1" if ner else "accuracy"
    head = (f"| strategy | AUC ({metric}, %) | final {metric} (%) | labels to reach random's final "
            "| vs random's labels |")
    rule = "|---|---|---|---|---|"
    if ner:
        head += " tokens at the end | tokens to reach random's final | vs random's tokens |"
        rule += "---|---|---|"
    rows = [head, rule]
    for name in _strategies(summary):
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


def bench_table(stats: dict[str, Any], task: TaskKind, extras: Extras | None = None) -> str:
    """The benchmark's table of :func:`bench_summary` output, plus the preset's quoted peer rows."""
    extras = extras or Extras()
    ner = task is TaskKind.NER
    metric = "F1" if ner else "accuracy"
    cols = [
        "strategy",
        f"area: mean of the points ({metric}, %)",
        f"AUC: trapezoid over labels ({metric}, %)",
        f"final {metric} (%)",
        "labels to reach random's final",
        "vs random's labels",
    ]
    if ner:
        cols += ["tokens at the end", "tokens to reach random's final", "vs random's tokens"]
    if extras.reach is not None:
        cols.append(f"labels to reach {100 * extras.reach:g}%")
    cols += ["largest drop, mean curve (points)", "largest drop, one repeat (points)", "median round (s)"]
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, s in stats.items():
        ref = name == "random"
        cells = [
            name,
            f"{_pp(s['area'])} ± {_pp(s['area_std'])}",
            _pp(s["auc"]),
            f"{_pp(s['final_score'])} ± {_pp(s['final_std'])}",
            f"{_count(s['final_labels'])} (reference)" if ref else _count(s.get("labels_to_random_final")),
            "100%" if ref else _pct(s.get("label_ratio_vs_random")),
        ]
        if ner:
            cells += [
                _count(s.get("final_tokens")),
                f"{_count(s.get('final_tokens'))} (reference)" if ref else _count(s.get("tokens_to_random_final")),
                "100%" if ref else _pct(s.get("token_ratio_vs_random")),
            ]
        if extras.reach is not None:
            cells.append(_count((s.get("labels_to_reach") or {}).get("labels")))
        cells += [
            _drop(s["largest_drop_mean"]),
            _drop(s["largest_drop_repeat"]),
            "-" if s["median_round_seconds"] is None else f"{s['median_round_seconds']:.1f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    for peer in extras.peers:
        area = f"{peer.area:.1f}" + ("" if peer.area_std is None else f" ± {peer.area_std:.1f}")
        if peer.labels_to_random_final is None:
            reach, ratio = f"{_count(peer.final_labels)} (reference)", "100%"
        else:
            reach, ratio = _count(peer.labels_to_random_final), _pct(peer.labels_to_random_final / peer.final_labels)
        cells = [f"{peer.name} (quoted, not measured in this run)", area, "-", f"{peer.final:.1f}", reach, ratio]
        cells += ["-"] * (len(cols) - len(cells))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def targets(stats: dict[str, Any], extras: Extras) -> list[str]:
    """One line per target of the preset: the figure, the target and met / not met."""
    lines: list[str] = []

    def line(what: str, value: str, goal: str, met: bool) -> None:
        lines.append(f"- {what}: {value} (target: {goal}) - {'met' if met else 'NOT met'}")

    measured = {n: s for n, s in stats.items() if s.get("area") is not None}
    if not measured:
        return lines
    if extras.target_best_area is not None:
        best = max(measured, key=lambda n: measured[n]["area"])
        area = 100 * measured[best]["area"]
        line(f"best strategy's area ({best})", f"{area:.1f}", f">= {extras.target_best_area:g}",
             area >= extras.target_best_area)
    if extras.target_random_area is not None:
        if "random" in measured:
            area = 100 * measured["random"]["area"]
            line("random's area", f"{area:.1f}", f">= {extras.target_random_area:g}",
                 area >= extras.target_random_area)
        else:
            lines.append("- random's area: random was not run")
    if extras.reach is not None and extras.target_reach_labels is not None:
        reached = {n: s["labels_to_reach"]["labels"] for n, s in measured.items()
                   if s.get("labels_to_reach", {}).get("labels") is not None}
        goal = f"<= {extras.target_reach_labels:,.0f} labels"
        what = f"labels to reach {100 * extras.reach:g}%"
        if reached:
            best = min(reached, key=lambda n: reached[n])
            line(f"{what} (best: {best})", _count(reached[best]), goal, reached[best] <= extras.target_reach_labels)
        else:
            line(what, "not reached by any strategy", goal, False)
    if extras.target_mean_drop is not None:
        name = max(measured, key=lambda n: measured[n]["largest_drop_mean"]["points"])
        worst = measured[name]["largest_drop_mean"]["points"]
        line(f"largest drop of a mean curve ({name})", f"{worst:.1f} points",
             f"<= {extras.target_mean_drop:g}", worst <= extras.target_mean_drop)
    if extras.target_repeat_drop is not None:
        name = max(measured, key=lambda n: measured[n]["largest_drop_repeat"]["points"])
        worst = measured[name]["largest_drop_repeat"]["points"]
        line(f"largest drop in one repeat ({name})", f"{worst:.1f} points",
             f"<= {extras.target_repeat_drop:g}", worst <= extras.target_repeat_drop)
    if extras.target_median_round_s is not None:
        times = {n: s["median_round_seconds"] for n, s in measured.items() if s["median_round_seconds"] is not None}
        if times:
            name = max(times, key=lambda n: times[n])
            line(f"median round time (slowest: {name})", f"{times[name]:.1f} s",
                 f"<= {extras.target_median_round_s:g} s", times[name] <= extras.target_median_round_s)
    return lines


def _count(value: float | None) -> str:
    return "not reached" if value is None else f"{value:,.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _pp(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _drop(drop: dict[str, Any]) -> str:
    """``"12.3 (100→125)"``, with ``", repeat N"`` for a single repeat's drop; ``"0.0"`` when it never drops."""
    if not drop.get("points"):
        return "0.0"
    where = f"{drop['from_labels']:,.0f}→{drop['to_labels']:,.0f}"
    if drop.get("repeat") is not None:
        where += f", repeat {drop['repeat']}"
    return f"{drop['points']:.1f} ({where})"


# --- the machine and the whole report ----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(training: TrainingConfig) -> dict[str, Any]:
    """CPU model, cores, torch version, device and the precision the models train and score in."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "precision_setting": training.precision,
    }
    try:
        from al_loop.models.loading import pick_device, pick_precision, precision_name

        device = pick_device(training.device)
        info["device"] = str(device)
        info["precision"] = precision_name(pick_precision(training.precision, device))
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    except Exception as exc:  # the resolution moved or failed: say so rather than guess
        info["device"] = training.device
        info["precision"] = f"unknown ({type(exc).__name__})"
    return info


def header(dataset: str, bench: dict[str, Any] | None, spec: dict[str, Any], seconds: float | None) -> str:
    bench = bench or {}
    m = bench.get("machine")
    if m:
        gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
        when = bench.get("date", "date not recorded")
        where = (f"{when} on {m['cpu']}, {m['cpus']} CPUs ({m['usable_cpus']} usable, "
                 f"torch threads {m['torch_threads']}){gpu}; torch {m['torch']}, device {m['device']}, "
                 f"precision {m['precision']} (setting {m['precision_setting']})")
    else:
        where = "date and machine not recorded (no bench.json next to results.json)"
    minutes = f"; {seconds / 60:.1f} min" if seconds else ""
    head = f"# {dataset}: {where}{minutes}"
    if spec:
        pool, test = bench.get("pool"), bench.get("test")
        size = (f"pool {pool:,}, test {test:,}" if pool and test else
                f"pool {spec.get('max_pool') or 'whole file'}, test {spec.get('max_test') or 'whole file'}")
        last = spec["seed_size"] + spec["batch_size"] * (spec["rounds"] - 1)
        tr = spec.get("training") or {}
        head += (f"\n# {size}; seed {spec['seed_size']} + batch {spec['batch_size']}, {spec['rounds']} trained rounds "
                 f"({spec['seed_size']}..{last} labels), {spec['repeats']} repeats, max length {tr.get('max_length')}, "
                 f"strategies {', '.join(spec['strategies'])}")
    return head


def report(data: dict[str, Any], dataset: str, bench: dict[str, Any] | None = None) -> str:
    """Everything the benchmark prints, from a results.json payload (and bench.json, for the machine)."""
    extras = EXTRAS.get(dataset, Extras())
    task = TaskKind(data["spec"]["task"])
    stats = bench_summary(data["points"], extras.reach)
    parts = [header(dataset, bench, data["spec"], data.get("seconds")), "", bench_table(stats, task, extras)]
    if extras.peers:
        parts.append(f"\nQuoted rows: {extras.peer_source}; not measured in this run.")
    full = data.get("full_data_score")
    if full is not None:
        parts.append(f"\nFull data (the whole pool, same model and schedule): {100 * full:.1f}%")
    lines = targets(stats, extras)
    if lines:
        parts.append("\nTargets (issue 8):\n" + "\n".join(lines))
    return "\n".join(parts)


def retable(results: Path) -> str:
    """The README's table of a finished run, recomputed from its ``results.json`` points (see :func:`report`)."""
    data = json.loads(results.read_text())
    summary = summarize(data["points"], data.get("full_data_score"))
    return table(summary, TaskKind(data["spec"]["task"]))


def rereport(out: Path, dataset: str) -> str:
    """:func:`report` of a finished run in ``out`` (results.json, and bench.json when present)."""
    data = json.loads((out / "results.json").read_text())
    bench_path = out / "bench.json"
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else None
    return report(data, dataset, bench)


def _print_point(point: dict) -> None:
    """One line per trained round, so a long run shows where it is (and what it has so far)."""
    print(json.dumps(point), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, help="override the preset")
    parser.add_argument("--rounds", type=int, help="override the preset (trained rounds, one point each)")
    parser.add_argument("--strategy", action="append", help="override the preset's strategies (repeatable)")
    parser.add_argument("--max-pool", type=int, help="override the preset: subsample the pool (smoke runs)")
    parser.add_argument("--max-test", type=int, help="override the preset: subsample the test set (smoke runs)")
    parser.add_argument("--no-full-data", action="store_true", help="skip the full-data reference run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--retable", action="store_true",
                        help="do not run: reprint the report of the finished run in --out (its results.json)")
    args = parser.parse_args(argv)
    out = args.out or REPO / "bench-results" / args.dataset
    if args.retable:
        print(rereport(out, args.dataset))
        return 0

    spec = PRESETS[args.dataset]
    changes: dict = {}
    if args.repeats:
        changes["repeats"] = args.repeats
    if args.rounds:
        changes["rounds"] = args.rounds
    if args.strategy:
        changes["strategies"] = tuple(args.strategy)
    if args.max_pool:
        changes["max_pool"] = args.max_pool
    if args.max_test:
        changes["max_test"] = args.max_test
    if args.no_full_data:
        changes["full_data"] = False
    spec = replace(spec, out=out, **changes)
    _, pool, test = load_data(spec)
    bench: dict[str, Any] = {"dataset": args.dataset, "date": str(date.today()), "machine": machine(spec.training),
                             "pool": len(pool), "test": len(test)}
    print(header(args.dataset, bench, asdict(spec), None), flush=True)
    t0 = time.perf_counter()
    result = run_simulation(spec, progress=sys.stderr.isatty(), on_point=_print_point)
    write_outputs(result, out, spec.task)
    data = json.loads((out / "results.json").read_text())
    extras = EXTRAS.get(args.dataset, Extras())
    bench["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    bench["bench_summary"] = bench_summary(data["points"], extras.reach)
    bench["targets"] = targets(bench["bench_summary"], extras)
    (out / "bench.json").write_text(json.dumps(bench, indent=2))
    text = report(data, args.dataset, bench)
    print("\n" + text)
    (out / "table.md").write_text(text + "\n")
    print(json.dumps({"minutes": bench["minutes"], "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
