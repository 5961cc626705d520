"""Pool-adaptive pretraining (al_loop/models/adapt.py): masked-LM adaptation of the encoder, cached."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from al_loop.errors import ConfigError, EmptyInputError
from al_loop.models import adapt
from al_loop.models.adapt import (
    ADAPT_MANIFEST,
    AdaptBudget,
    adapt_encoder,
    adapted_key,
    fingerprint_texts,
    read_adapt_manifest,
)
from al_loop.models.mlm import head_warmup_steps, mask_tokens, split_heldout

TEXTS = [f"the patient {i} was treated for chronic kidney disease type {i % 5} in hospital" for i in range(20)]
TINY = AdaptBudget(max_steps=3, max_length=32, batch_size=4, seed=5)


def test_fingerprint_and_key_depend_on_every_input() -> None:
    fp = fingerprint_texts(["a", "b"])
    assert fp == fingerprint_texts(iter(["a", "b"])) and len(fp) == 64
    assert fp != fingerprint_texts(["b", "a"]) and fp != fingerprint_texts(["ab"]) and fp != fingerprint_texts(["a"])
    key = adapted_key("default", fp, TINY)
    assert key.startswith("mlm-") and key == adapted_key("default", fp, AdaptBudget(**TINY.to_dict()))
    assert key != adapted_key("other", fp, TINY)
    assert key != adapted_key("default", fingerprint_texts(["a"]), TINY)
    assert key != adapted_key("default", fp, AdaptBudget(max_steps=4, max_length=32, batch_size=4, seed=5))


@pytest.mark.parametrize("bad", [{"max_steps": 0}, {"max_seconds": float("nan")}, {"batch_size": 1.5},
                                 {"mlm_probability": 1.0}, {"max_length": True}])
def test_budget_bounds(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AdaptBudget(**bad)  # type: ignore[arg-type]


def test_masking_is_seeded_and_never_touches_special_tokens() -> None:
    ids = torch.arange(100, 100 + 4 * 30).reshape(4, 30)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    special[3, 20:] = True  # padding
    a = mask_tokens(ids, special, mask_id=7, vocab_size=1000, probability=0.3, gen=torch.Generator().manual_seed(1))
    b = mask_tokens(ids, special, mask_id=7, vocab_size=1000, probability=0.3, gen=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    inputs, labels = a
    chosen = labels != -100
    assert chosen.any() and not (chosen & special).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert (inputs[chosen] == 7).float().mean() > 0.5
    # a batch where nothing would be drawn still predicts one token
    few = mask_tokens(ids[:1, :3], special[:1, :3], mask_id=7, vocab_size=1000, probability=0.01,
                      gen=torch.Generator().manual_seed(0))
    assert int((few[1] != -100).sum()) == 1


def test_head_warmup_only_for_a_new_head() -> None:
    assert head_warmup_steps(300, []) == 0
    assert head_warmup_steps(300, ["cls.predictions.transform.dense.weight"]) == 30
    assert head_warmup_steps(3000, ["cls.predictions.bias"]) == 50


def test_heldout_split_is_seeded_and_bounded() -> None:
    texts = [[i] for i in range(1000)]
    held, rest = split_heldout(texts, 3)
    assert len(held) == 64 and len(rest) == 936 and sorted(held + rest) == texts
    assert split_heldout(texts, 3) == (held, rest) and split_heldout(texts, 4)[0] != held
    assert split_heldout(texts[:39], 3) == ([], texts[:39])
    assert len(split_heldout(texts[:100], 3)[0]) == 10


def test_empty_pool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmptyInputError):
        adapt_encoder("default", ["", "   "], tmp_path, TINY)


@pytest.mark.slow
def test_adapt_real_minilm_is_a_base_model_and_cached(tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModel

    from al_loop.config import TrainingConfig
    from al_loop.data.schema import LabelSchema
    from al_loop.models.loading import resolve_model_path
    from al_loop.models.model import TextModel
    from al_loop.types import TaskKind

    calls: list[tuple[int, int, float]] = []
    result = adapt_encoder("default", TEXTS, tmp_path / "cache", TINY, device="cpu",
                           progress=lambda s, t, loss: calls.append((s, t, loss)))
    key = adapted_key("default", fingerprint_texts(TEXTS), TINY)
    assert result.folder == tmp_path / "cache" / key and not result.cached
    assert result.steps == 3 and [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert result.texts == 20 and result.loss_first > 0 and result.loss_last > 0
    manifest = json.loads((result.folder / ADAPT_MANIFEST).read_text())
    assert manifest["key"] == key and manifest["steps"] == 3 and manifest["base_model"] == "default"
    assert manifest["budget"] == TINY.to_dict() and manifest["head_warmup_steps"] == 0  # 10% of 3 steps
    assert any("predictions" in k for k in manifest["newly_initialised"])
    assert manifest["heldout_loss"] is None and manifest["heldout_texts"] == 0  # under 40 texts: none held out
    assert read_adapt_manifest(result.folder) is not None

    # the encoder changed, the pooler (which *ForMaskedLM drops) is the base model's
    base = load_file(str(Path(resolve_model_path("default")) / "model.safetensors"))
    adapted = load_file(str(result.folder / "model.safetensors"))
    strip = {k.removeprefix("bert.").removeprefix("model."): v for k, v in adapted.items()}
    base = {k.removeprefix("bert."): v for k, v in base.items()}
    layer = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(strip[layer], base[layer])
    assert torch.equal(strip["pooler.dense.weight"], base["pooler.dense.weight"])
    assert isinstance(AutoModel.from_pretrained(result.folder), torch.nn.Module)

    # a round's models accept it as base_model: the LP-FT classifier and the NER token head
    config = TrainingConfig(max_length=32, device="cpu", precision="fp32")
    cls = LabelSchema(TaskKind.CLASSIFICATION, ("a", "b"))
    model = TextModel.create(cls, str(result.folder), config)
    out = model.predict(["kidney disease", "hospital"])
    assert out.probs is not None and out.probs.shape == (2, 2)
    ner = LabelSchema(TaskKind.NER, ("DIS",))
    tagger = TextModel.create(ner, str(result.folder), config)
    assert len(tagger.predict(["kidney disease here"]).token_probs or []) == 1

    # a round's learners train on it: the head learner (feature cache keyed by the folder) and LP-FT fine-tuning
    from al_loop.models.learners import Learners
    from al_loop.types import Example, ItemId

    labelled = [Example(ItemId(f"t{i}"), text, labels=("a" if i % 2 else "b",)) for i, text in enumerate(TEXTS[:8])]
    for learner in ("head", "finetune"):
        fit = TrainingConfig(max_length=32, device="cpu", precision="fp32", learner=learner, min_epochs=1,
                             max_epochs=1, target_steps=1)
        trained = Learners.create(cls, str(result.folder), fit)
        trained.fit(labelled)
        assert trained.predict(["kidney"]).probs.shape == (1, 2)

    # a second call finds the folder: no training, no progress
    again = adapt_encoder("default", TEXTS, tmp_path / "cache", TINY, progress=lambda *a: calls.append(a))
    assert again.cached and again.folder == result.folder and again.steps == 3 and len(calls) == 3
    # an incomplete folder (no manifest) is rebuilt
    (result.folder / ADAPT_MANIFEST).unlink()
    assert read_adapt_manifest(result.folder) is None


@pytest.mark.slow
def test_time_budget_stops_after_the_crossing_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = AdaptBudget(max_steps=50, max_seconds=1.0, max_length=16, batch_size=2, max_texts=6)
    ticks = iter(0.6 * i for i in range(1000))  # a clock that moves 0.6 s per reading, whatever the CPU
    monkeypatch.setattr(adapt, "time", SimpleNamespace(monotonic=lambda: next(ticks)))
    result = adapt_encoder("default", TEXTS, tmp_path, budget, device="cpu", head_warmup=False)
    assert result.steps == 2  # stopped after the step that crossed max_seconds, not at max_steps (50)
    assert result.texts == 6


@pytest.mark.slow
def test_adapt_an_al_loop_artifact_keeps_its_encoder_only(tmp_path: Path) -> None:
    """A model version (e.g. a source model fine-tuned on another domain) adapts like a base model: the encoder is
    trained on, the task head is not carried into the adapted folder (a plain transformers encoder)."""
    from al_loop.config import TrainingConfig
    from al_loop.data.schema import LabelSchema
    from al_loop.models.model import TextModel
    from al_loop.types import TaskKind

    config = TrainingConfig(max_length=32, device="cpu", precision="fp32")
    TextModel.create(LabelSchema(TaskKind.NER, ("PER",)), "default", config).save(tmp_path / "art")
    result = adapt_encoder(str(tmp_path / "art"), TEXTS, tmp_path / "cache", AdaptBudget(max_steps=2, max_length=32))
    assert result.steps == 2 and not (result.folder / "pooled_head.safetensors").exists()
    assert not (result.folder / "manifest.json").exists()
    tagger = TextModel.create(LabelSchema(TaskKind.NER, ("DIS",)), str(result.folder), config)
    assert len(tagger.predict(["kidney disease"]).token_probs or []) == 1
