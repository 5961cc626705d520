"""Per-project status: summaries (project list, ``al-loop status``), the dashboard snapshot, the API status."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from al_loop.errors import NotFoundError
from al_loop.states import RoundStatus
from al_loop.store.records import Project
from al_loop.store.repository import Store
from annotator_bridge.monitoring.adaptation import adaptation_summary
from annotator_bridge.monitoring.common import DEFAULT_STALE_AFTER, _age, _now, _num, iso, metric_name
from annotator_bridge.monitoring.history import (
    learning_curve,
    per_label_comparison,
    rounds_table,
    versions_table,
)
from annotator_bridge.monitoring.labels import annotation_rate, current_batch, label_distribution
from annotator_bridge.monitoring.probe import QueueProbe, probe_queues
from annotator_bridge.monitoring.stopping import stopping_summary


def liveness(store: Store, project_id: int | None, probe: QueueProbe | None = None, *,
             now: datetime | None = None, stale_after: timedelta = DEFAULT_STALE_AFTER) -> dict[str, Any]:
    """Broker/worker facts plus the heartbeat of the project's active round.

    ``{"available", "queues", "workers", "error", "active_round": None | {"id", "index",
    "status", "phase", "progress", "owner", "heartbeat_age_s", "stale", "attempts"}}``.
    """
    now = _now(store, now)
    out = probe_queues(probe)
    out["active_round"] = None
    if project_id is not None:
        active = store.active_round(project_id)
        if active is not None:
            age = _age(now, active.heartbeat_at) if active.status is RoundStatus.RUNNING else None
            out["active_round"] = {
                "id": active.id,
                "index": active.index,
                "status": active.status,
                "phase": active.phase,
                "progress": float(active.progress or 0.0),
                "owner": active.owner,
                "heartbeat_age_s": age,
                "stale": age is not None and age > stale_after.total_seconds(),
                "attempts": active.attempts,
                "waiting_s": _age(now, active.created_at) if active.status is RoundStatus.PENDING else None,
            }
    return out


# ------------------------------------------------------------------------ summaries
def project_summary(store: Store, project: Project | int, *, now: datetime | None = None,
                    stale_after: timedelta = DEFAULT_STALE_AFTER, rounds: list[dict[str, Any]] | None = None,
                    labels: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line per project (project list, ``al-loop status``): counts, last round, score, promoted version.

    ``rounds``/``labels`` take already computed :func:`rounds_table`/:func:`label_distribution` results.
    """
    if isinstance(project, int):
        project = store.get_project(project)
    now = _now(store, now)
    if rounds is None:
        rounds = rounds_table(store, project.id, now=now, stale_after=stale_after)
    scored = [r for r in rounds if r["score"] is not None]
    promoted = store.promoted_version(project.id)
    dist = labels if labels is not None else label_distribution(store, project.id)
    last = rounds[-1] if rounds else None
    link = store.get_link(project.id)
    return {
        "id": project.id,
        "name": project.name,
        "task": project.task.value,
        "labels_schema": list(project.labels),
        "metric": metric_name(project.task, project.multi_label),
        "strategy": project.loop_config.get("strategy"),
        "rounds": len(rounds),
        "last_round": last,
        "active": bool(last and RoundStatus(last["status"]).is_active),
        "labelled": dist["labelled"],
        "skipped": dist["skipped"],
        "tokens": dist["tokens"],
        "pool": dist["pool"],
        "unlabelled": dist["unlabelled"],
        "score": scored[-1]["score"] if scored else None,
        "delta": scored[-1]["delta"] if scored else None,
        "promoted": promoted.name if promoted else None,
        "promoted_score": _num(promoted.metrics.get("score")) if promoted else None,
        "label_studio_project": link.ls_project_id if link is not None else None,
    }


def project_snapshot(store: Store, project_id: int, probe: QueueProbe | None = None, *,
                     now: datetime | None = None, stale_after: timedelta = DEFAULT_STALE_AFTER,
                     hours: int = 24) -> dict[str, Any]:
    """Everything the dashboard shows for one project, JSON-ready (``/dashboard/<id>/data.json``)."""
    now = _now(store, now)
    project = store.get_project(project_id)
    rounds = rounds_table(store, project_id, now=now, stale_after=stale_after)
    labels = label_distribution(store, project_id)
    return {
        "generated_at": iso(now),
        "project": {
            "id": project.id,
            "name": project.name,
            "task": project.task.value,
            "labels": list(project.labels),
            "multi_label": project.multi_label,
            "base_model": project.base_model,
            "loop": dict(project.loop_config),
        },
        "summary": project_summary(store, project, now=now, stale_after=stale_after, rounds=rounds, labels=labels),
        "rounds": rounds,
        "curve": learning_curve(store, project_id),
        "per_label": per_label_comparison(store, project_id),
        "labels": labels,
        "annotation": annotation_rate(store, project_id, now=now, hours=hours),
        "batch": current_batch(store, project_id),
        "versions": versions_table(store, project_id),
        "liveness": liveness(store, project_id, probe, now=now, stale_after=stale_after),
        "stopping": stopping_summary(store, project_id),
        "adaptation": adaptation_summary(store, project),
    }


def project_status(store: Store, project_id: int) -> dict[str, Any]:
    """Everything an operator asks first (``GET /api/projects/<id>/status``): queue state, label
    counts, current version, active round, the Label Studio link and the rejected annotations."""
    project = store.get_project(project_id)
    link = store.get_link(project_id)
    rounds = store.list_rounds(project_id)
    active = next((r for r in rounds if r.status.is_active), None)
    promoted = store.promoted_version(project_id)
    pushes = [{"round": r.index, "round_id": r.id, "push_status": r.push_status,
               "error": (r.report.get("push") or {}).get("error")}
              for r in rounds if r.push_status.is_outstanding]
    out: dict[str, Any] = {
        "project": {"id": project.id, "name": project.name, "task": project.task.value,
                    "labels": list(project.labels), "multi_label": project.multi_label,
                    "base_model": project.base_model},
        "loop": project.loop_config,
        "items": {"pool": store.count_items(project_id, "pool"), "test": store.count_items(project_id, "test"),
                  "unlabelled": len(store.unlabelled_item_ids(project_id))},
        "labels": store.label_stats(project_id),
        "new_labels_since_last_round": store.new_labels_since_last_round(project_id),
        "retrain_every": project.loop.retrain_every,
        "current_version": promoted.to_dict() if promoted else None,
        "active_round": active.to_dict() if active else None,
        "last_round": rounds[-1].to_dict() if rounds else None,
        "rounds": len(rounds),
        "queue": {
            "round": {"index": active.index, "status": active.status, "phase": active.phase,
                      "progress": active.progress} if active else None,
            "pushes_outstanding": pushes,
            "needs_reconcile": bool(link and link.needs_reconcile),
            "last_reconcile": link.last_reconcile if link else None,
        },
        "label_studio": None,
        "rejected": [r.to_dict() for r in store.rejected_annotations(project_id, limit=20)],
        "rejected_total": store.count_rejected(project_id),
        "stopping": stopping_summary(store, project_id, rounds),
        "adaptation": adaptation_summary(store, project),
    }
    if link is not None:
        out["label_studio"] = {"project_id": link.ls_project_id, "url": link.url, "model_version": link.model_version,
                               "attached": link.attached, "ml_backend": link.ml_backend,
                               "config_warning": link.config_warning}
    return out


def round_report(store: Store, project_id: int, round_id: int) -> dict[str, Any]:
    """A round with its stored report (metrics, per-label scores, confusion matrix or NER
    per-type errors, top uncertain examples), plus its row of the rounds table.

    NotFoundError when the round does not belong to the project.
    """
    rnd = store.get_round(round_id)
    if rnd.project_id != project_id:
        raise NotFoundError(f"round {round_id} not found in project {project_id}")
    project = store.get_project(project_id)
    row = next(r for r in rounds_table(store, project_id) if r["id"] == round_id)
    report = dict(rnd.report or {})
    metrics = report.get("metrics") or {k: v for k, v in rnd.metrics.items() if not isinstance(v, dict | list)}
    return {
        "project": {"id": project.id, "name": project.name, "task": project.task.value},
        "metric": metric_name(project.task, project.multi_label),
        "round": row,
        "timings": {k: _num(v) for k, v in rnd.timings.items()},
        "train": rnd.metrics.get("train") if isinstance(rnd.metrics.get("train"), dict) else {},
        "metrics": metrics,
        "per_label": report.get("per_label") or {},
        "confusion": report.get("confusion"),
        "errors": report.get("errors"),
        "top_uncertain": report.get("top_uncertain") or [],
    }


def confusion_top_errors(confusion: dict[str, Any] | None, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` largest off-diagonal cells of a confusion matrix: ``[{"gold", "predicted", "count"}]``."""
    if not confusion:
        return []
    labels = confusion.get("labels") or []
    matrix = confusion.get("matrix") or []
    cells: Counter[tuple[str, str]] = Counter()
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            if i != j and n and i < len(labels) and j < len(labels):
                cells[(labels[i], labels[j])] = int(n)
    return [{"gold": g, "predicted": p, "count": n} for (g, p), n in cells.most_common(k)]
