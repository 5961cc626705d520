from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from al_loop.config import TrainingConfig
from al_loop.data.align import words_of
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError, ModelLoadError, SchemaError
from al_loop.models import TextModel, pick_device, pick_precision, read_artifact, resolve_model_path, write_artifact
from al_loop.models.artifacts import MANIFEST_FILE, SCHEMA_FILE, make_manifest
from al_loop.models.loading import cpu_supports_bf16
from al_loop.types import TaskKind

SMALL = TrainingConfig(max_length=64, window_stride=16, inference_batch_size=8, precision="fp32")
CLS = LabelSchema.build(TaskKind.CLASSIFICATION, ["sports", "business", "tech"])
MULTI = LabelSchema.build(TaskKind.CLASSIFICATION, ["a", "b", "c"], multi_label=True)
NER = LabelSchema.build(TaskKind.NER, ["PER", "LOC"])
TEXTS = [
    "The match ended two to one after extra time.",
    "Shares fell sharply.",
    "",
    "A new chip doubles battery life in laptops, the company said on Tuesday.",
]


# ---------------------------------------------------------------- loading (fast)


def test_resolve_default_and_local_dir(tmp_path: Path) -> None:
    default = Path(resolve_model_path("default"))
    assert (default / "config.json").is_file()
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/dir", "nobody-here/not-a-real-model-4711"])
def test_resolve_missing_model_raises_without_download(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not found locally"):
        resolve_model_path(name)


def test_create_with_missing_model_raises_model_load_error() -> None:
    with pytest.raises(ModelLoadError):
        TextModel.create(CLS, base_model="/definitely/not/here", config=SMALL)


def test_weights_load_only_from_safetensors(tmp_path: Path) -> None:
    """A folder whose weights are a pickle (pytorch_model.bin) is refused, never unpickled."""
    import shutil

    default = Path(resolve_model_path("default"))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default / name, tmp_path / name)
    marker = tmp_path / "unpickled"
    # a pickle that would create `marker` if anything loaded it
    payload = (
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    )
    (tmp_path / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(ModelLoadError, match="safetensors"):
        TextModel.create(CLS, base_model=str(tmp_path), config=SMALL)
    assert not marker.exists()


def test_pick_device_and_precision() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError):
            pick_device("cuda")
    cpu = torch.device("cpu")
    assert pick_precision("fp32", cpu) is None
    assert pick_precision("bf16", cpu) is torch.bfloat16
    assert pick_precision("auto", cpu) == (torch.bfloat16 if cpu_supports_bf16() else None)


# ---------------------------------------------------------------- artifacts (fast)


def _write(target: Path, content: str, fail: bool = False) -> Path:
    def files(tmp: Path) -> None:
        (tmp / "weights.txt").write_text(content)
        if fail:
            raise RuntimeError("disk full")

    return write_artifact(target, files, CLS, make_manifest(CLS, "default", extra={"v": content}))


def test_artifact_write_and_read(tmp_path: Path) -> None:
    target = _write(tmp_path / "v1", "one")
    schema, manifest = read_artifact(target)
    assert schema == CLS
    assert manifest["schema_hash"] == CLS.hash and manifest["extra"] == {"v": "one"}
    assert manifest["base_model"] == "default" and manifest["created_at"].endswith("+00:00")
    assert (target / "weights.txt").read_text() == "one"


def test_failed_save_leaves_no_partial_dir_and_keeps_previous(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        _write(tmp_path / "fresh", "x", fail=True)
    assert not (tmp_path / "fresh").exists()
    assert list(tmp_path.iterdir()) == []

    target = _write(tmp_path / "v", "old")
    with pytest.raises(RuntimeError):
        _write(tmp_path / "v", "new", fail=True)
    assert (target / "weights.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]

    _write(tmp_path / "v", "new")  # a successful save replaces it
    assert (target / "weights.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


def test_read_artifact_rejects_mismatched_schema_and_missing_files(tmp_path: Path) -> None:
    target = _write(tmp_path / "v", "w")
    (target / SCHEMA_FILE).write_text(json.dumps(MULTI.to_dict()))
    with pytest.raises(SchemaError):
        read_artifact(target)
    (target / MANIFEST_FILE).unlink()
    with pytest.raises(ModelLoadError):
        read_artifact(target)
    with pytest.raises(ModelLoadError):
        read_artifact(tmp_path / "absent")


# ---------------------------------------------------------------- real MiniLM (slow)


@pytest.fixture(scope="module")
def cls_model() -> TextModel:
    return TextModel.create(CLS, config=SMALL)


@pytest.fixture(scope="module")
def ner_model() -> TextModel:
    return TextModel.create(NER, config=SMALL)


@pytest.mark.slow
def test_classification_predict_shapes_and_order(cls_model: TextModel) -> None:
    out = cls_model.predict(TEXTS)
    assert out.probs is not None and out.probs.shape == (4, 3) and out.probs.dtype == np.float32
    assert np.allclose(out.probs.sum(axis=1), 1.0, atol=1e-5)
    assert out.embeddings.shape == (4, 384) and out.embeddings.dtype == np.float32
    assert out.token_probs is None and out.words is None
    assert all(len(p) == 1 and p[0] in CLS.labels for p in out.predicted)
    rev = cls_model.predict(TEXTS[::-1])
    assert rev.probs is not None
    np.testing.assert_allclose(rev.probs[::-1], out.probs, atol=1e-5)
    np.testing.assert_allclose(rev.embeddings[::-1], out.embeddings, atol=1e-4)
    no_emb = cls_model.predict(TEXTS, embeddings=False)
    assert no_emb.embeddings.shape == (4, 0)
    empty = cls_model.predict([])
    assert empty.probs is not None and empty.probs.shape == (0, 3) and empty.embeddings.shape == (0, 384)
    assert cls_model.model.config.id2label == dict(enumerate(CLS.tags))


@pytest.mark.slow
def test_long_classification_text_is_windowed(cls_model: TextModel) -> None:
    long = " ".join(TEXTS[3] for _ in range(40))  # ~600 tokens > max_length 64
    assert len(cls_model._windows([long])) > 5
    out = cls_model.predict([long, TEXTS[0]])
    assert out.probs is not None and np.allclose(out.probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_multi_label_predicts_at_least_one_label() -> None:
    model = TextModel.create(MULTI, config=SMALL)
    out = model.predict(TEXTS)
    assert out.probs is not None and out.probs.shape == (4, 3)
    assert ((out.probs >= 0) & (out.probs <= 1)).all()
    for row, labels in zip(out.probs, out.predicted):
        assert len(labels) >= 1
        expected = {MULTI.tags[k] for k in np.flatnonzero(row >= 0.5)} or {MULTI.tags[int(row.argmax())]}
        assert set(labels) == expected
    assert model.model.config.problem_type == "multi_label_classification"


@pytest.mark.slow
def test_ner_predict_shapes(ner_model: TextModel) -> None:
    out = ner_model.predict(TEXTS)
    assert out.token_probs is not None and out.words is not None and out.probs is None
    for text, tp, words in zip(TEXTS, out.token_probs, out.words):
        assert words == words_of(text)
        assert tp.shape == (len(words), len(NER.tags)) and tp.dtype == np.float32
        assert np.allclose(tp.sum(axis=1), 1.0, atol=1e-5)
    assert out.token_probs[2].shape == (0, 5)
    assert out.predicted[2] == ()
    assert out.embeddings.shape == (4, 384)
    assert ner_model.model.config.id2label == dict(enumerate(NER.tags))


@pytest.mark.slow
def test_ner_long_text_covers_every_word(ner_model: TextModel) -> None:
    long = " ".join(f"Word{i} said hello to Paris ." for i in range(400))  # 2,400 words
    out = ner_model.predict([long])
    assert out.token_probs is not None and out.words is not None
    assert len(out.words[0]) == len(words_of(long)) == 2400
    assert out.token_probs[0].shape == (2400, 5)
    assert np.allclose(out.token_probs[0].sum(axis=1), 1.0, atol=1e-5)
    # every word got the probabilities of a real token, not the uniform fallback
    assert not np.isclose(out.token_probs[0], 1 / 5).all(axis=1).any()


@pytest.mark.slow
def test_save_load_round_trip_identical(cls_model: TextModel, ner_model: TextModel, tmp_path: Path) -> None:
    for model in (cls_model, ner_model):
        target = model.save(tmp_path / model.schema.task.value, extra_manifest={"round": 3})
        assert (target / "model.safetensors").is_file() and not list(target.glob("*.bin"))
        manifest = json.loads((target / MANIFEST_FILE).read_text())
        assert manifest["schema_hash"] == model.schema.hash and manifest["extra"] == {"round": 3}
        loaded = TextModel.load(target)
        assert loaded.schema == model.schema and loaded.config == model.config
        a, b = model.predict(TEXTS), loaded.predict(TEXTS)
        if model.schema.task is TaskKind.NER:
            assert a.token_probs is not None and b.token_probs is not None
            for x, y in zip(a.token_probs, b.token_probs):
                np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_array_equal(a.probs, b.probs)
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        assert a.predicted == b.predicted
        # warm start loads the same weights; a different schema is refused
        warm = TextModel.create(model.schema, config=SMALL, init_from=target)
        np.testing.assert_array_equal(warm.predict(TEXTS).embeddings, a.embeddings)
    with pytest.raises(SchemaError):
        TextModel.create(MULTI, config=SMALL, init_from=tmp_path / "classification")


@pytest.mark.slow
def test_load_rejects_schema_mismatch(cls_model: TextModel, tmp_path: Path) -> None:
    target = cls_model.save(tmp_path / "m")
    other = LabelSchema.build(TaskKind.CLASSIFICATION, ["x", "y", "z"])
    (target / SCHEMA_FILE).write_text(json.dumps(other.to_dict()))
    with pytest.raises(SchemaError):
        TextModel.load(target)
    # schema and manifest agree but the model's id2label does not
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    manifest["schema_hash"] = other.hash
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(SchemaError):
        TextModel.load(target)
