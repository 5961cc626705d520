"""Exporting versions with al-loop's own heads (the defaults) as a transformers custom-code folder.

al-loop's LP-FT classifier (mean-pooled, L2-normalised states, one linear layer), its LP-FT token head (a
linear layer over each L2-normalised token state) and the head learner (a logistic regression over the frozen
base model's same features) leave al-loop with ``modeling_al_loop.py`` and one merged ``model.safetensors``
(al_loop/rounds/export.py). Fast tests use hand-made folders (no torch): files, config, the merged file's tensors
(byte-merged, checked with safetensors), the zip stream, the head learner's encoder taken from its base model and
refused when that is gone. The slow tests train a tiny version of each form with the real MiniLM, export it and
load it with ``transformers.pipeline(..., trust_remote_code=True)`` in an offline subprocess: probabilities
within 1e-4 of al-loop's, the same NER word tags and spans.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from al_loop.config import TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import NotExportableError
from al_loop.rounds import export
from al_loop.rounds.export import ExportForm, plan_export, write_export, zip_chunks
from al_loop.store import Store
from al_loop.store.records import Project
from al_loop.types import Example, ItemId, TaskKind
from tests.core.test_export import (
    CLS,
    CLS_TRAIN,
    FAST,
    NER,
    NER_TEXTS,
    NER_TRAIN,
    _round_store,
    _spans,
    add_version,
    fake_artifact,
)

TEMPLATE = Path(export.__file__).with_name("export_code") / "modeling_al_loop.py"


def fake_base(folder: Path, *, prefix: str = "bert.", width: int = 4) -> Path:
    """A transformers checkpoint folder with a head (``bert.*`` encoder tensors and a ``classifier``), torch-free."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    save_file({f"{prefix}embeddings.word_embeddings.weight": rng.standard_normal((6, width)).astype(np.float32),
               f"{prefix}encoder.layer.0.output.dense.weight": rng.standard_normal((width, width)).astype(np.float32),
               "classifier.weight": rng.standard_normal((2, width)).astype(np.float32)},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"],
                                                    "model_type": "bert", "hidden_size": width,
                                                    "id2label": {"0": "a", "1": "b"}}))
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (folder / "modules.json").write_text("[]")  # a sentence-transformers file: not a tokenizer file
    return folder


def head_artifact(folder: Path, schema: LabelSchema, base: Path) -> Path:
    """A head-learner artifact over ``base`` with known coefficients."""
    from safetensors.numpy import save_file

    art = fake_artifact(folder, schema, "head", base_model=str(base))
    k = schema.num_outputs
    save_file({"coef": np.arange(k * 4, dtype=np.float32).reshape(k, 4),
               "intercept": np.arange(k, dtype=np.float32) / 10}, str(art / "head.safetensors"))
    return art


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'db.sqlite'}")


@pytest.fixture
def project(store: Store) -> Project:
    return store.create_project("topics", CLS)  # the defaults: LP-FT, learner auto


def tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


def test_an_lp_ft_version_exports_as_custom_code(store: Store, project: Project, tmp_path: Path) -> None:
    art = fake_artifact(tmp_path / "art", CLS, "pooled")
    version = add_version(store, project, art)
    plan = plan_export(store, project.id)
    assert plan.form is ExportForm.LPFT and plan.custom_code
    out = write_export(plan, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "label_schema.json", "manifest.json", "model.safetensors", "modeling_al_loop.py",
        "tokenizer.json", "tokenizer_config.json", "vocab.txt"]  # no pooled_head file, no pickle
    assert (out / "modeling_al_loop.py").read_bytes() == TEMPLATE.read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["AlLoopMeanPooledClassifier"] and config["model_type"] == "bert"
    assert config["auto_map"] == {
        "AutoModelForSequenceClassification": "modeling_al_loop.AlLoopMeanPooledClassifier"}
    assert config["id2label"] == {"0": "food", "1": "sport", "2": "weather"}
    assert config["problem_type"] == "single_label_classification"
    merged, encoder, head = tensors(out / "model.safetensors"), tensors(art / "model.safetensors"), tensors(
        art / "pooled_head.safetensors")
    assert sorted(merged) == ["body.embeddings.word_embeddings.weight", "body.encoder.layer.0.output.dense.weight",
                              "classifier.bias", "classifier.weight"]
    for name, value in encoder.items():
        assert np.array_equal(merged[f"body.{name}"], value)
    assert np.array_equal(merged["classifier.weight"], head["weight"])
    assert np.array_equal(merged["classifier.bias"], head["bias"])
    raw = (out / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and json.loads(raw[8:8 + n])["__metadata__"] == {"format": "pt"}
    assert len(raw) == plan.files[[f.name for f in plan.files].index("model.safetensors")].size
    card = (out / "README.md").read_text()
    for fact in ("custom modelling code (`modeling_al_loop.py`", "top_k=None, trust_remote_code=True)",
                 "the LP-FT head: a linear layer over the mean of the last hidden states",
                 "No stock transformers head L2-normalises", f"model version {version.name}"):
        assert fact in card, fact


def test_the_stock_form_is_unchanged(store: Store, tmp_path: Path) -> None:
    stock = store.create_project("stock", CLS, training=TrainingConfig(pooling="cls", learner="finetune"))
    add_version(store, stock, fake_artifact(tmp_path / "art", CLS))
    plan = plan_export(store, stock.id)
    assert plan.form is ExportForm.STOCK and not plan.custom_code
    assert all(f.merged is None for f in plan.files) and "modeling_al_loop.py" not in [f.name for f in plan.files]
    out = write_export(plan, tmp_path / "out")
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "art" / "model.safetensors").read_bytes()
    assert "auto_map" not in json.loads((out / "config.json").read_text())
    assert "trust_remote_code" not in (out / "README.md").read_text()


@pytest.mark.parametrize("schema", [CLS, NER, LabelSchema.build(TaskKind.CLASSIFICATION, ["a", "b"], True)],
                         ids=["classification", "ner", "multi-label"])
def test_a_head_learner_version_takes_its_encoder_from_the_base_model(store: Store, tmp_path: Path,
                                                                      schema: LabelSchema) -> None:
    base = fake_base(tmp_path / "base")
    proj = store.create_project("head", schema, training=TrainingConfig(learner="head"))
    art = head_artifact(tmp_path / "art", schema, base)
    add_version(store, proj, art)
    plan = plan_export(store, proj.id)
    assert plan.form is ExportForm.HEAD
    out = write_export(plan, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "label_schema.json", "manifest.json", "model.safetensors", "modeling_al_loop.py",
        "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert (out / "vocab.txt").read_bytes() == (base / "vocab.txt").read_bytes()
    merged, source, head = tensors(out / "model.safetensors"), tensors(base / "model.safetensors"), tensors(
        art / "head.safetensors")
    assert sorted(merged) == ["body.embeddings.word_embeddings.weight", "body.encoder.layer.0.output.dense.weight",
                              "classifier.bias", "classifier.weight"]  # the base's own classifier dropped
    assert np.array_equal(merged["body.embeddings.word_embeddings.weight"],
                          source["bert.embeddings.word_embeddings.weight"])
    assert np.array_equal(merged["classifier.weight"], head["coef"])
    assert np.array_equal(merged["classifier.bias"], head["intercept"])
    config = json.loads((out / "config.json").read_text())
    ner = schema.task is TaskKind.NER
    cls = "AlLoopNormalisedTokenClassifier" if ner else "AlLoopMeanPooledClassifier"
    auto = "AutoModelForTokenClassification" if ner else "AutoModelForSequenceClassification"
    assert config["architectures"] == [cls] and config["auto_map"] == {auto: f"modeling_al_loop.{cls}"}
    assert list(config["id2label"].values()) == list(schema.tags)
    if ner:
        assert "problem_type" not in config
    else:
        assert config["problem_type"] == ("multi_label_classification" if schema.multi_label
                                          else "single_label_classification")
    card = (out / "README.md").read_text()
    assert "the head learner's logistic regression" in card and "trust_remote_code=True" in card


def test_a_head_learner_whose_base_model_is_gone_is_refused(store: Store, tmp_path: Path) -> None:
    proj = store.create_project("head", CLS, training=TrainingConfig(learner="head"))
    good = add_version(store, proj, head_artifact(tmp_path / "good", CLS, fake_base(tmp_path / "base")),
                       promote=False)
    bad = add_version(store, proj, head_artifact(tmp_path / "bad", CLS, tmp_path / "removed"))
    with pytest.raises(NotExportableError) as info:
        plan_export(store, proj.id)
    message = str(info.value)
    assert f"model version {bad.name} of project {proj.id} was trained by the head learner" in message
    assert f"base model {str(tmp_path / 'removed')!r}" in message and "no longer available" in message
    assert f"exportable versions of project {proj.id}: {good.name}" in message
    wide = fake_base(tmp_path / "wide", width=8)  # features of another width than the head's
    add_version(store, proj, head_artifact(tmp_path / "other", CLS, wide))
    with pytest.raises(NotExportableError, match=r"does not hold a \(3, 8\) head"):
        plan_export(store, proj.id)
    unknown = fake_base(tmp_path / "odd", prefix="")
    (unknown / "model.safetensors").unlink()
    from safetensors.numpy import save_file

    save_file({"layers.0.weight": np.zeros((4, 4), np.float32)}, str(unknown / "model.safetensors"))
    add_version(store, proj, head_artifact(tmp_path / "odd-art", CLS, unknown))
    with pytest.raises(NotExportableError, match="cannot tell the encoder's weights"):
        plan_export(store, proj.id)


def test_the_zip_stream_of_a_custom_export_is_the_folder(store: Store, project: Project, tmp_path: Path) -> None:
    add_version(store, project, fake_artifact(tmp_path / "art", CLS, "pooled", weights_mb=3))
    plan = plan_export(store, project.id)
    folder = write_export(plan, tmp_path / "out")
    chunks = list(zip_chunks(plan, chunk_size=128 * 1024))
    assert len(chunks) > 10 and max(len(c) for c in chunks) < 1024 * 1024  # the merged weights never at once
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        assert zf.testzip() is None
        assert sorted(zf.namelist()) == sorted(f"{plan.folder_name}/{p.name}" for p in folder.iterdir())
        for name in zf.namelist():
            assert zf.read(name) == (folder / name.split("/", 1)[1]).read_bytes(), name


def test_the_template_imports_only_torch_and_transformers() -> None:
    import ast

    tree = ast.parse(TEMPLATE.read_text())
    tops = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    tops |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert tops <= {"__future__", "typing", "torch", "transformers"}, tops


# ----------------------------------------------------------------------------------- real models (slow)
PIPELINE_SCRIPT = r"""
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network access in an offline export test")

socket.socket.connect = refuse
socket.create_connection = refuse
from transformers import pipeline

results = []
for job in json.loads(sys.argv[1]):
    folder, task, texts = job["folder"], job["task"], job["texts"]
    out = []
    if task == "text-classification":
        clf = pipeline(task, model=folder, top_k=None, device="cpu", trust_remote_code=True)
        for text in texts:
            rows = clf(text)
            rows = rows[0] if rows and isinstance(rows[0], list) else rows
            out.append({row["label"]: float(row["score"]) for row in rows})
    else:
        kw = dict(model=folder, device="cpu", trust_remote_code=True)
        tokens = pipeline(task, aggregation_strategy="none", ignore_labels=[], **kw)
        words = pipeline(task, aggregation_strategy="first", **kw)
        for text in texts:
            out.append({"tokens": [[int(d["start"]), int(d["end"]), d["entity"], float(d["score"])]
                                   for d in tokens(text)],
                        "spans": [[int(d["start"]), int(d["end"]), d["entity_group"]] for d in words(text)]})
    results.append(out)
print("RESULT " + json.dumps(results))
"""

SMALL = replace(FAST, max_length=32, window_stride=8)
PREDICT = TrainingConfig(precision="fp32", max_length=32, window_stride=8, inference_batch_size=8)
CLS_TEXTS = ["the team lost the match", "fresh fruit salad for dessert", "snow will fall in the hills",
             "I baked bread on a rainy day", "Who won?"]
ML = LabelSchema.build(TaskKind.CLASSIFICATION, ["food", "outdoor", "sport"], multi_label=True)
ML_TRAIN = [("the striker scored a late goal", ("sport", "outdoor")), ("she won the tennis final", ("sport",)),
            ("we ate pasta with tomato sauce", ("food",)), ("a picnic by the lake", ("food", "outdoor")),
            ("a long walk in the hills", ("outdoor",)), ("the soup needs more salt", ("food",))]
FORMS = {  # name: (schema, training, al-loop learner)
    "lpft-classifier": (CLS, replace(SMALL, learner="finetune"), "finetune"),
    "lpft-token-head": (NER, replace(SMALL, learner="finetune", target_steps=10), "finetune"),
    "head-classifier": (CLS, replace(SMALL, learner="head"), "head"),
    "head-ner": (NER, replace(SMALL, learner="head"), "head"),
    "head-multi-label": (ML, replace(SMALL, learner="head"), "head"),
}


def _examples(schema: LabelSchema) -> tuple[list[Example], list[Example]]:
    if schema.task is TaskKind.NER:
        train = [Example(ItemId(f"t{i}"), t, spans=_spans(t, names)) for i, (t, names) in enumerate(NER_TRAIN)]
        return train, [Example(ItemId("x1"), "Paul lives in Oslo",
                               spans=_spans("Paul lives in Oslo", [("Paul", "PER"), ("Oslo", "LOC")]))]
    if schema.multi_label:
        return ([Example(ItemId(f"t{i}"), t, labels=lbs) for i, (t, lbs) in enumerate(ML_TRAIN)],
                [Example(ItemId("x1"), "a barbecue in the garden", labels=("food", "outdoor"))])
    return ([Example(ItemId(f"t{i}"), t, labels=(lb,)) for i, (t, lb) in enumerate(CLS_TRAIN)],
            [Example(ItemId("x1"), "the goalkeeper saved a penalty", labels=("sport",))])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each default form trained in a tiny round, exported, and run through the pipeline offline (one process)."""
    root = tmp_path_factory.mktemp("custom-export")
    done: dict[str, Any] = {}
    jobs = []
    for name, (schema, training, learner) in FORMS.items():
        train, test = _examples(schema)
        (root / name).mkdir()
        store, project = _round_store(root / name, schema, training, train, test)
        version = store.promoted_version(project.id)
        assert version is not None and version.metrics.get("learner", learner) == learner, version.metrics
        plan = plan_export(store, project.id)
        folder = write_export(plan, root / name / "export")
        ner = schema.task is TaskKind.NER
        texts = NER_TEXTS + [t for t, _ in NER_TRAIN] if ner else CLS_TEXTS
        done[name] = {"plan": plan, "folder": folder, "artifact": Path(version.artifact_path), "texts": texts,
                      "store": store}
        jobs.append({"folder": str(folder), "task": plan.pipeline_task, "texts": texts})
    home = root / "hf-home"
    home.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home),
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, json.dumps(jobs)], cwd=home, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    for name, result in zip(FORMS, json.loads(line[len("RESULT "):])):
        done[name]["piped"] = result
    return done


def _al_loop(case: dict[str, Any]) -> Any:
    from al_loop.models.learners import Learners

    return Learners.load(case["artifact"], PREDICT).predict(case["texts"], embeddings=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lpft-classifier", "head-classifier", "head-multi-label"])
def test_a_default_classifier_predicts_what_al_loop_predicts(exported: dict[str, Any], name: str) -> None:
    case = exported[name]
    plan = case["plan"]
    assert plan.form is (ExportForm.HEAD if name.startswith("head") else ExportForm.LPFT)
    out = _al_loop(case)
    assert out.probs is not None
    tags = list(FORMS[name][0].tags)
    got = np.array([[row[t] for t in tags] for row in case["piped"]])
    assert np.abs(got - out.probs).max() < 1e-4, np.abs(got - out.probs).max()
    if not FORMS[name][0].multi_label:
        assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)  # softmax, not sigmoid
    else:
        assert not np.allclose(got.sum(axis=1), 1.0, atol=1e-2)  # a sigmoid per label
    tensors(case["folder"] / "model.safetensors")  # the merged file loads with safetensors


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lpft-token-head", "head-ner"])
def test_a_default_ner_version_tags_what_al_loop_tags(exported: dict[str, Any], name: str) -> None:
    case = exported[name]
    assert case["plan"].form is (ExportForm.HEAD if name.startswith("head") else ExportForm.LPFT)
    out = _al_loop(case)
    assert out.words is not None and out.token_probs is not None
    tags = NER.tags
    entities = 0
    for i, text in enumerate(case["texts"]):
        first: dict[int, tuple[str, float]] = {}
        for start, _, tag, score in case["piped"][i]["tokens"]:
            first.setdefault(start, (tag, score))  # a word's first token starts where the word starts
        for (ws, _), row in zip(out.words[i], out.token_probs[i]):
            tag, score = first[ws]
            assert tag == tags[int(row.argmax())], (text, ws)
            assert abs(score - float(row.max())) < 1e-4, (text, ws)
        spans = {(s.start, s.end, s.label) for s in out.predicted[i]}
        assert {tuple(s) for s in case["piped"][i]["spans"]} == spans, text
        entities += len(spans)
    assert entities > 0  # the spans compared are not all empty
    tensors(case["folder"] / "model.safetensors")


@pytest.mark.slow
def test_a_real_head_learner_export_streams_the_same_folder(exported: dict[str, Any]) -> None:
    case = exported["head-classifier"]
    with zipfile.ZipFile(io.BytesIO(b"".join(zip_chunks(case["plan"])))) as zf:
        for name in zf.namelist():
            if not name.endswith("README.md"):
                assert zf.read(name) == (case["folder"] / name.split("/", 1)[1]).read_bytes(), name
