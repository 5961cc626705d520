"""Adaptations in the store (al_loop/store/adaptations.py): records, status transitions, one active per project,
stale takeover, the done adaptation rounds use, the loop.adapt_* settings, and the migration's table."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import inspect

from al_loop.config import LoopConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError, ConflictError, InvalidTransitionError, NotFoundError
from al_loop.states import ADAPT_TRANSITIONS, AdaptStatus, check_adapt_transition
from al_loop.store import Store
from al_loop.store.adaptations import (
    create_adaptation,
    done_adaptation,
    get_adaptation,
    latest_adaptation,
    update_adaptation,
)
from al_loop.types import TaskKind


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 12, 0, 0)

    def __call__(self) -> datetime:
        return self.now


def _store(url: str = "sqlite://") -> tuple[Store, int, Clock]:
    clock = Clock()
    store = Store(url, clock=clock)
    project = store.create_project("p", LabelSchema.build(TaskKind.CLASSIFICATION, ["a", "b"]))
    return store, project.id, clock


def test_transitions() -> None:
    assert check_adapt_transition("pending", "running") is AdaptStatus.RUNNING
    assert check_adapt_transition(AdaptStatus.RUNNING, AdaptStatus.DONE) is AdaptStatus.DONE
    for final in (AdaptStatus.DONE, AdaptStatus.FAILED):
        assert final.is_final and not final.is_active and ADAPT_TRANSITIONS[final] == frozenset()
        with pytest.raises(InvalidTransitionError):
            check_adapt_transition(final, AdaptStatus.RUNNING)
    with pytest.raises(InvalidTransitionError):
        check_adapt_transition(AdaptStatus.PENDING, AdaptStatus.DONE)


def test_life_cycle_progress_and_record(database_url: str) -> None:
    store, pid, clock = _store(database_url)
    a = create_adaptation(store, pid, "default", 300)
    assert (a.status, a.steps_done, a.steps_total, a.progress, a.folder) == (AdaptStatus.PENDING, 0, 300, 0.0, None)
    update_adaptation(store, a.id, status=AdaptStatus.RUNNING)
    clock.now += timedelta(seconds=5)
    a = update_adaptation(store, a.id, steps_done=30, loss=7.5, texts=1000)
    assert (a.status, a.steps_done, a.loss, a.texts, a.progress) == (AdaptStatus.RUNNING, 30, 7.5, 1000, 0.1)
    assert a.updated_at == clock.now
    a = update_adaptation(store, a.id, status=AdaptStatus.DONE, steps_done=120, heldout_loss=float("nan"),
                          folder="/x/mlm-abc", key="mlm-abc", seconds=12.5)
    assert a.status is AdaptStatus.DONE and a.progress == 1.0 and a.heldout_loss is None  # NaN is stored as null
    assert a.finished_at == clock.now
    data = a.to_dict()
    assert data["status"] == "done" and data["folder"] == "/x/mlm-abc" and data["created_at"].startswith("2026-12-03")
    assert get_adaptation(store, pid, a.id) == a
    assert latest_adaptation(store, pid) == a
    assert done_adaptation(store, pid, "default") == a
    assert done_adaptation(store, pid, "other-model") is None
    with pytest.raises(InvalidTransitionError):
        update_adaptation(store, a.id, status=AdaptStatus.RUNNING)
    with pytest.raises(ValueError):
        update_adaptation(store, a.id, nonsense=1)
    with pytest.raises(NotFoundError):
        get_adaptation(store, pid + 1, a.id)
    with pytest.raises(NotFoundError):
        create_adaptation(store, pid + 99, "default", 10)
    store.dispose()


def test_one_active_adaptation_per_project_and_stale_takeover() -> None:
    store, pid, clock = _store()
    first = create_adaptation(store, pid, "default", 10)
    with pytest.raises(ConflictError):
        create_adaptation(store, pid, "default", 10)
    update_adaptation(store, first.id, status=AdaptStatus.RUNNING, steps_done=3)
    clock.now += timedelta(minutes=5)
    with pytest.raises(ConflictError):
        create_adaptation(store, pid, "default", 10, stale_after=timedelta(minutes=10))
    clock.now += timedelta(minutes=6)  # no progress for 11 minutes: its worker is gone
    second = create_adaptation(store, pid, "default", 10, stale_after=timedelta(minutes=10))
    old = get_adaptation(store, pid, first.id)
    assert old.status is AdaptStatus.FAILED and "abandoned" in (old.error or "")
    assert latest_adaptation(store, pid) == second
    update_adaptation(store, second.id, status=AdaptStatus.FAILED, error="boom\x00")
    assert get_adaptation(store, pid, second.id).error == "boom"
    third = create_adaptation(store, pid, "default", 10)  # after a failure a new one may start
    assert third.status is AdaptStatus.PENDING


def test_loop_settings_default_off_and_bounded() -> None:
    loop = LoopConfig()
    assert (loop.adapt_pool, loop.adapt_steps, loop.adapt_minutes, loop.adapt_texts) == (False, 300, 10.0, 20000)
    for bad in ({"adapt_pool": 1}, {"adapt_steps": 0}, {"adapt_steps": 2.5}, {"adapt_minutes": 0},
                {"adapt_minutes": float("nan")}, {"adapt_texts": 0}, {"adapt_steps": True}):
        with pytest.raises(ConfigError):
            LoopConfig(**bad)  # type: ignore[arg-type]


def test_the_migrated_database_has_the_table(database_url: str) -> None:
    store, pid, _ = _store(database_url)
    names = {c["name"] for c in inspect(store.engine).get_columns("adaptations")}
    assert {"project_id", "status", "steps_done", "steps_total", "loss", "heldout_loss", "folder", "key",
            "error", "created_at", "updated_at"} <= names
    assert create_adaptation(store, pid, "default", 5).status is AdaptStatus.PENDING
    store.dispose()


def test_the_change_marker_follows_the_adaptation() -> None:
    """The dashboard's snapshot cache is keyed by it: progress of an adaptation shows without waiting."""
    store, pid, clock = _store()
    before = store.change_marker(pid)
    a = create_adaptation(store, pid, "default", 10)
    created = store.change_marker(pid)
    assert created != before
    clock.now += timedelta(seconds=2)
    update_adaptation(store, a.id, status=AdaptStatus.RUNNING, steps_done=1)
    assert store.change_marker(pid) != created
