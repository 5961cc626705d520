"""Offline simulation: a labelled data set plays the annotator.

Each (strategy, repeat) is its own project in a store; rounds run through the same
``RoundService`` as the live server, and an oracle answers every selected item from its gold
annotation. Round 0 is the cold start (``seed_size`` items, identical for every strategy of
a repeat); rounds 1..N each train on all labels so far, evaluate on the test file and select
the next ``batch_size`` items.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from al_loop.config import LoopConfig, TrainingConfig
from al_loop.data.readers import read_examples
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError, EmptyInputError, ModelLoadError, UnknownLabelError
from al_loop.folders import save_figure
from al_loop.model_paths import check_source_task, parse_source_ref
from al_loop.rounds.service import ModelFactory, RoundService
from al_loop.rounds.states import RoundStatus
from al_loop.rounds.stopping import point_fields, stopping_summary
from al_loop.store.records import payload_from_example
from al_loop.store.repository import Store
from al_loop.strategies import STRATEGIES, make_strategy
from al_loop.types import Example, TaskKind

if TYPE_CHECKING:
    from al_loop.models.adapt import AdaptBudget

log = logging.getLogger("al_loop.simulate")

POINT_FIELDS = ("strategy", "repeat", "round", "labels", "tokens", "score", "seconds", "learner", "kappa", "changed",
                "uncertainty", "stops")
"""``kappa``, ``changed``, ``uncertainty``: the round's stopping measures (None when not measured); ``stops``: the
stopping criteria that hold after the round, ``|``-joined (see :mod:`al_loop.rounds.stopping`)."""


@dataclass(frozen=True)
class SimulationSpec:
    train: Path
    test: Path
    task: TaskKind
    strategies: tuple[str, ...] = ("random", "least_confidence")
    seed_size: int = 50
    batch_size: int = 50
    rounds: int = 5
    repeats: int = 3
    model: str = "default"
    out: Path = Path("runs/simulation")
    format: str | None = None
    test_format: str | None = None
    max_pool: int = 0  # 0 = whole training file as the pool
    max_test: int = 0  # 0 = whole test file
    max_pool_scored: int = 0
    cold_start: str = "random"
    dedupe_threshold: float = LoopConfig.dedupe_threshold
    stop_set_size: int = LoopConfig.stop_set_size
    seed: int = 13
    full_data: bool = False
    training: TrainingConfig = field(default_factory=TrainingConfig)
    adapt: AdaptBudget | None = None  # pool-adaptive pretraining before the seed round (None = off)
    adapt_cache: Path | None = None  # where adapted encoders are cached (None = ``out / "adapted"``)

    def __post_init__(self) -> None:
        if not self.strategies:
            raise ConfigError("at least one --strategy is needed")
        for name in self.strategies:
            make_strategy(name, TaskKind(self.task))
        if parse_source_ref(self.model) is not None:
            raise ConfigError(f"model {self.model}: another project's model version is resolved by `al-loop simulate "
                              "--model project:ID:VERSION` (with the al-loop database) or given as its artifact folder")
        try:
            check_source_task(self.model, TaskKind(self.task).value)  # a source version of the other task kind
        except ModelLoadError as exc:
            raise ConfigError(str(exc)) from None
        if min(self.seed_size, self.batch_size, self.rounds, self.repeats) < 1:
            raise ConfigError("seed size, batch size, rounds and repeats must be >= 1")


@dataclass
class SimulationResult:
    spec: dict[str, Any]
    points: list[dict[str, Any]]
    summary: dict[str, Any]
    full_data_score: float | None = None
    seconds: float = 0.0
    adaptation: dict[str, Any] | None = None  # AdaptResult.to_dict() plus "base_model" when the pool was adapted


def _subsample(examples: list[Example], n: int, seed: int) -> list[Example]:
    if not n or len(examples) <= n:
        return examples
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(examples), size=n, replace=False))
    return [examples[i] for i in keep]


def load_data(spec: SimulationSpec) -> tuple[LabelSchema, list[Example], list[Example]]:
    """Read and check the train (pool) and test files; the schema comes from the training file."""
    train = read_examples(spec.train, task=spec.task, format=spec.format)
    test = read_examples(spec.test, task=spec.task, format=spec.test_format or spec.format)
    train = [e for e in train if e.is_labelled]
    test = [e for e in test if e.is_labelled]
    if not train:
        raise EmptyInputError(f"{spec.train}: no labelled examples (the oracle needs gold labels)")
    if not test:
        raise EmptyInputError(f"{spec.test}: no labelled examples to evaluate on")
    multi = spec.task is TaskKind.CLASSIFICATION and any(len(e.labels or ()) > 1 for e in train)
    schema = LabelSchema.from_examples(spec.task, train, multi_label=multi)
    test_labels = {s.label for e in test for s in (e.spans or ())} | {lb for e in test for lb in (e.labels or ())}
    unknown = sorted(test_labels - set(schema.labels))
    if unknown:
        raise UnknownLabelError(
            f"{spec.test}: labels not present in the training file: {', '.join(unknown)} "
            f"(known: {', '.join(schema.labels)})"
        )
    train = _subsample(train, spec.max_pool, spec.seed)
    test = _subsample(test, spec.max_test, spec.seed + 1)
    return schema, train, test


def run_simulation(
    spec: SimulationSpec,
    *,
    model_factory: ModelFactory | None = None,
    progress: bool = True,
    store: Store | None = None,
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> SimulationResult:
    """Run every strategy x repeat and return the learning-curve points."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    schema, train, test = load_data(spec)
    needed = spec.seed_size + spec.batch_size * (spec.rounds - 1)
    if needed > len(train):
        raise ConfigError(f"the pool has {len(train)} items but the schedule needs {needed}")
    adaptation = adapt_pool(spec, train) if spec.adapt is not None else None
    model = str(adaptation["folder"]) if adaptation is not None else spec.model
    store = store or Store("sqlite://")
    points: list[dict[str, Any]] = []
    total = len(spec.strategies) * spec.repeats * (spec.rounds + 1)
    bar = tqdm(total=total, desc="simulate", unit="round", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="al-loop-sim-") as tmp:
        artifacts = Path(tmp) if spec.training.warm_start else None
        for repeat in range(spec.repeats):
            training = TrainingConfig(**{**asdict(spec.training), "seed": spec.training.seed + repeat})
            for strategy in spec.strategies:
                loop = LoopConfig(
                    strategy=strategy,
                    batch_size=spec.batch_size,
                    seed_size=spec.seed_size,
                    cold_start=spec.cold_start,
                    dedupe_threshold=spec.dedupe_threshold,
                    retrain_every=0,
                    max_pool_scored=spec.max_pool_scored,
                    stop_set_size=spec.stop_set_size,
                    seed=spec.seed + repeat,
                )
                name = f"sim-{strategy}-r{repeat}-{time.time_ns()}"
                project = store.create_project(name, schema, model, loop, training)
                store.add_items(project.id, train, "pool")
                store.add_items(project.id, test, "test")
                gold = {e.item_id: payload_from_example(e) for e in train}
                service = RoundService(store, model_factory, artifacts, owner="simulate", keep_artifacts=1)
                for k in range(spec.rounds + 1):
                    bar.set_postfix_str(f"{strategy} repeat {repeat} round {k}")
                    rnd = service.create_round(project.id, trigger="simulate")
                    outcome = service.run_round(rnd.id, select=k < spec.rounds)  # the last selection is unused
                    done = outcome.round
                    if done.status != RoundStatus.SUCCEEDED.value:
                        raise RuntimeError(f"simulation round failed: {done.error}")
                    if k > 0:
                        point = {
                            "strategy": strategy,
                            "repeat": repeat,
                            "round": k,
                            "labels": done.n_labels,
                            "tokens": done.n_tokens,
                            "score": done.metrics.get("score"),
                            "seconds": done.timings.get("total"),
                            "learner": done.metrics.get("learner", ""),
                            **point_fields(done.metrics.get("stopping")),
                        }
                        points.append(point)
                        if on_point:
                            on_point(point)
                    if k < spec.rounds:
                        for s in store.get_scores(rnd.id, selected_only=True):
                            store.record_label(
                                project.id, s.item_id, f"oracle:{s.item_id}", payload=gold[s.item_id], source="oracle"
                            )
                    bar.update(1)
    bar.close()
    full = full_data_score(spec, schema, train, test, model_factory, model=model) if spec.full_data else None
    summary = summarize(points, full)
    return SimulationResult(
        spec=_spec_dict(spec),
        points=points,
        summary=summary,
        full_data_score=full,
        seconds=time.perf_counter() - t_start,
        adaptation=adaptation,
    )


def adapt_pool(spec: SimulationSpec, train: Sequence[Example]) -> dict[str, Any]:
    """Masked-LM adaptation of ``spec.model``'s encoder on the pool's texts (in file order), once, cached under
    ``spec.adapt_cache``; every repeat then starts from the adapted folder. Returns the record for the results."""
    from al_loop.models.adapt import adapt_encoder

    if spec.adapt is None:
        raise ConfigError("adapt_pool needs spec.adapt (an AdaptBudget)")
    cache = spec.adapt_cache if spec.adapt_cache is not None else spec.out / "adapted"
    result = adapt_encoder(spec.model, [e.text for e in train], cache, spec.adapt, device=spec.training.device,
                           precision=spec.training.precision)
    return {**result.to_dict(), "base_model": spec.model, "budget": asdict(spec.adapt)}


def full_data_score(
    spec: SimulationSpec,
    schema: LabelSchema,
    train: Sequence[Example],
    test: Sequence[Example],
    model_factory: ModelFactory | None = None, *, model: str | None = None
) -> float:
    """Score of the same model and schedule trained on the whole pool (reference ceiling); ``model`` overrides
    ``spec.model`` (the adapted encoder)."""
    if model_factory is None:
        from al_loop.rounds.service import default_model_factory

        model_factory = default_model_factory()
    fitted = model_factory.create(schema, model or spec.model, spec.training)
    fitted.fit(list(train))
    return float(fitted.evaluate(list(test))["score"])


def _mean_curve(points: Sequence[dict[str, Any]], strategy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    by_round: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for p in points:
        if p["strategy"] == strategy and p["score"] is not None:
            by_round[p["round"]].append((p["labels"], p["score"]))
    rounds = sorted(by_round)
    labels = np.array([np.mean([x[0] for x in by_round[r]]) for r in rounds], dtype=float)
    scores = np.array([[x[1] for x in by_round[r]] for r in rounds], dtype=object)
    mean = np.array([float(np.mean(s)) for s in scores], dtype=float)
    std = np.array([float(np.std(s)) for s in scores], dtype=float)
    return labels, mean, std


def _mean_tokens(points: Sequence[dict[str, Any]], strategy: str) -> np.ndarray:
    """Mean labelled tokens per round (the rounds of :func:`_mean_curve`); 0 where points carry none."""
    by_round: dict[int, list[float]] = defaultdict(list)
    for p in points:
        if p["strategy"] == strategy and p["score"] is not None:
            by_round[p["round"]].append(float(p.get("tokens") or 0))
    return np.array([np.mean(by_round[r]) for r in sorted(by_round)], dtype=float)


def curve_area(labels: np.ndarray, scores: np.ndarray) -> float:
    """Normalised area under the learning curve: the trapezoid mean of score over the label range."""
    if len(labels) == 0:
        return float("nan")
    if len(labels) == 1:
        return float(scores[0])
    return float(np.trapezoid(scores, labels) / (labels[-1] - labels[0]))


def summarize(points: Sequence[dict[str, Any]], full_data: float | None = None) -> dict[str, Any]:
    """Per strategy: AUC, final score, labels needed to reach random's final score (mean over repeats).

    The first round whose mean score reaches random's final mean score gives ``labels_to_random_final``
    and, when the points count tokens (NER), ``tokens_to_random_final``: sentence counts flatter a
    strategy that picks long sentences, token counts do not.
    """
    strategies = sorted({p["strategy"] for p in points})
    curves = {s: _mean_curve(points, s) for s in strategies}
    tokens = {s: _mean_tokens(points, s) for s in strategies}
    random_final = curves["random"][1][-1] if "random" in curves and len(curves["random"][1]) else None
    random_labels = curves["random"][0][-1] if random_final is not None else None
    random_tokens = tokens["random"][-1] if random_final is not None and len(tokens["random"]) else None
    out: dict[str, Any] = {}
    for s, (labels, mean, std) in curves.items():
        entry: dict[str, Any] = {
            "auc": curve_area(labels, mean),
            "final_score": float(mean[-1]) if len(mean) else None,
            "final_std": float(std[-1]) if len(std) else None,
            "final_labels": float(labels[-1]) if len(labels) else None,
            "curve": [
                {"labels": float(lb), "mean": float(m), "std": float(sd)} for lb, m, sd in zip(labels, mean, std)
            ],
        }
        if len(tokens[s]) and tokens[s][-1] > 0:
            entry["final_tokens"] = float(tokens[s][-1])
        if any(p.get("stops") is not None for p in points if p["strategy"] == s):
            entry["stopping"] = stopping_summary(points, s)
        if random_final is not None:
            first = next((i for i, m in enumerate(mean) if m >= random_final), None)
            reach = float(labels[first]) if first is not None else None
            entry["labels_to_random_final"] = reach
            entry["label_ratio_vs_random"] = (reach / random_labels) if reach is not None and random_labels else None
            if random_tokens:  # NER: the same, counted in annotated tokens (words)
                reach_t = float(tokens[s][first]) if first is not None else None
                entry["tokens_to_random_final"] = reach_t
                entry["token_ratio_vs_random"] = reach_t / random_tokens if reach_t is not None else None
        out[s] = entry
    if full_data is not None:
        out["_full_data_score"] = full_data
    return out


def write_outputs(result: SimulationResult, out: Path, task: TaskKind) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv`` and ``learning_curve.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "png": out / "learning_curve.png"}
    payload = {
        "spec": result.spec,
        "points": result.points,
        "summary": result.summary,
        "full_data_score": result.full_data_score,
        "seconds": result.seconds,
        "adaptation": result.adaptation,
    }
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
    tmp.replace(paths["json"])
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(POINT_FIELDS))
        writer.writeheader()
        for p in result.points:
            writer.writerow({k: p.get(k) for k in POINT_FIELDS})
    plot_learning_curves(result.points, paths["png"], task, result.full_data_score)
    return paths


def plot_learning_curves(
    points: Sequence[dict[str, Any]], path: Path, task: TaskKind, full_data: float | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if task is TaskKind.NER else 1, figsize=(12 if task is TaskKind.NER else 7, 4.5))
    axes = np.atleast_1d(axes)
    metric = "entity micro-F1" if task is TaskKind.NER else "accuracy"
    for x_key, ax in zip(("labels", "tokens"), axes):
        for s in sorted({p["strategy"] for p in points}):
            rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for p in points:
                if p["strategy"] == s:
                    rows[p["round"]].append(p)
            r = sorted(rows)
            x = [float(np.mean([p[x_key] or 0 for p in rows[k]])) for k in r]
            ys = [[p["score"] for p in rows[k]] for k in r]
            mean = [float(np.mean(y)) for y in ys]
            lo = [float(np.min(y)) for y in ys]
            hi = [float(np.max(y)) for y in ys]
            style = "--" if s == "random" else "-"
            ax.plot(x, mean, style, marker="o", ms=3, label=s)
            ax.fill_between(x, lo, hi, alpha=0.15)
        if full_data is not None:
            ax.axhline(full_data, color="grey", lw=0.8, ls=":", label="full data")
        ax.set_xlabel(f"{x_key} labelled")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Learning curves (mean, min-max band over repeats): {metric}")
    fig.tight_layout()
    save_figure(fig, path)


def _spec_dict(spec: SimulationSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["train"], d["test"], d["out"] = str(spec.train), str(spec.test), str(spec.out)
    d["task"] = TaskKind(spec.task).value
    d["adapt_cache"] = str(spec.adapt_cache) if spec.adapt_cache is not None else None
    return d


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)


__all__ = [
    "POINT_FIELDS",
    "STRATEGIES",
    "SimulationResult",
    "SimulationSpec",
    "adapt_pool",
    "curve_area",
    "load_data",
    "run_simulation",
    "stopping_summary",
    "summarize",
    "write_outputs",
]
