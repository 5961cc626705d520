"""Source models: ``base_model`` naming another project's model version, an al-loop artifact folder or a
fine-tuned checkpoint; head rows carried over by label name (al_loop/models/source.py, al_loop/store/sources.py).

The mapping tests use a tiny randomly initialised BERT (two layers, width 32, MiniLM's tokenizer), built
once per module: real transformers code paths, no real model's weights, seconds. The end-to-end round over the
real MiniLM is marked ``slow``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from al_loop.config import LoopConfig, TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError, ModelLoadError
from al_loop.model_paths import check_base_model, parse_source_ref, resolve_model_path, source_ref
from al_loop.rounds import RoundService
from al_loop.store import Store
from al_loop.store.records import payload_from_example
from al_loop.store.sources import check_source, resolve_base_model
from al_loop.types import Example, ItemId, Span, TaskKind
from tests.core.fakes import FakeModel

SMALL = TrainingConfig(max_length=32, window_stride=8, inference_batch_size=8, precision="fp32", device="cpu")
SRC = LabelSchema.build(TaskKind.CLASSIFICATION, ["business", "sports", "tech"])
TGT = LabelSchema.build(TaskKind.CLASSIFICATION, ["politics", "sports", "tech"])
NER_SRC = LabelSchema.build(TaskKind.NER, ["LOC", "PER"])
NER_TGT = LabelSchema.build(TaskKind.NER, ["Disease", "PER"])


# ---------------------------------------------------------------- references and folders (no torch)
def test_source_references_round_trip() -> None:
    assert source_ref(3, "al-r005-1a2b3c4d") == "project:3:al-r005-1a2b3c4d"
    assert parse_source_ref("project:3:al-r005-1a2b3c4d") == (3, "al-r005-1a2b3c4d")
    for name in ("default", "/models/x", "acme/bert", "project:x:y", "project:3:", "project:3"):
        assert parse_source_ref(name) is None
    with pytest.raises(ModelLoadError, match="another project's model version"):
        resolve_model_path("project:3:al-r005-1a2b3c4d")


def _fake_artifact(folder: Path, *, task: str, learner: str | None = None, base_model: str = "default",
                   config: bool = True) -> Path:
    folder.mkdir(parents=True)
    manifest = {"format": "al-loop-model", "format_version": 1, "task": task, "base_model": base_model}
    if learner:
        manifest["learner"] = learner
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if config:
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder


def test_a_head_learner_artifact_resolves_to_its_base_encoder(tmp_path: Path) -> None:
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    head = _fake_artifact(tmp_path / "head", task="classification", learner="head", base_model=str(encoder),
                          config=False)
    assert resolve_model_path(str(head)) == str(encoder)
    assert check_base_model(str(head)) == str(encoder)
    tuned = _fake_artifact(tmp_path / "tuned", task="classification")
    assert resolve_model_path(str(tuned)) == str(tuned)


def _store_with_versions(tmp_path: Path) -> tuple[Store, int, int]:
    store = Store("sqlite://")
    cls = store.create_project("cls", SRC)
    ner = store.create_project("ner", NER_SRC)
    art = _fake_artifact(tmp_path / "cls-v1", task="classification")
    store.add_version(cls.id, name="al-r001-aaaa", round_id=None, base_model="default", schema=SRC, metrics={},
                      train_report={}, artifact_path=str(art))
    store.add_version(cls.id, name="al-r002-gone", round_id=None, base_model="default", schema=SRC, metrics={},
                      train_report={}, artifact_path="")
    return store, cls.id, ner.id


def test_another_projects_version_resolves_to_its_artifact(tmp_path: Path) -> None:
    store, cls, _ = _store_with_versions(tmp_path)
    ref = source_ref(cls, "al-r001-aaaa")
    check_source(store, ref, "classification")
    assert resolve_base_model(store, ref) == str(tmp_path / "cls-v1")
    assert resolve_base_model(store, "default") == "default"  # anything else is passed through


def test_unknown_project_version_or_artifact_and_task_kind_are_clear_errors(tmp_path: Path) -> None:
    store, cls, ner = _store_with_versions(tmp_path)
    cases = [
        (source_ref(999, "al-r001-aaaa"), "classification", "project 999 not found"),
        (source_ref(cls, "al-r009-none"), "classification", "has no model version 'al-r009-none'"),
        (source_ref(cls, "al-r002-gone"), "classification", "has no artifact"),
        (source_ref(ner, "al-r001-aaaa"), "ner", "has no model version"),
        (source_ref(cls, "al-r001-aaaa"), "ner", "task kinds differ"),
        (str(tmp_path / "cls-v1"), "ner", "task kinds differ"),  # an artifact folder given directly
    ]
    for ref, task, message in cases:
        with pytest.raises(ConfigError, match=message):
            check_source(store, ref, task)
    with pytest.raises(ConfigError, match="project 999 not found"):
        resolve_base_model(store, source_ref(999, "x"))


def test_the_spec_stores_another_projects_version_in_its_string_form() -> None:
    from annotator_bridge.loop.spec import ProjectSpec

    base = {"name": "p", "task": "classification", "labels": ["a"]}
    spec = ProjectSpec.from_dict({**base, "base_model": {"project": 3, "version": "al-r005-1a2b3c4d"}})
    assert spec.base_model == "project:3:al-r005-1a2b3c4d"
    spec.check_base_model()  # a reference is checked with the store, when the task is known
    for bad in ({"project": "3", "version": "v"}, {"project": 3}, {"project": 0, "version": "v"},
                {"project": True, "version": "v"}, {"project": 3, "version": ""}, {"project": 3, "version": "v",
                                                                                   "x": 1}, [3, "v"], 7):
        with pytest.raises(ConfigError, match="'base_model'"):
            ProjectSpec.from_dict({**base, "base_model": bad})


# ---------------------------------------------------------------- a round that starts from another project's version
def _examples(prefix: str, labels: list[str], n: int) -> list[Example]:
    return [Example(ItemId(f"{prefix}{i}"), f"{labels[i % len(labels)]} story number {i}",
                    labels=(labels[i % len(labels)],)) for i in range(n)]


def _trained_round(store: Store, service: RoundService, project_id: int, gold: dict[str, dict]) -> int:
    r0 = service.create_round(project_id)
    assert service.run_round(r0.id).round.status == "succeeded"
    for s in store.get_scores(r0.id, selected_only=True):
        store.record_label(project_id, s.item_id, f"o:{s.item_id}", payload=gold[s.item_id], source="oracle")
    done = service.run_round(service.create_round(project_id).id).round
    assert done.status == "succeeded", done.error
    return int(done.model_version_id or 0)


def test_a_round_starts_from_another_projects_version(tmp_path: Path) -> None:
    store = Store("sqlite://")
    service = RoundService(store, FakeModel, tmp_path / "artifacts")
    loop = LoopConfig(batch_size=4, seed_size=6, retrain_every=0)
    source = store.create_project("source", SRC, loop=loop)
    data = _examples("s", list(SRC.labels), 30)
    store.add_items(source.id, data, "pool")
    version = store.get_version(_trained_round(store, service, source.id, {e.item_id: payload_from_example(e)
                                                                           for e in data}))
    ref = source_ref(source.id, version.name)
    target = store.create_project("target", TGT, ref, loop=loop)
    data = _examples("t", list(TGT.labels), 30)
    store.add_items(target.id, data, "pool")
    FakeModel.created.clear()
    new = store.get_version(_trained_round(store, service, target.id, {e.item_id: payload_from_example(e)
                                                                      for e in data}))
    bases = {m.base_model for m in FakeModel.created}
    assert version.artifact_path in bases and not any(b.startswith("project:") for b in bases)  # the artifact
    assert new.base_model == ref  # the version shows the reference
    assert json.loads((Path(new.artifact_path) / "manifest.json").read_text())["base_model"] == ref
    shutil.rmtree(version.artifact_path)  # the source's artifact removed: the next round fails, saying why
    failed = service.run_round(service.create_round(target.id).id).round
    assert failed.status == "failed" and "has no artifact" in (failed.error or "")


# ---------------------------------------------------------------- head rows by label name (tiny BERT)
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(folder))
    minilm = Path(resolve_model_path("default"))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm / name, folder / name)
    return str(folder)


def _rows(model: object) -> tuple[np.ndarray, np.ndarray]:
    head = model.model.classifier  # type: ignore[attr-defined]
    return head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()


def _source_artifact(tiny: str, schema: LabelSchema, folder: Path, config: TrainingConfig = SMALL) -> tuple[
        np.ndarray, np.ndarray]:
    """A saved source version over ``tiny`` whose head rows are distinct known numbers."""
    import torch

    from al_loop.models import TextModel

    model = TextModel.create(schema, tiny, config)
    k, d = model.model.classifier.weight.shape
    weight = np.arange(k * d, dtype=np.float32).reshape(k, d) / (k * d) + np.arange(k, dtype=np.float32)[:, None]
    bias = np.arange(k, dtype=np.float32) + 0.5
    with torch.no_grad():
        model.model.classifier.weight.copy_(torch.as_tensor(weight))
        model.model.classifier.bias.copy_(torch.as_tensor(bias))
    model.save(folder)
    return weight, bias


def _assert_mapped(model: object, src: LabelSchema, dst: LabelSchema, weight: np.ndarray, bias: np.ndarray,
                   kept: set[str]) -> None:
    got_w, got_b = _rows(model)
    for i, tag in enumerate(dst.tags):
        if tag in kept:
            j = src.tags.index(tag)
            np.testing.assert_array_equal(got_w[i], weight[j])
            assert got_b[i] == bias[j]
        else:  # a new row: none of the source's
            assert all(not np.allclose(got_w[i], row) for row in weight), tag


def test_classification_head_rows_are_kept_by_label_name(tiny: str, tmp_path: Path) -> None:
    from al_loop.models import TextModel

    weight, bias = _source_artifact(tiny, SRC, tmp_path / "src")
    model = TextModel.create(TGT, str(tmp_path / "src"), SMALL)
    mapping = model.head_mapping
    assert mapping is not None and mapping.carried
    assert (mapping.kept, mapping.new, mapping.dropped) == (("sports", "tech"), ("politics",), ("business",))
    _assert_mapped(model, SRC, TGT, weight, bias, {"sports", "tech"})
    # LP-FT start: the new label's row comes from the regression of the frozen features, the kept rows stay
    before = _rows(model)[0]
    train = _examples("x", list(TGT.labels), 9)
    model._probe_head(train)
    after_w, after_b = _rows(model)
    np.testing.assert_array_equal(after_w[1:], weight[1:])  # sports, tech (rows 1, 2 in both schemas)
    np.testing.assert_array_equal(after_b[1:], bias[1:])
    assert not np.allclose(after_w[0], before[0])
    # the encoder is the source's (here the tiny base itself)
    base = TextModel.create(SRC, tiny, SMALL)
    name, param = next(iter(base.model.body.named_parameters()))
    np.testing.assert_array_equal(dict(model.model.body.named_parameters())[name].detach().numpy(),
                                  param.detach().numpy())
    # the mapping is recorded in the new version's manifest
    model.save(tmp_path / "dst")
    record = json.loads((tmp_path / "dst" / "manifest.json").read_text())["label_mapping"]
    assert record["kept"] == ["sports", "tech"] and record["new"] == ["politics"] and record["dropped"] == ["business"]
    assert record["carried"] is True and record["source"] == str(tmp_path / "src")


def test_ner_bio_tags_are_mapped_by_name(tiny: str, tmp_path: Path) -> None:
    from al_loop.models import TextModel

    weight, bias = _source_artifact(tiny, NER_SRC, tmp_path / "src")
    model = TextModel.create(NER_TGT, str(tmp_path / "src"), SMALL)
    mapping = model.head_mapping
    assert mapping is not None
    assert mapping.kept == ("O", "B-PER", "I-PER")
    assert mapping.new == ("B-Disease", "I-Disease") and mapping.dropped == ("B-LOC", "I-LOC")
    _assert_mapped(model, NER_SRC, NER_TGT, weight, bias, {"O", "B-PER", "I-PER"})
    ex = Example(ItemId("n1"), "John has flu", spans=(Span(0, 4, "PER"), Span(9, 12, "Disease")))
    model._probe_head([ex, Example(ItemId("n2"), "Mary", spans=(Span(0, 4, "PER"),))])
    _assert_mapped(model, NER_SRC, NER_TGT, weight, bias, {"O", "B-PER", "I-PER"})


def test_a_head_learner_version_gives_its_base_encoder_and_its_rows(tiny: str, tmp_path: Path) -> None:
    from al_loop.models import TextModel
    from al_loop.models.head import HeadModel

    head = HeadModel.create(SRC, tiny, SMALL)
    k, d = SRC.num_outputs, head.encoder.dim
    head.coef = np.arange(k * d, dtype=np.float32).reshape(k, d) / 7.0
    head.intercept = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    head.save(tmp_path / "head")
    model = TextModel.create(TGT, str(tmp_path / "head"), SMALL)
    assert model.head_mapping is not None and model.head_mapping.source_kind == "head"
    _assert_mapped(model, SRC, TGT, head.coef, head.intercept, {"sports", "tech"})
    # a head learner over a source refits (nothing carried), and its manifest says so
    again = HeadModel.create(TGT, str(tmp_path / "head"), SMALL)
    again.fit(_examples("h", list(TGT.labels), 9))
    again.save(tmp_path / "head2")
    record = json.loads((tmp_path / "head2" / "manifest.json").read_text())["label_mapping"]
    assert record["carried"] is False and record["shared"] == ["sports", "tech"] and record["kept"] == []


def test_a_transformers_head_of_the_same_size_is_remapped_not_loaded_as_is(tiny: str, tmp_path: Path) -> None:
    """pooling: cls: a source head with as many labels as the project used to load unchanged (wrong names)."""
    from al_loop.models import TextModel

    cls = replace(SMALL, pooling="cls")
    other = LabelSchema.build(TaskKind.CLASSIFICATION, ["arts", "sports", "tech"])  # 3 labels, like SRC
    weight, bias = _source_artifact(tiny, SRC, tmp_path / "src", cls)
    model = TextModel.create(other, str(tmp_path / "src"), cls)
    assert model.head_mapping is not None and model.head_mapping.carried
    _assert_mapped(model, SRC, other, weight, bias, {"sports", "tech"})
    # heads over different features are not mixed: the encoder is kept, the head is new, the record says why
    mean = TextModel.create(TGT, str(tmp_path / "src"), SMALL)
    assert mean.head_mapping is not None and not mean.head_mapping.carried and mean.head_mapping.kept == ()
    assert "pooling: cls" in mean.head_mapping.note


def test_a_source_version_of_the_other_task_kind_is_refused(tiny: str, tmp_path: Path) -> None:
    from al_loop.models import TextModel

    _source_artifact(tiny, SRC, tmp_path / "src")
    with pytest.raises(ModelLoadError, match="task kinds differ"):
        TextModel.create(NER_TGT, str(tmp_path / "src"), SMALL)


def test_a_plain_encoder_has_no_mapping(tiny: str) -> None:
    from al_loop.models import TextModel

    assert TextModel.create(TGT, tiny, SMALL).head_mapping is None


# ---------------------------------------------------------------- the real MiniLM, end to end
@pytest.mark.slow
def test_a_minilm_round_starts_from_another_projects_version(tmp_path: Path) -> None:
    from al_loop.models.learners import Learners

    store = Store("sqlite://")
    service = RoundService(store, Learners, tmp_path / "artifacts")  # type: ignore[arg-type]
    loop = LoopConfig(batch_size=4, seed_size=6, retrain_every=0, dedupe_threshold=0)
    training = TrainingConfig(max_length=32, target_steps=4, min_epochs=1, max_epochs=1, learner="finetune",
                              precision="fp32", device="cpu")
    source = store.create_project("source", SRC, loop=loop, training=training)
    data = _examples("s", list(SRC.labels), 20)
    store.add_items(source.id, data, "pool")
    version = store.get_version(_trained_round(store, service, source.id, {e.item_id: payload_from_example(e)
                                                                           for e in data}))
    target = store.create_project("target", TGT, source_ref(source.id, version.name), loop=loop, training=training)
    data = _examples("t", list(TGT.labels), 20)
    store.add_items(target.id, data, "pool")
    new = store.get_version(_trained_round(store, service, target.id, {e.item_id: payload_from_example(e)
                                                                      for e in data}))
    manifest = json.loads((Path(new.artifact_path) / "manifest.json").read_text())
    assert manifest["label_mapping"]["kept"] == ["sports", "tech"]
    assert manifest["label_mapping"]["source"] == version.artifact_path
    assert manifest["extra"]["base_model"] == source_ref(source.id, version.name)
