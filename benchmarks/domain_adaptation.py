"""Domain-adaptation benchmark (issue 12, item 3): what a source model and pool-adaptive pretraining save in labels.

    .venv/bin/python benchmarks/domain_adaptation.py all               # both target domains (~35 min on 2 cores)
    .venv/bin/python benchmarks/domain_adaptation.py ncbi_disease      # CoNLL-2003 -> NCBI-disease
    .venv/bin/python benchmarks/domain_adaptation.py mit_restaurant    # CoNLL-2003 -> MIT Restaurant
    .venv/bin/python benchmarks/domain_adaptation.py all --retable     # reprint from <out>/<domain>/results.json

NER from CoNLL-2003 (the source domain) to a target domain. The label-efficiency protocol (``al-loop simulate``'s
code path, :func:`al_loop.simulate.run_simulation`: the same ``RoundService`` rounds and learner a project uses,
random and least confidence, several repeats) runs on the target's pool from three starts:

- **a**: the base MiniLM (``model="default"``), the reference path;
- **b**: a MiniLM fine-tuned by this script on ``--source-sentences`` CoNLL-2003 training sentences (seeded) with
  al-loop's own learner (one full-data fit of the model factory, the simulation's full-data path), saved as an al-loop
  model artifact under ``<out>/cache/<key>`` (key: the sentences, the model, the training settings and
  :data:`SOURCE_VERSION`) and reused by later runs; every simulation of b names that folder as its model, so
  :mod:`al_loop.models.source` carries the encoder and the head rows of the tags both schemas share (only ``O``
  here: CoNLL's PER/LOC/ORG/MISC are not target labels);
- **c**: pool-adaptive pretraining (:mod:`al_loop.models.adapt`): the base MiniLM after masked-LM training on the
  target's unlabelled training split (``--adapt-texts`` caps the texts, ``--adapt-steps`` the steps), cached under
  ``<out>/cache/mlm-...``; ``--starts a,b,c_from_b`` adapts b's encoder instead. Skipped with a message when
  ``al_loop.models.adapt`` is not importable.

Per domain, start and strategy it prints the area (mean of the mean curve's points, F1 %), the trapezoid AUC, the final
F1 ± std over repeats, the labels needed to reach the **base path's (a, same strategy) final F1** on the mean curve
and their share of a's labels, the largest drop of the mean curve, the median round time and the cost in minutes
(the start's preparation: source training or adaptation, as measured when it was made; the simulation's rounds),
then the verdict against the issue's target (from the better start, a's final F1 with at most half of a's labels, on
at least one domain). Results: ``<out>/<domain>/`` (results.json with every point of every start, table.md,
learning_curve.png; each start's own simulation outputs in ``<out>/<domain>/<start>/``). On demand only; a smoke
test runs it with a fake model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark whose figures this reuses

import label_efficiency as le

from al_loop import __version__
from al_loop.config import TrainingConfig
from al_loop.data.readers import read_examples
from al_loop.data.schema import LabelSchema
from al_loop.folders import save_figure
from al_loop.simulate import SimulationSpec, load_data, run_simulation, summarize, write_outputs
from al_loop.types import Example, TaskKind

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AL_LOOP_SHARED_DATA", REPO.parent / "shared" / "data"))

SOURCE_VERSION = 1  # bump when the source model's recipe changes, so an old cache entry is not reused


class Corpus(NamedTuple):
    """A labelled NER data set: its training file (the pool, or the source's sentences) and its test file."""

    train: Path
    test: Path


SOURCE = Corpus(DATA / "conll2003" / "train.txt", DATA / "conll2003" / "test.txt")
DOMAINS: dict[str, Corpus] = {
    "ncbi_disease": Corpus(DATA / "ncbi_disease" / "train.tsv", DATA / "ncbi_disease" / "test.tsv"),
    "mit_restaurant": Corpus(DATA / "mit_restaurant" / "restauranttrain.bio",
                             DATA / "mit_restaurant" / "restauranttest.bio"),
}
STARTS = ("a", "b", "c", "c_from_b")
START_NAMES = {
    "a": "base MiniLM",
    "b": "MiniLM fine-tuned on CoNLL-2003",
    "c": "base MiniLM + pool-adaptive pretraining",
    "c_from_b": "CoNLL-2003 MiniLM + pool-adaptive pretraining",
}

# Seconds per trained round at the defaults (1,000-sentence pool, 500 test sentences, max length 64, default learner
# with its held-out comparisons), of the source fit per sentence and of one adaptation step: for the estimate printed
# at the start only. A round's fit is about ``target_steps`` (100) steps whatever the label count, so rounds cost
# about the same; its cost grows with the sentences' length. Derived from the README's CoNLL-2003 rounds measured
# alone (median 26-32 s at pool 2,000 / test 800) scaled by mean sentence length (CoNLL 14.5 words, NCBI-disease 25,
# MIT Restaurant 9), and checked against a smoke run on the shared 2-core machine (2026-12-03, one torch thread at
# load 4-6, pool 300, test 100): MIT Restaurant rounds 24-74 s (median 40 s), NCBI-disease 107-165 s; 0.42 s per
# masked-LM step on MIT Restaurant, 1.8 s on NCBI-disease; 200 CoNLL sentences fitted in 36 s). Not timed idle yet.
ROUND_SECONDS = {"ncbi_disease": 38.0, "mit_restaurant": 15.0}
SOURCE_SECONDS_PER_SENTENCE = 0.05
ADAPT_SECONDS_PER_STEP = 0.6


class Options(NamedTuple):
    """The run's settings (a NamedTuple, not a dataclass: the tests load this script by path)."""

    repeats: int = 2
    rounds: int = 3  # 50, 100, 150 labels: 36 rounds per domain fit about 35 min for both (see ROUND_SECONDS)
    seed_size: int = 50
    batch_size: int = 50
    strategies: tuple[str, ...] = ("random", "least_confidence")
    max_pool: int = 1000
    max_test: int = 500
    max_length: int = 64
    source_sentences: int = 2000
    source_test: int = 500
    starts: tuple[str, ...] = ("a", "b", "c")
    adapt_steps: int = 200
    adapt_seconds: float = 600.0
    adapt_texts: int = 0  # 0 = the whole training split of the target
    seed: int = 13

    def training(self) -> TrainingConfig:
        return TrainingConfig(max_length=self.max_length)


Adapter = Callable[..., dict[str, Any]]
"""``adapter(base_model, texts, cache_root, *, max_steps, max_seconds, max_texts, max_length, seed)`` -> a dict with
``folder``, ``steps``, ``seconds``, ``texts``, ``loss_first``, ``loss_last``, ``cached``."""


# --- the starts ----------------------------------------------------------------------------------------------------


def _fingerprint(parts: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=str).encode("utf-8")).hexdigest()[:20]


def _subsample(examples: list[Example], n: int, seed: int) -> list[Example]:
    if not n or len(examples) <= n:
        return examples
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), size=n, replace=False))
    return [examples[int(i)] for i in keep]


def source_key(sentences: Sequence[Example], model: str, training: TrainingConfig) -> str:
    """The cache folder name of a source model: a hash of its sentences (text and spans), the base model, every
    training setting, al-loop's version and :data:`SOURCE_VERSION`."""
    texts = [(e.text, [(s.start, s.end, s.label) for s in (e.spans or ())]) for e in sentences]
    return "conll-" + _fingerprint([SOURCE_VERSION, __version__, model, asdict(training), texts])


def train_source(opts: Options, cache_root: Path, factory: Any, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Start b's model: one fit of al-loop's learner on CoNLL-2003 training sentences, saved as an artifact folder
    under ``cache_root/<key>`` with ``<key>.json`` beside it (written last: the cache entry is complete only then).
    A complete entry is reused; its figures are those of the run that made it."""
    training = opts.training()
    train = [e for e in read_examples(SOURCE.train, task=TaskKind.NER) if e.is_labelled]
    test = [e for e in read_examples(SOURCE.test, task=TaskKind.NER) if e.is_labelled]
    schema = LabelSchema.from_examples(TaskKind.NER, train)
    train = _subsample(train, opts.source_sentences, opts.seed)
    test = _subsample(test, opts.source_test, opts.seed + 1)
    key = source_key(train, "default", training)
    folder, info_file = cache_root / key, cache_root / f"{key}.json"
    if folder.is_dir() and info_file.is_file():
        info = json.loads(info_file.read_text())
        log(f"# start b: source model found in the cache: {folder} (trained in {info['minutes']:.1f} min)")
        return {**info, "folder": str(folder), "cached": True}
    log(f"# start b: training the source model on {len(train):,} CoNLL-2003 sentences ...")
    t0 = time.perf_counter()
    model = factory.create(schema, "default", training)
    model.fit(train)
    seconds = time.perf_counter() - t0
    f1 = float(model.evaluate(test)["score"])
    info = {"key": key, "sentences": len(train), "test_sentences": len(test), "test_f1": f1,
            "minutes": seconds / 60, "tags": list(schema.tags),
            "created": datetime.now(UTC).isoformat(timespec="seconds")}
    model.save(folder, extra_manifest={"benchmark": "domain_adaptation", **info})
    tmp = info_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(info_file)
    log(f"# start b: CoNLL-2003 test F1 {100 * f1:.1f}% on {len(test)} sentences, {seconds / 60:.1f} min")
    return {**info, "folder": str(folder), "cached": False}


def default_adapter() -> Adapter | None:
    """:func:`al_loop.models.adapt.adapt_encoder` behind the :data:`Adapter` signature, or None when it is absent."""
    try:
        from al_loop.models.adapt import AdaptBudget, adapt_encoder
    except ImportError:
        return None

    def adapt(base_model: str, texts: Sequence[str], cache_root: Path, *, max_steps: int, max_seconds: float,
              max_texts: int, max_length: int, seed: int) -> dict[str, Any]:
        budget = AdaptBudget(max_steps=max_steps, max_seconds=max_seconds, max_texts=max_texts,
                             max_length=max_length, seed=seed)
        return adapt_encoder(base_model, texts, cache_root, budget).to_dict()

    return adapt


def adapt_start(base_model: str, texts: Sequence[str], cache_root: Path, opts: Options, adapter: Adapter,
                log: Callable[[str], None] = print, start: str = "c") -> dict[str, Any]:
    """Start c's model: the adapter's result with ``minutes`` (the adaptation's own, also on a cache hit). The
    adapted folder is an encoder only: from b (``c_from_b``) the encoder carries over, the source's head does not."""
    log(f"# start {start}: pool-adaptive pretraining of {base_model} on {len(texts):,} texts "
        f"(at most {opts.adapt_steps} steps, {opts.adapt_seconds:.0f} s) ...")
    max_texts = opts.adapt_texts or max(len(texts), 1)
    result = adapter(base_model, list(texts), cache_root, max_steps=opts.adapt_steps, max_seconds=opts.adapt_seconds,
                     max_texts=max_texts, max_length=opts.max_length, seed=opts.seed)
    seconds = float(result.get("seconds") or 0.0)
    out = {**result, "folder": str(result["folder"]), "minutes": seconds / 60 if np.isfinite(seconds) else None}
    state = "found in the cache" if out.get("cached") else "trained"
    log(f"# start {start}: adapted encoder {state}: {out['folder']} ({out.get('steps')} steps, MLM loss "
        f"{_num(out.get('loss_first'), 3)} -> {_num(out.get('loss_last'), 3)})")
    return out


# --- the figures ---------------------------------------------------------------------------------------------------


def first_reach(curve: Sequence[dict[str, Any]], score: float | None) -> float | None:
    """Labels of the first point of a mean curve whose mean reaches ``score`` (None: never, or no score)."""
    if score is None:
        return None
    return next((float(c["labels"]) for c in curve if c["mean"] >= score - 1e-12), None)


def start_stats(points: Sequence[dict[str, Any]], reference: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """Per strategy: label_efficiency's figures (area, AUC, final, drops, round times) plus the mean curve, the
    labels to reach the reference path's final F1 of the same strategy (``reference``: start a's stats) and their
    share of the reference's final labels, and the minutes of the rounds."""
    base = summarize(points)
    figures = le.bench_summary(points)
    out: dict[str, Any] = {}
    for name, entry in figures.items():
        curve = base[name]["curve"]
        ref = (reference or {}).get(name)
        target = ref["final_score"] if ref else None
        reach = first_reach(curve, target)
        ref_labels = ref["final_labels"] if ref else None
        seconds = [float(p["seconds"]) for p in points if p["strategy"] == name and p.get("seconds") is not None]
        out[name] = {**entry, "curve": curve, "reference_final": target, "labels_to_reference_final": reach,
                     "ratio_vs_reference": reach / ref_labels if reach is not None and ref_labels else None,
                     "round_minutes": sum(seconds) / 60}
    return out


def domain_stats(starts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`start_stats` of every start that ran, against start a's figures (a against itself)."""
    ran = {k: v for k, v in starts.items() if v.get("points")}
    ref = start_stats(ran["a"]["points"], None) if "a" in ran else None
    return {k: start_stats(v["points"], ref) for k, v in ran.items()}


def verdict(stats: dict[str, dict[str, Any]]) -> tuple[str | None, bool, list[str]]:
    """The better start of a domain (b or c: the larger mean area over its strategies) and whether, from it, some
    strategy reaches a's final F1 with at most half of a's labels; lines that say so."""
    others = {k: s for k, s in stats.items() if k != "a" and s}
    if "a" not in stats or not others:
        return None, False, ["- not judged: start a and at least one other start are needed"]
    better = max(others, key=lambda k: float(np.mean([e["area"] for e in others[k].values()])))
    lines, met = [], False
    for name, e in others[better].items():
        ratio = e["ratio_vs_reference"]
        ok = ratio is not None and ratio <= 0.5 + 1e-12
        met = met or ok
        ref = stats["a"].get(name) or {}
        reach = "not reached" if e["labels_to_reference_final"] is None else (
            f"reached at {e['labels_to_reference_final']:,.0f} labels ({100 * ratio:.0f}% of a's "
            f"{ref.get('final_labels') or 0:,.0f})")
        lines.append(f"- {name}: a's final F1 {_pp(e['reference_final'])}%; from {better} {reach} "
                     f"(target: <= 50%) - {'met' if ok else 'NOT met'}")
    return better, met, lines


# --- the report ----------------------------------------------------------------------------------------------------


COLUMNS = [
    "start", "strategy", "area: mean of the points (F1, %)", "AUC: trapezoid (F1, %)", "final F1 (%)",
    "labels to reach a's final F1", "vs a's labels", "largest drop, mean curve (points)", "median round (s)",
    "start preparation (min)", "rounds (min)",
]


def table(payload: dict[str, Any], stats: dict[str, dict[str, Any]]) -> str:
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for start, per in stats.items():
        prep = _prep_minutes(payload["starts"][start])
        for name, s in per.items():
            reach = "not reached" if s["labels_to_reference_final"] is None else \
                f"{s['labels_to_reference_final']:,.0f}"
            if start == "a":
                reach += " (reference)"
            cells = [
                start, name, f"{_pp(s['area'])} ± {_pp(s['area_std'])}", _pp(s["auc"]),
                f"{_pp(s['final_score'])} ± {_pp(s['final_std'])}", reach, le._pct(s["ratio_vs_reference"]),
                le._drop(s["largest_drop_mean"]),
                "-" if s["median_round_seconds"] is None else f"{s['median_round_seconds']:.1f}",
                prep, f"{s['round_minutes']:.1f}",
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _prep_minutes(start: dict[str, Any]) -> str:
    prep = start.get("source") or start.get("adapt")
    if not prep:
        return "0"
    minutes = prep.get("minutes")
    text = "-" if minutes is None else f"{minutes:.1f}"
    return text + (" (cached)" if prep.get("cached") else "")


def _start_lines(payload: dict[str, Any]) -> list[str]:
    lines = []
    for start, entry in payload["starts"].items():
        head = f"- {start}: {START_NAMES.get(start, start)}"
        if entry.get("skipped"):
            lines.append(f"{head}: skipped ({entry['skipped']})")
            continue
        if entry.get("source"):
            src = entry["source"]
            shared = entry.get("shared_tags") or []
            head += (f" ({src['sentences']:,} training sentences, CoNLL-2003 test F1 {_pp(src['test_f1'])}% on "
                     f"{src['test_sentences']} test sentences, trained in {src['minutes']:.1f} min"
                     f"{', reused from the cache' if src.get('cached') else ''}); head rows carried by name: "
                     f"{', '.join(shared) if shared else 'none'} (the only tags both schemas share), the others new")
        if entry.get("adapt"):
            ad = entry["adapt"]
            head += (f" ({ad.get('steps')} masked-LM steps on {_num(ad.get('texts'), 0)} pool texts, loss "
                     f"{_num(ad.get('loss_first'), 3)} -> {_num(ad.get('loss_last'), 3)}, "
                     f"{_num(ad.get('minutes'), 1)} min{', reused from the cache' if ad.get('cached') else ''})")
        head += f"; model {entry.get('model')}; simulation {entry.get('minutes', 0.0):.1f} min"
        lines.append(head)
    return lines


def header(payload: dict[str, Any]) -> str:
    m = payload.get("machine") or {}
    spec = payload["spec"]
    last = spec["seed_size"] + spec["batch_size"] * (spec["rounds"] - 1)
    where = (f"{payload.get('date', 'date not recorded')} on {m.get('cpu', 'unknown CPU')} "
             f"({m.get('cpus')} CPUs, bf16 flags: {m.get('bf16_flags') or 'none'}), torch {m.get('torch')}, "
             f"device {m.get('device')}, precision {m.get('precision')}, commit {payload.get('commit')}")
    minutes = f"; {payload['minutes']:.1f} min" if payload.get("minutes") is not None else ""
    return (f"# domain adaptation, CoNLL-2003 -> {payload['domain']}: {where}{minutes}\n"
            f"# pool {payload.get('pool', '?'):,} training sentences, test {payload.get('test', '?'):,}; seed "
            f"{spec['seed_size']} + {spec['rounds'] - 1} x {spec['batch_size']} ({spec['seed_size']}..{last} labels), "
            f"{spec['repeats']} repeats, max length {spec['training']['max_length']}, strategies "
            f"{', '.join(spec['strategies'])}")


def report(payload: dict[str, Any]) -> str:
    """Everything printed for one domain, from its results.json payload."""
    stats = domain_stats(payload["starts"])
    parts = [header(payload), "", table(payload, stats), "", "Starts:", *_start_lines(payload)]
    better, met, lines = verdict(stats)
    parts += ["", f"Target (issue 12): from the better start ({better or '-'}), reach start a's final F1 with at most "
              f"half of a's labels - {'met' if met else 'NOT met'} on {payload['domain']}", *lines]
    return "\n".join(parts)


def overall(payloads: Sequence[dict[str, Any]]) -> str:
    met = [p["domain"] for p in payloads if verdict(domain_stats(p["starts"]))[1]]
    goal = "on at least one target domain"
    if met:
        return f"Overall: the target is met {goal} ({', '.join(met)})"
    return f"Overall: the target is NOT met {goal} ({', '.join(p['domain'] for p in payloads)} measured)"


def plot(payload: dict[str, Any], path: Path) -> None:
    """Mean F1 against labels, one panel per strategy, one line (and min-max band) per start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = domain_stats(payload["starts"])
    strategies = list(payload["spec"]["strategies"])
    fig, axes = plt.subplots(1, len(strategies), figsize=(6 * len(strategies), 4.5), squeeze=False)
    for ax, name in zip(axes[0], strategies):
        for start, per in stats.items():
            if name not in per:
                continue
            pts = [p for p in payload["starts"][start]["points"] if p["strategy"] == name and p["score"] is not None]
            rounds = sorted({p["round"] for p in pts})
            lo = [100 * min(p["score"] for p in pts if p["round"] == r) for r in rounds]
            hi = [100 * max(p["score"] for p in pts if p["round"] == r) for r in rounds]
            x = [c["labels"] for c in per[name]["curve"]]
            ax.plot(x, [100 * c["mean"] for c in per[name]["curve"]], marker="o", label=f"{start}: "
                    f"{START_NAMES.get(start, start)}")
            ax.fill_between(x, lo, hi, alpha=0.15)
        ax.set_title(name)
        ax.set_xlabel("sentences labelled")
        ax.set_ylabel("entity micro-F1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"CoNLL-2003 -> {payload['domain']}: mean and min-max over repeats")
    fig.tight_layout()
    save_figure(fig, path)


def _pp(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: Any, digits: int) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{number:.{digits}f}" if np.isfinite(number) else "-"


# --- the machine ---------------------------------------------------------------------------------------------------


def machine_info(training: TrainingConfig) -> dict[str, Any]:
    info = le.machine(training)
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = sorted(f for f in line.split(":", 1)[1].split() if "bf16" in f)
                break
    except OSError:
        pass
    info["bf16_flags"] = " ".join(flags)
    return info


def commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (uncommitted changes)" if dirty else "")


# --- running -------------------------------------------------------------------------------------------------------


def domain_spec(domain: str, opts: Options, out: Path) -> SimulationSpec:
    corpus = DOMAINS[domain]
    return SimulationSpec(
        train=corpus.train, test=corpus.test, task=TaskKind.NER, strategies=opts.strategies,
        seed_size=opts.seed_size, batch_size=opts.batch_size, rounds=opts.rounds, repeats=opts.repeats,
        max_pool=opts.max_pool, max_test=opts.max_test, seed=opts.seed, out=out,
        stop_set_size=0,  # the stopping criteria are not measured here (their benchmark is benchmarks/stopping.py)
        training=opts.training(),
    )


def estimate_minutes(domains: Sequence[str], opts: Options, cache_root: Path) -> float:
    """A rough duration from :data:`ROUND_SECONDS` (a round's fit is about ``target_steps`` steps whatever the label
    count, so rounds cost about the same) and the preparation of the starts that are not cached yet."""
    runs = len(opts.starts) * len(opts.strategies) * opts.repeats * opts.rounds
    seconds = sum(ROUND_SECONDS.get(d, 20.0) * runs for d in domains)
    if "b" in opts.starts or "c_from_b" in opts.starts:
        cached = any(cache_root.glob("conll-*.json")) if cache_root.is_dir() else False
        seconds += 0 if cached else SOURCE_SECONDS_PER_SENTENCE * opts.source_sentences
    adapts = sum(1 for s in opts.starts if s.startswith("c"))
    seconds += adapts * len(domains) * min(opts.adapt_seconds, ADAPT_SECONDS_PER_STEP * opts.adapt_steps)
    return seconds / 60


def run_domain(domain: str, opts: Options, out: Path, cache_root: Path, *, model_factory: Any = None,
               adapter: Adapter | None = None, progress: bool = True,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every start of ``opts.starts`` on ``domain``; writes ``out/<start>/`` and ``out``'s results.json, table.md and
    learning_curve.png; returns the payload."""
    t0 = time.perf_counter()
    spec = domain_spec(domain, opts, out)
    schema, pool, test = load_data(spec)
    pool_texts = [e.text for e in read_examples(spec.train, task=TaskKind.NER)]
    payload: dict[str, Any] = {
        "domain": domain, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit(),
        "machine": machine_info(spec.training), "options": opts._asdict(), "spec": _spec_dict(spec),
        "pool": len(pool), "test": len(test), "tags": list(schema.tags), "starts": {},
    }
    kept = previous_starts(out, payload["spec"], opts.starts)
    if kept:
        log(f"# kept from the previous run in {out} (same protocol): start {', '.join(kept)}")
        payload["starts"].update(kept)
    source: dict[str, Any] | None = None
    for start in opts.starts:
        entry: dict[str, Any] = {"model": "default"}
        payload["starts"][start] = entry
        if start in ("b", "c_from_b"):
            factory = model_factory or _default_factory()
            source = source or train_source(opts, cache_root, factory, log)
            entry["model"] = source["folder"]
            if start == "b":
                entry["source"] = source
                entry["shared_tags"] = sorted(set(source["tags"]) & set(schema.tags))
                log(f"# start b: the source's head rows of {', '.join(entry['shared_tags']) or 'no tag'} are kept "
                    f"by name (the only tags CoNLL-2003 and {domain} share); the other {domain} tags get new rows")
        if start in ("c", "c_from_b"):
            adapt = adapter or default_adapter()
            if adapt is None:
                entry["skipped"] = "al_loop.models.adapt is not importable (pool-adaptive pretraining not available)"
                log(f"# start {start}: skipped: {entry['skipped']}")
                continue
            entry["adapt"] = adapt_start(entry["model"], pool_texts, cache_root, opts, adapt, log, start)
            entry["model"] = entry["adapt"]["folder"]
        log(f"# start {start} ({START_NAMES[start]}): simulating ...")
        s0 = time.perf_counter()
        result = run_simulation(replace(spec, model=entry["model"], out=out / start), model_factory=model_factory,
                                progress=progress, on_point=partial(_log_point, log, start))
        write_outputs(result, out / start, TaskKind.NER)
        entry["points"] = result.points
        entry["minutes"] = (time.perf_counter() - s0) / 60
        _save(payload, out)  # so a run stopped later keeps the starts it finished
    payload["starts"] = {k: payload["starts"][k] for k in STARTS if k in payload["starts"]}
    payload["minutes"] = (time.perf_counter() - t0) / 60
    _save(payload, out)
    plot(payload, out / "learning_curve.png")
    text = report(payload)
    (out / "table.md").write_text(text + "\n")
    log("\n" + text)
    return payload


def previous_starts(out: Path, spec: dict[str, Any], rerun: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The starts of ``out``'s results.json that this run does not redo, when it ran the same simulation protocol
    (so ``--starts c`` after a run of a and b adds c beside them); nothing otherwise."""
    try:
        old = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(old, dict) or old.get("spec") != json.loads(json.dumps(spec, default=str)):
        return {}
    return {k: v for k, v in (old.get("starts") or {}).items() if k not in rerun and v.get("points")}


def _log_point(log: Callable[[str], None], start: str, p: dict[str, Any]) -> None:
    """One line per trained round, so a long run shows where it is."""
    score = "-" if p.get("score") is None else f"{100 * p['score']:.1f}%"
    log(f"#   {start} {p['strategy']} repeat {p['repeat']} round {p['round']}: {p['labels']} labels, F1 {score}, "
        f"{_num(p.get('seconds'), 1)} s ({p.get('learner') or '-'})")


def _save(payload: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(out / "results.json")


def _spec_dict(spec: SimulationSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["train"], d["test"], d["out"], d["task"] = str(spec.train), str(spec.test), str(spec.out), spec.task.value
    return d


def _default_factory() -> Any:
    from al_loop.rounds.service import default_model_factory

    return default_model_factory()


def _starts(text: str) -> tuple[str, ...]:
    starts = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in starts if s not in STARTS]
    if unknown or not starts:
        raise argparse.ArgumentTypeError(f"starts are a comma-separated subset of {', '.join(STARTS)}")
    return starts


def main(argv: list[str] | None = None, *, model_factory: Any = None, adapter: Adapter | None = None) -> int:
    d = Options()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("domain", choices=[*sorted(DOMAINS), "all"])
    parser.add_argument("--repeats", type=int, default=d.repeats)
    parser.add_argument("--rounds", type=int, default=d.rounds, help="trained rounds, one point each")
    parser.add_argument("--seed-size", type=int, default=d.seed_size)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--strategy", action="append", default=None,
                        help=f"repeatable (default: {', '.join(d.strategies)})")
    parser.add_argument("--max-pool", type=int, default=d.max_pool, help="pool: training sentences (0 = all)")
    parser.add_argument("--max-test", type=int, default=d.max_test, help="test sentences (0 = all)")
    parser.add_argument("--max-length", type=int, default=d.max_length)
    parser.add_argument("--source-sentences", type=int, default=d.source_sentences,
                        help="CoNLL-2003 training sentences of start b's source model")
    parser.add_argument("--starts", type=_starts, default=d.starts, help="comma-separated: a, b, c, c_from_b")
    parser.add_argument("--adapt-steps", type=int, default=d.adapt_steps, help="masked-LM steps of start c")
    parser.add_argument("--adapt-seconds", type=float, default=d.adapt_seconds, help="time budget of start c's MLM")
    parser.add_argument("--adapt-texts", type=int, default=d.adapt_texts,
                        help="pool texts start c trains on (0 = the whole training split)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "domain")
    parser.add_argument("--retable", action="store_true", help="do not run: reprint from <out>/<domain>/results.json")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    domains = sorted(DOMAINS) if args.domain == "all" else [args.domain]
    if args.retable:
        payloads = [json.loads((args.out / dom / "results.json").read_text()) for dom in domains]
        print("\n\n".join(report(p) for p in payloads))
        print("\n" + overall(payloads))
        return 0
    opts = Options(repeats=args.repeats, rounds=args.rounds, seed_size=args.seed_size, batch_size=args.batch_size,
                   strategies=tuple(args.strategy or d.strategies), max_pool=args.max_pool, max_test=args.max_test,
                   max_length=args.max_length, source_sentences=args.source_sentences, starts=args.starts,
                   adapt_steps=args.adapt_steps, adapt_seconds=args.adapt_seconds, adapt_texts=args.adapt_texts)
    cache_root = args.out / "cache"
    print(f"# domain adaptation: {', '.join(domains)}; starts {', '.join(opts.starts)}; estimated "
          f"{estimate_minutes(domains, opts, cache_root):.0f} min on the 2-core development machine", flush=True)
    t0 = time.perf_counter()
    payloads = [run_domain(dom, opts, args.out / dom, cache_root, model_factory=model_factory, adapter=adapter,
                           progress=not args.no_progress and sys.stderr.isatty()) for dom in domains]
    print("\n" + overall(payloads))
    print(json.dumps({"minutes": round((time.perf_counter() - t0) / 60, 1), "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
