"""The fine-tuned classifier's mean-pooled head: starts from the frozen features' logistic regression (LP-FT),
saves and loads with its head file, and the checkpoint's own [CLS] head stays available (pooling "cls")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from al_loop.config import TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError, ModelLoadError
from al_loop.models.head import HeadModel, clear_feature_cache
from al_loop.models.model import TextModel
from al_loop.models.pooled import POOLED_HEAD_FILE, MeanPooledClassifier
from al_loop.types import Example, TaskKind

SMALL = TrainingConfig(max_length=64, window_stride=16, inference_batch_size=8, precision="fp32", target_steps=4)
CLS = LabelSchema.build(TaskKind.CLASSIFICATION, ["food", "sport", "weather"])
MULTI = LabelSchema.build(TaskKind.CLASSIFICATION, ["food", "sport", "weather"], multi_label=True)

FOOD = ["I baked bread and a cake", "the soup needs more salt", "we ate pasta with tomato sauce",
        "fresh fruit salad for dessert", "grill the fish with lemon"]
SPORT = ["the striker scored a goal", "she won the tennis final", "the team lost the match",
         "he ran a marathon in three hours", "the referee showed a red card"]
TRAIN = [Example(f"f{i}", t, labels=("food",)) for i, t in enumerate(FOOD[:4])] + [
    Example(f"s{i}", t, labels=("sport",)) for i, t in enumerate(SPORT[:4])
]


def test_pooling_is_validated() -> None:
    with pytest.raises(ConfigError, match="pooling"):
        TrainingConfig(pooling="max")
    with pytest.raises(ConfigError, match="token_head"):
        TrainingConfig(token_head="crf")
    assert TrainingConfig().probes_head(TaskKind.NER) and TrainingConfig().probes_head(TaskKind.CLASSIFICATION)
    assert not TrainingConfig(token_head="hf").probes_head(TaskKind.NER)
    assert not TrainingConfig(pooling="cls").probes_head(TaskKind.CLASSIFICATION)


@pytest.mark.slow
def test_fresh_mean_pooled_head_starts_from_the_head_learners_regression() -> None:
    clear_feature_cache()
    model = TextModel.create(CLS, "default", SMALL)
    assert isinstance(model.model, MeanPooledClassifier)
    model._probe_head(TRAIN)
    head = HeadModel.create(CLS, "default", replace(SMALL, learner="head"))
    head.fit(TRAIN)
    assert head.coef is not None and head.intercept is not None
    got = model.model.classifier
    assert np.allclose(got.weight.detach().numpy(), head.coef, atol=1e-4)
    assert np.allclose(got.bias.detach().numpy(), head.intercept, atol=1e-4)
    # "weather" has no label yet: it is never predicted at the start
    assert float(got.bias.detach()[CLS.label2id["weather"]]) < -10
    # before any fine-tuning step the classifier predicts what the head learner predicts
    texts = [FOOD[4], SPORT[4]]
    assert np.allclose(model.predict(texts).probs, head.predict(texts).probs, atol=1e-3)


@pytest.mark.slow
def test_mean_pooled_classifier_trains_saves_and_loads(tmp_path: Path) -> None:
    model = TextModel.create(CLS, "default", SMALL)
    report = model.fit(TRAIN)
    assert report.steps >= 4
    assert model.evaluate([Example("t1", FOOD[4], labels=("food",)), Example("t2", SPORT[4], labels=("sport",))])[
        "score"
    ] == 1.0
    path = model.save(tmp_path / "v1")
    assert (path / POOLED_HEAD_FILE).is_file() and (path / "model.safetensors").is_file()
    again = TextModel.load(path)
    assert isinstance(again.model, MeanPooledClassifier)
    texts = [FOOD[4], SPORT[4], "rain all week"]
    assert np.allclose(again.predict(texts).probs, model.predict(texts).probs, atol=1e-5)
    # warm start from the artifact keeps the trained head (no new regression on top)
    warm = TextModel.create(CLS, "default", SMALL, init_from=path)
    assert isinstance(warm.model, MeanPooledClassifier)
    assert torch.equal(warm.model.classifier.weight, again.model.classifier.weight)
    # a damaged head file is a clear load error
    (path / POOLED_HEAD_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="classifier head"):
        TextModel.load(path)


@pytest.mark.slow
def test_multi_label_mean_pooled_head_and_cls_pooling(tmp_path: Path) -> None:
    multi = TextModel.create(MULTI, "default", SMALL)
    assert isinstance(multi.model, MeanPooledClassifier)
    assert multi.model.config.problem_type == "multi_label_classification"
    both = Example("b", "a picnic with sandwiches before the football game", labels=("food", "sport"))
    multi.fit([*TRAIN, both])
    out = multi.predict(["the soup needs more salt"])
    assert out.probs is not None and out.probs.shape == (1, 3)
    # the checkpoint's own [CLS]/pooler head stays available and round-trips as before
    cls_model = TextModel.create(CLS, "default", replace(SMALL, pooling="cls"))
    assert not isinstance(cls_model.model, MeanPooledClassifier)
    cls_model.fit(TRAIN)
    path = cls_model.save(tmp_path / "cls")
    assert not (path / POOLED_HEAD_FILE).exists()
    loaded = TextModel.load(path)
    assert not isinstance(loaded.model, MeanPooledClassifier)
    assert np.allclose(loaded.predict(FOOD).probs, cls_model.predict(FOOD).probs, atol=1e-5)


@pytest.mark.slow
def test_ner_token_head_starts_from_the_head_learners_regression_and_round_trips(tmp_path: Path) -> None:
    from al_loop.models.pooled import NormalisedTokenClassifier
    from al_loop.types import Span

    ner = LabelSchema.build(TaskKind.NER, ["CITY"])

    def city(i: int, name: str) -> Example:
        text = f"we flew to {name} last week"
        return Example(f"c{i}", text, spans=(Span(text.index(name), text.index(name) + len(name), "CITY"),))

    train = [city(i, c) for i, c in enumerate(["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Oslo"])]
    model = TextModel.create(ner, "default", SMALL)
    assert isinstance(model.model, NormalisedTokenClassifier)
    model._probe_head(train)
    head = HeadModel.create(ner, "default", replace(SMALL, learner="head"))
    head.fit(train)
    assert head.coef is not None
    assert np.allclose(model.model.classifier.weight.detach().numpy(), head.coef, atol=1e-4)
    texts = ["we flew to Lisbon last week"]
    assert np.allclose(model.predict(texts).token_probs[0], head.predict(texts).token_probs[0], atol=1e-3)
    # the checkpoint's own token head stays available
    assert not isinstance(TextModel.create(ner, "default", replace(SMALL, token_head="hf")).model,
                          NormalisedTokenClassifier)
    fresh = TextModel.create(ner, "default", SMALL)
    fresh.fit(train)
    path = fresh.save(tmp_path / "ner")
    again = TextModel.load(path)
    assert isinstance(again.model, NormalisedTokenClassifier)
    assert np.allclose(again.predict(texts).token_probs[0], fresh.predict(texts).token_probs[0], atol=1e-5)
