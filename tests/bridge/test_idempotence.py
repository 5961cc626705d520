"""Idempotent ingest that does not lean on timestamps (issue 10, item 4).

Unit tests drive ``LoopService.handle_event`` with the fake Label Studio of ``test_loop`` (no
network); the rules themselves are the pure ``al_loop.store.versions.judge``. The last test sends
the same events through the real Redis broker and a real ``al-loop worker --queues default``.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from al_loop.data.schema import LabelSchema
from al_loop.store import Store
from al_loop.store.versions import LabelOutcome, content_key, judge
from al_loop.types import Example, ItemId
from annotator_bridge.labelstudio.convert import AnnotationEvent
from tests.bridge import conftest_services, test_loop
from tests.bridge.test_loop import choice, cls_items, labels_of

env = test_loop.env  # fixtures: a LoopService over the fake Label Studio, and a classification project in it
cls_project = test_loop.cls_project

T1 = datetime(2026, 11, 25, 8, 0, 0)
T2 = T1 + timedelta(minutes=5)


def _event(env: SimpleNamespace, item: str, label: str, *, updated_at: str | None, ann_id: int | None = None,
           action: str = "ANNOTATION_CREATED") -> dict[str, Any]:
    body = env.gw.annotate(env.gw.task_of(env.ls_id, item), choice(label), annotation_id=ann_id, action=action)
    if updated_at is None:
        del body["annotation"]["updated_at"]
    else:
        body["annotation"]["updated_at"] = updated_at
    return body


def _outcome(env: SimpleNamespace, body: dict[str, Any]) -> dict[str, int]:
    return dict(env.loop.handle_event(env.project.id, body)["outcomes"])


# ------------------------------------------------------------------ the rules (pure)
@pytest.mark.parametrize(("stored", "deleted", "same", "incoming", "expected", "records"), [
    (T1, False, True, T1, "duplicate", False),
    (T2, False, False, T1, "stale", False),
    (T1, False, False, T2, "updated", False),
    (T1, False, True, T2, "duplicate", True),   # re-saved unchanged: the time moves, the label does not
    (T1, True, True, T1, "duplicate", False),   # redelivered create after a delete
    (T1, True, True, T2, "updated", False),     # strictly newer: the delete is lifted
    (T1, True, False, None, "stale", False),    # no time: a tombstone stays
    (T1, True, True, None, "duplicate", False),
    (None, True, False, T2, "stale", False),    # nothing to be newer than: the tombstone stays
    (None, False, True, None, "duplicate", False),
    (None, False, False, None, "updated", False),
    (T1, False, False, None, "updated", False),
    (None, False, True, T1, "duplicate", True),  # the first time seen is recorded, no bump
    (None, False, False, T1, "updated", False),
])
def test_judge_rules(stored: datetime | None, deleted: bool, same: bool, incoming: datetime | None,
                     expected: str, records: bool) -> None:
    verdict = judge(stored_version=stored, deleted=deleted, same_content=same, incoming_version=incoming)
    assert verdict.outcome is LabelOutcome(expected) and verdict.record_version is records


def test_content_ignores_label_and_span_order() -> None:
    spans = [{"start": 0, "end": 3, "label": "A"}, {"start": 5, "end": 9, "label": "B"}]
    assert content_key({"spans": spans}, False) == content_key({"spans": spans[::-1]}, False)
    assert content_key({"labels": ["a", "b"]}, False) == content_key({"labels": ["b", "a"]}, False)
    assert content_key({"labels": ["a"]}, False) != content_key({"labels": ["b"]}, False)
    assert content_key({"labels": ["a"]}, True) == content_key(None, True) != content_key(None, False)


# ------------------------------------------------------------------ webhooks without a usable updated_at
def test_three_identical_events_without_updated_at_are_one_label(cls_project: SimpleNamespace) -> None:
    env = cls_project
    body = _event(env, "i0", "pos", updated_at=None)
    assert [_outcome(env, body) for _ in range(3)] == [{"created": 1}, {"duplicate": 1}, {"duplicate": 1}]
    records = env.store.label_records(env.project.id)
    assert len(records) == 1 and records[0].payload == {"labels": ["pos"]} and records[0].version_at is None
    assert env.store.new_labels_since_last_round(env.project.id) == 1


def test_other_content_without_updated_at_is_an_update(cls_project: SimpleNamespace) -> None:
    env = cls_project
    first = _event(env, "i0", "pos", updated_at=None)
    ann = first["annotation"]["id"]
    assert _outcome(env, first) == {"created": 1}
    assert _outcome(env, _event(env, "i0", "neg", updated_at=None, ann_id=ann,
                                action="ANNOTATION_UPDATED")) == {"updated": 1}
    assert [e.labels for e in env.store.labelled_examples(env.project.id)] == [("neg",)]


def test_an_unreadable_updated_at_is_compared_by_content(cls_project: SimpleNamespace,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    env = cls_project
    body = _event(env, "i0", "pos", updated_at="yesterday")
    with caplog.at_level(logging.WARNING, logger="annotator_bridge.loop"):
        assert [_outcome(env, body) for _ in range(2)] == [{"created": 1}, {"duplicate": 1}]
    assert "unreadable updated_at" in caplog.text and "compared by content" in caplog.text


def test_an_update_without_a_time_keeps_the_newest_time(cls_project: SimpleNamespace) -> None:
    """The old timed version redelivered after an untimed update cannot roll the label back."""
    env = cls_project
    old = _event(env, "i0", "pos", updated_at="2026-11-25T08:00:00Z")
    ann = old["annotation"]["id"]
    assert _outcome(env, old) == {"created": 1}
    assert _outcome(env, _event(env, "i0", "neg", updated_at=None, ann_id=ann)) == {"updated": 1}
    assert _outcome(env, old) == {"duplicate": 1}
    rec = labels_of(env)[f"ls:{ann}"]
    assert rec.payload == {"labels": ["neg"]} and rec.version_at == T1


# ------------------------------------------------------------------ deletes are final
@pytest.mark.parametrize("updated_at", [None, "yesterday", "2026-11-25T08:00:00Z"])
def test_a_redelivered_event_never_revives_a_deleted_annotation(cls_project: SimpleNamespace,
                                                                updated_at: str | None) -> None:
    env = cls_project
    body = _event(env, "i0", "pos", updated_at=updated_at)
    ann = body["annotation"]["id"]
    assert _outcome(env, body) == {"created": 1}
    assert _outcome(env, env.gw.delete_annotation(ann)) == {"deleted": 1}
    assert _outcome(env, body) == {"duplicate": 1}
    other = _event(env, "i0", "neg", updated_at=None if updated_at != "yesterday" else "today", ann_id=ann)
    assert _outcome(env, other) == {"stale": 1}
    assert labels_of(env)[f"ls:{ann}"].deleted
    assert env.store.labelled_examples(env.project.id) == []
    assert "i0" in env.store.unlabelled_item_ids(env.project.id)


def test_a_strictly_newer_version_lifts_a_delete(cls_project: SimpleNamespace) -> None:
    env = cls_project
    body = _event(env, "i0", "pos", updated_at="2026-11-25T08:00:00Z")
    ann = body["annotation"]["id"]
    _outcome(env, body)
    _outcome(env, env.gw.delete_annotation(ann))
    newer = _event(env, "i0", "neg", updated_at="2026-11-25T08:05:00Z", ann_id=ann, action="ANNOTATION_UPDATED")
    assert _outcome(env, newer) == {"updated": 1}
    rec = labels_of(env)[f"ls:{ann}"]
    assert not rec.deleted and rec.payload == {"labels": ["neg"]} and rec.version_at == T2


def test_reconcile_after_untimed_events_records_nothing_twice(cls_project: SimpleNamespace) -> None:
    """Label Studio's own listing (with updated_at) after untimed webhooks of the same content: duplicates."""
    env = cls_project
    body = _event(env, "i0", "pos", updated_at=None)
    env.gw.tasks[body["task"]["id"]]["annotations"][-1]["updated_at"] = "2026-11-25T08:00:00Z"
    _outcome(env, body)
    assert env.loop.reconcile(env.project.id)["outcomes"] == {"duplicate": 1, "deleted": 0}
    assert labels_of(env)[f"ls:{body['annotation']['id']}"].version_at == T1
    assert env.loop.reconcile(env.project.id)["outcomes"] == {"duplicate": 1, "deleted": 0}


# ------------------------------------------------------------------ an item and its task id: one transaction
def test_tasks_created_writes_the_item_and_its_task_id_together(cls_project: SimpleNamespace,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    env = cls_project
    tid = env.gw.add_task(env.ls_id, {"text": "uploaded through the UI"})
    body = {"action": "TASKS_CREATED", "tasks": [{"id": tid, "data": {"text": "uploaded through the UI"}}],
            "project": {"id": env.ls_id}}
    n_items = env.store.count_items(env.project.id)

    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the database went away between the two writes")

    monkeypatch.setattr(env.store, "set_ext_task_ids", fail)
    with pytest.raises(RuntimeError, match="between the two writes"):
        env.loop.handle_event(env.project.id, body)
    assert env.store.count_items(env.project.id) == n_items  # the item was rolled back with its task id
    assert env.store.item_by_ext_task(env.project.id, tid) is None
    monkeypatch.undo()
    assert _outcome(env, body) == {"tasks_mapped": 1}  # the redelivered event (worker retry) adopts it
    assert env.store.item_by_ext_task(env.project.id, tid).item_id == f"ls-{tid}"


def test_out_of_range_ids_write_nothing_and_never_raise(cls_project: SimpleNamespace) -> None:
    """Refused when the webhook is parsed (status "rejected") or when it is applied (nothing mapped): nothing lands."""
    env = cls_project
    huge = 2**70
    body = {"action": "TASKS_CREATED", "tasks": [{"id": huge, "data": {"text": "an id no database holds"}}],
            "project": {"id": env.ls_id}}
    n_items = env.store.count_items(env.project.id)
    out = env.loop.handle_event(env.project.id, body)
    assert out["status"] == "rejected" or out["outcomes"] == {"tasks_mapped": 0}
    assert env.store.count_items(env.project.id) == n_items
    ann = _event(env, "i0", "pos", updated_at=None)
    ann["annotation"]["id"] = huge
    out = env.loop.handle_event(env.project.id, ann)
    assert out["status"] == "rejected" or out["outcomes"] == {"rejected": 1}
    assert env.store.label_records(env.project.id) == []
    # past the parser too: the loop's own checks (the store cannot hold such ids)
    assert env.loop.links.adopt_tasks(env.project, [{"id": huge, "data": {"text": "x"}}]) == 0
    assert env.store.count_items(env.project.id) == n_items
    cfg = env.loop.links.label_config(env.project)
    for task_id, ann_id in ((huge, 5), (5, huge)):
        ev = AnnotationEvent(action="ANNOTATION_CREATED", project_ls_id=env.ls_id, task_id=task_id,
                             annotation_id=ann_id, updated_at=None, result=tuple(choice("pos")), was_cancelled=False,
                             completed_by=None, task_data={"text": "x", "item_id": "i0"})
        assert env.loop.annotations.ingest(env.project, cfg, ev) == "rejected"
    assert env.store.label_records(env.project.id) == [] and env.store.count_rejected(env.project.id) == 0


# ------------------------------------------------------------------ the schema migration
def test_a_database_without_version_at_is_migrated_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    p = store.create_project("p", LabelSchema.build("classification", ["pos", "neg"]))
    store.add_items(p.id, [Example(ItemId("a"), "x")])
    store.record_label(p.id, "a", "ls:1", payload={"labels": ["pos"]}, source="ls", updated_at=T1)
    store.dispose()
    with sqlite3.connect(tmp_path / "old.db") as conn:  # the table as databases before the column had it
        conn.execute("ALTER TABLE labels DROP COLUMN version_at")
        conn.execute("DROP TABLE alembic_version")  # and, like them, from before the migrations
    reopened = Store(url)
    assert reopened.label_records(p.id)[0].version_at == T1
    assert reopened.record_label(p.id, "a", "ls:1", payload={"labels": ["pos"]}, source="ls") == "duplicate"
    reopened.dispose()
    assert Store(url).label_records(p.id)[0].version_at == T1  # a second open changes nothing


# ------------------------------------------------------------------ through the real broker and worker
redis_server = conftest_services.redis_server


def _ls_event(item: Any, label: str, ann_id: int) -> dict[str, Any]:
    return {"action": "ANNOTATION_CREATED",
            "annotation": {"id": ann_id, "result": choice(label), "was_cancelled": False, "task": 7000 + ann_id,
                           "completed_by": 1},  # no updated_at
            "task": {"id": 7000 + ann_id, "data": {"text": item.text, "item_id": item.item_id}},
            "project": {"id": 999}}


def _broker_idle(url: str) -> bool:
    import redis

    r = redis.Redis.from_url(url)
    return r.llen("default") == 0 and r.hlen("unacked") == 0


@pytest.mark.integration
def test_untimed_events_and_a_delete_through_the_real_worker(redis_server: Any, tmp_path: Path) -> None:
    from al_loop.rounds import RoundService
    from annotator_bridge.loop import LoopService
    from annotator_bridge.settings import Settings
    from annotator_bridge.worker.celery_app import make_celery
    from annotator_bridge.worker.dispatcher import CeleryDispatcher

    env = conftest_services.al_loop_env(tmp_path, redis_server.url_for(5))
    settings = Settings.from_env(env)
    settings.ensure_dirs()
    store = Store(settings.database_url)
    dispatcher = CeleryDispatcher(make_celery(settings))
    loop = LoopService(store, None, RoundService(store), dispatcher, settings)
    project = loop.create_project({"name": "untimed", "task": "classification", "labels": ["pos", "neg"],
                                   "label_studio": False, "retrain_every": 0})
    loop.import_items(project.id, cls_items(4))
    item = store.get_items(project.id, ["i1"])[0]
    worker = conftest_services.start_worker(conftest_services.WORKER_DEFAULT_ARGS, env, tmp_path / "worker.log")
    try:
        body = _ls_event(item, "pos", 41)
        for _ in range(3):
            dispatcher.ingest_event(project.id, body)
        conftest_services.wait_until(lambda: store.label_records(project.id), 30, 0.05, "the label")
        dispatcher.ingest_event(project.id, {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 41}],
                                             "project": {"id": 999}})
        conftest_services.wait_until(lambda: store.label_records(project.id)[0].deleted, 30, 0.05, "the delete")
        dispatcher.ingest_event(project.id, body)  # redelivered after the delete
        marker = _ls_event(store.get_items(project.id, ["i2"])[0], "neg", 42)
        dispatcher.ingest_event(project.id, marker)  # the same queue, after the redelivery
        conftest_services.wait_until(lambda: len(store.label_records(project.id)) == 2, 30, 0.05, "the marker")
        conftest_services.wait_until(lambda: _broker_idle(settings.broker_url), 30, 0.05, "the queue to drain")
        records = {r.annotation_key: r for r in store.label_records(project.id)}
        assert set(records) == {"ls:41", "ls:42"} and records["ls:41"].deleted
        assert [e.item_id for e in store.labelled_examples(project.id)] == ["i2"]
    finally:
        worker.stop()
        dispatcher.close()
        store.dispose()
