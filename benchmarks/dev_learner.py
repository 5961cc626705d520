"""Dev-set accuracy of the fine-tuned learner under training settings, on labelled data only (never a test split).

Not a test. For each label count, seed and setting: a random labelled set (seeded) is fine-tuned with
:class:`~al_loop.models.model.TextModel` (``learner: finetune``, max length 64, the product's defaults plus the
setting) and scored on a fixed dev set; fit seconds and steps are recorded too (noisy on a shared CPU: compare
settings within one run only).

- ``trec``: TREC *training* questions (``../shared/data/trec/TREC.train``): dev = 500 training questions drawn
  once (rng 12345), labelled sets drawn from the other 4,952 (rng ``seed``); score = accuracy.
- ``conll``: CoNLL-2003 *training* sentences labelled at random, dev = 500 *validation* sentences (drawn once,
  rng 12345); score = entity micro F1.

Settings are ``--setting name:key=value,key=value`` (TrainingConfig fields; repeatable; ``base:`` = defaults)::

    .venv/bin/python benchmarks/dev_learner.py trec --labels 50,150,275 --seeds 13,14 \\
        --setting k0:freeze_layers=0 --setting k2:freeze_layers=2 --out bench-results/dev-trec.jsonl

Each run appends one JSON line to ``--out``; the summary (mean score and fit seconds per setting and label count)
is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEV_SIZE = 500
DEV_RNG = 12345
MAX_LENGTH = 64


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` -> (name, {key: value}); values parsed as JSON when they parse, else str."""
    name, _, rest = text.partition(":")
    if not name:
        raise ValueError(f"setting {text!r} has no name")
    out: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"setting {text!r}: {part!r} is not key=value")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return name, out


def load(task: str, data: Path) -> tuple[list[Any], list[Any], Any]:
    """(candidates for labelling, dev examples, schema) as described in the module docstring."""
    from al_loop.data.readers import read_examples
    from al_loop.data.schema import LabelSchema
    from al_loop.types import TaskKind

    if task == "trec":
        kind = TaskKind.CLASSIFICATION
        allx = [e for e in read_examples(data / "trec" / "TREC.train", task=kind) if e.is_labelled]
        perm = np.random.default_rng(DEV_RNG).permutation(len(allx))
        dev, cand = [allx[i] for i in perm[:DEV_SIZE]], [allx[i] for i in perm[DEV_SIZE:]]
        schema = LabelSchema.from_examples(kind, allx)
    else:
        kind = TaskKind.NER
        cand = [e for e in read_examples(data / "conll2003" / "train.txt", task=kind) if e.is_labelled and e.text]
        valid = [e for e in read_examples(data / "conll2003" / "valid.txt", task=kind) if e.is_labelled and e.text]
        dev = [valid[i] for i in np.random.default_rng(DEV_RNG).permutation(len(valid))[:DEV_SIZE]]
        schema = LabelSchema.from_examples(kind, cand + valid)
    return cand, dev, schema


def run_one(
    cand: list[Any], dev: list[Any], schema: Any, n: int, seed: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    from al_loop.config import TrainingConfig
    from al_loop.models import TextModel

    labelled = [cand[i] for i in np.random.default_rng(seed).permutation(len(cand))[:n]]
    cfg = TrainingConfig(**{"max_length": MAX_LENGTH, "learner": "finetune", "seed": seed, **overrides})
    model = TextModel.create(schema, "default", cfg)
    t0 = time.perf_counter()
    report = model.fit(labelled)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    score = float(model.evaluate(dev)["score"])
    return {"labels": n, "seed": seed, "score": score, "fit_s": fit_s, "steps": int(report.steps),
            "epochs": int(report.epochs), "s_per_step": fit_s / max(1, report.steps),
            "dev_s": time.perf_counter() - t0}


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (setting, labels): mean score (%), per-seed scores, mean fit seconds and steps."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["setting"], r["labels"]), []).append(r)
    lines = []
    for (name, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        scores = [100 * r["score"] for r in rs]
        lines.append(f"{n:>5} labels  {name:<14} score {statistics.mean(scores):5.1f}  "
                     f"({', '.join(f'{s:.1f}' for s in scores)})  fit {statistics.mean(r['fit_s'] for r in rs):5.1f} s"
                     f"  {statistics.mean(r['steps'] for r in rs):.0f} steps")
    return lines


def main(argv: list[str] | None = None) -> int:
    default_data = Path(os.environ.get("AL_LOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=("trec", "conll"))
    ap.add_argument("--labels", default="50,150,275", help="comma-separated label counts")
    ap.add_argument("--seeds", default="13,14", help="comma-separated seeds (labelled draw and training seed)")
    ap.add_argument("--setting", action="append", default=[], help="name:key=value,... (repeatable)")
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--out", type=Path, default=REPO / "bench-results" / "dev-learner.jsonl")
    args = ap.parse_args(argv)
    settings = [parse_setting(s) for s in (args.setting or ["base:"])]
    cand, dev, schema = load(args.task, args.data)
    print(f"# {args.task}: {len(cand):,} candidates, dev {len(dev)}; settings "
          + "; ".join(f"{n} {o}" for n, o in settings), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for n in (int(x) for x in args.labels.split(",")):
        for seed in (int(x) for x in args.seeds.split(",")):
            for name, overrides in settings:
                row = {"task": args.task, "setting": name, "overrides": overrides,
                       **run_one(cand, dev, schema, n, seed, overrides)}
                rows.append(row)
                with args.out.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"{n} labels seed {seed} {name}: {100 * row['score']:.1f}  fit {row['fit_s']:.1f} s "
                      f"({row['steps']} steps, {row['s_per_step']:.3f} s/step)", flush=True)
    print("\n".join(summary(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
