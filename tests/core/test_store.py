from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from al_loop.data.schema import LabelSchema
from al_loop.errors import ConflictError, InvalidTransitionError, NotFoundError
from al_loop.rounds.states import RoundStatus, check_round_transition
from al_loop.store import Store
from al_loop.types import Example, ItemId, Span, TaskKind


@pytest.fixture
def store(database_url: str) -> Store:
    """A store on a fresh database: every test here runs on SQLite and on PostgreSQL (tests/conftest.py)."""
    return Store(database_url)


def _cls_project(store: Store, name: str = "p"):
    return store.create_project(name, LabelSchema.build("classification", ["pos", "neg"]))


def test_project_round_trip_and_unique_name(store: Store) -> None:
    p = _cls_project(store)
    assert store.get_project(p.id).labels == ("neg", "pos")
    assert p.schema.hash == store.get_project(p.id).schema.hash
    with pytest.raises(ConflictError):
        _cls_project(store)
    with pytest.raises(NotFoundError):
        store.get_project(999)
    assert store.get_link(p.id) is None


def test_label_studio_link_is_a_typed_record(store: Store) -> None:
    p = store.create_project("linked", LabelSchema.build("classification", ["pos", "neg"]), ls_project_id=7,
                             link={"url": "http://ls", "label_config": "<View/>", "attached": True})
    link = store.get_link(p.id)
    assert (link.ls_project_id, link.url, link.attached, link.needs_reconcile) == (7, "http://ls", True, False)
    assert store.find_link(7).project_id == p.id and store.find_link(8) is None
    link = store.update_link(p.id, needs_reconcile=True, ml_backend_status="connected", ml_backend_url="http://x",
                             ml_backend_id=3)
    assert link.needs_reconcile and link.ml_backend == {"status": "connected", "url": "http://x", "id": 3}
    with pytest.raises(AttributeError):
        store.update_link(p.id, rejected=[])
    with pytest.raises(ConflictError):  # one al-loop project per Label Studio project
        store.create_project("again", p.schema, ls_project_id=7)
    assert [q.name for q in store.list_projects()] == ["linked"]
    with pytest.raises(NotFoundError):
        store.update_link(_cls_project(store).id, needs_reconcile=True)


def test_rejected_annotations_are_rows_deduplicated_by_version(store: Store) -> None:
    p = _cls_project(store)
    args = {"task_id": 1, "item_id": "a", "error_type": "UnknownLabelError", "error": "unknown label 'x'"}
    assert store.reject_annotation(p.id, annotation_id=5, updated_at="t1", **args)
    assert not store.reject_annotation(p.id, annotation_id=5, updated_at="t1", **args)  # redelivered
    assert store.reject_annotation(p.id, annotation_id=5, updated_at="t2", **args)
    assert store.reject_annotation(p.id, annotation_id=6, updated_at=None, **args)
    assert not store.reject_annotation(p.id, annotation_id=6, updated_at=None, **args)
    assert store.count_rejected(p.id) == 3
    rows = store.rejected_annotations(p.id, limit=2)
    assert [(r.annotation_id, r.updated_at) for r in rows] == [(5, "t2"), (6, None)]
    assert rows[0].to_dict()["type"] == "UnknownLabelError"


def test_concurrent_rejections_are_never_lost(store: Store) -> None:
    """Threads rejecting annotations at once (as concurrent ingest does) each leave their row."""
    import threading

    p = _cls_project(store)
    start = threading.Barrier(8)

    def reject(worker: int) -> None:
        start.wait()
        for i in range(15):
            store.reject_annotation(p.id, annotation_id=worker * 100 + i, task_id=None, item_id=None,
                                    updated_at="t", error_type="E", error="bad")

    threads = [threading.Thread(target=reject, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_rejected(p.id) == 8 * 15


def test_statuses_are_enums_on_the_records(store: Store) -> None:
    from al_loop.states import PushStatus, RoundPhase, VersionStatus

    p = _cls_project(store)
    r = store.create_round(p.id, trigger="api", strategy="random", batch_size=5, seed=1)
    assert r.status is RoundStatus.PENDING and r.phase is RoundPhase.QUEUED and r.push_status is PushStatus.NONE
    with pytest.raises(InvalidTransitionError):
        store.update_round(r.id, push_status="done")  # nothing to push before the round succeeded
    with pytest.raises(ValueError):
        store.update_round(r.id, phase="nap")
    v = store.add_version(p.id, name="v", round_id=None, base_model="m", schema=p.schema, metrics={},
                          train_report={}, artifact_path="/a")
    assert v.status is VersionStatus.CANDIDATE


def test_simulations_are_kept_per_project(store: Store) -> None:
    p = _cls_project(store)
    sid = store.add_simulation(p.id, "sim", [{"strategy": "random", "round": 0, "labels": 10, "score": 0.5}])
    assert [s["id"] for s in store.list_simulations(p.id)] == [sid]
    with pytest.raises(NotFoundError):
        store.add_simulation(999, "sim", [])


def test_add_items_is_idempotent_and_reports_duplicate_texts(store: Store) -> None:
    p = _cls_project(store)
    rep = store.add_items(p.id, [Example(ItemId("a"), "hello world"), Example(ItemId("b"), "hello   world")])
    assert rep.added == 1 and rep.duplicate_texts == ["b"]
    rep = store.add_items(p.id, [Example(ItemId("a"), "hello world"), Example(ItemId("c"), "other")])
    assert rep.added == 1 and rep.existing == 1
    assert store.count_items(p.id) == 2
    assert [i.item_id for i in store.get_items(p.id, ["c", "a"])] == ["c", "a"]
    with pytest.raises(NotFoundError):
        store.get_items(p.id, ["zzz"])


def test_record_label_dedupes_and_ignores_out_of_order(store: Store) -> None:
    p = _cls_project(store)
    store.add_items(p.id, [Example(ItemId("a"), "x"), Example(ItemId("b"), "y")])
    t1 = datetime(2026, 1, 1, 12, 0, 0)
    t2 = t1 + timedelta(seconds=5)
    assert store.record_label(p.id, "a", "ls:1", payload={"labels": ["pos"]}, source="ls", updated_at=t1) == "created"
    assert store.record_label(p.id, "a", "ls:1", payload={"labels": ["pos"]}, source="ls", updated_at=t1) == "duplicate"
    assert store.record_label(p.id, "a", "ls:1", payload={"labels": ["neg"]}, source="ls", updated_at=t2) == "updated"
    assert store.record_label(p.id, "a", "ls:1", payload={"labels": ["pos"]}, source="ls", updated_at=t1) == "stale"
    assert [e.labels for e in store.labelled_examples(p.id)] == [("neg",)]
    with pytest.raises(NotFoundError):
        store.record_label(p.id, "nope", "ls:2", payload={"labels": ["pos"]}, source="ls")


def test_skipped_items_are_answered_but_not_trained_on(store: Store) -> None:
    p = _cls_project(store)
    store.add_items(p.id, [Example(ItemId("a"), "x"), Example(ItemId("b"), "y"), Example(ItemId("c"), "z")])
    store.record_label(p.id, "a", "ls:1", payload=None, skipped=True, source="ls")
    store.record_label(p.id, "b", "ls:2", payload={"labels": ["pos"]}, source="ls")
    assert [e.item_id for e in store.labelled_examples(p.id)] == ["b"]
    assert store.unlabelled_item_ids(p.id) == ["c"]
    stats = store.label_stats(p.id)
    assert stats["labelled"] == 1 and stats["skipped"] == 1 and stats["per_label"] == {"pos": 1}
    # deleting the label makes the item selectable again
    assert store.delete_labels(p.id, ["ls:2"]) == 1
    assert store.unlabelled_item_ids(p.id) == ["b", "c"]
    assert store.labelled_examples(p.id) == []


def test_ner_labels_round_trip(store: Store) -> None:
    p = store.create_project("ner", LabelSchema.build("ner", ["Disease"]))
    store.add_items(p.id, [Example(ItemId("a"), "breast cancer risk", spans=(Span(0, 13, "Disease"),))])
    assert store.get_items(p.id)[0].gold == {"spans": [{"start": 0, "end": 13, "label": "Disease"}]}
    store.record_label(p.id, "a", "k", payload={"spans": [{"start": 0, "end": 13, "label": "Disease"}]}, source="t")
    ex = store.labelled_examples(p.id)[0]
    assert ex.spans == (Span(0, 13, "Disease"),)
    assert store.label_stats(p.id)["tokens"] == 3


def test_one_active_round_per_project_and_claiming(store: Store) -> None:
    p = _cls_project(store)
    r0 = store.create_round(p.id, trigger="api", strategy="random", batch_size=5, seed=1)
    assert r0.index == 0 and r0.status is RoundStatus.PENDING
    with pytest.raises(ConflictError):
        store.create_round(p.id, trigger="api", strategy="random", batch_size=5, seed=1)
    claimed = store.claim_round(r0.id, "w1", timedelta(minutes=5))
    assert claimed.status == "running" and claimed.owner == "w1"
    with pytest.raises(ConflictError):  # another live worker owns it
        store.claim_round(r0.id, "w2", timedelta(minutes=5))
    # a dead worker's round (stale heartbeat) is taken over
    taken = store.claim_round(r0.id, "w2", timedelta(seconds=-1))
    assert taken.owner == "w2" and taken.attempts == 2
    store.update_round(r0.id, status=RoundStatus.SUCCEEDED)
    assert store.claim_round(r0.id, "w3", timedelta(minutes=5)) is None  # redelivered: nothing to do
    with pytest.raises(InvalidTransitionError):
        store.update_round(r0.id, status=RoundStatus.RUNNING)
    r1 = store.create_round(p.id, trigger="api", strategy="random", batch_size=5, seed=1)
    assert r1.index == 1


def test_state_machine_rejects_bad_transitions() -> None:
    assert check_round_transition("pending", "running") is RoundStatus.RUNNING
    for bad in [("pending", "succeeded"), ("succeeded", "running"), ("failed", "pending"), ("cancelled", "running")]:
        with pytest.raises(InvalidTransitionError):
            check_round_transition(*bad)


def test_promote_and_rollback(store: Store) -> None:
    p = _cls_project(store)
    schema = p.schema
    vs = [
        store.add_version(
            p.id,
            name=f"v{i}",
            round_id=None,
            base_model="m",
            schema=schema,
            metrics={"score": i},
            train_report={},
            artifact_path=f"/a/{i}",
        )
        for i in range(3)
    ]
    assert all(v.status == "candidate" for v in vs)
    with pytest.raises(ConflictError):
        store.rollback(p.id)
    store.promote(p.id, vs[0].id)
    store.promote(p.id, vs[1].id)
    store.promote(p.id, vs[2].id)
    assert store.promoted_version(p.id).name == "v2"
    assert store.rollback(p.id).name == "v1"
    assert store.rollback(p.id).name == "v0"
    with pytest.raises(ConflictError):
        store.rollback(p.id)
    statuses = {v.name: v.status for v in store.list_versions(p.id)}
    assert statuses == {"v0": "promoted", "v1": "archived", "v2": "archived"}


def test_new_labels_since_last_round(store: Store) -> None:
    clock = iter(datetime(2026, 1, 1) + timedelta(seconds=i) for i in range(1000))
    store.clock = lambda: next(clock)
    p = _cls_project(store)
    store.add_items(p.id, [Example(ItemId(str(i)), f"t{i}") for i in range(5)])
    store.record_label(p.id, "0", "k0", payload={"labels": ["pos"]}, source="t")
    assert store.new_labels_since_last_round(p.id) == 1
    store.create_round(p.id, trigger="api", strategy="random", batch_size=5, seed=1)
    assert store.new_labels_since_last_round(p.id) == 0
    store.record_label(p.id, "1", "k1", payload={"labels": ["pos"]}, source="t")
    assert store.new_labels_since_last_round(p.id) == 1


def test_task_kind_enum_round_trip(store: Store) -> None:
    p = store.create_project("n", LabelSchema.build(TaskKind.NER, ["A", "B"]))
    assert store.get_project(p.id).task is TaskKind.NER


def test_redelivered_event_does_not_revive_a_deleted_annotation(store: Store) -> None:
    p = _cls_project(store)
    store.add_items(p.id, [Example(ItemId("a"), "x")])
    t1 = datetime(2026, 1, 1, 12, 0, 0)
    store.record_label(p.id, "a", "ls:1", payload={"labels": ["pos"]}, source="ls", updated_at=t1)
    store.delete_labels(p.id, ["ls:1"])
    assert store.record_label(p.id, "a", "ls:1", payload={"labels": ["pos"]}, source="ls", updated_at=t1) == "duplicate"
    assert store.labelled_examples(p.id) == []
    later = t1 + timedelta(minutes=1)
    assert (
        store.record_label(p.id, "a", "ls:1", payload={"labels": ["neg"]}, source="ls", updated_at=later) == "updated"
    )
    assert [e.labels for e in store.labelled_examples(p.id)] == [("neg",)]


def _at_once(n: int, fn) -> list[object]:
    """Run ``fn(i)`` in ``n`` threads released together; their results or exceptions."""
    import threading

    start = threading.Barrier(n)
    out: list[object] = [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_round_requests_create_one_round(store: Store) -> None:
    """The "one active round per project" check under real concurrency (PostgreSQL: the project row lock)."""
    p = _cls_project(store)
    results = _at_once(8, lambda _i: store.create_round(p.id, trigger="api", strategy="random", batch_size=5, seed=1))
    created = [r for r in results if not isinstance(r, Exception)]
    assert len(created) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if r not in created), results
    assert [r.index for r in store.list_rounds(p.id)] == [0]


def test_concurrent_deliveries_of_one_annotation_store_it_once(store: Store) -> None:
    p = _cls_project(store)
    store.add_items(p.id, [Example(ItemId("a"), "x")])
    t1 = datetime(2026, 1, 1, 12, 0, 0)
    results = _at_once(8, lambda _i: store.record_label(p.id, "a", "ls:1", payload={"labels": ["pos"]}, source="ls",
                                                        updated_at=t1))
    assert sorted(map(str, results)) == ["created"] + ["duplicate"] * 7, results
    assert len(store.label_records(p.id)) == 1


def test_concurrent_projects_with_one_name_are_one_project(store: Store) -> None:
    results = _at_once(6, lambda _i: _cls_project(store, "same"))
    assert sum(not isinstance(r, Exception) for r in results) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if isinstance(r, Exception)), results


def test_ext_task_span_counts_distinct_task_ids_and_the_largest(database_url: str) -> None:
    store = Store(database_url)
    p = store.create_project("span", LabelSchema.build("classification", ["a", "b"]))
    assert store.ext_task_span(p.id) == (0, None)
    store.add_items(p.id, [Example(ItemId(f"i{k}"), f"text {k}") for k in range(4)])
    store.set_ext_task_ids(p.id, {"i0": 7, "i1": 3, "i2": 12})
    assert store.ext_task_span(p.id) == (3, 12)
