"""Exporting a model version as a transformers folder (al_loop/rounds/export.py, model_card.py).

Fast tests use hand-made artifact folders (no torch): what is copied, what is refused, the model card, atomic
writes, the zip stream. The slow tests train a MiniLM round per task with the checkpoint's own head
(``pooling: cls`` / ``token_head: hf``), export the version and load the folder with ``transformers.pipeline``
in a separate process that is offline (``HF_HUB_OFFLINE=1``, an empty ``HF_HOME``, sockets refused): the
pipeline predicts what al-loop predicts. al-loop's own heads (exported as custom code): test_export_custom.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from al_loop.config import LoopConfig, TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConflictError, NotExportableError, NotFoundError
from al_loop.rounds import export
from al_loop.rounds.export import plan_export, write_export, zip_chunks
from al_loop.rounds.model_card import describe_eval_set
from al_loop.store import Store
from al_loop.store.records import ModelVersion, Project
from al_loop.types import Example, ItemId, Span, TaskKind

REPO = Path(__file__).resolve().parents[2]
CLS = LabelSchema.build(TaskKind.CLASSIFICATION, ["weather", "food", "sport"])
NER = LabelSchema.build(TaskKind.NER, ["PER", "LOC"])


# ----------------------------------------------------------------------------------- hand-made artifacts
def fake_artifact(folder: Path, schema: LabelSchema, kind: str = "hf", *, arch: str | None = None,
                  weights_mb: float = 0.0, base_model: str = "default") -> Path:
    """An artifact folder of ``kind`` ``hf`` (a transformers *For*Classification folder), ``pooled`` (al-loop's
    LP-FT head over a 4-wide "encoder") or ``head`` (the head learner over ``base_model``, 4-wide features); not
    loadable by transformers (no real weights), torch-free."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    head = "ForTokenClassification" if schema.task is TaskKind.NER else "ForSequenceClassification"
    manifest: dict[str, Any] = {"format": "al-loop-model", "format_version": 1, "base_model": base_model,
                                "task": schema.task.value, "schema_hash": schema.hash, "tags": list(schema.tags),
                                "precision": "fp32", "created_at": "2026-12-01T10:00:00+00:00",
                                "al_loop_version": "0.1.0", "training_config": {"learner": "finetune",
                                                                                "pooling": "cls", "max_length": 64},
                                "extra": {"project": 1, "round": 1}}
    if kind == "head":
        manifest["learner"] = "head"
        save_file({"coef": np.zeros((schema.num_outputs, 4), np.float32),
                   "intercept": np.zeros(schema.num_outputs, np.float32)}, str(folder / "head.safetensors"))
    else:
        config = {"architectures": [arch or ("BertModel" if kind == "pooled" else f"Bert{head}")],
                  "model_type": "bert", "hidden_size": 4,
                  "id2label": {str(i): t for i, t in enumerate(schema.tags)},
                  "label2id": {t: i for i, t in enumerate(schema.tags)}}
        (folder / "config.json").write_text(json.dumps(config))
        n = max(1, int(weights_mb * 2**20 / 4 / 4))
        rng = np.random.default_rng(0)
        weights = {"classifier.weight": rng.standard_normal((n, 4)).astype(np.float32)}
        if kind == "pooled":  # an encoder's tensors, as AutoModel saves them (no prefix)
            weights = {"embeddings.word_embeddings.weight": rng.standard_normal((n, 4)).astype(np.float32),
                       "encoder.layer.0.output.dense.weight": rng.standard_normal((4, 4)).astype(np.float32)}
        save_file(weights, str(folder / "model.safetensors"))
        (folder / "tokenizer.json").write_text('{"version": "1.0"}')
        (folder / "tokenizer_config.json").write_text('{"do_lower_case": true}')
        (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
        (folder / "pytorch_model.bin").write_bytes(b"a pickle: never copied")
        if kind == "pooled":
            save_file({"weight": np.zeros((schema.num_outputs, 4), np.float32),
                       "bias": np.zeros(schema.num_outputs, np.float32)}, str(folder / "pooled_head.safetensors"))
    (folder / "label_schema.json").write_text(json.dumps(schema.to_dict()))
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def add_version(store: Store, project: Project, folder: Path | None, *, promote: bool = True,
                n_labels: int = 42, metrics: dict[str, Any] | None = None) -> ModelVersion:
    """A finished round with ``n_labels`` labels whose version is the artifact ``folder``."""
    rnd = store.create_round(project.id, trigger="api", strategy="margin", batch_size=5, seed=1)
    name = f"al-r{rnd.index:03d}-{project.schema.hash[:8]}"
    version = store.add_version(project.id, name=name, round_id=rnd.id, base_model=project.base_model,
                                schema=project.schema, train_report={"learner": "finetune"},
                                metrics=metrics if metrics is not None else {
                                    "score": 0.8125, "accuracy": 0.8125, "macro_f1": 0.75, "n": 16,
                                    "eval_set": "test (16)", "learner": "finetune",
                                    "per_label": {"food": {"precision": 1.0, "recall": 0.5, "f1": 0.667,
                                                           "support": 4}}},
                                artifact_path=str(folder) if folder is not None else "")
    store.update_round(rnd.id, n_labels=n_labels, model_version_id=version.id, status="running")
    store.update_round(rnd.id, status="succeeded")
    return store.promote(project.id, version.id) if promote else version


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'db.sqlite'}")


@pytest.fixture
def project(store: Store) -> Project:
    return store.create_project("news topics", CLS, training=TrainingConfig(pooling="cls", learner="finetune"))


def test_the_file_names_are_the_models_own() -> None:
    from al_loop.models.artifacts import MANIFEST_FILE, SCHEMA_FILE
    from al_loop.models.head import HEAD_FILE
    from al_loop.models.pooled import POOLED_HEAD_FILE

    assert (export.MANIFEST_FILE, export.SCHEMA_FILE, export.HEAD_FILE, export.POOLED_HEAD_FILE) == (
        MANIFEST_FILE, SCHEMA_FILE, HEAD_FILE, POOLED_HEAD_FILE)


def test_export_writes_weights_tokenizer_config_manifest_and_card(store: Store, project: Project,
                                                                   tmp_path: Path) -> None:
    art = fake_artifact(tmp_path / "art", CLS)
    version = add_version(store, project, art, n_labels=37)
    plan = plan_export(store, project.id)  # default: the promoted version
    assert plan.version.id == version.id and plan.pipeline_task == "text-classification"
    out = write_export(plan, tmp_path / "out")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "config.json", "label_schema.json", "manifest.json", "model.safetensors",
                     "tokenizer.json", "tokenizer_config.json", "vocab.txt"]  # never the pickle
    for name in ("model.safetensors", "manifest.json", "label_schema.json", "tokenizer.json", "vocab.txt"):
        assert (out / name).read_bytes() == (art / name).read_bytes(), name
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "food", "1": "sport", "2": "weather"}  # the sorted labels
    assert config["label2id"] == {"food": 0, "sport": 1, "weather": 2}
    assert config["problem_type"] == "single_label_classification"
    assert config["architectures"] == ["BertForSequenceClassification"]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    for fact in ("# news topics: model version " + version.name, "`default`: the MiniLM-L6",
                 "`food`, `sport`, `weather`", "| labelled examples used | 37 |", "trained in round 0",
                 "the project's test split (16 items imported", "| accuracy | 0.8125 |", "| food | 1.0000 | 0.5000 |",
                 "by al-loop 0.1.0", "| exported | 20", "`score` is the accuracy", "| pooling | cls |",
                 'pipeline("text-classification", model="PATH/TO/THIS/FOLDER", top_k=None)'):
        assert fact in card, fact


def test_the_card_names_the_pool_adaptive_pretraining(store: Store, project: Project, tmp_path: Path) -> None:
    art = fake_artifact(tmp_path / "art", CLS)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["extra"]["adapted_base"] = {"folder": "/x/adapted/mlm-1", "key": "mlm-1", "steps": 300, "adaptation": 4}
    (art / "manifest.json").write_text(json.dumps(manifest))
    add_version(store, project, art)
    card = (write_export(plan_export(store, project.id), tmp_path / "out") / "README.md").read_text()
    assert "| pool-adaptive pretraining | the encoder was first trained as a masked language model" in card
    assert "for 300 steps (al-loop adaptation 4, key `mlm-1`)" in card


def test_a_named_version_and_unknown_ones(store: Store, project: Project, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no promoted model version"):
        plan_export(store, project.id)
    first = add_version(store, project, fake_artifact(tmp_path / "a1", CLS), promote=False)
    with pytest.raises(NotFoundError, match=f"no promoted model version; name one .*{first.name}"):
        plan_export(store, project.id)
    add_version(store, project, fake_artifact(tmp_path / "a2", CLS))
    assert plan_export(store, project.id, first.name).version.id == first.id
    with pytest.raises(NotFoundError, match="no model version 'al-r999'"):
        plan_export(store, project.id, "al-r999")
    with pytest.raises(NotFoundError):
        plan_export(store, project.id + 1)


def test_ner_config_carries_the_bio_tags(store: Store, tmp_path: Path) -> None:
    ner = store.create_project("ner", NER, training=TrainingConfig(token_head="hf"))
    add_version(store, ner, fake_artifact(tmp_path / "art", NER),
                metrics={"score": 0.5, "f1": 0.5, "eval_set": "held-out labels (3 of 12)", "learner": "finetune"})
    out = write_export(plan_export(store, ner.id), tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert list(config["id2label"].values()) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"] == list(NER.tags)
    assert "problem_type" not in config
    card = (out / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "entity-level micro F1" in card
    assert "held-out labels (3 of 12): the round held these labelled items out" in card
    assert 'aggregation_strategy="first"' in card


@pytest.mark.parametrize(("kind", "why"), [("head", "frozen features of its base model '/gone/base'"),
                                           ("pooled", "does not hold a (3, 8) head")])
def test_broken_versions_of_al_loops_own_heads_are_refused_naming_the_exportable_versions(
        store: Store, project: Project, tmp_path: Path, kind: str, why: str) -> None:
    good = add_version(store, project, fake_artifact(tmp_path / "good", CLS), promote=False)
    bad_art = fake_artifact(tmp_path / "bad", CLS, kind, base_model="/gone/base")
    if kind == "pooled":  # the encoder is 8 wide, the head 4
        config = json.loads((bad_art / "config.json").read_text())
        (bad_art / "config.json").write_text(json.dumps({**config, "hidden_size": 8}))
    bad = add_version(store, project, bad_art)
    with pytest.raises(NotExportableError) as info:
        plan_export(store, project.id)
    message = str(info.value)
    assert why in message and "trust_remote_code=True" in message
    assert f"exportable versions of project {project.id}: {good.name}" in message and bad.name in message


def test_other_unexportable_artifacts(store: Store, project: Project, tmp_path: Path) -> None:
    add_version(store, project, None)
    with pytest.raises(ConflictError, match="has no artifact on this server"):
        plan_export(store, project.id)
    not_ours = tmp_path / "fake"
    not_ours.mkdir()
    (not_ours / "manifest.json").write_text("{}")
    add_version(store, project, not_ours)
    with pytest.raises(NotExportableError, match=r"not an al-loop model artifact.*has no exportable version"):
        plan_export(store, project.id)
    add_version(store, project, fake_artifact(tmp_path / "base", CLS, arch="BertModel"))
    with pytest.raises(NotExportableError, match=r"names \['BertModel'\], not a \*ForSequenceClassification"):
        plan_export(store, project.id)
    broken = fake_artifact(tmp_path / "broken", CLS)
    (broken / "model.safetensors").write_bytes(b"\x80\x04 not safetensors")
    add_version(store, project, broken)
    with pytest.raises(NotExportableError, match="not a readable safetensors file"):
        plan_export(store, project.id)


def test_writes_are_atomic_and_refuse_a_non_empty_folder(store: Store, project: Project, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    add_version(store, project, fake_artifact(tmp_path / "art", CLS))
    plan = plan_export(store, project.id)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_export(plan, empty) / "config.json").is_file()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ConflictError, match=r"not empty.*--force"):
        write_export(plan, busy)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConflictError, match="not a folder"):
        write_export(plan, tmp_path / "a-file", force=True)
    calls = []

    def failing(item: Any, dest: Path) -> None:
        calls.append(item.name)
        if len(calls) == 3:
            raise OSError("disk full")
        dest.write_bytes(b"partial")

    monkeypatch.setattr(export, "_write_file", failing)
    with pytest.raises(OSError, match="disk full"):
        write_export(plan, busy, force=True)
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]  # the old folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    monkeypatch.undo()
    out = write_export(plan, busy, force=True)
    assert not (out / "keep.txt").exists() and (out / "README.md").is_file()


def test_the_zip_stream_holds_the_same_folder_in_bounded_chunks(store: Store, project: Project,
                                                                tmp_path: Path) -> None:
    add_version(store, project, fake_artifact(tmp_path / "art", CLS, weights_mb=6))
    plan = plan_export(store, project.id)
    folder = write_export(plan, tmp_path / "out")
    chunks = list(zip_chunks(plan, chunk_size=256 * 1024))
    assert len(chunks) > 10 and max(len(c) for c in chunks) < 1024 * 1024  # never the whole 6 MiB at once
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        assert zf.testzip() is None
        names = sorted(zf.namelist())
        assert names == sorted(f"{plan.folder_name}/{p.name}" for p in folder.iterdir())
        for name in names:
            assert zf.read(name) == (folder / name.split("/", 1)[1]).read_bytes(), name


def test_eval_set_sentences() -> None:
    assert describe_eval_set("test (500)").startswith("the project's test split (500 items imported")
    assert "trained on every label" in describe_eval_set("held-out labels (12 of 50)")
    assert describe_eval_set("none").startswith("not evaluated")
    assert describe_eval_set(None) == "not recorded"


# ----------------------------------------------------------------------------------- real models (slow)
PIPELINE_SCRIPT = r"""
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network access in an offline export test")

socket.socket.connect = refuse
socket.create_connection = refuse
from transformers import pipeline

folder, task, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
out = []
if task == "text-classification":
    clf = pipeline(task, model=folder, top_k=None, device="cpu")
    for text in texts:
        rows = clf(text)
        rows = rows[0] if rows and isinstance(rows[0], list) else rows
        out.append({row["label"]: float(row["score"]) for row in rows})
else:
    tokens = pipeline(task, model=folder, aggregation_strategy="none", ignore_labels=[], device="cpu")
    words = pipeline(task, model=folder, aggregation_strategy="first", device="cpu")
    for text in texts:
        out.append({"tokens": [[int(d["start"]), int(d["end"]), d["entity"], float(d["score"])] for d in tokens(text)],
                    "spans": [[int(d["start"]), int(d["end"]), d["entity_group"]] for d in words(text)]})
print("RESULT " + json.dumps(out))
"""


def pipeline_outputs(folder: Path, task: str, texts: list[str], home: Path) -> list[Any]:
    """What ``transformers.pipeline(task, model=folder)`` predicts for ``texts``, run offline in a new process."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home),
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, str(folder), task, json.dumps(texts)],
                          cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result: list[Any] = json.loads(line[len("RESULT "):])
    return result


def check_classification(folder: Path, artifact: Path, texts: list[str], home: Path) -> None:
    """The exported ``folder`` predicts what al-loop's model (``artifact``) predicts: same argmax, probabilities
    close."""
    from al_loop.models.model import TextModel

    piped = pipeline_outputs(folder, "text-classification", texts, home)
    model = TextModel.load(artifact, TrainingConfig(precision="fp32", max_length=64))
    probs = model.predict(texts, embeddings=False).probs
    assert probs is not None
    tags = list(model.schema.tags)
    got = np.array([[row[t] for t in tags] for row in piped])
    assert [tags[i] for i in got.argmax(axis=1)] == [tags[i] for i in probs.argmax(axis=1)]
    assert np.allclose(got, probs, atol=2e-4), np.abs(got - probs).max()


def check_ner(folder: Path, artifact: Path, texts: list[str], home: Path) -> int:
    """Same word tags as al-loop's model (``artifact``; the pipeline's tag of each word's first token),
    probabilities close, and the same entity spans under ``aggregation_strategy="first"``; returns how many
    entities al-loop predicted."""
    from al_loop.models.model import TextModel

    piped = pipeline_outputs(folder, "token-classification", texts, home)
    model = TextModel.load(artifact, TrainingConfig(precision="fp32", max_length=64))
    out = model.predict(texts, embeddings=False)
    assert out.words is not None and out.token_probs is not None
    tags = model.schema.tags
    entities = 0
    for i, text in enumerate(texts):
        first: dict[int, tuple[str, float]] = {}
        for start, _, tag, score in piped[i]["tokens"]:
            first.setdefault(start, (tag, score))  # a word's first token starts where the word starts
        for (ws, _), row in zip(out.words[i], out.token_probs[i]):
            tag, score = first[ws]
            assert tag == tags[int(row.argmax())], (text, ws)
            assert abs(score - float(row.max())) < 2e-4, (text, ws)
        spans = {(s.start, s.end, s.label) for s in out.predicted[i]}  # type: ignore[union-attr]
        assert {tuple(s) for s in piped[i]["spans"]} == spans, text
        entities += len(spans)
    return entities


def _round_store(tmp_path: Path, schema: LabelSchema, training: TrainingConfig, train: list[Example],
                 test: list[Example]) -> tuple[Store, Project]:
    from al_loop.models.learners import Learners
    from al_loop.rounds.service import RoundService
    from al_loop.store.records import payload_from_example

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    project = store.create_project(f"{schema.task.value} export", schema, loop=LoopConfig(batch_size=2),
                                   training=training)
    store.add_items(project.id, [*train, Example(ItemId("u1"), "an unlabelled text about nothing")])
    store.add_items(project.id, test, split="test")
    for ex in train:
        store.record_label(project.id, ex.item_id, f"k:{ex.item_id}", payload=payload_from_example(ex), source="api")
    service = RoundService(store, Learners, tmp_path / "artifacts")  # type: ignore[arg-type]
    rnd = service.create_round(project.id)
    done = service.run_round(rnd.id, select=False).round
    assert done.status == "succeeded", done.error
    return store, project


FAST = TrainingConfig(max_length=64, window_stride=16, inference_batch_size=8, precision="fp32", target_steps=6,
                      learner="finetune")
CLS_TRAIN = [("the striker scored a late goal", "sport"), ("she won the tennis final", "sport"),
             ("the referee showed a red card", "sport"), ("we ate pasta with tomato sauce", "food"),
             ("the soup needs more salt", "food"), ("grill the fish with lemon", "food"),
             ("heavy rain is expected tomorrow", "weather"), ("a cold wind from the north", "weather"),
             ("sunny skies all week long", "weather")]
CLS_TEXTS = ["the team lost the match", "fresh fruit salad for dessert", "snow will fall in the hills",
             "I baked bread and a cake on a rainy day", "Who won?", "a very long sentence " * 3]


@pytest.mark.slow
def test_a_classification_version_loads_offline_and_predicts_what_al_loop_predicts(tmp_path: Path) -> None:
    train = [Example(ItemId(f"t{i}"), t, labels=(lb,)) for i, (t, lb) in enumerate(CLS_TRAIN)]
    test = [Example(ItemId("x1"), "the goalkeeper saved a penalty", labels=("sport",)),
            Example(ItemId("x2"), "thunderstorms in the evening", labels=("weather",))]
    store, project = _round_store(tmp_path, CLS, replace(FAST, pooling="cls"), train, test)
    version = store.promoted_version(project.id)
    assert version is not None
    folder = write_export(plan_export(store, project.id), tmp_path / "export")
    card = (folder / "README.md").read_text()
    assert "| labelled examples used | 9 |" in card and "the project's test split (2 items imported" in card
    assert json.loads((folder / "config.json").read_text())["id2label"] == {"0": "food", "1": "sport",
                                                                          "2": "weather"}
    check_classification(folder, Path(version.artifact_path), CLS_TEXTS, tmp_path / "hf-home")


NER_TRAIN = [("John Smith lives in Berlin", [("John Smith", "PER"), ("Berlin", "LOC")]),
             ("Mary went to Paris yesterday", [("Mary", "PER"), ("Paris", "LOC")]),
             ("The mayor of London met Peter Brown", [("London", "LOC"), ("Peter Brown", "PER")]),
             ("Anna visited Rome and Madrid", [("Anna", "PER"), ("Rome", "LOC"), ("Madrid", "LOC")]),
             ("Nothing happened here today", [])]
NER_TEXTS = ["Angela Merkel flew from Berlin to Washington.", "Tom and Jerry live in New York City",
             "U.S. officials met Kim in Seoul, South Korea's capital.", "no names at all in this one"]


def _spans(text: str, names: list[tuple[str, str]]) -> tuple[Span, ...]:
    return tuple(sorted(Span(text.index(n), text.index(n) + len(n), lb) for n, lb in names))


@pytest.mark.slow
def test_an_ner_version_loads_offline_and_tags_what_al_loop_tags(tmp_path: Path) -> None:
    train = [Example(ItemId(f"t{i}"), t, spans=_spans(t, names)) for i, (t, names) in enumerate(NER_TRAIN)]
    test = [Example(ItemId("x1"), "Paul lives in Oslo", spans=_spans("Paul lives in Oslo",
                                                                      [("Paul", "PER"), ("Oslo", "LOC")]))]
    store, project = _round_store(tmp_path, NER, replace(FAST, token_head="hf", target_steps=10), train, test)
    plan = plan_export(store, project.id)
    folder = write_export(plan, tmp_path / "export")
    assert list(json.loads((folder / "config.json").read_text())["id2label"].values()) == list(NER.tags)
    entities = check_ner(folder, Path(plan.version.artifact_path), NER_TEXTS + [t for t, _ in NER_TRAIN],
                         tmp_path / "hf-home")
    assert entities > 0  # the spans compared are not all empty (19 on 2026-12-03)
