"""Column limits: every bounded column refuses an oversized value with the same clear error on SQLite and on
PostgreSQL (SQLite alone would store it), before the database sees it; descriptive fields are cut to fit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import String

from al_loop.data.schema import LabelSchema
from al_loop.store import Store
from al_loop.store.limits import INT32_MAX, MAX_ITEM_ID, ValueOutOfBoundsError, column_length
from al_loop.store.tables import Base
from al_loop.types import Example, ItemId

SCHEMA = LabelSchema.build("classification", ["pos", "neg"])


@pytest.fixture
def store(database_url: str) -> Store:
    return Store(database_url)


def test_every_bounded_string_column_is_known() -> None:
    """The columns with a length (what PostgreSQL enforces); a new one needs a check at the store and the edge."""
    bounded = sorted(f"{t.name}.{c.name}({column_length(c)})" for t in Base.metadata.tables.values()
                     for c in t.columns if isinstance(c.type, String) and c.type.length is not None)
    assert bounded == [
        "adaptations.base_model(500)", "adaptations.key(100)", "adaptations.status(20)",  # checked by store.adaptations
        "imports.format(20)", "imports.split(10)", "imports.status(20)",  # format: a FORMATS name; status: the enum
        "items.item_id(200)", "items.split(10)", "items.text_hash(64)",
        "label_studio_links.ml_backend_status(30)", "label_studio_links.ml_backend_url(1000)",
        "label_studio_links.model_version(200)", "label_studio_links.url(1000)",
        "labels.annotation_key(200)", "labels.annotator(200)", "labels.item_id(200)", "labels.source(30)",
        "model_versions.artifact_path(1000)", "model_versions.base_model(500)", "model_versions.name(200)",
        "model_versions.schema_hash(32)", "model_versions.status(20)",
        "projects.base_model(500)", "projects.name(200)", "projects.task(20)",
        "rejected_annotations.item_id(200)", "rejected_annotations.type(100)", "rejected_annotations.updated_at(64)",
        "round_scores.item_id(200)",
        "rounds.owner(200)", "rounds.phase(20)", "rounds.push_status(20)", "rounds.status(20)", "rounds.strategy(50)",
        "rounds.trigger(30)", "rounds.version_tag(200)",
        "simulations.name(200)",
    ]


def test_project_fields(store: Store) -> None:
    with pytest.raises(ValueOutOfBoundsError, match="project name is 201 characters"):
        store.create_project("n" * 201, SCHEMA)
    with pytest.raises(ValueOutOfBoundsError, match="base_model"):
        store.create_project("p", SCHEMA, base_model="m" * 501)
    with pytest.raises(ValueOutOfBoundsError, match="Label Studio project id"):
        store.create_project("p", SCHEMA, ls_project_id=INT32_MAX + 1)
    with pytest.raises(ValueOutOfBoundsError, match="link field url"):
        store.create_project("p", SCHEMA, ls_project_id=3, link={"url": "http://x/" + "a" * 1000})
    assert store.list_projects() == []
    p = store.create_project("n" * 200, SCHEMA, base_model="m" * 500, ls_project_id=INT32_MAX)
    with pytest.raises(ValueOutOfBoundsError, match="link field model_version"):
        store.update_link(p.id, model_version="v" * 201)
    with pytest.raises(ValueOutOfBoundsError, match="NUL"):
        store.update_link(p.id, label_config="<View>\x00</View>")
    with pytest.raises(ValueOutOfBoundsError, match="link field ml_backend_id"):
        store.update_link(p.id, ml_backend_id=2**40)
    link = store.update_link(p.id, ml_backend_error="refused\x00", config_warning="odd\x00 config")
    assert (link.ml_backend_error, link.config_warning) == ("refused", "odd config")
    assert store.get_project(p.id).name == "n" * 200


def test_item_ids_texts_and_task_ids(store: Store) -> None:
    p = store.create_project("p", SCHEMA)
    with pytest.raises(ValueOutOfBoundsError, match=f"5000 characters long; at most {MAX_ITEM_ID}"):
        store.add_items(p.id, [Example(ItemId("ok"), "fine"), Example(ItemId("x" * 5000), "too long an id")])
    with pytest.raises(ValueOutOfBoundsError, match="NUL"):
        store.add_items(p.id, [Example(ItemId("nul"), "a\x00b")])
    assert store.count_items(p.id) == 0  # nothing of a refused batch is stored
    store.add_items(p.id, [Example(ItemId("i" * 200), "exactly at the limit")])
    with pytest.raises(ValueOutOfBoundsError, match="task id"):
        store.set_ext_task_ids(p.id, {"i" * 200: 2**40})
    store.set_ext_task_ids(p.id, {"i" * 200: INT32_MAX})
    assert store.get_items(p.id)[0].ext_task_id == INT32_MAX


def test_labels_rejections_versions_rounds_and_simulations(store: Store) -> None:
    p = store.create_project("p", SCHEMA)
    store.add_items(p.id, [Example(ItemId("a"), "x")])
    with pytest.raises(ValueOutOfBoundsError, match="annotation key"):
        store.record_label(p.id, "a", "k" * 201, payload={"labels": ["pos"]}, source="ls")
    # descriptive fields are cut to fit, not refused: an annotation is never lost over its annotator's name
    assert store.record_label(p.id, "a", "ls:1", payload={"labels": ["pos"]}, source="ls",
                              annotator="e" * 300) == "created"
    assert store.label_records(p.id)[0].annotator == "e" * 200
    assert store.reject_annotation(p.id, annotation_id=1, task_id=2, item_id="z" * 5000, updated_at="u" * 100,
                                   error_type="E" * 300, error="bad\x00" * 300)
    rej = store.rejected_annotations(p.id)[0]
    assert (len(rej.item_id or ""), len(rej.updated_at or ""), len(rej.type), "\x00" in rej.error) == (200, 64, 100,
                                                                                                        False)
    with pytest.raises(ValueOutOfBoundsError, match="annotation id"):
        store.reject_annotation(p.id, annotation_id=2**40, task_id=None, item_id=None, updated_at=None,
                                error_type="E", error="e")
    with pytest.raises(ValueOutOfBoundsError, match="model version name"):
        store.add_version(p.id, name="v" * 201, round_id=None, base_model="m", schema=SCHEMA, metrics={},
                          train_report={}, artifact_path="/a")
    r = store.create_round(p.id, trigger="api", strategy="random", batch_size=1, seed=1)
    assert store.claim_round(r.id, "w" * 300, timedelta(minutes=1)).owner == "w" * 200
    # an error or warning text is a message: its NUL characters are dropped, a field with a length is checked
    assert store.update_round(r.id, error="bad\x00thing", report={"k": "v\x00w"}).error == "badthing"
    # NaN / Infinity in JSON (a diverged loss): null on both databases (PostgreSQL's json refuses the tokens)
    rnd = store.update_round(r.id, metrics={"f1": float("nan"), "loss": [float("inf"), 0.5], "n": 3})
    assert store.get_round(rnd.id).metrics == {"f1": None, "loss": [None, 0.5], "n": 3}
    with pytest.raises(ValueOutOfBoundsError, match="round field version_tag"):
        store.update_round(r.id, version_tag="t" * 201)
    sid = store.add_simulation(p.id, "s" * 300, [])
    assert [s["name"] for s in store.list_simulations(p.id) if s["id"] == sid] == ["s" * 200]


def test_ids_no_integer_column_holds_are_not_found(store: Store) -> None:
    """PostgreSQL binds an id as INTEGER: 2**31 is an error there, not "no row" (the API's URLs allow 18 digits)."""
    from al_loop.errors import NotFoundError

    p = store.create_project("p", SCHEMA)
    for big in (INT32_MAX + 1, 2**40, -(2**31) - 1):
        for call, args in ((store.get_project, (big,)), (store.get_round, (big,)), (store.get_version, (big,)),
                           (store.promote, (p.id, big)), (store.claim_round, (big, "w", None))):
            with pytest.raises(NotFoundError):
                call(*args)
        with pytest.raises(NotFoundError):
            store.update_link(big, url="u")
        assert store.get_link(big) is None and store.find_link(big) is None
        assert store.item_by_ext_task(p.id, big) is None
