"""Stopping advice of a project: the criteria its rounds recorded (``metrics["stopping"]``), as one block.

Shown by the API status (``stopping``), the dashboard ("When to stop": the kappa trend and a sentence)
and ``al-loop status --project``. The criteria themselves: :mod:`al_loop.rounds.stopping`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from al_loop.rounds.stopping import (
    CHANGE_THRESHOLD,
    CRITERIA,
    KAPPA_THRESHOLD,
    KAPPA_WINDOW,
    UNCERTAINTY_THRESHOLD,
)
from al_loop.states import RoundStatus
from al_loop.store.records import Round
from al_loop.store.repository import Store
from annotator_bridge.monitoring.common import _num

__all__ = ["CRITERION_TITLES", "stopping_summary"]

CRITERION_TITLES = {
    "stabilizing_predictions": f"stabilizing predictions (mean kappa of {KAPPA_WINDOW} rounds >= {KAPPA_THRESHOLD})",
    "classification_change": f"classification change (<= {CHANGE_THRESHOLD:.0%} of the stop set changed)",
    "overall_uncertainty": f"overall uncertainty (mean 1 - confidence < {UNCERTAINTY_THRESHOLD})",
}


def stopping_summary(store: Store, project_id: int, rounds: Sequence[Round] | None = None) -> dict[str, Any]:
    """The project's stopping advice, JSON-ready.

    ``{"enabled" (stop_set_size > 0), "stop_set_size", "pause_when_stable", "paused" (automatic rounds
    paused now), "stable" (stabilizing predictions holds after the newest measured round), "advice" (a
    sentence), "latest": None | {"round", "labels", "kappa", "kappa_mean", "stable_rounds", "changed",
    "uncertainty", "stop_set", "predicted", "compared", "holds"}, "criteria": [{"name", "title", "holds"}],
    "thresholds", "trend": [{"round", "labels", "kappa", "kappa_mean", "changed", "uncertainty"}]}``.
    """
    project = store.get_project(project_id)
    loop = project.loop
    if rounds is None:
        rounds = store.list_rounds(project_id)
    trend: list[dict[str, Any]] = []
    latest: dict[str, Any] | None = None
    for r in rounds:
        record = r.metrics.get("stopping") if r.status is RoundStatus.SUCCEEDED else None
        if not isinstance(record, dict):
            continue
        point = {"round": r.index, "labels": r.n_labels, "kappa": _num(record.get("kappa")),
                 "kappa_mean": _num(record.get("kappa_mean")), "changed": _num(record.get("changed")),
                 "uncertainty": _num(record.get("uncertainty"))}
        trend.append(point)
        raw = record.get("holds")
        holds: dict[str, Any] = raw if isinstance(raw, dict) else {}
        latest = {**point, "stable_rounds": record.get("stable_rounds"), "stop_set": record.get("stop_set"),
                  "predicted": record.get("predicted"), "compared": record.get("compared"),
                  "holds": {name: bool(holds.get(name)) for name in CRITERIA},
                  "advice": str(record.get("advice") or "")}
    stable = bool(latest and latest["holds"]["stabilizing_predictions"])
    if latest is not None:
        text = latest.pop("advice")
    elif loop.stop_set_size <= 0:
        text = "stopping criteria are off for this project (loop.stop_set_size is 0)"
    else:
        text = "no stopping criteria yet: they are measured from the first trained round on"
    paused = bool(loop.pause_when_stable and stable)
    if paused:
        text += "; automatic retraining is paused (loop.pause_when_stable): start a round by hand to train anyway"
    return {
        "enabled": loop.stop_set_size > 0,
        "stop_set_size": loop.stop_set_size,
        "pause_when_stable": loop.pause_when_stable,
        "paused": paused,
        "stable": stable,
        "advice": text,
        "latest": latest,
        "criteria": [{"name": name, "title": CRITERION_TITLES[name],
                      "holds": bool(latest and latest["holds"][name])} for name in CRITERIA],
        "thresholds": {"kappa": KAPPA_THRESHOLD, "kappa_window": KAPPA_WINDOW, "changed": CHANGE_THRESHOLD,
                       "uncertainty": UNCERTAINTY_THRESHOLD},
        "trend": trend,
    }
