"""Fast rounds (issue 8, item 3): one TREC-sized round, head vs fine-tune, fp32 vs bf16.

Not a test. On ``TREC.train`` (``../shared/data/trec`` or ``$AL_LOOP_SHARED_DATA/trec``): ``--labels`` random
questions (seeded) are the labelled set, the rest (subsampled to ``--max-pool`` when given) the pool; max length 64,
default base model. In one run:

1. the machine: date, CPU model, cores, the CPU's ``avx512_bf16`` / ``amx_bf16`` flags, torch version and
   ``torch.backends.cpu.get_cpu_capability()``;
2. head learner (:class:`~al_loop.models.head.HeadModel`): a round on a cold feature cache (the cache is cleared
   first; fitting encodes the labelled texts, scoring encodes the pool), then warm rounds on the same pool (fit +
   score, nothing re-encoded), and warm/cold;
3. fine-tune round (:class:`~al_loop.models.model.TextModel`, default schedule) in fp32 and in bf16, same labelled
   set and seed: fit seconds, seconds per optimizer step, pool scoring seconds (``predict`` with embeddings), and
   bf16/fp32;
4. selection overlap: the bf16-fine-tuned weights are saved and loaded again in fp32; the pool's bf16 scores
   (step 3) and fp32 scores select their top 25 and top 100 with ``margin`` (same rng); prints |A ∩ B| / k and the
   argmax agreement over the whole pool (and, for comparison, the same between the fp32- and bf16-trained models).

5. baseline (``--baseline``, default ``freeze_layers=0,bf16_weights=false``: the learner before 2026-12-02
   evening: every layer trained, nothing cached, autocast over fp32 weights when scoring): the bf16 round
   again with those TrainingConfig overrides, and per phase this run's bf16 round / baseline (fit, per step,
   first pool scoring with the frozen-layer cache cold, later scorings with it warm, round cold and warm). ``--set``
   applies overrides to every measured round (e.g. to try a setting before it is the default).

Training runs once per precision; scoring steps (head warm round, pool scoring) run ``--repeats`` times and the
medians are reported. All figures go to ``--out`` (JSON).

    .venv/bin/python benchmarks/bench_round.py                       # 275 labels, whole pool, 3 repeats
    .venv/bin/python benchmarks/bench_round.py --labels 30 --max-pool 200 --repeats 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

T = TypeVar("T")

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
TOP_K = (25, 100)
MAX_LENGTH = 64
POOL_SIZE_TREC = 5452


# --- pure helpers (tests/core/test_bench_round.py) --------------------------------------------------------------


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, flags) of the first processor in ``/proc/cpuinfo`` text; ("", set()) when absent."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def split_indices(n: int, labels: int, seed: int, max_pool: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted (labelled, pool) positions into ``n`` items: ``labels`` drawn at random (``seed``), the rest
    the pool, subsampled (same rng) to ``max_pool`` when 0 < ``max_pool`` < the rest."""
    if not 0 < labels < n:
        raise ValueError(f"need 0 < labels < {n}, got {labels}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    labelled, rest = np.sort(order[:labels]), order[labels:]
    if 0 < max_pool < len(rest):
        rest = rng.choice(rest, size=max_pool, replace=False)
    return labelled, np.sort(rest)


def overlap(a: Sequence[Any], b: Sequence[Any], k: int | None = None) -> float:
    """|A ∩ B| / k of two selections (k defaults to the longer one's length; 1.0 for two empty ones)."""
    k = max(len(a), len(b)) if k is None else k
    if k <= 0:
        return 1.0
    return len(set(a) & set(b)) / k


def argmax_agreement(p: np.ndarray, q: np.ndarray) -> float:
    """Share of rows whose argmax is equal in ``p`` and ``q`` (both (n, k)); 1.0 for no rows."""
    p, q = np.asarray(p), np.asarray(q)
    if p.shape != q.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {q.shape}")
    if len(p) == 0:
        return 1.0
    return float(np.mean(p.argmax(axis=1) == q.argmax(axis=1)))


def median(xs: Iterable[float | None]) -> float | None:
    """Median of the values that are not None (None when there is none)."""
    vals = [float(x) for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None when either is missing or ``den`` is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def fmt_ratio(x: float | None) -> str:
    """``1.37x``; two significant digits below 0.1 (``0.0012x``); "-" for None."""
    if x is None:
        return "-"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def fmt_s(x: float | None) -> str:
    """Seconds: 3 decimals below 1 s, 2 below 10 s, 1 above; "-" for None."""
    if x is None:
        return "-"
    if x < 1:
        return f"{x:.3f} s"
    return f"{x:.2f} s" if x < 10 else f"{x:.1f} s"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def timed(fn: Callable[[], T], repeats: int = 1) -> tuple[list[float], T]:
    """Seconds of each of ``repeats`` (>= 1) runs of ``fn``, and the last run's result."""
    times: list[float] = []
    result: T | None = None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result  # type: ignore[return-value]


# --- the machine ------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import torch

    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    model, flags = parse_cpuinfo(text)
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError) as exc:
        capability = f"unknown ({type(exc).__name__})"
    from al_loop.models import cpu_supports_bf16

    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": model or platform.processor() or platform.machine() or "unknown CPU",
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": {f: f in flags for f in BF16_FLAGS},
        "torch": torch.__version__,
        "torch_cpu_capability": capability,
        "torch_threads": torch.get_num_threads(),
        "native_bf16": cpu_supports_bf16(),
    }


def machine_lines(m: dict[str, Any]) -> list[str]:
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in m["cpu_flags"].items())
    return [
        f"# {m['date']} on {m['cpu']}, {m['cpus']} CPUs ({m['usable_cpus']} usable, "
        f"torch threads {m['torch_threads']})",
        f"# CPU flags: {flags}; torch {m['torch']}, cpu capability {m['torch_cpu_capability']}; "
        f"al-loop sees native bf16: {'yes' if m['native_bf16'] else 'no'}",
    ]


# --- the steps --------------------------------------------------------------------------------------------------


def head_round(schema: Any, labelled: list[Any], pool_texts: list[str], repeats: int, base: str) -> dict[str, Any]:
    """Cold-cache round (fit encodes the labelled texts, scoring encodes the pool), then warm rounds."""
    from al_loop.config import TrainingConfig
    from al_loop.models.head import HeadModel, clear_feature_cache

    cfg = TrainingConfig(max_length=MAX_LENGTH, learner="head")
    clear_feature_cache()
    (load_s,), head = timed(lambda: HeadModel.create(schema, base, cfg))
    enc = head.encoder
    (fit_cold,), rep = timed(lambda: head.fit(labelled))
    misses0 = enc.misses
    (score_cold,), _ = timed(lambda: head.predict(pool_texts, embeddings=True))
    pool_misses = enc.misses - misses0
    cold = {"fit_s": fit_cold, "score_s": score_cold, "round_s": fit_cold + score_cold,
            "labelled_encoded": rep.cache_misses, "pool_encoded": pool_misses}
    fits: list[float] = []
    scores: list[float] = []
    misses0 = enc.misses
    for _ in range(repeats):
        (f,), _ = timed(lambda: head.fit(labelled))
        (s,), _ = timed(lambda: head.predict(pool_texts, embeddings=True))
        fits.append(f)
        scores.append(s)
    rounds = [f + s for f, s in zip(fits, scores)]
    warm = {"fit_s": fits, "score_s": scores, "round_s": rounds, "median_fit_s": median(fits),
            "median_score_s": median(scores), "median_round_s": median(rounds), "encoded": enc.misses - misses0}
    return {
        "precision": head.precision,
        "encoder_load_s": load_s,
        "cold": cold,
        "warm": warm,
        "warm_over_cold": {"round": ratio(warm["median_round_s"], cold["round_s"]),
                           "score": ratio(warm["median_score_s"], cold["score_s"])},
    }


def finetune_round(
    schema: Any,
    labelled: list[Any],
    pool_texts: list[str],
    precision: str,
    repeats: int,
    base: str,
    overrides: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any], np.ndarray]:
    """Fit once at ``precision`` (TrainingConfig ``overrides`` on top of the defaults), then score the pool
    ``repeats`` times; (model, figures, last pool probs). The frozen-layer cache is cleared first, so the first
    scoring is cold (``score_first_s``) and later ones find the pool's lower-layer states cached, as a live loop's
    next round does (``median_score_s`` is the median of all runs, ``warm_score_s`` of the runs after the first)."""
    from al_loop.config import TrainingConfig
    from al_loop.models import TextModel
    from al_loop.models.frozen import clear_lower_cache

    clear_lower_cache()
    cfg = TrainingConfig(**{"max_length": MAX_LENGTH, "precision": precision, "learner": "finetune",
                            **(overrides or {})})
    (load_s,), model = timed(lambda: TextModel.create(schema, base, cfg))
    (fit_s,), report = timed(lambda: model.fit(labelled))
    times, out = timed(lambda: model.predict(pool_texts, embeddings=True), repeats)
    steps = int(report.steps)
    figures = {
        "settings": overrides or {},
        "freeze_layers": int(getattr(model.model, "frozen_layers", 0)),
        "score_first_s": times[0],
        "warm_score_s": median(times[1:]),
        "model_load_s": load_s,
        "fit_s": fit_s,
        "steps": steps,
        "epochs": int(report.epochs),
        "n_windows": int(report.n_windows),
        "s_per_step": ratio(fit_s, steps),
        "train_loss": float(report.train_loss),
        "score_s": times,
        "median_score_s": median(times),
        "round_s": fit_s + times[0],
        "round_warm_s": fit_s + (median(times[1:]) or times[0]),
    }
    return model, figures, np.asarray(out.probs)


def warm_round(
    schema: Any,
    labelled: list[Any],
    previous: int,
    pool_texts: list[str],
    repeats: int,
    base: str,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A live loop's next round under ``training.warm_start``: the previous round's model (bf16, fitted from the
    base model on the first ``previous`` labels, untimed) is saved, and the round continues from it on all the
    labels with the configured ``warm_schedule`` (timed: load, fit, pool scoring with the frozen-layer cache warm,
    as the previous round left it)."""
    from al_loop.config import TrainingConfig
    from al_loop.models import TextModel
    from al_loop.models.loading import quiet_transformers

    cfg = TrainingConfig(**{"max_length": MAX_LENGTH, "precision": "bf16", "learner": "finetune",
                            **(overrides or {})})
    first = TextModel.create(schema, base, cfg)
    first.fit(labelled[:previous])
    first.predict(pool_texts[:1], embeddings=True)
    with tempfile.TemporaryDirectory(prefix="bench-round-warm-") as tmp:
        with quiet_transformers():
            path = first.save(Path(tmp) / "previous")
        del first
        (load_s,), model = timed(lambda: TextModel.create(schema, base, cfg, init_from=path))
        (fit_s,), report = timed(lambda: model.fit(labelled))
    times, _ = timed(lambda: model.predict(pool_texts, embeddings=True), repeats)
    return {
        "previous_labels": previous,
        "warm_schedule": cfg.warm_schedule,
        "model_load_s": load_s,
        "fit_s": fit_s,
        "steps": int(report.steps),
        "epochs": int(report.epochs),
        "s_per_step": ratio(fit_s, int(report.steps)),
        "score_s": times,
        "median_score_s": median(times),
        "round_s": fit_s + (median(times) or 0.0),
    }


def parse_overrides(text: str) -> dict[str, Any]:
    """``"key=value,key=value"`` -> dict, values parsed as JSON when they parse (``"freeze_layers=0"`` -> 0)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"{part!r} is not key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def ft_line(name: str, f: dict[str, Any]) -> str:
    return (f"{name}: fit {fmt_s(f['fit_s'])} ({f['steps']} steps, {f['epochs']} epochs, {fmt_s(f['s_per_step'])}"
            f"/step, {f['freeze_layers']} layers frozen), score pool {fmt_s(f['score_first_s'])} first (lower-layer "
            f"cache cold), {fmt_s(f['warm_score_s'])} warm; round {fmt_s(f['round_s'])} cold, "
            f"{fmt_s(f['round_warm_s'])} warm")


def select_ids(item_ids: Sequence[Any], probs: np.ndarray, k: int, seed: int) -> list[Any]:
    from al_loop.strategies import PoolView, make_strategy
    from al_loop.types import TaskKind

    strategy = make_strategy("margin", TaskKind.CLASSIFICATION)
    sel = strategy.select(PoolView(item_ids=tuple(item_ids), probs=probs), k, np.random.default_rng(seed))
    return list(sel.item_ids)


def compare_selections(item_ids: Sequence[Any], p: np.ndarray, q: np.ndarray, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"argmax_agreement": argmax_agreement(p, q),
                           "max_abs_prob_diff": float(np.max(np.abs(p - q))) if len(p) else 0.0}
    for k in TOP_K:
        kk = min(k, len(item_ids))
        out[f"top{k}_overlap"] = overlap(select_ids(item_ids, p, kk, seed), select_ids(item_ids, q, kk, seed), kk)
    return out


# --- main -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    default_data = Path(os.environ.get("AL_LOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=int, default=275, help="random labelled questions (default 275)")
    ap.add_argument("--max-pool", type=int, default=0, help="subsample the pool to this many (0 = all the rest)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each scoring step (medians reported)")
    ap.add_argument("--out", type=Path, default=REPO / "bench-results" / "round.json")
    ap.add_argument("--data", type=Path, default=default_data / "trec" / "TREC.train")
    ap.add_argument("--seed", type=int, default=13, help="labelled-set draw and selection rng")
    ap.add_argument("--model", default="default", help="base model")
    ap.add_argument("--set", default="", help="TrainingConfig overrides of the measured rounds: key=value,...")
    ap.add_argument("--warm-from", type=int, default=250,
                    help="labels of the previous round a warm-started round continues from (0 = skip that round)")
    ap.add_argument("--baseline", default="freeze_layers=0,bf16_weights=false",
                    help="overrides of the bf16 baseline round the per-phase ratios compare against ('' = skip)")
    args = ap.parse_args(argv)
    settings, baseline = parse_overrides(args.set), parse_overrides(args.baseline)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    t_start = time.perf_counter()
    from al_loop.data.readers import read_examples
    from al_loop.data.schema import LabelSchema
    from al_loop.models import TextModel
    from al_loop.types import TaskKind

    m = machine()
    for line in machine_lines(m):
        print(line, flush=True)

    examples = [e for e in read_examples(args.data, task=TaskKind.CLASSIFICATION) if e.is_labelled]
    schema = LabelSchema.from_examples(TaskKind.CLASSIFICATION, examples)
    lab_idx, pool_idx = split_indices(len(examples), args.labels, args.seed, args.max_pool)
    labelled = [examples[i] for i in lab_idx]
    pool = [examples[i] for i in pool_idx]
    pool_ids = [e.item_id for e in pool]
    pool_texts = [e.text for e in pool]
    print(f"# {args.data} ({len(examples):,} questions, {len(schema.labels)} classes): {len(labelled)} labelled "
          f"(seed {args.seed}), pool {len(pool):,}; max length {MAX_LENGTH}, model {args.model}; training once per "
          f"precision, scoring timed {args.repeats}x (medians)", flush=True)

    print("\n## head learner (frozen features, cache cleared first)", flush=True)
    head = head_round(schema, labelled, pool_texts, args.repeats, args.model)
    c, w = head["cold"], head["warm"]
    print(f"encoder load {fmt_s(head['encoder_load_s'])} (precision {head['precision']})")
    print(f"cold round: fit {fmt_s(c['fit_s'])} (encodes {c['labelled_encoded']} labelled), score pool "
          f"{fmt_s(c['score_s'])} (encodes {c['pool_encoded']:,}), round {fmt_s(c['round_s'])}")
    print(f"warm round: fit {fmt_s(w['median_fit_s'])}, score pool {fmt_s(w['median_score_s'])}, round "
          f"{fmt_s(w['median_round_s'])} (re-encoded {w['encoded']})")
    print(f"warm/cold: round {fmt_ratio(head['warm_over_cold']['round'])}, "
          f"score {fmt_ratio(head['warm_over_cold']['score'])}", flush=True)

    print("\n## fine-tune round (default schedule), fp32 and bf16", flush=True)
    ft: dict[str, dict[str, Any]] = {}
    probs: dict[str, np.ndarray] = {}
    bf16_model = None
    for prec in ("fp32", "bf16"):
        model, figures, p = finetune_round(schema, labelled, pool_texts, prec, args.repeats, args.model, settings)
        ft[prec], probs[prec] = figures, p
        print(ft_line(prec, figures), flush=True)
        if prec == "bf16":
            bf16_model = model
        else:
            del model
    keys = ("fit_s", "s_per_step", "median_score_s", "round_s", "round_warm_s")
    bf_over = {k: ratio(ft["bf16"][k], ft["fp32"][k]) for k in keys}
    print(f"bf16/fp32: fit {fmt_ratio(bf_over['fit_s'])}, per step {fmt_ratio(bf_over['s_per_step'])}, "
          f"score {fmt_ratio(bf_over['median_score_s'])}, round {fmt_ratio(bf_over['round_s'])}", flush=True)

    if args.baseline:
        print(f"\n## baseline: bf16 round with {baseline} (the ratios are this run's bf16 round / baseline)",
              flush=True)
        base_model, base_fig, _ = finetune_round(schema, labelled, pool_texts, "bf16", args.repeats, args.model,
                                                 {**settings, **baseline})
        del base_model
        print(ft_line("baseline", base_fig), flush=True)
        ft["baseline"] = base_fig
        phases = ("fit_s", "s_per_step", "score_first_s", "warm_score_s", "round_s", "round_warm_s")
        ft["bf16_over_baseline"] = {k: ratio(ft["bf16"][k], base_fig[k]) for k in phases}
        print("bf16/baseline: " + ", ".join(f"{k} {fmt_ratio(v)}" for k, v in ft["bf16_over_baseline"].items()),
              flush=True)

    if 0 < args.warm_from < len(labelled):
        print(f"\n## warm-started round: continues the {args.warm_from}-label round's model on all "
              f"{len(labelled)} labels (training.warm_start; the ratio is against this run's bf16 round)", flush=True)
        wr = warm_round(schema, labelled, args.warm_from, pool_texts, args.repeats, args.model,
                        {**settings, "warm_start": True})
        wr["over_bf16_round"] = {"fit_s": ratio(wr["fit_s"], ft["bf16"]["fit_s"]),
                                 "round_s": ratio(wr["round_s"], ft["bf16"]["round_warm_s"])}
        ft["warm"] = wr
        print(f"warm: {wr['epochs']} epochs, {wr['steps']} steps, fit {fmt_s(wr['fit_s'])}, score "
              f"{fmt_s(wr['median_score_s'])}, round {fmt_s(wr['round_s'])}; over the bf16 round: fit "
              f"{fmt_ratio(wr['over_bf16_round']['fit_s'])}, round {fmt_ratio(wr['over_bf16_round']['round_s'])}",
              flush=True)

    print("\n## selection overlap: bf16-fine-tuned weights scored in bf16 vs fp32 (margin, same rng)", flush=True)
    from al_loop.config import TrainingConfig
    from al_loop.models.loading import quiet_transformers

    assert bf16_model is not None
    with tempfile.TemporaryDirectory(prefix="bench-round-") as tmp:
        with quiet_transformers():
            path = bf16_model.save(Path(tmp) / "bf16")
        fp32_of_bf16 = TextModel.load(
            path, TrainingConfig(**{"max_length": MAX_LENGTH, "precision": "fp32", "learner": "finetune", **settings})
        )
    del bf16_model
    (score_s,), out = timed(lambda: fp32_of_bf16.predict(pool_texts, embeddings=True))
    p_fp32 = np.asarray(out.probs)
    sel = compare_selections(pool_ids, probs["bf16"], p_fp32, args.seed)
    sel.update(weights="bf16-fine-tuned", strategy="margin", fp32_score_s=score_s,
               note="bf16 scores are step 3's bf16 runs; fp32 scores come from the saved weights loaded in fp32")
    trained = compare_selections(pool_ids, probs["bf16"], probs["fp32"], args.seed)
    for k in TOP_K:
        print(f"top {k}: overlap {fmt_pct(sel[f'top{k}_overlap'])}")
    print(f"argmax agreement over the pool: {fmt_pct(sel['argmax_agreement'])} "
          f"(max |p_bf16 - p_fp32| {sel['max_abs_prob_diff']:.4f}); fp32 scoring {fmt_s(score_s)}")
    print("for comparison, fp32-trained vs bf16-trained models: "
          + ", ".join(f"top {k} {fmt_pct(trained[f'top{k}_overlap'])}" for k in TOP_K)
          + f", argmax {fmt_pct(trained['argmax_agreement'])}")

    total = time.perf_counter() - t_start
    print(f"\n# total {total / 60:.1f} min", flush=True)
    result = {
        "machine": m,
        "setup": {"data": str(args.data), "questions": len(examples), "labels": len(labelled), "pool": len(pool),
                  "max_pool": args.max_pool, "seed": args.seed, "repeats": args.repeats, "max_length": MAX_LENGTH,
                  "model": args.model, "settings": settings, "baseline": baseline,
                  "note": "training once per precision; scoring steps timed `repeats` times, medians reported"},
        "head": head,
        "finetune": {**ft, "bf16_over_fp32": bf_over},
        "selection": {"bf16_weights_bf16_vs_fp32_scoring": sel, "fp32_trained_vs_bf16_trained": trained},
        "total_s": total,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"# wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
