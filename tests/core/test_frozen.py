"""Frozen lower layers and their per-window cache (al_loop/models/frozen.py): cached, recomputed and whole-encoder
paths give the same outputs; the frozen part never trains; another base model, k or max_length never reuses a
cached state; the budget bounds the cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from al_loop.config import TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError
from al_loop.models.frozen import MAX_FINGERPRINTS, LowerStateCache, clear_lower_cache, lower_cache
from al_loop.models.model import TextModel
from al_loop.models.pooled import MeanPooledClassifier, NormalisedTokenClassifier
from al_loop.types import Example, Span, TaskKind

SMALL = TrainingConfig(max_length=32, window_stride=8, inference_batch_size=4, precision="fp32", target_steps=4,
                       batch_size=4, freeze_layers=0)
CLS = LabelSchema.build(TaskKind.CLASSIFICATION, ["food", "sport"])
NER = LabelSchema.build(TaskKind.NER, ["PER", "LOC"])
TEXTS = ["I baked bread and a cake", "the striker scored a goal", "we ate pasta with tomato sauce",
         "she won the tennis final in Paris after a long match that went on and on for hours and hours " * 2,
         "grill"]
TRAIN = [Example(f"t{i}", t, labels=("food" if i % 2 == 0 else "sport",)) for i, t in enumerate(TEXTS)]
NER_TRAIN = [Example("n0", "Anna lives in Paris", spans=(Span(0, 4, "PER"), Span(14, 19, "LOC"))),
             Example("n1", "Berlin is far from Tom", spans=(Span(0, 6, "LOC"), Span(19, 22, "PER")))]


def _create(schema: LabelSchema, **kw: object) -> TextModel:
    return TextModel.create(schema, "default", replace(SMALL, **kw))  # type: ignore[arg-type]


def test_freeze_layers_is_validated() -> None:
    with pytest.raises(ConfigError, match="freeze_layers"):
        TrainingConfig(freeze_layers=-1)
    with pytest.raises(ConfigError, match="frozen_cache_mb"):
        TrainingConfig(frozen_cache_mb=-5)


def test_the_cache_stops_growing_at_its_budget_and_keeps_a_few_models() -> None:
    cache = LowerStateCache(max_bytes=1000)
    a = np.zeros((10, 10), dtype=np.float32)  # 400 bytes
    assert cache.put("m1", b"x", a) and cache.put("m1", b"y", a)
    assert not cache.put("m1", b"z", a)  # would pass 1000 bytes: not stored
    assert cache.nbytes == 800
    assert [f is not None for f in cache.get("m1", [b"x", b"z"])] == [True, False]
    assert cache.get("m2", [b"x"]) == [None]  # another model's space never sees m1's states
    cache.max_bytes = 100_000
    for i in range(2, MAX_FINGERPRINTS + 2):
        cache.put(f"m{i}", b"x", a)  # one model too many drops the least recently used
    assert cache.get("m1", [b"x"]) == [None] and cache.get(f"m{MAX_FINGERPRINTS + 1}", [b"x"])[0] is not None


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cached_recomputed_and_whole_encoder_outputs_agree(precision: str) -> None:
    clear_lower_cache()
    whole = _create(CLS, precision=precision)
    cached = _create(CLS, precision=precision, freeze_layers=2)
    uncached = _create(CLS, precision=precision, freeze_layers=2, frozen_cache_mb=0)
    assert isinstance(cached.model, MeanPooledClassifier) and cached.model.frozen_layers == 2
    assert cached.precision == precision  # an explicit "bf16" is honoured on every CPU (pick_precision)
    ref = whole.predict(TEXTS)
    first = cached.predict(TEXTS[:2])  # fills the cache for two texts
    hits = lower_cache().hits
    both = cached.predict(TEXTS)  # batches mixing cached and new windows
    again = cached.predict(TEXTS)  # all from the cache
    assert lower_cache().hits > hits
    plain = uncached.predict(TEXTS)
    tol = 1e-5 if precision == "fp32" else 2e-2
    for out in (both, again, plain):
        assert np.allclose(out.probs, ref.probs, atol=tol)
        assert np.allclose(out.embeddings, ref.embeddings, atol=tol * 10)
    assert np.allclose(first.probs, ref.probs[:2], atol=tol)


@pytest.mark.slow
def test_ner_cached_word_probabilities_agree() -> None:
    clear_lower_cache()
    texts = [ex.text for ex in NER_TRAIN] + TEXTS
    whole, cached = _create(NER), _create(NER, freeze_layers=3)
    assert isinstance(cached.model, NormalisedTokenClassifier)
    cached.predict(texts)
    for a, b in zip(whole.predict(texts).token_probs or [], cached.predict(texts).token_probs or []):
        assert np.allclose(a, b, atol=1e-5)


def _lower_state(model: TextModel) -> dict[str, torch.Tensor]:
    body = model.model.body  # type: ignore[union-attr]
    keep = {k: v.clone() for k, v in body.embeddings.state_dict().items()}
    for i in range(2):
        keep.update({f"{i}.{k}": v.clone() for k, v in body.encoder.layer[i].state_dict().items()})
    return keep


@pytest.mark.slow
def test_fit_trains_only_the_top_layers_and_the_cache_does_not_change_the_result() -> None:
    clear_lower_cache()
    cached, uncached = _create(CLS, freeze_layers=2), _create(CLS, freeze_layers=2, frozen_cache_mb=0)
    before = _lower_state(cached)
    top_before = cached.model.body.encoder.layer[5].output.dense.weight.detach().clone()  # type: ignore[union-attr]
    cached.fit(TRAIN)
    uncached.fit(TRAIN)
    after = _lower_state(cached)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(top_before, cached.model.body.encoder.layer[5].output.dense.weight)  # type: ignore[union-attr]
    assert lower_cache().hits > 0
    assert np.allclose(cached.predict(TEXTS).probs, uncached.predict(TEXTS).probs, atol=1e-4)
    # training mode never turns the frozen part's dropout back on
    cached.model.train()
    assert not cached.model.body.encoder.layer[0].training and cached.model.body.encoder.layer[5].training  # type: ignore[union-attr]
    cached.model.eval()


@pytest.mark.slow
def test_another_base_model_k_or_max_length_never_reuses_a_cached_state(tmp_path: Path) -> None:
    clear_lower_cache()
    model = _create(CLS, freeze_layers=2)
    ref = model.predict(TEXTS).probs
    cache = lower_cache()
    # another base model: the same architecture with one lower-layer weight changed
    other = _create(CLS, freeze_layers=2)
    with torch.no_grad():
        other.model.body.encoder.layer[0].output.dense.weight.mul_(1.5)  # type: ignore[union-attr]
    other.model.freeze_lower(2, SMALL.frozen_cache_mb, extra=f"max_length={other.max_length}")  # type: ignore[union-attr]
    hits = cache.hits
    changed = other.predict(TEXTS).probs
    assert cache.hits == hits  # nothing reused
    whole = _create(CLS)
    with torch.no_grad():
        whole.model.body.encoder.layer[0].output.dense.weight.mul_(1.5)  # type: ignore[union-attr]
    assert np.allclose(changed, whole.predict(TEXTS).probs, atol=1e-5)
    assert not np.allclose(changed, ref, atol=1e-3)
    for kw in ({"freeze_layers": 3}, {"max_length": 48}):
        hits = cache.hits
        _create(CLS, **{"freeze_layers": 2, **kw}).predict(TEXTS)
        assert cache.hits == hits, kw


@pytest.mark.slow
def test_saved_model_with_frozen_layers_loads_and_predicts_the_same(tmp_path: Path) -> None:
    clear_lower_cache()
    model = _create(CLS, freeze_layers=2)
    model.fit(TRAIN)
    before = model.predict(TEXTS).probs
    loaded = TextModel.load(model.save(tmp_path / "m"))
    assert loaded.model.frozen_layers == 2  # type: ignore[union-attr]
    assert np.allclose(loaded.predict(TEXTS).probs, before, atol=1e-5)


@pytest.mark.slow
def test_ner_fit_with_frozen_layers() -> None:
    clear_lower_cache()
    model = _create(NER, freeze_layers=3)
    report = model.fit(NER_TRAIN)
    assert report.steps > 0
    assert lower_cache().hits > 0  # the probe's pass filled the cache for training


@pytest.mark.slow
def test_bf16_scoring_weights_compute_what_autocast_computes_and_follow_training() -> None:
    clear_lower_cache()
    copy_w = _create(CLS, precision="bf16", freeze_layers=2)
    autocast = _create(CLS, precision="bf16", freeze_layers=2, bf16_weights=False)
    assert copy_w.precision == "bf16"  # an explicit "bf16" is honoured on every CPU (pick_precision)
    assert copy_w._scoring_model() is not copy_w.model and autocast._scoring_model() is autocast.model
    scorer = copy_w._scoring_model()
    assert scorer.classifier.weight.dtype == torch.bfloat16  # linear layers: what autocast multiplies in bf16
    assert scorer.body.embeddings.word_embeddings.weight.dtype == torch.float32  # autocast keeps these float32
    assert next(copy_w.model.parameters()).dtype == torch.float32  # training keeps fp32 weights
    copy_w.predict(TEXTS)
    for m in (copy_w, autocast):
        m.fit(TRAIN)
    assert copy_w._scoring is None  # fit drops the copy of the weights it trained away from
    a, b = copy_w.predict(TEXTS).probs, autocast.predict(TEXTS).probs
    assert np.allclose(a, b, atol=1e-5)  # the same numbers as autocast, from the weights after training


def test_the_default_freezes_one_layer_for_classification_and_none_for_ner() -> None:
    assert TrainingConfig().frozen_layers(TaskKind.CLASSIFICATION) == 1
    assert TrainingConfig().frozen_layers(TaskKind.NER) == 0
    assert TrainingConfig(freeze_layers=0).frozen_layers(TaskKind.CLASSIFICATION) == 0
    assert TrainingConfig(freeze_layers=2).frozen_layers(TaskKind.NER) == 2
