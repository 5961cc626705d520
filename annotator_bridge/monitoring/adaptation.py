"""The project's pool-adaptive pretraining as the API status, the dashboard and ``al-loop status`` show it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from al_loop.states import AdaptStatus
from al_loop.store.adaptations import latest_adaptation
from al_loop.store.records import Project
from al_loop.store.repository import Store


def adaptation_summary(store: Store, project: Project) -> dict[str, Any] | None:
    """The project's newest adaptation (None when it never had one and ``loop.adapt_pool`` is off):
    ``{"enabled" (loop.adapt_pool), "status" (None: not started yet), "steps_done", "steps_total", "progress",
    "loss", "heldout_loss", "texts", "seconds", "folder", "error", "in_use" (rounds start from it), "id",
    "updated_at"}``."""
    latest = latest_adaptation(store, project.id)
    enabled = project.loop.adapt_pool
    if latest is None:
        if not enabled:
            return None
        return {"enabled": True, "status": None, "steps_done": 0, "steps_total": project.loop.adapt_steps,
                "progress": 0.0, "loss": None, "heldout_loss": None, "texts": 0, "seconds": None, "folder": None,
                "error": None, "in_use": False, "id": None, "updated_at": None}
    data = latest.to_dict()
    in_use = (latest.status is AdaptStatus.DONE and latest.base_model == project.base_model
              and bool(latest.folder) and (Path(str(latest.folder)) / "config.json").is_file())
    return {"enabled": enabled, "status": data["status"], "steps_done": latest.steps_done,
            "steps_total": latest.steps_total, "progress": data["progress"], "loss": latest.loss,
            "heldout_loss": latest.heldout_loss, "texts": latest.texts, "seconds": latest.seconds,
            "folder": latest.folder, "error": latest.error, "in_use": in_use, "id": latest.id,
            "updated_at": data["updated_at"]}


def adaptation_line(a: dict[str, Any] | None) -> str | None:
    """One plain line for ``al-loop status`` and the dashboard (None: nothing to say)."""
    if a is None:
        return None
    steps = f"{a['steps_done']}/{a['steps_total']} steps"
    loss = f", MLM loss {a['loss']:.3f}" if isinstance(a.get("loss"), (int, float)) else ""
    held = f", held-out {a['heldout_loss']:.3f}" if isinstance(a.get("heldout_loss"), (int, float)) else ""
    status = a["status"]
    if status is None:
        return "pool adaptation: enabled, runs before the first round"
    if status == AdaptStatus.DONE:
        use = "rounds start from it" if a["in_use"] else "not used (base model changed or folder gone)"
        return f"pool adaptation: done, {steps} on {a['texts']} texts{loss}{held}; {use}"
    if status == AdaptStatus.FAILED:
        return f"pool adaptation: FAILED ({a['error'] or 'no message'}); rounds use the base model"
    return f"pool adaptation: {status}, {steps}{loss}"


__all__ = ["adaptation_line", "adaptation_summary"]
