"""LoopService with a fake Label Studio gateway, the InlineDispatcher and FakeModel (no network, no torch)."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import count
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from al_loop.config import LoopConfig
from al_loop.errors import (
    ConfigError,
    ConflictError,
    DataFormatError,
    SchemaError,
    UnknownLabelError,
)
from al_loop.rounds import RoundService
from al_loop.store import Store
from al_loop.types import Example, ItemId, Span
from annotator_bridge.dispatch import Dispatcher, InlineDispatcher, ThreadDispatcher
from annotator_bridge.labelstudio.config import build_label_config, ner_config
from annotator_bridge.labelstudio.connection import LabelStudioNotFound, LabelStudioUnavailable
from annotator_bridge.labelstudio.convert import parse_annotation
from annotator_bridge.labelstudio.projects import UNCERTAINTY_SAMPLING, LSProject
from annotator_bridge.labelstudio.tasks import AnnotatedTask
from annotator_bridge.loop import LoopService, ProjectSpec, annotation_key, parse_ls_time, publishing
from annotator_bridge.settings import Settings
from tests.core.fakes import FakeModel

WORDS = ["good", "great", "fine", "bad", "awful", "poor"]
PUBLIC_URL = "http://127.0.0.1:9090"
SECRET = "hook-secret"


# ---------------------------------------------------------------------------- fake Label Studio
class FakeGateway:
    """In-memory Label Studio with the gateway's methods; records calls; ``down`` simulates an outage."""

    def __init__(self) -> None:
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.predictions: list[dict[str, Any]] = []
        self.ml_backends: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.down = False
        # per import call: "ok" | "down" | "applied-then-down" | "applied-late" (applied at the next import call)
        self.fail_prediction_imports: list[str] = []
        self.late_imports: list[dict[str, Any]] = []
        self.during_import: Callable[[], Any] | None = None
        self._ids = count(1)
        self._task_ids = count(1)
        self._ann_ids = count(1)
        self.lock = threading.Lock()

    # plumbing
    def _call(self, what: str) -> None:
        self.calls.append(what)
        if self.down:
            raise LabelStudioUnavailable(f"Label Studio at http://fake unavailable during {what}")

    def _project(self, project_id: int) -> dict[str, Any]:
        if project_id not in self.projects:
            raise LabelStudioNotFound(f"Label Studio rejected GET project {project_id}: HTTP 404", 404)
        return self.projects[project_id]

    def _ls_project(self, p: dict[str, Any]) -> LSProject:
        return LSProject.from_api(p)

    # projects
    def create_project(self, title: str, label_config: str, *, description: str = "", sampling: str | None = None,
                       model_version: str | None = None, **fields: Any) -> LSProject:
        self._call("create_project")
        pid = next(self._ids)
        self.projects[pid] = {"id": pid, "title": title, "label_config": label_config, "parsed_label_config": None,
                              "model_version": model_version or "", "sampling": sampling or "Sequential sampling",
                              "description": description}
        return self._ls_project(self.projects[pid])

    def get_project(self, project_id: int) -> LSProject:
        self._call("get_project")
        return self._ls_project(self._project(project_id))

    def delete_project(self, project_id: int) -> None:
        self._call("delete_project")
        self.projects.pop(project_id, None)

    def update_project(self, project_id: int, **fields: Any) -> LSProject:
        self._call("update_project")
        self._project(project_id).update(fields)
        return self._ls_project(self._project(project_id))

    def set_model_version(self, project_id: int, version: str,
                          sampling: str | None = UNCERTAINTY_SAMPLING) -> LSProject:
        self._call("set_model_version")
        fields: dict[str, Any] = {"model_version": version}
        if sampling is not None:
            fields["sampling"] = sampling
        self._project(project_id).update(fields)
        return self._ls_project(self._project(project_id))

    def model_versions(self, project_id: int) -> dict[str, int]:
        self._call("model_versions")
        return dict(Counter(p["model_version"] for p in self.predictions if p["project"] == project_id))

    # tasks
    def add_task(self, project_id: int, data: dict[str, Any]) -> int:
        tid = next(self._task_ids)
        self.tasks[tid] = {"id": tid, "project": project_id, "data": dict(data), "annotations": []}
        return tid

    def list_tasks(self, project_id: int, *, query: Mapping[str, Any] | None = None, fields: str = "task_only",
                   page_size: int = 500, token: str | None = None) -> Iterator[dict[str, Any]]:
        self._call("list_tasks")
        for t in list(self.tasks.values()):
            if t["project"] == project_id:
                yield {"id": t["id"], "data": dict(t["data"])}

    def tasks_after(self, project_id: int, task_id: int, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        self._call("tasks_after")
        for t in list(self.tasks.values()):
            if t["project"] == project_id and t["id"] > task_id:
                yield {"id": t["id"], "data": dict(t["data"])}

    def task_count(self, project_id: int) -> int:
        self._call("task_count")
        return sum(1 for t in self.tasks.values() if t["project"] == project_id)

    def import_tasks(self, project_id: int, items: Iterable[tuple[ItemId | str, str, Mapping[str, Any] | None]], *,
                     text_key: str = "text", chunk_size: int = 500, skip_existing: bool = True) -> dict[ItemId, int]:
        self._call("import_tasks")
        self._project(project_id)
        existing = {t["data"].get("item_id"): t["id"] for t in self.tasks.values() if t["project"] == project_id}
        out: dict[ItemId, int] = {}
        for item_id, text, _meta in items:
            if item_id in existing and skip_existing:
                out[ItemId(item_id)] = existing[item_id]
                continue
            out[ItemId(item_id)] = self.add_task(project_id, {text_key: text, "item_id": item_id})
        return out

    def list_annotated_tasks(self, project_id: int, *, text_key: str | None = None,
                             page_size: int = 100) -> Iterator[AnnotatedTask]:
        self._call("list_annotated_tasks")
        key = text_key or "text"
        for t in list(self.tasks.values()):
            if t["project"] != project_id or not t["annotations"]:
                continue
            anns = tuple(parse_annotation({**a, "task": t["id"]}, action="LIST", project_ls_id=project_id,
                                          task={"id": t["id"], "data": t["data"]}) for a in t["annotations"])
            item = t["data"].get("item_id")
            yield AnnotatedTask(task_id=t["id"], item_id=ItemId(str(item)) if item is not None else None,
                                text=t["data"].get(key), data=dict(t["data"]), annotations=anns)

    # predictions
    def import_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]], *,
                           model_version: str | None = None, chunk_size: int = 1000) -> int:
        self._call("import_predictions")
        mode = self.fail_prediction_imports.pop(0) if self.fail_prediction_imports else "ok"
        if self.during_import is not None:  # e.g. a second push running while this import is in flight
            hook, self.during_import = self.during_import, None
            hook()
        late, self.late_imports = self.late_imports, []
        for p in late:  # an import Label Studio applied after the client had given up on it
            self.predictions.append(p)
        if mode == "down":
            raise LabelStudioUnavailable("Label Studio unavailable during import of predictions")
        if mode == "applied-late":
            self.late_imports = [{**p, "id": next(self._ids), "project": project_id} for p in predictions]
            raise LabelStudioUnavailable("Label Studio timed out importing predictions; it may have been applied")
        for p in predictions:
            assert p["model_version"] == model_version
            self.predictions.append({**p, "id": next(self._ids), "project": project_id})
        if mode == "applied-then-down":
            raise LabelStudioUnavailable("Label Studio timed out importing predictions; it may have been applied")
        return len(predictions)

    def predictions_of_version(self, project_id: int, model_version: str) -> list[tuple[int, int]]:
        self._call("predictions_of_version")
        return [(int(p["id"]), int(p["task"])) for p in self.predictions
                if p["project"] == project_id and p["model_version"] == model_version]

    def delete_prediction(self, prediction_id: int) -> None:
        self._call("delete_prediction")
        self.predictions = [p for p in self.predictions if p.get("id") != prediction_id]

    # ML backend
    def connect_ml_backend(self, project_id: int, url: str, *, title: str,
                           webhook_headers: Mapping[str, str] | None = None, is_interactive: bool = False,
                           timeout: float | None = None) -> dict[str, Any]:
        self._call("connect_ml_backend")
        self._project(project_id)
        ml = {"id": len(self.ml_backends) + 1, "project": project_id, "url": url, "title": title,
              "webhook_headers": dict(webhook_headers or {})}
        self.ml_backends.append(ml)
        if not self.projects[project_id]["model_version"]:
            self.projects[project_id]["model_version"] = title
        return ml

    # annotators (test helpers)
    def annotate(self, task_id: int, result: list[dict[str, Any]], *, was_cancelled: bool = False,
                 updated_at: str = "2026-11-25T08:00:00.000000Z", completed_by: int = 7,
                 annotation_id: int | None = None, action: str = "ANNOTATION_CREATED") -> dict[str, Any]:
        """Store an annotation on a task and return the webhook body Label Studio would send."""
        task = self.tasks[task_id]
        ann_id = annotation_id if annotation_id is not None else next(self._ann_ids)
        ann = {"id": ann_id, "result": result, "was_cancelled": was_cancelled, "updated_at": updated_at,
               "created_at": updated_at, "task": task_id, "project": task["project"], "completed_by": completed_by}
        task["annotations"] = [a for a in task["annotations"] if a["id"] != ann_id] + [ann]
        return self.webhook(action, ann)

    def webhook(self, action: str, ann: dict[str, Any]) -> dict[str, Any]:
        task = self.tasks[ann["task"]]
        project = self.projects[task["project"]]
        return {"action": action, "annotation": dict(ann),
                "task": {"id": task["id"], "data": dict(task["data"]), "project": task["project"]},
                "project": {"id": project["id"], "title": project["title"], "label_config": project["label_config"],
                            "model_version": project["model_version"]}}

    def delete_annotation(self, annotation_id: int) -> dict[str, Any]:
        pid = None
        for t in self.tasks.values():
            before = len(t["annotations"])
            t["annotations"] = [a for a in t["annotations"] if a["id"] != annotation_id]
            if len(t["annotations"]) != before:
                pid = t["project"]
        return {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": annotation_id}], "project": {"id": pid}}

    def task_of(self, project_id: int, item_id: str) -> int:
        return next(t["id"] for t in self.tasks.values()
                    if t["project"] == project_id and t["data"].get("item_id") == item_id)

    def predictions_of(self, project_id: int, version: str) -> list[dict[str, Any]]:
        return [p for p in self.predictions if p["project"] == project_id and p["model_version"] == version]


def choice(label: str, from_name: str = "label") -> list[dict[str, Any]]:
    return [{"from_name": from_name, "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def span(start: int, end: int, label: str, text: str = "") -> dict[str, Any]:
    return {"from_name": "label", "to_name": "text", "type": "labels",
            "value": {"start": start, "end": end, "text": text[start:end], "labels": [label]}}


def cls_items(n: int) -> list[Example]:
    return [Example(ItemId(f"i{i}"), f"{WORDS[i % 6]} item number {i}") for i in range(n)]


def gold_label(item_id: str) -> str:
    return "pos" if WORDS[int(item_id[1:]) % 6] in WORDS[:3] else "neg"


# ---------------------------------------------------------------------------- fixtures
def make_env(tmp_path: Path, *, public_url: str | None = PUBLIC_URL, secret: str | None = SECRET,
             dispatcher: Dispatcher | None = None, extra_env: dict[str, str] | None = None) -> SimpleNamespace:
    env = {"AL_LOOP_HOME": str(tmp_path / "home"), **(extra_env or {})}
    if public_url:
        env["AL_LOOP_PUBLIC_URL"] = public_url
    if secret:
        env["AL_LOOP_WEBHOOK_SECRET"] = secret
    settings = Settings.from_env(env)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    gw = FakeGateway()
    rounds = RoundService(store, FakeModel, tmp_path / "artifacts")
    dispatcher = dispatcher or InlineDispatcher()
    loop = LoopService(store, lambda: gw, rounds, dispatcher, settings)
    return SimpleNamespace(store=store, gw=gw, rounds=rounds, loop=loop, dispatcher=dispatcher, settings=settings,
                           tmp=tmp_path)


@pytest.fixture
def env(tmp_path: Path) -> SimpleNamespace:
    return make_env(tmp_path)


def cls_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "sentiment", "task": "classification", "labels": ["pos", "neg"],
                            "strategy": "least_confidence", "batch_size": 4, "seed_size": 5, "retrain_every": 0}
    spec.update(over)
    return spec


@pytest.fixture
def cls_project(env: SimpleNamespace) -> SimpleNamespace:
    project = env.loop.create_project(cls_spec())
    env.loop.import_items(project.id, cls_items(20))
    env.project = env.store.get_project(project.id)
    env.ls_id = env.store.get_link(env.project.id).ls_project_id
    return env


def ner_env(env: SimpleNamespace, texts: Sequence[str]) -> SimpleNamespace:
    project = env.loop.create_project({"name": "ner", "task": "ner", "labels": ["Disease"], "strategy": "mnlp",
                                       "batch_size": 2, "seed_size": 2})
    env.loop.import_items(project.id, [Example(ItemId(f"n{i}"), t) for i, t in enumerate(texts)])
    env.project = env.store.get_project(project.id)
    env.ls_id = env.store.get_link(env.project.id).ls_project_id
    return env


# ---------------------------------------------------------------------------- projects
def test_create_project_generates_config_and_connects_backend_once(env: SimpleNamespace) -> None:
    project = env.loop.create_project(cls_spec())
    ls_id = env.store.get_link(project.id).ls_project_id
    ls = env.gw.projects[ls_id]
    assert ls["title"] == "sentiment"
    assert ls["label_config"] == build_label_config(project.schema)
    assert project.labels == ("neg", "pos") and project.task.value == "classification"
    assert project.loop.batch_size == 4 and project.loop.seed_size == 5
    assert env.gw.calls.count("connect_ml_backend") == 1
    ml = env.gw.ml_backends[0]
    assert ml["url"] == PUBLIC_URL and ml["webhook_headers"] == {"X-AL-Loop-Secret": SECRET}
    assert ml["title"].startswith("al-r000-cold-")  # title = the model version round 0 will carry
    assert env.store.get_link(project.id).ml_backend["status"] == "connected"
    assert env.store.find_link(ls_id).project_id == project.id


def test_create_project_rejects_taken_name_before_touching_label_studio(env: SimpleNamespace) -> None:
    env.loop.create_project(cls_spec())
    n_projects = len(env.gw.projects)
    with pytest.raises(ConflictError):
        env.loop.create_project(cls_spec())
    assert len(env.gw.projects) == n_projects


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"name": "x", "task": "classification", "labels": ["a", "b"], "bogus": 1}, ConfigError),
        ({"name": "x", "task": "sentiment", "labels": ["a", "b"]}, ConfigError),
        ({"name": "x", "task": "ner"}, ConfigError),
        ({"name": "", "task": "ner", "labels": ["A"]}, ConfigError),
        ({"name": "x", "task": "ner", "labels": ["A"], "batch_size": 0}, ConfigError),
        ({"name": "x", "task": "ner", "labels": ["A"], "strategy": "psychic"}, ConfigError),
        ({"name": "x", "task": "ner", "labels": ["A"], "training": {"epochs_please": 3}}, ConfigError),
        ({"name": "x", "task": "ner", "labels": ["B-A"]}, SchemaError),
        ({"name": "x", "task": "ner", "labels": ["A"], "label_studio": {"project_id": "3"}}, ConfigError),
    ],
)
def test_invalid_specs(env: SimpleNamespace, spec: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        env.loop.create_project(spec)
    assert env.store.list_projects() == [] and env.gw.projects == {}


def test_spec_from_dict_accepts_loop_and_training_overrides() -> None:
    spec = ProjectSpec.from_dict({"name": "p", "task": "ner", "labels": ["A"], "loop": {"promote": "manual"},
                                  "batch_size": 7, "cold_start": "diversity", "training": {"max_epochs": 4},
                                  "base_model": "some/model", "label_studio": {"title": "Pretty title"}})
    assert spec.loop.batch_size == 7 and spec.loop.promote == "manual" and spec.loop.cold_start == "diversity"
    assert spec.training.max_epochs == 4 and spec.base_model == "some/model"
    assert spec.label_studio == {"title": "Pretty title"} and spec.attach_to is None


def test_create_project_failure_in_store_removes_new_label_studio_project(env: SimpleNamespace,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database went away")

    monkeypatch.setattr(env.store, "create_project", boom)
    with pytest.raises(RuntimeError):
        env.loop.create_project(cls_spec())
    assert env.gw.projects == {} and "delete_project" in env.gw.calls


def test_label_studio_down_creates_nothing(env: SimpleNamespace) -> None:
    env.gw.down = True
    with pytest.raises(LabelStudioUnavailable):
        env.loop.create_project(cls_spec())
    assert env.store.list_projects() == []


def test_attach_reads_labels_from_config_and_adopts_existing_tasks(env: SimpleNamespace) -> None:
    ls = env.gw.create_project("existing", ner_config(["Chemical", "Disease"]))
    t1 = env.gw.add_task(ls.id, {"text": "aspirin helps with headache"})
    t2 = env.gw.add_task(ls.id, {"text": "flu season", "item_id": "doc-7"})
    env.gw.add_task(ls.id, {"other": "no text here"})
    project = env.loop.create_project({"name": "attached", "label_studio": {"project_id": ls.id}})
    assert project.task.value == "ner" and project.labels == ("Chemical", "Disease")
    assert env.store.get_link(project.id).attached is True
    items = {it.item_id: it for it in env.store.get_items(project.id)}
    assert set(items) == {f"ls-{t1}", "doc-7"}
    assert items["doc-7"].ext_task_id == t2 and items[f"ls-{t1}"].ext_task_id == t1
    assert "create_project" not in env.gw.calls[1:]  # only the test's own create
    # attaching the same Label Studio project again is refused
    with pytest.raises(ConflictError):
        env.loop.create_project({"name": "again", "label_studio": {"project_id": ls.id}})


def test_attach_with_contradicting_labels_is_refused(env: SimpleNamespace) -> None:
    ls = env.gw.create_project("existing", ner_config(["Disease"]))
    with pytest.raises(SchemaError, match="labels differ"):
        env.loop.create_project({"name": "a", "labels": ["Disease", "Gene"], "label_studio": {"project_id": ls.id}})
    with pytest.raises(SchemaError):
        env.loop.create_project({"name": "a", "task": "classification", "label_studio": {"project_id": ls.id}})
    with pytest.raises(LabelStudioNotFound):
        env.loop.create_project({"name": "a", "label_studio": {"project_id": 999}})
    assert env.store.list_projects() == []


def test_local_project_never_calls_label_studio(tmp_path: Path) -> None:
    env = make_env(tmp_path)

    def no_gateway() -> Any:
        raise AssertionError("the gateway must not be created")

    env.loop = LoopService(env.store, no_gateway, env.rounds, InlineDispatcher(), env.settings)
    project = env.loop.create_project(cls_spec(label_studio=False))
    assert env.store.get_link(project.id) is None
    report = env.loop.import_items(project.id, cls_items(6))
    assert report["added"] == 6 and report["ls_tasks"] == 0
    rnd = env.loop.request_round(project.id)
    assert env.store.get_round(rnd.id).push_status == "skipped"
    assert env.loop.reconcile(project.id)["status"] == "skipped"


def test_without_public_url_no_backend_is_connected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = make_env(tmp_path, public_url=None)
    with caplog.at_level(logging.WARNING):
        project = env.loop.create_project(cls_spec())
    assert "connect_ml_backend" not in env.gw.calls
    assert env.store.get_link(project.id).ml_backend == {"status": "not configured"}
    assert "AL_LOOP_PUBLIC_URL" in caplog.text


def test_backend_connection_failure_is_recorded_and_retried_by_reconcile(env: SimpleNamespace,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = env.gw.connect_ml_backend
    attempts = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise LabelStudioUnavailable("ML backend health check timed out")
        return real(*args, **kwargs)

    monkeypatch.setattr(env.gw, "connect_ml_backend", flaky)
    project = env.loop.create_project(cls_spec())
    assert env.store.get_link(project.id).ml_backend["status"] == "failed"
    env.loop.reconcile(project.id)
    assert env.store.get_link(project.id).ml_backend["status"] == "connected"
    env.loop.reconcile(project.id)
    assert len(attempts) == 2  # connected once, never again


def test_reconcile_reconnects_the_backend_when_the_public_url_changed(env: SimpleNamespace) -> None:
    import dataclasses

    project = env.loop.create_project(cls_spec())
    env.loop.settings = dataclasses.replace(env.loop.settings, public_url="http://127.0.0.1:9999")
    env.loop.reconcile(project.id)
    assert env.gw.calls.count("connect_ml_backend") == 2
    assert env.store.get_link(project.id).ml_backend["url"] == "http://127.0.0.1:9999"


# ---------------------------------------------------------------------------- import
def test_import_creates_tasks_with_item_ids_and_is_idempotent(env: SimpleNamespace) -> None:
    project = env.loop.create_project(cls_spec())
    ls_id = env.store.get_link(project.id).ls_project_id
    report = env.loop.import_items(project.id, cls_items(10))
    assert report["added"] == 10 and report["ls_tasks"] == 10
    tasks = [t for t in env.gw.tasks.values() if t["project"] == ls_id]
    assert sorted(t["data"]["item_id"] for t in tasks) == sorted(f"i{i}" for i in range(10))
    assert all(set(t["data"]) == {"text", "item_id"} for t in tasks)
    items = env.store.get_items(project.id)
    assert all(it.ext_task_id == env.gw.task_of(ls_id, it.item_id) for it in items)
    again = env.loop.import_items(project.id, cls_items(12))
    assert again["added"] == 2 and again["existing"] == 10 and again["ls_tasks"] == 2
    assert len([t for t in env.gw.tasks.values() if t["project"] == ls_id]) == 12


def test_import_validation(env: SimpleNamespace) -> None:
    project = env.loop.create_project(cls_spec())
    with pytest.raises(DataFormatError, match="empty text"):
        env.loop.import_items(project.id, [Example(ItemId("a"), "  ")])
    with pytest.raises(DataFormatError, match="twice"):
        env.loop.import_items(project.id, [Example(ItemId("a"), "x"), Example(ItemId("a"), "y")])
    with pytest.raises(UnknownLabelError):
        env.loop.import_items(project.id, [Example(ItemId("a"), "x", labels=("meh",))])
    with pytest.raises(DataFormatError, match="gold labels"):
        env.loop.import_items(project.id, [Example(ItemId("a"), "x")], split="test")
    with pytest.raises(ConfigError):
        env.loop.import_items(project.id)
    assert env.store.count_items(project.id) == 0


def test_import_test_split_stays_out_of_label_studio_and_labels_can_be_recorded(env: SimpleNamespace) -> None:
    project = env.loop.create_project(cls_spec())
    test = [Example(ItemId(f"t{i}"), f"test {WORDS[i]} {i}", labels=("pos" if i < 3 else "neg",)) for i in range(6)]
    assert env.loop.import_items(project.id, test, split="test")["ls_tasks"] == 0
    assert env.gw.calls.count("import_tasks") == 0
    labelled = [Example(ItemId("p1"), "good stuff", labels=("pos",)), Example(ItemId("p2"), "new text")]
    report = env.loop.import_items(project.id, labelled, record_labels=True)
    assert report["labels_recorded"] == 1
    assert [e.item_id for e in env.store.labelled_examples(project.id)] == ["p1"]


def test_import_from_server_file(tmp_path: Path) -> None:
    env = make_env(tmp_path, extra_env={"AL_LOOP_IMPORT_DIRS": str(tmp_path)})  # closed by default
    project = env.loop.create_project(cls_spec())
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"f{i}", "text": f"{WORDS[i % 6]} file line {i}"})
                              for i in range(5)) + "\n")
    report = env.loop.import_items(project.id, path=path)
    assert report["added"] == 5 and report["ls_tasks"] == 5


def test_import_with_label_studio_down_keeps_items_and_retry_creates_tasks(env: SimpleNamespace) -> None:
    project = env.loop.create_project(cls_spec())
    env.gw.down = True
    with pytest.raises(LabelStudioUnavailable, match="items were stored"):
        env.loop.import_items(project.id, cls_items(4))
    assert env.store.count_items(project.id) == 4
    env.gw.down = False
    env.loop.reconcile(project.id)  # creates the missing tasks
    assert all(it.ext_task_id is not None for it in env.store.get_items(project.id))


# ---------------------------------------------------------------------------- events: classification
def labels_of(env: SimpleNamespace) -> dict[str, Any]:
    return {r.annotation_key: r for r in env.store.label_records(env.project.id)}


def test_created_updated_duplicate_stale_deleted_skipped(cls_project: SimpleNamespace) -> None:
    env = cls_project
    pid, loop, gw = env.project.id, env.loop, env.gw
    t0 = gw.task_of(env.ls_id, "i0")
    body = gw.annotate(t0, choice("pos"), updated_at="2026-11-25T08:00:00.000000Z", completed_by=11)
    ann_id = body["annotation"]["id"]
    assert loop.handle_event(pid, body)["outcomes"] == {"created": 1}
    rec = labels_of(env)[f"ls:{ann_id}"]
    assert rec.source == "labelstudio" and rec.payload == {"labels": ["pos"]} and rec.annotator == "11"
    assert rec.updated_at == parse_ls_time("2026-11-25T08:00:00Z")
    # the same event again: duplicate
    assert loop.handle_event(pid, body)["outcomes"] == {"duplicate": 1}
    # a newer update
    newer = gw.annotate(t0, choice("neg"), updated_at="2026-11-25T09:00:00Z", annotation_id=ann_id,
                        action="ANNOTATION_UPDATED")
    assert loop.handle_event(pid, newer)["outcomes"] == {"updated": 1}
    # the old version arriving late (out of order): stale, ignored
    assert loop.handle_event(pid, body)["outcomes"] == {"stale": 1}
    assert labels_of(env)[f"ls:{ann_id}"].payload == {"labels": ["neg"]}
    # skipped task
    t1 = gw.task_of(env.ls_id, "i1")
    skipped = gw.annotate(t1, [], was_cancelled=True)
    assert loop.handle_event(pid, skipped)["outcomes"] == {"skipped": 1}
    assert labels_of(env)[f"ls:{skipped['annotation']['id']}"].skipped
    assert env.store.label_stats(pid)["skipped"] == 1
    # deleted
    out = loop.handle_event(pid, gw.delete_annotation(ann_id))
    assert out["outcomes"] == {"deleted": 1}
    assert labels_of(env)[f"ls:{ann_id}"].deleted
    assert env.store.labelled_examples(pid) == []


def test_unknown_label_is_rejected_listed_and_other_labels_kept(cls_project: SimpleNamespace,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    env = cls_project
    pid, gw = env.project.id, env.gw
    ok = gw.annotate(gw.task_of(env.ls_id, "i0"), choice("pos"))
    bad = gw.annotate(gw.task_of(env.ls_id, "i1"), choice("ecstatic"))
    bulk = {"action": "ANNOTATIONS_CREATED", "annotation": [ok["annotation"], bad["annotation"]],
            "task": [ok["task"], bad["task"]], "project": ok["project"]}
    with caplog.at_level(logging.WARNING):
        out = env.loop.handle_event(pid, bulk)
    assert out["outcomes"] == {"created": 1, "rejected": 1}
    assert "UnknownLabelError" in caplog.text and "ecstatic" in caplog.text
    status = env.loop.status(pid)
    assert status["rejected_total"] == 1
    rej = status["rejected"][0]
    assert rej["annotation_id"] == bad["annotation"]["id"] and rej["item_id"] == "i1"
    assert rej["type"] == "UnknownLabelError" and "ecstatic" in rej["error"]
    assert [e.item_id for e in env.store.labelled_examples(pid)] == ["i0"]
    # redelivery of the bad event is not listed twice
    env.loop.handle_event(pid, bad)
    assert env.loop.status(pid)["rejected_total"] == 1


def test_concurrent_ingest_never_loses_a_rejection(cls_project: SimpleNamespace) -> None:
    """Bursts of bad-label webhooks ingested by several threads at once: every rejection is counted."""
    import threading

    env = cls_project
    pid, gw = env.project.id, env.gw
    bursts = [[gw.annotate(gw.task_of(env.ls_id, f"i{n % 20}"), choice(f"bad{n}")) for n in range(40)]
              for _ in range(3)]
    for burst, bodies in enumerate([*bursts, bursts[0]]):  # three bursts, then the first one redelivered
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def ingest(chunk: list[dict[str, Any]], start: threading.Barrier = start,
                   errors: list[BaseException] = errors) -> None:
            start.wait()
            for body in chunk:
                try:
                    assert env.loop.handle_event(pid, body)["outcomes"] == {"rejected": 1}
                except BaseException as exc:  # reported below
                    errors.append(exc)

        threads = [threading.Thread(target=ingest, args=(bodies[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert env.loop.status(pid)["rejected_total"] == 40 * min(burst + 1, 3), burst  # redelivery adds nothing
    assert len(env.loop.status(pid)["rejected"]) == 20  # the newest 20 are listed


def test_label_added_in_label_studio_but_not_in_project_is_rejected(cls_project: SimpleNamespace) -> None:
    env = cls_project
    # the annotator's config grew a label; al-loop's schema did not
    env.gw.projects[env.ls_id]["label_config"] = build_label_config(
        env.project.schema.build("classification", ["pos", "neg", "mixed"]))
    body = env.gw.annotate(env.gw.task_of(env.ls_id, "i2"), choice("mixed"))
    assert env.loop.handle_event(env.project.id, body)["outcomes"] == {"rejected": 1}


def test_single_label_needs_exactly_one_choice(cls_project: SimpleNamespace) -> None:
    env = cls_project
    body = env.gw.annotate(env.gw.task_of(env.ls_id, "i3"), [])
    assert env.loop.handle_event(env.project.id, body)["outcomes"] == {"rejected": 1}


def test_unknown_task_is_left_to_reconcile(cls_project: SimpleNamespace) -> None:
    env = cls_project
    pid, gw = env.project.id, env.gw
    tid = gw.add_task(env.ls_id, {"text": "made directly in label studio"})  # no item_id, not adopted yet
    body = gw.annotate(tid, choice("neg"))
    body["task"]["data"] = {"text": "made directly in label studio", "item_id": "nobody-knows"}
    assert env.loop.handle_event(pid, body)["outcomes"] == {"unknown_task": 1}
    assert env.loop.status(pid)["queue"]["needs_reconcile"] is True
    summary = env.loop.reconcile(pid)
    assert summary["outcomes"]["created"] == 1 and summary["tasks"]["adopted"] == 1
    assert env.store.item_by_ext_task(pid, tid).item_id == f"ls-{tid}"
    assert env.loop.status(pid)["queue"]["needs_reconcile"] is False


def test_reconcile_lists_only_the_tasks_created_since_the_newest_known_one(cls_project: SimpleNamespace) -> None:
    env = cls_project
    pid, gw = env.project.id, env.gw
    env.loop.reconcile(pid)
    gw.calls.clear()
    tid = gw.add_task(env.ls_id, {"text": "made directly in label studio"})
    summary = env.loop.reconcile(pid)
    assert summary["tasks"]["adopted"] == 1 and env.store.item_by_ext_task(pid, tid).item_id == f"ls-{tid}"
    assert "tasks_after" in gw.calls and "list_tasks" not in gw.calls  # not every task of the project


def test_reconcile_lists_every_task_when_the_count_does_not_add_up(cls_project: SimpleNamespace) -> None:
    """A task Label Studio holds below the newest id al-loop knows (made between two of al-loop's imports, its
    webhook lost) is not 'after' anything: the task count shows it, and the full listing adopts it."""
    env = cls_project
    pid, gw = env.project.id, env.gw
    env.loop.reconcile(pid)
    hidden = gw.add_task(env.ls_id, {"text": "made in between"})
    # then al-loop's own import made the next task: al-loop knows a newer task than the hidden one
    env.store.add_items(pid, [Example(ItemId("late"), "imported by al-loop after it")], "pool")
    late = gw.add_task(env.ls_id, {"text": "imported by al-loop after it", "item_id": "late"})
    env.store.set_ext_task_ids(pid, {"late": late})
    gw.calls.clear()
    summary = env.loop.reconcile(pid)
    assert summary["tasks"]["adopted"] == 1 and "list_tasks" in gw.calls
    assert env.store.item_by_ext_task(pid, hidden).item_id == f"ls-{hidden}"


def test_tasks_created_event_adopts_tasks(cls_project: SimpleNamespace) -> None:
    env = cls_project
    tid = env.gw.add_task(env.ls_id, {"text": "uploaded through the UI"})
    body = {"action": "TASKS_CREATED", "tasks": [{"id": tid, "data": {"text": "uploaded through the UI"}}],
            "project": {"id": env.ls_id}}
    out = env.loop.handle_event(env.project.id, body)
    assert out["outcomes"] == {"tasks_mapped": 1}
    annotated = env.gw.annotate(tid, choice("pos"))
    assert env.loop.handle_event(env.project.id, annotated)["outcomes"] == {"created": 1}


def test_bad_payloads_and_foreign_projects_never_raise(cls_project: SimpleNamespace) -> None:
    env = cls_project
    assert env.loop.handle_event(env.project.id, {"no": "action"})["status"] == "rejected"
    assert env.loop.handle_event(env.project.id, {"action": "ANNOTATION_CREATED", "project": {"id": env.ls_id}}
                                 )["status"] == "rejected"
    other = env.gw.annotate(env.gw.task_of(env.ls_id, "i0"), choice("pos"))
    other["project"]["id"] = env.ls_id + 100
    assert env.loop.handle_event(env.project.id, other)["status"] == "ignored"
    assert env.loop.handle_event(env.project.id, {"action": "LABEL_LINK_CREATED", "project": {"id": env.ls_id}}
                                 )["status"] == "ignored"


def test_project_updated_with_other_labels_is_flagged(cls_project: SimpleNamespace) -> None:
    env = cls_project
    new_xml = build_label_config(env.project.schema.build("classification", ["pos", "neg", "mixed"]))
    env.loop.handle_event(env.project.id, {"action": "PROJECT_UPDATED",
                                           "project": {"id": env.ls_id, "label_config": new_xml}})
    warning = env.loop.status(env.project.id)["label_studio"]["config_warning"]
    assert "mixed" in warning
    # renaming tags with the same labels is followed silently
    same = build_label_config(env.project.schema, from_name="sentiment")
    env.loop.handle_event(env.project.id, {"action": "PROJECT_UPDATED", "project": {"id": env.ls_id,
                                                                                     "label_config": same}})
    project = env.store.get_project(env.project.id)
    link = env.store.get_link(project.id)
    assert link.label_config == same and link.config_warning is None
    body = env.gw.annotate(env.gw.task_of(env.ls_id, "i0"), choice("pos", from_name="sentiment"))
    assert env.loop.handle_event(env.project.id, body)["outcomes"] == {"created": 1}


# ---------------------------------------------------------------------------- events: NER
NER_TEXTS = ["patients with cancer and flu", "no disease here", "flu again", "cancer cancer"]


def test_ner_spans_checked_against_the_text(env: SimpleNamespace) -> None:
    env = ner_env(env, NER_TEXTS)
    pid, gw = env.project.id, env.gw
    t0 = gw.task_of(env.ls_id, "n0")
    text = NER_TEXTS[0]
    good = gw.annotate(t0, [span(14, 20, "Disease", text), span(25, 28, "Disease", text)])
    assert env.loop.handle_event(pid, good)["outcomes"] == {"created": 1}
    overlapping = gw.annotate(gw.task_of(env.ls_id, "n2"), [span(0, 3, "Disease", "flu again"),
                                                           span(1, 5, "Disease", "flu again")])
    outside = gw.annotate(gw.task_of(env.ls_id, "n3"), [span(7, 40, "Disease", "cancer cancer")])
    unknown = gw.annotate(gw.task_of(env.ls_id, "n3"), [span(0, 6, "Gene", "cancer cancer")])
    for body, error in ((overlapping, "overlap"), (outside, "outside"), (unknown, "unknown label")):
        assert env.loop.handle_event(pid, body)["outcomes"] == {"rejected": 1}
        assert error in env.loop.status(pid)["rejected"][-1]["error"]
    types = [r["type"] for r in env.loop.status(pid)["rejected"]]
    assert types == ["AlignmentError", "AlignmentError", "UnknownLabelError"]
    # no entity at all is a valid NER label
    none = gw.annotate(gw.task_of(env.ls_id, "n1"), [])
    assert env.loop.handle_event(pid, none)["outcomes"] == {"created": 1}
    labelled = {e.item_id: e for e in env.store.labelled_examples(pid)}
    assert labelled["n0"].spans == (Span(14, 20, "Disease"), Span(25, 28, "Disease"))
    assert labelled["n1"].spans == ()


def test_ner_annotation_on_empty_text_is_rejected(env: SimpleNamespace) -> None:
    env = ner_env(env, NER_TEXTS)
    pid = env.project.id
    env.store.add_items(pid, [Example(ItemId("empty"), "")])  # e.g. adopted from Label Studio
    tid = env.gw.add_task(env.ls_id, {"text": "", "item_id": "empty"})
    env.store.set_ext_task_ids(pid, {"empty": tid})
    body = env.gw.annotate(tid, [span(0, 3, "Disease", "")])
    assert env.loop.handle_event(pid, body)["outcomes"] == {"rejected": 1}
    assert env.loop.handle_event(pid, env.gw.annotate(tid, []))["outcomes"] == {"created": 1}


def test_ner_text_mismatch_is_rejected(env: SimpleNamespace) -> None:
    env = ner_env(env, NER_TEXTS)
    t0 = env.gw.task_of(env.ls_id, "n0")
    body = env.gw.annotate(t0, [span(0, 8, "Disease", "patients")])
    body["task"]["data"]["text"] = "edited in label studio"
    assert env.loop.handle_event(env.project.id, body)["outcomes"] == {"rejected": 1}


# ---------------------------------------------------------------------------- rounds and pushes
def run_cold_round(env: SimpleNamespace) -> Any:
    rnd = env.loop.request_round(env.project.id)
    done = env.store.get_round(rnd.id)
    assert done.status == "succeeded", done.error
    return done


def label_selected(env: SimpleNamespace, round_id: int) -> None:
    for s in env.store.get_scores(round_id, selected_only=True):
        body = env.gw.annotate(env.gw.task_of(env.ls_id, s.item_id), choice(gold_label(s.item_id)))
        env.loop.handle_event(env.project.id, body)


def check_push(env: SimpleNamespace, rnd: Any) -> list[dict[str, Any]]:
    preds = env.gw.predictions_of(env.ls_id, rnd.version_tag)
    scores = env.store.get_scores(rnd.id)
    assert len(preds) == len(scores)
    task_ids = [p["task"] for p in preds]
    assert len(set(task_ids)) == len(task_ids)  # exactly one prediction per task
    by_task = {p["task"]: p for p in preds}
    ordered = [by_task[env.gw.task_of(env.ls_id, s.item_id)] for s in scores]  # rank order
    priorities = [p["score"] for p in ordered]
    assert priorities[0] == 0.0 and priorities == sorted(priorities) and len(set(priorities)) == len(priorities)
    assert priorities == [i / len(scores) for i in range(len(scores))]
    assert {p["model_version"] for p in preds} == {rnd.version_tag}
    ls = env.gw.projects[env.ls_id]
    assert ls["model_version"] == rnd.version_tag and ls["sampling"] == UNCERTAINTY_SAMPLING
    return ordered


def test_cold_round_pushes_empty_predictions_in_rank_order(cls_project: SimpleNamespace) -> None:
    env = cls_project
    rnd = run_cold_round(env)
    assert rnd.push_status == "done" and "cold" in rnd.version_tag
    ordered = check_push(env, rnd)
    assert all(p["result"] == [] for p in ordered)
    assert rnd.report["push"]["imported"] == 20 and rnd.report["push"]["expected"] == 20
    assert env.loop.status(env.project.id)["label_studio"]["model_version"] == rnd.version_tag


def test_trained_round_pushes_model_predictions(cls_project: SimpleNamespace) -> None:
    env = cls_project
    r0 = run_cold_round(env)
    label_selected(env, r0.id)
    r1 = env.store.get_round(env.loop.request_round(env.project.id).id)
    assert r1.status == "succeeded" and r1.n_labels == 5 and r1.model_version_id is not None
    ordered = check_push(env, r1)
    assert all(p["result"] and p["result"][0]["type"] == "choices" for p in ordered)
    assert all(p["result"][0]["value"]["choices"][0] in ("pos", "neg") for p in ordered)
    assert all(p["result"][0]["from_name"] == "label" and p["result"][0]["to_name"] == "text" for p in ordered)


def test_push_is_idempotent(cls_project: SimpleNamespace) -> None:
    env = cls_project
    rnd = run_cold_round(env)
    before = len(env.gw.predictions)
    again = env.loop.push_round(rnd.id)
    env.loop.push_round(rnd.id)
    assert again.push_status == "done" and len(env.gw.predictions) == before
    check_push(env, rnd)


def test_label_studio_down_during_push_keeps_round_and_retry_succeeds(cls_project: SimpleNamespace) -> None:
    env = cls_project
    env.gw.down = True
    rnd = env.loop.request_round(env.project.id)  # reconcile fails (logged), round runs, push fails
    done = env.store.get_round(rnd.id)
    assert done.status == "succeeded" and done.push_status == "failed"
    assert "LabelStudioUnavailable" in done.report["push"]["error"]
    assert len(env.store.get_scores(rnd.id)) == 20
    assert env.loop.status(env.project.id)["queue"]["pushes_outstanding"][0]["round"] == 0
    with pytest.raises(LabelStudioUnavailable):
        env.loop.push_round(rnd.id)  # what the worker retries with backoff
    env.gw.down = False
    assert env.loop.push_round(rnd.id).push_status == "done"
    check_push(env, env.store.get_round(rnd.id))
    assert env.loop.status(env.project.id)["queue"]["pushes_outstanding"] == []


@pytest.mark.parametrize("failure", ["down", "applied-then-down"])
def test_interrupted_push_resumes_without_duplicates(cls_project: SimpleNamespace, monkeypatch: pytest.MonkeyPatch,
                                                     failure: str) -> None:
    env = cls_project
    monkeypatch.setattr(publishing, "PREDICTION_CHUNK", 6)
    env.gw.fail_prediction_imports = ["ok", failure]
    rnd = env.loop.request_round(env.project.id)
    assert env.store.get_round(rnd.id).push_status == "failed"
    assert env.gw.projects[env.ls_id]["sampling"] != UNCERTAINTY_SAMPLING
    assert env.loop.push_round(rnd.id).push_status == "done"
    check_push(env, env.store.get_round(rnd.id))


def test_an_import_applied_after_the_client_gave_up_leaves_no_duplicates(cls_project: SimpleNamespace,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Label Studio applies a timed-out import only after the retry has read its count: the retry imports the
    chunk again, and the push's check by count finds the duplicates and deletes them."""
    env = cls_project
    monkeypatch.setattr(publishing, "PREDICTION_CHUNK", 6)
    env.gw.fail_prediction_imports = ["ok", "applied-late"]
    rnd = env.loop.request_round(env.project.id)
    assert env.store.get_round(rnd.id).push_status == "failed"
    done = env.loop.push_round(rnd.id)
    assert done.push_status == "done"
    assert done.report["push"]["removed_duplicates"] == 6
    assert "delete_prediction" in env.gw.calls
    check_push(env, env.store.get_round(rnd.id))


def test_two_pushes_of_one_round_at_the_same_time_leave_one_prediction_per_task(cls_project: SimpleNamespace) -> None:
    """A second execution of the push (a redelivered task beside the autoretry) runs to the end while the first
    one's import is in flight: both import everything; whichever finishes last removes the duplicates."""
    env = cls_project
    env.gw.down = True
    rnd = env.loop.request_round(env.project.id)
    env.gw.down = False
    second: list[Any] = []
    env.gw.during_import = lambda: second.append(env.loop.push_round(rnd.id))
    assert env.loop.push_round(rnd.id).push_status == "done"
    assert second[0].push_status == "done"
    check_push(env, env.store.get_round(rnd.id))


def test_predictions_made_earlier_through_predict_are_not_mistaken_for_a_push(cls_project: SimpleNamespace) -> None:
    env = cls_project
    rnd = env.rounds.run_round(env.rounds.create_round(env.project.id).id).round
    # Label Studio stored one /predict answer carrying the same model version before the push
    env.gw.predictions.append({"task": env.gw.task_of(env.ls_id, "i0"), "model_version": rnd.version_tag,
                               "score": 0.9, "result": [], "project": env.ls_id})
    env.loop.push_round(rnd.id)
    assert len(env.gw.predictions_of(env.ls_id, rnd.version_tag)) == 21


def test_older_round_push_never_rolls_the_queue_back(cls_project: SimpleNamespace) -> None:
    env = cls_project
    env.gw.down = True
    r0 = env.loop.request_round(env.project.id)
    env.gw.down = False
    label_selected(env, r0.id)
    r1 = env.store.get_round(env.loop.request_round(env.project.id).id)
    assert r1.push_status == "done"
    assert env.loop.push_round(r0.id).push_status == "superseded"
    assert env.gw.projects[env.ls_id]["model_version"] == r1.version_tag
    assert env.gw.predictions_of(env.ls_id, env.store.get_round(r0.id).version_tag) == []


def test_push_of_unfinished_round_conflicts(cls_project: SimpleNamespace) -> None:
    env = cls_project
    rnd = env.rounds.create_round(env.project.id)
    with pytest.raises(ConflictError):
        env.loop.push_round(rnd.id)


def test_start_training_event_runs_a_round(cls_project: SimpleNamespace) -> None:
    env = cls_project
    body = {"action": "START_TRAINING", "project": {"id": env.ls_id, "title": "sentiment"}}
    out = env.loop.handle_event(env.project.id, body)
    rnd = env.store.get_round(out["round_id"])
    assert rnd.trigger == "label_studio" and rnd.status == "succeeded" and rnd.push_status == "done"


def test_start_training_while_a_round_is_active_is_ignored(cls_project: SimpleNamespace) -> None:
    env = cls_project
    active = env.rounds.create_round(env.project.id)
    body = {"action": "START_TRAINING", "project": {"id": env.ls_id}}
    out = env.loop.handle_event(env.project.id, body)
    assert out["status"] == "processed" and out["round_id"] is None
    assert [r.id for r in env.store.list_rounds(env.project.id)] == [active.id]
    with pytest.raises(ConflictError):
        env.loop.request_round(env.project.id)


def test_policy_starts_a_round_after_retrain_every_labels(cls_project: SimpleNamespace) -> None:
    env = cls_project
    env.store.update_project(env.project.id, loop=LoopConfig(strategy="least_confidence", batch_size=4, seed_size=5,
                                                             retrain_every=3))
    outs = []
    for item in ("i0", "i1", "i2"):
        body = env.gw.annotate(env.gw.task_of(env.ls_id, item), choice(gold_label(item)))
        outs.append(env.loop.handle_event(env.project.id, body))
    assert [o["round_id"] is not None for o in outs] == [False, False, True]
    rnd = env.store.get_round(outs[-1]["round_id"])
    assert rnd.trigger == "policy" and rnd.status == "succeeded" and rnd.n_labels == 3
    assert ("run_round", (env.project.id, rnd.id)) in env.dispatcher.calls
    assert ("push_round", (rnd.id,)) in env.dispatcher.calls
    # skipped annotations do not count towards the policy
    body = env.gw.annotate(env.gw.task_of(env.ls_id, "i5"), [], was_cancelled=True)
    assert env.loop.handle_event(env.project.id, body)["round_id"] is None


def test_execute_round_reconciles_first(cls_project: SimpleNamespace) -> None:
    env = cls_project
    r0 = run_cold_round(env)
    # annotations whose webhooks were lost: only Label Studio knows them
    for s in env.store.get_scores(r0.id, selected_only=True):
        env.gw.annotate(env.gw.task_of(env.ls_id, s.item_id), choice(gold_label(s.item_id)))
    assert env.store.labelled_examples(env.project.id) == []
    r1 = env.store.get_round(env.loop.request_round(env.project.id).id)
    assert r1.status == "succeeded" and r1.n_labels == 5


def test_execute_round_is_idempotent_and_redispatches_a_lost_push(cls_project: SimpleNamespace) -> None:
    env = cls_project
    rnd = env.rounds.run_round(env.rounds.create_round(env.project.id).id).round
    assert rnd.push_status == "pending"  # e.g. the worker died before the push was queued
    assert env.loop.execute_round(rnd.id).push_status == "done"
    n = len(env.gw.predictions)
    assert env.loop.execute_round(rnd.id).push_status == "done" and len(env.gw.predictions) == n


def test_reconcile_records_missing_and_deletes_vanished_annotations(cls_project: SimpleNamespace) -> None:
    env = cls_project
    pid, gw = env.project.id, env.gw
    kept = gw.annotate(gw.task_of(env.ls_id, "i0"), choice("pos"))
    gone = gw.annotate(gw.task_of(env.ls_id, "i1"), choice("pos"))
    env.loop.handle_event(pid, kept)
    env.loop.handle_event(pid, gone)
    gw.delete_annotation(gone["annotation"]["id"])  # its webhook was lost
    gw.annotate(gw.task_of(env.ls_id, "i3"), choice("neg"))  # webhook lost
    gw.annotate(gw.task_of(env.ls_id, "i4"), [], was_cancelled=True)  # webhook lost
    summary = env.loop.reconcile(pid)
    assert summary["outcomes"] == {"duplicate": 1, "created": 1, "skipped": 1, "deleted": 1}
    assert sorted(e.item_id for e in env.store.labelled_examples(pid)) == ["i0", "i3"]
    assert labels_of(env)[annotation_key(gone["annotation"]["id"])].deleted
    assert env.loop.status(pid)["queue"]["last_reconcile"]["outcomes"]["created"] == 1
    # idempotent
    assert env.loop.reconcile(pid)["outcomes"] == {"duplicate": 3, "deleted": 0}


def test_request_round_that_cannot_be_queued_does_not_block_the_project(cls_project: SimpleNamespace) -> None:
    env = cls_project

    class Broken(InlineDispatcher):
        def run_round(self, project_id: int, round_id: int) -> None:
            raise ConnectionError("broker down")

    env.loop.dispatcher = Broken(env.loop)
    with pytest.raises(ConnectionError):
        env.loop.request_round(env.project.id)
    rounds = env.store.list_rounds(env.project.id)
    assert rounds[0].status == "cancelled" and "broker down" in rounds[0].error
    env.loop.dispatcher = InlineDispatcher(env.loop)
    assert env.loop.request_round(env.project.id).index == 1


def test_status_summarises_the_project(cls_project: SimpleNamespace) -> None:
    env = cls_project
    run_cold_round(env)
    body = env.gw.annotate(env.gw.task_of(env.ls_id, "i0"), choice("pos"))
    env.loop.handle_event(env.project.id, body)
    st = env.loop.status(env.project.id)
    assert st["project"]["name"] == "sentiment" and st["items"] == {"pool": 20, "test": 0, "unlabelled": 19}
    assert st["labels"]["labelled"] == 1 and st["new_labels_since_last_round"] == 1
    assert st["active_round"] is None and st["last_round"]["index"] == 0 and st["rounds"] == 1
    assert st["current_version"] is None
    assert st["label_studio"]["project_id"] == env.ls_id and st["label_studio"]["ml_backend"]["status"] == "connected"
    json.dumps(st)  # JSON-ready


def test_ner_round_pushes_span_predictions(env: SimpleNamespace) -> None:
    texts = [f"patients with cancer type {i} and flu" for i in range(8)]
    env = ner_env(env, texts)
    r0 = run_cold_round(env)
    for s in env.store.get_scores(r0.id, selected_only=True):
        text = texts[int(s.item_id[1:])]
        start = text.index("cancer")
        result = [span(start, start + 6, "Disease", text), span(len(text) - 3, len(text), "Disease", text)]
        body = env.gw.annotate(env.gw.task_of(env.ls_id, s.item_id), result)
        assert env.loop.handle_event(env.project.id, body)["outcomes"] == {"created": 1}
    r1 = env.store.get_round(env.loop.request_round(env.project.id).id)
    assert r1.status == "succeeded", r1.error
    ordered = check_push(env, r1)
    results = [r for p in ordered for r in p["result"]]
    assert results and all(r["type"] == "labels" and r["value"]["labels"] == ["Disease"] for r in results)
    for p in ordered:
        task = env.gw.tasks[p["task"]]
        for r in p["result"]:
            assert task["data"]["text"][r["value"]["start"]:r["value"]["end"]] == r["value"]["text"]


# ---------------------------------------------------------------------------- dispatchers
def test_inline_dispatcher_must_be_bound() -> None:
    with pytest.raises(RuntimeError):
        InlineDispatcher().reconcile(1)
    assert isinstance(InlineDispatcher(), Dispatcher)


def test_thread_dispatcher_runs_in_order_and_survives_errors(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, Any]] = []

    class Recorder:
        def ingest_event(self, project_id: int, payload: dict[str, Any]) -> None:
            if payload.get("boom"):
                raise RuntimeError("secret payload content")
            seen.append(("ingest", project_id))

        def run_round(self, project_id: int, round_id: int) -> None:
            seen.append(("run", round_id))

        def push_round(self, round_id: int) -> None:
            seen.append(("push", round_id))

        def reconcile(self, project_id: int) -> None:
            seen.append(("reconcile", project_id))

    d = ThreadDispatcher(Recorder())
    with caplog.at_level(logging.ERROR):
        d.ingest_event(1, {"boom": True})
        d.ingest_event(1, {})
        d.run_round(1, 5)
        d.push_round(5)
        d.reconcile(1)
        d.join()
    assert seen == [("ingest", 1), ("run", 5), ("push", 5), ("reconcile", 1)]
    assert "background ingest_event [1] failed" in caplog.text
    d.close()


def test_a_crashing_reconcile_does_not_block_the_round(cls_project: SimpleNamespace,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    env = cls_project

    def crash(project_id: int) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(env.loop, "reconcile", crash)
    rnd = env.store.get_round(env.loop.request_round(env.project.id).id)
    assert rnd.status == "succeeded" and rnd.push_status == "done"


def test_label_studio_titles_fit_its_limits(env: SimpleNamespace) -> None:
    short = env.loop.create_project(cls_spec(name="ab"))
    long = env.loop.create_project(cls_spec(name="x" * 120))
    assert env.gw.projects[env.store.get_link(short.id).ls_project_id]["title"] == "al-loop ab"
    assert env.gw.projects[env.store.get_link(long.id).ls_project_id]["title"] == "x" * 50
    assert long.name == "x" * 120
