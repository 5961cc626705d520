"""The light learner (logistic-regression head on frozen, cached MiniLM features) and the factory over both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from al_loop.config import TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import EmptyInputError, SchemaError
from al_loop.models.head import HEAD_FILE, HeadModel, clear_feature_cache
from al_loop.models.learners import Learners, artifact_learner
from al_loop.models.model import TextModel
from al_loop.types import Example, Span, TaskKind

SMALL = TrainingConfig(max_length=64, window_stride=16, inference_batch_size=8, precision="fp32", learner="head")
CLS = LabelSchema.build(TaskKind.CLASSIFICATION, ["food", "sport"])
MULTI = LabelSchema.build(TaskKind.CLASSIFICATION, ["food", "sport", "weather"], multi_label=True)
NER = LabelSchema.build(TaskKind.NER, ["CITY"])

FOOD = ["I baked bread and a cake", "the soup needs more salt", "we ate pasta with tomato sauce",
        "fresh fruit salad for dessert", "grill the fish with lemon", "a bowl of rice and beans"]
SPORT = ["the striker scored a goal", "she won the tennis final", "the team lost the match",
         "he ran a marathon in three hours", "the referee showed a red card", "a home run in the ninth inning"]


def _cls(texts: list[str], label: str, start: int) -> list[Example]:
    return [Example(f"{label}-{start + i}", t, labels=(label,)) for i, t in enumerate(texts)]


def _city(i: int, city: str) -> Example:
    text = f"we flew to {city} last week"
    s = text.index(city)
    return Example(f"n{i}", text, spans=(Span(s, s + len(city), "CITY"),))


@pytest.mark.slow
def test_head_classification_learns_caches_and_round_trips(tmp_path: Path) -> None:
    clear_feature_cache()
    train = _cls(FOOD[:4], "food", 0) + _cls(SPORT[:4], "sport", 0)
    test = _cls(FOOD[4:], "food", 4) + _cls(SPORT[4:], "sport", 4)
    model = Learners.create(CLS, "default", SMALL)
    assert isinstance(model, HeadModel)
    report = model.fit(train)
    assert report.learner == "head" and report.n_train == 8 and report.cache_misses == 8
    assert model.evaluate(test)["score"] == 1.0
    out = model.predict([e.text for e in test])
    assert out.probs is not None and out.probs.shape == (4, 2) and np.allclose(out.probs.sum(axis=1), 1.0)
    assert out.embeddings.shape == (4, 384)
    # the features are cached: refitting on the same texts encodes nothing again
    again = Learners.create(CLS, "default", SMALL).fit(train)
    assert again.cache_misses == 0 and again.cache_hits == 8
    # the frozen features are the base model's sentence embeddings
    base = TextModel.create(CLS, "default", SMALL).predict([test[0].text]).embeddings[0]
    assert np.allclose(out.embeddings[0], base, atol=1e-5)
    path = model.save(tmp_path / "head")
    assert (path / HEAD_FILE).is_file() and artifact_learner(path) == "head"
    assert json.loads((path / "manifest.json").read_text())["learner"] == "head"
    loaded = Learners.load(path)
    assert isinstance(loaded, HeadModel)
    assert np.allclose(loaded.predict([e.text for e in test]).probs, out.probs, atol=1e-6)


@pytest.mark.slow
def test_head_multi_label_and_single_class() -> None:
    train = [Example("m1", "soup in the rain", labels=("food", "weather")),
             Example("m2", "a sunny day for tennis", labels=("sport", "weather")),
             Example("m3", "pasta after the match", labels=("food", "sport"))]
    model = HeadModel.create(MULTI, "default", SMALL)
    model.fit(train)
    out = model.predict(["rain and soup"])
    assert out.probs is not None and out.probs.shape == (1, 3) and len(out.predicted[0]) >= 1
    one = HeadModel.create(CLS, "default", SMALL)
    one.fit(_cls(FOOD[:2], "food", 0))  # one class seen: it is always predicted, never crashes
    assert one.predict(["a goal"]).predicted == [("food",)]


@pytest.mark.slow
def test_head_ner_tags_words() -> None:
    cities = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Prague", "Dublin"]
    model = HeadModel.create(NER, "default", SMALL)
    model.fit([_city(i, c) for i, c in enumerate(cities)])
    out = model.predict(["we flew to Oslo last week", ""])
    assert out.token_probs is not None and out.token_probs[0].shape == (6, 3) and out.token_probs[1].shape == (0, 3)
    assert [(s.start, s.end, s.label) for s in out.predicted[0]] == [(11, 15, "CITY")]
    assert model.evaluate([_city(99, "Oslo")])["score"] == 1.0


def test_head_errors() -> None:
    model = HeadModel(CLS, "default", SMALL, encoder=None)  # type: ignore[arg-type]
    with pytest.raises(EmptyInputError):
        model.fit([Example("u", "no label")])
    with pytest.raises(SchemaError):
        model.fit([Example("x", "t", spans=())])
    with pytest.raises(EmptyInputError):
        model.save("/tmp/never-written")
