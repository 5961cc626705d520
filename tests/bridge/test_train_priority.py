"""AL_LOOP_TRAIN_CPU_PRIORITY: how a train-queue worker yields the CPU (nice, SCHED_IDLE or unchanged)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from al_loop.errors import ConfigError
from annotator_bridge.settings import Settings
from annotator_bridge.worker import tasks
from annotator_bridge.worker.config import SETTINGS_KEY


def _app(settings: Settings, queues: set[str]) -> Any:
    return SimpleNamespace(conf={SETTINGS_KEY: settings}, amqp=SimpleNamespace(queues=SimpleNamespace(
        consume_from={q: None for q in queues})))


def _calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    def nice(inc: int) -> int:
        calls.append(("nice", inc))
        return inc

    def setscheduler(pid: int, policy: int, param: Any) -> None:
        calls.append(("sched", policy))

    monkeypatch.setattr(tasks.os, "nice", nice)
    monkeypatch.setattr(tasks.os, "sched_setscheduler", setscheduler, raising=False)
    return calls


@pytest.mark.parametrize(("priority", "want"), [
    ("nice", [("nice", tasks.TRAIN_NICENESS)]),
    ("idle", [("nice", tasks.TRAIN_NICENESS), ("sched", getattr(os, "SCHED_IDLE", 5))]),
    ("normal", [("nice", 0)]),
])
def test_the_train_worker_yields_the_cpu_as_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       priority: str, want: list[tuple[str, Any]]) -> None:
    monkeypatch.setattr(tasks.os, "SCHED_IDLE", getattr(os, "SCHED_IDLE", 5), raising=False)
    monkeypatch.setattr(tasks.os, "sched_param", lambda p: p, raising=False)
    calls = _calls(monkeypatch)
    settings = Settings.from_env({"AL_LOOP_HOME": str(tmp_path), "AL_LOOP_TRAIN_CPU_PRIORITY": priority.upper()})
    assert settings.train_cpu_priority == priority
    tasks.lower_training_priority(_app(settings, {"train"}))
    assert calls == want
    calls.clear()
    tasks.lower_training_priority(_app(settings, {"default"}))  # other queues keep their priority
    assert calls == [("nice", 0)]


def test_an_unknown_priority_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AL_LOOP_TRAIN_CPU_PRIORITY must be one of nice, idle, normal"):
        Settings.from_env({"AL_LOOP_HOME": str(tmp_path), "AL_LOOP_TRAIN_CPU_PRIORITY": "realtime"})
