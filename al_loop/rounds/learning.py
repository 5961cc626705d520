"""Which learner a round trains, and its held-out score.

``fit_round_model`` is the round's train step. With ``learner: auto`` it holds out
``1 / holdout_folds`` of the labels (stratified by class for single-label
classification, seeded), fits the light head and the fine-tuned transformer on the
rest, scores both on the held-out labels and refits the winner on **all** labels.
Fine-tuning must score strictly higher to win (the head is cheaper and steadier);
after ``switch_after`` consecutive wins it is used without comparing (the streak
is kept in the version's train report). The score a round reports when the project
has no test split is the winner's held-out score (a model trained without those
labels); it is never a score on training data. No validation split, no early
stopping: every label is trained on, so a round never loses labels to a split.

``learner: head`` / ``finetune`` train that learner only; they hold out labels only
to score the round when ``need_estimate`` (no test split).

When the round fine-tunes without a comparison and warm-starts (``warm_start``), that estimate
is made on a hash-stable split and continues the previous round's estimate model when none of
the labels that model trained on is held out now (:mod:`al_loop.rounds.estimate`), so it costs
a warm fit, not a fit from the base model.

From ``compare_below`` labels on (default 300; 0 = always compare) ``auto`` fine-tunes
without comparing: the comparison costs a second fine-tune, and on both dev sets
fine-tuning was far ahead by then (TREC training questions, dev = 500 other
training questions: 89.6% vs 73.0% for the head at 275 labels; CoNLL-2003
training sentences, dev = 500 validation sentences: entity F1 58.5 vs 38.5 at 100).

Below ``min_holdout`` held-out labels no comparison is made. ``auto`` then fine-tunes
when the fine-tuned model starts from the head's solution (``TrainingConfig.probes_head``:
classification with ``pooling: mean``, NER with ``token_head: probe``; the head begins
at the head learner's logistic regression, LP-FT, see :mod:`al_loop.models.pooled`),
else it uses the head (cheap, never collapses on a handful of labels). Measured on TREC training questions only
(25 random labels, dev = 500 other training questions, 2026-12-02): LP-FT 56.0%
dev accuracy (3 seeds) against 43.5% for the head (6 seeds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from al_loop.config import TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.rounds.estimate import EstimateChain, stable_holdout
from al_loop.types import Example, TaskKind

log = logging.getLogger("al_loop.rounds")

__all__ = ["FittedLearner", "fit_round_model", "holdout_split"]


@dataclass
class FittedLearner:
    """The round's model (trained on every label), its report and the held-out evidence.

    ``holdout``: the held-out labels (empty when none were held out); ``holdout_score``:
    the chosen learner's score on them when trained without them (None when none).
    """

    model: Any
    report: dict[str, Any]
    holdout: list[Example] = field(default_factory=list)
    holdout_score: float | None = None


def holdout_split(
    labelled: Sequence[Example], folds: int, seed: int, *, stratify: bool
) -> tuple[list[Example], list[Example]]:
    """Seeded split into (train, held out): about ``1 / folds`` held out; with ``stratify`` each class
    (first label) gives its share, and a class with a single example stays in training."""
    rng = np.random.default_rng([seed, len(labelled)])
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(labelled):
        key = (ex.labels or ("",))[0] if stratify else ""
        groups.setdefault(key, []).append(i)
    held: list[int] = []
    for key in sorted(groups):
        idx = groups[key]
        take = len(idx) // folds if stratify else round(len(idx) / folds)
        if take:
            held += [idx[int(j)] for j in rng.permutation(len(idx))[:take]]
    held_set = set(held)
    return [ex for i, ex in enumerate(labelled) if i not in held_set], [labelled[i] for i in sorted(held_set)]


def _as_dict(report: Any) -> dict[str, Any]:
    if is_dataclass(report) and not isinstance(report, type):
        return asdict(report)
    return dict(report or {})


def _score(model: Any, examples: Sequence[Example]) -> float:
    value = model.evaluate(examples).get("score")
    return float(value) if isinstance(value, int | float) else float("-inf")


def _warm_schedule(config: TrainingConfig, init_labels: int | None, n: int) -> float | None:
    """With ``warm_new_share``: the new labels' share of ``n`` (``init_labels`` were trained on before) when it is
    above ``warm_schedule`` (the share of the planned epochs a warm start trains); else None (keep
    ``warm_schedule``)."""
    if not config.warm_new_share or not init_labels or n <= 0:
        return None
    share = max(0.0, 1.0 - int(init_labels) / n)
    return round(min(1.0, share), 4) if share > config.warm_schedule else None


def _chained_estimate(
    build: Callable[..., Any], config: TrainingConfig, estimate: EstimateChain, key: str, train: Sequence[Example],
    warm: bool,
) -> Any:
    """The unfitted estimate model: the chain's previous estimate model, continued, when the round's final fit
    warm-starts (``warm``) and that model never trained on a label held out now; else one from the base model."""
    source = estimate.source(key, train) if warm else None
    if source is None:
        return build("finetune")
    return build("finetune", source[0], _warm_schedule(config, source[1], len(train)))


def fit_round_model(
    factory: Any,
    schema: LabelSchema,
    base_model: str,
    config: TrainingConfig,
    labelled: Sequence[Example],
    *,
    previous_report: dict[str, Any] | None = None,
    need_estimate: bool = True,
    init_from: str | Path | None = None,
    init_labels: int | None = None,
    estimate: EstimateChain | None = None,
    estimate_key: str = "",
    progress: Callable[[float], None] | None = None,
) -> FittedLearner:
    """Train the round's model on ``labelled``; see the module docstring for the rule."""
    labelled = list(labelled)
    stratify = schema.task is TaskKind.CLASSIFICATION and not schema.multi_label
    train, held = holdout_split(labelled, config.holdout_folds, config.seed, stratify=stratify)
    enough = len(held) >= config.min_holdout and len(train) > 0
    streak = int((previous_report or {}).get("auto", {}).get("finetune_streak", 0) or 0)
    info: dict[str, Any] = {"n_labels": len(labelled)}
    started = time.perf_counter()

    def build(learner: str, warm: str | Path | None = None, schedule: float | None = None) -> Any:
        fit_config = replace(config, learner=learner)
        if schedule is not None:
            fit_config = replace(fit_config, warm_schedule=schedule)
        return factory.create(schema, base_model, fit_config, init_from=warm)

    def step(lo: float, hi: float) -> Callable[[float], None] | None:
        if progress is None:
            return None
        return lambda f: progress(lo + (hi - lo) * f)

    chosen = config.learner
    held_score: float | None = None
    if config.learner == "auto":
        if streak >= config.switch_after:
            chosen = "finetune"
            info["reason"] = f"fine-tuning won {streak} comparisons in a row"
        elif 0 < config.compare_below <= len(labelled):
            chosen = "finetune"
            info["reason"] = f"{len(labelled)} labels >= compare_below {config.compare_below}: no comparison"
        elif not enough:
            chosen = "finetune" if config.probes_head(schema.task) else "head"
            info["reason"] = (
                f"{len(held)} held-out labels are too few to compare (min_holdout {config.min_holdout}); "
                + ("fine-tuning starts from the head's solution" if chosen == "finetune" else "the head is safer")
            )
        else:
            t0 = time.perf_counter()
            head = build("head")
            head.fit(train)
            head_score = _score(head, held)
            t1 = time.perf_counter()
            tuned = build("finetune")
            tuned.fit(train, progress=step(0.0, 0.45))
            tuned_score = _score(tuned, held)
            t2 = time.perf_counter()
            chosen = "finetune" if tuned_score > head_score else "head"
            streak = streak + 1 if chosen == "finetune" else 0
            held_score = max(head_score, tuned_score)
            info["holdout"] = {
                "n": len(held),
                "head": round(head_score, 4),
                "finetune": round(tuned_score, 4),
                "head_seconds": round(t1 - t0, 3),
                "finetune_seconds": round(t2 - t1, 3),
            }
            info["reason"] = f"held-out score head {head_score:.3f} vs fine-tuned {tuned_score:.3f}"
        info["finetune_streak"] = streak if chosen == "finetune" else 0
    warm = init_from if chosen == "finetune" else None
    scratch_labels = int((previous_report or {}).get("scratch_labels") or 0)
    if warm is not None and config.warm_refit > 0 and len(labelled) >= config.warm_refit * max(scratch_labels, 1):
        info["warm"] = (f"refit from the base model: {len(labelled)} labels >= {config.warm_refit:g} x the "
                        f"{scratch_labels} of the last fit from it")
        warm = None
    if estimate is not None and not need_estimate:
        estimate.clear()  # a test split scores the rounds now: the chain's model is not needed
    chained = chosen == "finetune" and config.warm_start
    if held_score is None and need_estimate and chained and estimate is not None:
        train, held = stable_holdout(labelled, config.holdout_folds, config.seed, stratify=stratify)
        if len(held) >= config.min_holdout and train:
            est = _chained_estimate(build, config, estimate, estimate_key, train, warm is not None)
            est.fit(train, progress=step(0.0, 0.4))
            held_score = _score(est, held)
            estimate.save(est, estimate_key, train)
            info["estimate"] = {"n": len(held), "warm_started": bool(getattr(est, "warm_started", False))}
    elif held_score is None and need_estimate and enough:
        est = build(chosen)
        est.fit(train, progress=step(0.0, 0.4) if chosen == "finetune" else None)
        held_score = _score(est, held)
    schedule = _warm_schedule(config, init_labels, len(labelled)) if warm is not None else None
    if schedule is not None:
        info["warm_schedule"] = schedule
    model = build(chosen, warm, schedule)
    fit_report = _as_dict(model.fit(labelled, progress=step(0.45 if held_score is not None else 0.0, 1.0)))
    seconds = round(time.perf_counter() - started, 3)
    report = {**fit_report, "learner": chosen, "auto": info, "round_fit_seconds": seconds}
    if chosen == "finetune":
        warmed = bool(getattr(model, "warm_started", False))
        report["warm_started"] = warmed
        report["scratch_labels"] = scratch_labels if warmed else len(labelled)
    if held_score is not None:
        report["holdout_score"] = round(held_score, 6)
        report["n_holdout"] = len(held)
    log.info("round learner: %s (%s)", chosen, info.get("reason", config.learner))
    return FittedLearner(model, report, held if held_score is not None else [], held_score)
