"""The round's learner choice: held-out comparison, refit on every label, sticky switch, honest scores."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from al_loop.config import LoopConfig, TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError
from al_loop.rounds.estimate import EstimateChain, stable_holdout
from al_loop.rounds.learning import fit_round_model, holdout_split
from al_loop.rounds.service import RoundService
from al_loop.store.records import payload_from_example
from al_loop.store.repository import Store
from al_loop.types import Example, TaskKind
from tests.core.fakes import FakeModel

SCHEMA = LabelSchema.build(TaskKind.CLASSIFICATION, ["a", "b", "c"])


def _examples(n: int) -> list[Example]:
    labels = ["a", "b", "c"]
    return [Example(f"i{k}", f"text {k} word{k % 3}", labels=(labels[k % 3],)) for k in range(n)]


class ScriptedLearner:
    """Scores by learner name (``scores``), remembers what it was fitted on."""

    def __init__(self, learner: str, scores: dict[str, float], log: list[tuple[str, int]]) -> None:
        self.learner, self.scores, self.log, self.schema = learner, scores, log, SCHEMA
        self.fitted: list[str] = []

    def fit(self, examples: Sequence[Example], *, progress: Any = None) -> dict[str, Any]:
        self.fitted = [e.item_id for e in examples]
        self.log.append((self.learner, len(examples)))
        return {"n_train": len(examples)}

    def evaluate(self, examples: Sequence[Example]) -> dict[str, Any]:
        assert not set(self.fitted) & {e.item_id for e in examples}, "scored on its own training labels"
        return {"score": self.scores[self.learner]}


class ScriptedFactory:
    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.log: list[tuple[str, int]] = []

    def create(self, schema: LabelSchema, base_model: str, config: TrainingConfig, init_from: Any = None) -> Any:
        return ScriptedLearner(config.learner, self.scores, self.log)


def test_holdout_split_is_stratified_disjoint_and_seeded() -> None:
    data = _examples(40)
    train, held = holdout_split(data, 4, seed=3, stratify=True)
    assert len(held) == 9  # 14 + 13 + 13 examples per class: 3 held out of each
    assert {e.item_id for e in train} | {e.item_id for e in held} == {e.item_id for e in data}
    assert not {e.item_id for e in train} & {e.item_id for e in held}
    assert Counter(e.labels[0] for e in held) == Counter({"a": 3, "b": 3, "c": 3})
    assert holdout_split(data, 4, seed=3, stratify=True) == (train, held)
    assert holdout_split(data, 4, seed=4, stratify=True)[1] != held
    single = [Example("s", "x", labels=("z",)), *_examples(12)]  # a class with one example stays in training
    assert all("s" not in {e.item_id for e in holdout_split(single, 4, seed, stratify=True)[1]} for seed in range(20))
    plain_train, plain_held = holdout_split(data, 4, seed=3, stratify=False)
    assert len(plain_held) == 10 and len(plain_train) == 30


def test_auto_compares_on_held_out_labels_and_refits_the_winner_on_all() -> None:
    factory = ScriptedFactory({"head": 0.6, "finetune": 0.8})
    data = _examples(60)
    cfg = TrainingConfig()
    fitted = fit_round_model(factory, SCHEMA, "default", cfg, data)
    held = fitted.report["n_holdout"]
    assert fitted.report["learner"] == "finetune" and fitted.holdout_score == 0.8
    assert factory.log == [("head", 60 - held), ("finetune", 60 - held), ("finetune", 60)]
    assert fitted.model.fitted == [e.item_id for e in data]  # the round's model saw every label
    assert fitted.report["auto"]["finetune_streak"] == 1
    assert len(fitted.holdout) == held >= cfg.min_holdout


def test_auto_keeps_the_head_on_a_tie_and_switches_for_good_after_a_streak() -> None:
    tie = ScriptedFactory({"head": 0.7, "finetune": 0.7})
    fitted = fit_round_model(tie, SCHEMA, "default", TrainingConfig(), _examples(60))
    assert fitted.report["learner"] == "head" and fitted.report["auto"]["finetune_streak"] == 0
    factory = ScriptedFactory({"head": 0.9, "finetune": 0.5})
    previous = {"auto": {"finetune_streak": 2}}
    fitted = fit_round_model(factory, SCHEMA, "default", TrainingConfig(), _examples(60), previous_report=previous)
    assert fitted.report["learner"] == "finetune"  # sticky: no comparison any more
    assert [name for name, _ in factory.log] == ["finetune", "finetune"]  # held-out estimate + refit on all
    assert fitted.holdout_score == 0.5
    fast = ScriptedFactory({"head": 0.9, "finetune": 0.5})
    fitted = fit_round_model(fast, SCHEMA, "default", TrainingConfig(), _examples(60), previous_report=previous,
                             need_estimate=False)
    assert fast.log == [("finetune", 60)] and fitted.holdout_score is None and fitted.holdout == []


def test_auto_with_few_labels_fine_tunes_from_the_head_or_uses_the_head_without_comparing() -> None:
    # the mean-pooled classifier starts at the head's regression (LP-FT): fine-tuning is used
    factory = ScriptedFactory({"head": 0.1, "finetune": 0.9})
    fitted = fit_round_model(factory, SCHEMA, "default", TrainingConfig(), _examples(12))
    assert fitted.report["learner"] == "finetune" and factory.log == [("finetune", 12)]
    assert fitted.holdout_score is None and "too few" in fitted.report["auto"]["reason"]
    assert fitted.report["auto"]["finetune_streak"] == 0  # not a win: nothing was compared
    # the checkpoint's own [CLS] head starts at random: the head is used
    factory = ScriptedFactory({"head": 0.1, "finetune": 0.9})
    fitted = fit_round_model(factory, SCHEMA, "default", TrainingConfig(pooling="cls"), _examples(12))
    assert fitted.report["learner"] == "head" and factory.log == [("head", 12)]
    # NER: fine-tuning with the probed token head, the head with the checkpoint's own token head
    ner = LabelSchema.build(TaskKind.NER, ["PER"])
    spans = [Example(f"n{k}", "Ann ran", spans=()) for k in range(12)]
    fitted = fit_round_model(ScriptedFactory({"head": 0.1, "finetune": 0.9}), ner, "default", TrainingConfig(), spans)
    assert fitted.report["learner"] == "finetune"
    fitted = fit_round_model(
        ScriptedFactory({"head": 0.1, "finetune": 0.9}), ner, "default", TrainingConfig(token_head="hf"), spans
    )
    assert fitted.report["learner"] == "head"


def test_fixed_learner_and_config_validation() -> None:
    factory = ScriptedFactory({"head": 0.3, "finetune": 0.9})
    fitted = fit_round_model(factory, SCHEMA, "default", TrainingConfig(learner="head"), _examples(60))
    assert [name for name, _ in factory.log] == ["head", "head"] and fitted.holdout_score == 0.3
    with pytest.raises(ConfigError):
        TrainingConfig(learner="svm")
    with pytest.raises(ConfigError):
        TrainingConfig(holdout_folds=1)


def _project(store: Store, *, promote: str = "always", test: bool = False) -> int:
    p = store.create_project(
        "p", SCHEMA, loop=LoopConfig(strategy="entropy", batch_size=20, seed_size=40, promote=promote),
        training=TrainingConfig(learner="finetune"),
    )
    data = _examples(120)
    store.add_items(p.id, data[:100])
    if test:
        store.add_items(p.id, data[100:], "test")
    for e in data[:60]:
        store.record_label(p.id, e.item_id, f"ann-{e.item_id}", payload=payload_from_example(e), source="test")
    return p.id


def test_round_without_test_split_reports_the_held_out_score(tmp_path: Path) -> None:
    store = Store("sqlite://")
    pid = _project(store)
    service = RoundService(store, FakeModel, tmp_path)
    done = service.run_round(service.create_round(pid).id).round
    assert done.status == "succeeded", done.error
    assert done.metrics["eval_set"].startswith("held-out labels (")
    assert done.metrics["train"]["n_holdout"] == int(done.metrics["eval_set"].split("(")[1].split()[0])
    assert done.metrics["learner"] == "finetune"


class _Worse(FakeModel):
    """A fake whose every trained model is worse on the test split than any saved one loaded again."""

    loaded = False

    @classmethod
    def load(cls, artifact_dir: str | Path, config: TrainingConfig | None = None) -> FakeModel:
        model = super().load(artifact_dir, config)
        model.loaded = True  # type: ignore[attr-defined]
        return model

    def evaluate(self, examples: Sequence[Example]) -> dict[str, Any]:
        return {"score": 0.9 if self.loaded else 0.1, "per_label": {}}


def test_if_better_compares_with_the_promoted_version_on_the_same_test_split(tmp_path: Path) -> None:
    store = Store("sqlite://")
    pid = _project(store, promote="if_better", test=True)
    service = RoundService(store, _Worse, tmp_path)
    first = service.run_round(service.create_round(pid).id).round
    assert first.status == "succeeded" and store.promoted_version(pid).round_id == first.id
    second = service.run_round(service.create_round(pid).id).round
    assert second.status == "succeeded"
    # the stored score of the promoted version was 0.1 too, but re-evaluated now it scores 0.9: not promoted
    assert store.promoted_version(pid).round_id == first.id


def test_auto_fine_tunes_without_comparing_from_compare_below_labels() -> None:
    factory = ScriptedFactory({"head": 0.9, "finetune": 0.5})
    fitted = fit_round_model(factory, SCHEMA, "default", TrainingConfig(compare_below=300), _examples(300),
                             need_estimate=False)
    assert fitted.report["learner"] == "finetune" and factory.log == [("finetune", 300)]
    assert "compare_below" in fitted.report["auto"]["reason"]
    # below it, or with 0, the comparison decides (here: the head)
    for config, n in ((TrainingConfig(compare_below=300), 299), (TrainingConfig(compare_below=0), 600)):
        factory = ScriptedFactory({"head": 0.9, "finetune": 0.5})
        fitted = fit_round_model(factory, SCHEMA, "default", config, _examples(n), need_estimate=False)
        assert fitted.report["learner"] == "head" and [name for name, _ in factory.log] == ["head", "finetune", "head"]


# ---------------------------------------------------------------- the held-out estimate's chain


def test_stable_holdout_keeps_each_items_side_as_labels_grow() -> None:
    data = _examples(600)
    before: set[str] = set()
    for n in (40, 80, 160, 320, 600):
        train, held = stable_holdout(data[:n], 4, seed=3, stratify=True)
        t, h = {e.item_id for e in train}, {e.item_id for e in held}
        assert not t & h and t | h == {e.item_id for e in data[:n]}
        assert 0.12 * n < len(h) < 0.38 * n, (n, len(h))
        assert before <= t  # once every class has `folds` examples an item never moves to the held-out side
        before = t
    assert stable_holdout(_examples(3), 4, seed=3, stratify=True)[1] == []  # one example per class: all train
    assert stable_holdout(data[:100], 4, seed=4, stratify=False) != stable_holdout(data[:100], 4, seed=3,
                                                                                   stratify=False)


def test_the_chain_hands_out_its_model_only_when_none_of_its_labels_is_held_out(tmp_path: Path) -> None:
    chain = EstimateChain(tmp_path / "estimate")
    data = _examples(6)
    assert chain.source("k", data) is None
    model = FakeModel(SCHEMA)
    model.fit(data[:4])
    chain.save(model, "k", data[:4])
    assert chain.source("k", data) == (tmp_path / "estimate" / "model", 4)
    assert chain.source("k", data[1:]) is None  # i0 is held out now
    assert chain.source("another base", data) is None
    chain.clear()
    assert chain.source("k", data) is None


class _Lineage(FakeModel):
    """A fake that remembers every label it, or any model it continues, trained on, and refuses to be scored on
    one of them."""

    seen: set[str]

    @classmethod
    def create(cls, schema: LabelSchema, base_model: str = "default", config: TrainingConfig | None = None,
               init_from: str | Path | None = None) -> FakeModel:
        model = super().create(schema, base_model, config, init_from)
        model.seen = set(json.loads((Path(init_from) / "seen.json").read_text())) if init_from else set()
        return model

    def fit(self, examples: Sequence[Example], *, progress: Any = None) -> Any:
        self.seen = self.seen | {str(e.item_id) for e in examples}
        return super().fit(examples, progress=progress)

    def save(self, artifact_dir: str | Path, extra_manifest: dict[str, Any] | None = None) -> Path:
        out = super().save(artifact_dir, extra_manifest)
        (Path(artifact_dir) / "seen.json").write_text(json.dumps(sorted(self.seen)))
        return out

    def evaluate(self, examples: Sequence[Example]) -> dict[str, Any]:
        assert not self.seen & {str(e.item_id) for e in examples}, "scored on labels its lineage trained on"
        return super().evaluate(examples)


def test_rounds_without_a_test_split_warm_start_their_held_out_estimate(tmp_path: Path) -> None:
    """Round 1's estimate fits from the base model, later ones continue the previous estimate model (the final
    fit warm-starts too); no estimate is scored on a label any model of its chain trained on."""
    store = Store("sqlite://")
    p = store.create_project("p", SCHEMA, loop=LoopConfig(batch_size=10, seed_size=10),
                             training=TrainingConfig(learner="finetune", warm_start=True))
    data = _examples(200)
    store.add_items(p.id, data)
    service = RoundService(store, _Lineage, tmp_path)
    reports = []
    for n in (60, 100, 140):
        for e in data[:n]:
            store.record_label(p.id, e.item_id, f"ann-{e.item_id}", payload=payload_from_example(e), source="test")
        done = service.run_round(service.create_round(p.id).id).round
        assert done.status == "succeeded", done.error
        assert done.metrics["eval_set"].startswith("held-out labels (")
        reports.append(done.metrics["train"])
    assert [r["auto"]["estimate"]["warm_started"] for r in reports] == [False, True, True]
    assert [r["warm_started"] for r in reports] == [False, True, True]
    estimates = [m for m in _Lineage.created if m.init_from and Path(m.init_from).parts[-2] == "estimate"]
    assert len(estimates) == 2
    # a project that gains a test split drops the chain
    store.add_items(p.id, [Example("t0", "text t0 word0", labels=("a",))], "test")
    done = service.run_round(service.create_round(p.id).id).round
    assert done.status == "succeeded" and not (tmp_path / f"project-{p.id}" / "estimate").exists()
