"""Rounds of a project without a test split: the held-out estimate warm-started along its chain vs from the base model.

Not a test. A project without a test split scores each round on held-out labels, with a model trained without them
(al_loop/rounds/estimate.py). On ``TREC.train`` (``../shared/data/trec`` or ``$AL_LOOP_SHARED_DATA/trec``), max
length 64, default base model, two identical projects in one SQLite store (``--labels`` random questions labelled,
the rest the pool, subsampled to ``--max-pool`` when given; ``learner: finetune``, the state of a project after
the learner switch, since ``auto`` compares learners on held-out labels, which is its estimate, below 300 labels
until fine-tuning has won twice):

1. round 1 on both (the first fine-tune: final fit and estimate from the base model; the estimate model is kept);
2. ``--step`` more random questions labelled in both;
3. the ``baseline`` project's estimate model is deleted, so its round 2 fits the estimate from the base model as
   every round did before; round 2 on both, alternating which runs first over ``--repeats`` pairs (each pair on a
   fresh copy of the store after step 2).

Prints per project the round's phases (train = estimate + final fit, score, other), the held-out score and the
estimate's train report, and chain / baseline ratios (medians). ``--out`` writes the JSON.

    .venv/bin/python benchmarks/bench_estimate.py                     # 250 + 25 labels, whole pool
    .venv/bin/python benchmarks/bench_estimate.py --labels 40 --step 10 --max-pool 200   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

MAX_LENGTH = 64
LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


def _questions(path: Path) -> list[tuple[str, str]]:
    """(text, coarse label) of each distinct question (the store keeps one item per text)."""
    from al_loop.data.readers import read_examples
    from al_loop.types import TaskKind

    out: dict[str, str] = {}
    for ex in read_examples(path, task=TaskKind.CLASSIFICATION):
        if ex.labels:
            out.setdefault(ex.text, ex.labels[0])
    return list(out.items())


def setup(db: Path, data: Path, labels: int, max_pool: int, seed: int, fast: bool = False) -> dict[str, Any]:
    """Two identical projects (``chain``, ``baseline``) with ``labels`` labelled questions; returns their ids and
    the order in which further questions get labelled."""
    import numpy as np

    from al_loop.config import TrainingConfig
    from al_loop.data.schema import LabelSchema
    from al_loop.store import Store
    from al_loop.types import Example, ItemId

    questions = _questions(data)
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(questions))]
    if max_pool:
        order = order[: labels + max_pool]
    store = Store(f"sqlite:///{db}")
    ids = {}
    for name in ("chain", "baseline"):
        project = store.create_project(name, LabelSchema.build("classification", LABELS),
                                       training=TrainingConfig(max_length=MAX_LENGTH, learner="finetune", **(
                                           {"target_steps": 2, "min_epochs": 1, "max_epochs": 1} if fast else {})))
        store.add_items(project.id, [Example(ItemId(f"q{i}"), questions[i][0]) for i in order])
        ids[name] = project.id
    store.dispose()
    label_items(db, ids.values(), [(f"q{i}", questions[i][1]) for i in order[:labels]])
    return {"projects": ids, "next": [(f"q{i}", questions[i][1]) for i in order[labels:]]}


def label_items(db: Path, projects: Any, items: list[tuple[str, str]]) -> None:
    from al_loop.store import Store
    from al_loop.types import ItemId

    store = Store(f"sqlite:///{db}")
    for pid in projects:
        for item_id, label in items:
            store.record_label(pid, ItemId(item_id), f"bench:{item_id}", payload={"labels": [label]}, source="api")
    store.dispose()


def run_round(db: Path, artifacts: Path, project_id: int) -> dict[str, Any]:
    from al_loop.rounds.service import RoundService
    from al_loop.store import Store

    store = Store(f"sqlite:///{db}")
    service = RoundService(store, None, artifacts)
    t0 = time.perf_counter()
    done = service.run_round(service.create_round(project_id).id).round
    wall = time.perf_counter() - t0
    store.dispose()
    if done.error:
        raise RuntimeError(f"round failed: {done.error}")
    timings = dict(done.timings or {})
    train = dict((done.metrics or {}).get("train") or {})
    return {"wall_s": round(wall, 2), "train_s": round(timings.get("train", 0.0), 2),
            "score_s": round(timings.get("score", 0.0), 2),
            "other_s": round(wall - timings.get("train", 0.0) - timings.get("score", 0.0), 2),
            "held_out_score": (done.metrics or {}).get("score"), "eval_set": (done.metrics or {}).get("eval_set"),
            "estimate": (train.get("auto") or {}).get("estimate"), "warm_started": train.get("warm_started"),
            "epochs": train.get("epochs"), "steps": train.get("steps")}


def main(argv: list[str] | None = None) -> int:
    default_data = Path(os.environ.get("AL_LOOP_SHARED_DATA") or REPO.parent / "shared" / "data")
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=250, help="labelled questions before round 1")
    ap.add_argument("--step", type=int, default=25, help="questions labelled between round 1 and round 2")
    ap.add_argument("--max-pool", type=int, default=0, help="subsample the pool (0 = all the other questions)")
    ap.add_argument("--repeats", type=int, default=1, help="pairs of round 2 (medians reported)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--data", type=Path, default=default_data / "trec" / "TREC.train")
    ap.add_argument("--fast-train", action="store_true", help="a few fine-tuning steps (smoke tests)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from bench_round import machine, machine_lines

    info = machine()
    print("\n".join(machine_lines(info)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        prepared = setup(base / "store.sqlite", args.data, args.labels, args.max_pool, args.seed, args.fast_train)
        pids = prepared["projects"]
        first = {name: run_round(base / "store.sqlite", base / "artifacts", pid) for name, pid in pids.items()}
        label_items(base / "store.sqlite", pids.values(), prepared["next"][: args.step])
        second: dict[str, list[dict[str, Any]]] = {"chain": [], "baseline": []}
        for r in range(args.repeats):
            run_dir = Path(tmp) / f"run{r}"
            shutil.copytree(base, run_dir)
            shutil.rmtree(run_dir / "artifacts" / f"project-{pids['baseline']}" / "estimate")
            names = ["chain", "baseline"] if r % 2 == 0 else ["baseline", "chain"]
            for name in names:
                second[name].append(run_round(run_dir / "store.sqlite", run_dir / "artifacts", pids[name]))
                print(json.dumps({"round": 2, "project": name, "repeat": r, **second[name][-1]}), flush=True)
            shutil.rmtree(run_dir)
    keys = ("wall_s", "train_s", "score_s", "other_s")
    med = {name: {k: statistics.median(x[k] for x in runs) for k in keys} for name, runs in second.items()}
    ratios = {k: round(med["chain"][k] / med["baseline"][k], 3) if med["baseline"][k] else None for k in keys}
    doc = {"machine": info, "labels": args.labels, "step": args.step, "max_pool": args.max_pool,
           "round1": first, "round2": second, "median": med, "chain_over_baseline": ratios}
    print(json.dumps({"round": 1, **first}), flush=True)
    print(f"round 2 ({args.labels + args.step} labels), medians of {args.repeats}: chain {med['chain']}, "
          f"baseline {med['baseline']}; chain / baseline {ratios}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
