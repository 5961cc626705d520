"""Rounds, learning curves and model versions of a project, as tables."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from al_loop.states import RoundStatus, VersionStatus
from al_loop.store.records import ModelVersion, Round
from al_loop.store.repository import Store
from annotator_bridge.monitoring.common import DEFAULT_STALE_AFTER, _age, _now, _num, iso, metric_name


def round_score(rnd: Round) -> float | None:
    return _num(rnd.metrics.get("score"))


def rounds_table(store: Store, project_id: int, *, now: datetime | None = None,
                 stale_after: timedelta = DEFAULT_STALE_AFTER) -> list[dict[str, Any]]:
    """One row per round, oldest first.

    Keys: ``id``, ``index``, ``status``, ``phase``, ``progress`` (0..1), ``trigger``, ``strategy``,
    ``batch_size``, ``labels``/``tokens`` (labelled set the round trained on; None until its
    snapshot), ``version`` (model_version string), ``model_version_id``, ``score`` (main metric),
    ``delta`` (score minus the score of the latest earlier round that has one), ``helped``
    (delta > 0, None when unknown), ``eval_set``, ``timings`` (seconds per recorded phase),
    ``durations`` (seconds: ``train``, ``score`` = scoring + selection, ``push``
    (``timings["push"]``, else ``report["push"]["seconds"]``, when the push recorded it),
    ``total`` = the round itself, push excluded), ``elapsed_s`` (running: since start;
    finished: start to finish), ``heartbeat_age_s``, ``stale`` (running with an old
    heartbeat), ``push_status``, ``push_error``, ``error``, ``created_at``/``started_at``/``finished_at``.
    """
    now = _now(store, now)
    rows: list[dict[str, Any]] = []
    previous: float | None = None
    for r in store.list_rounds(project_id):
        score = round_score(r) if r.status is RoundStatus.SUCCEEDED else None
        delta = score - previous if (score is not None and previous is not None) else None
        t = r.timings
        raw_push = r.report.get("push")
        push: dict[str, Any] = raw_push if isinstance(raw_push, dict) else {}
        score_s = [v for v in (_num(t.get("score")), _num(t.get("select"))) if v is not None]
        running = r.status is RoundStatus.RUNNING
        if running and r.started_at is not None:
            elapsed = _age(now, r.started_at)
        elif r.started_at is not None and r.finished_at is not None:
            elapsed = _age(r.finished_at, r.started_at)
        else:
            elapsed = None
        hb_age = _age(now, r.heartbeat_at) if running else None
        rows.append(
            {
                "id": r.id,
                "index": r.index,
                "status": r.status,
                "phase": r.phase,
                "progress": float(r.progress or 0.0),
                "trigger": r.trigger,
                "strategy": r.strategy,
                "batch_size": r.batch_size,
                "labels": r.n_labels,
                "tokens": r.n_tokens,
                "version": r.version_tag,
                "model_version_id": r.model_version_id,
                "score": score,
                "delta": delta,
                "helped": None if delta is None else delta > 0,
                "eval_set": r.metrics.get("eval_set"),
                "timings": {str(k): v for k, v in t.items() if _num(v) is not None},
                "durations": {
                    "train": _num(t.get("train")),
                    "score": round(sum(score_s), 3) if score_s else None,
                    "push": _num(t.get("push")) if _num(t.get("push")) is not None else _num(push.get("seconds")),
                    "total": _num(t.get("total")),
                },
                "elapsed_s": elapsed,
                "heartbeat_age_s": hb_age,
                "stale": bool(running and hb_age is not None and hb_age > stale_after.total_seconds()),
                "push_status": r.push_status,
                "push_error": push.get("error"),
                "error": r.error,
                "created_at": iso(r.created_at),
                "started_at": iso(r.started_at),
                "finished_at": iso(r.finished_at),
            }
        )
        if score is not None:
            previous = score
    return rows


# ----------------------------------------------------------------------- learning curve
def _simulation_series(points: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Simulation points (``al_loop.simulate`` format) -> one series per strategy: mean and min/max over repeats."""
    grouped: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        if _num(p.get("score")) is None or _num(p.get("labels")) is None:
            continue
        grouped[str(p.get("strategy"))][int(p.get("round", 0))].append(p)
    out = []
    # random first: it is the baseline every other curve is read against
    for strategy in sorted(grouped, key=lambda s: (s != "random", s)):
        pts = []
        for k in sorted(grouped[strategy]):
            rows = grouped[strategy][k]
            scores = [float(p["score"]) for p in rows]
            pts.append(
                {
                    "round": k,
                    "labels": sum(float(p["labels"]) for p in rows) / len(rows),
                    "score": sum(scores) / len(scores),
                    "lo": min(scores),
                    "hi": max(scores),
                    "n": len(rows),
                }
            )
        out.append({"name": f"simulation: {strategy}", "kind": "simulation", "strategy": strategy, "points": pts})
    return out


def learning_curve(store: Store, project_id: int) -> dict[str, Any]:
    """Main metric vs labels of the live project, plus the newest simulation run for it, if any.

    Returns ``{"metric", "live": [{"round", "labels", "tokens", "score"}], "simulation": None |
    {"id", "name", "created_at", "series": [{"name", "kind", "strategy", "points": [{"round",
    "labels", "score" (mean over repeats), "lo", "hi", "n"}]}]}}``.
    """
    project = store.get_project(project_id)
    live = [
        {"round": r.index, "labels": r.n_labels, "tokens": r.n_tokens, "score": round_score(r)}
        for r in store.list_rounds(project_id)
        if r.status is RoundStatus.SUCCEEDED and round_score(r) is not None and r.n_labels is not None
    ]
    sims = store.list_simulations(project_id)
    simulation = None
    if sims:
        latest = sims[-1]
        simulation = {
            "id": latest["id"],
            "name": latest["name"],
            "created_at": latest["created_at"],
            "series": _simulation_series(latest["points"]),
        }
    return {"metric": metric_name(project.task, project.multi_label), "live": live, "simulation": simulation}


# ------------------------------------------------------------------------ model versions
def _current_and_previous(versions: Sequence[ModelVersion]) -> tuple[ModelVersion | None, ModelVersion | None]:
    """Current = the promoted version (else the newest); previous = the version created just before it."""
    if not versions:
        return None, None
    current = next((v for v in versions if v.status is VersionStatus.PROMOTED), versions[-1])
    earlier = [v for v in versions if v.id < current.id]
    return current, (earlier[-1] if earlier else None)


def versions_table(store: Store, project_id: int) -> list[dict[str, Any]]:
    """Model versions, oldest first: ``id``, ``name``, ``status``, ``promoted`` (bool), ``round_index``,
    ``score``, ``delta`` (vs the version before it), ``has_artifact``, ``created_at``, ``promoted_at``."""
    index_of = {r.id: r.index for r in store.list_rounds(project_id)}
    rows = []
    previous: float | None = None
    for v in store.list_versions(project_id):
        score = _num(v.metrics.get("score"))
        rows.append(
            {
                "id": v.id,
                "name": v.name,
                "status": v.status,
                "promoted": v.status is VersionStatus.PROMOTED,
                "round_id": v.round_id,
                "round_index": index_of.get(v.round_id) if v.round_id is not None else None,
                "score": score,
                "delta": score - previous if score is not None and previous is not None else None,
                "has_artifact": bool(v.artifact_path),
                "created_at": iso(v.created_at),
                "promoted_at": iso(v.promoted_at),
            }
        )
        if score is not None:
            previous = score
    return rows


def per_label_comparison(store: Store, project_id: int) -> dict[str, Any]:
    """Per-label precision/recall/F1 of the current model (promoted, else newest) against the version before it.

    Returns ``{"current": name|None, "previous": name|None, "rows": [{"label", "support",
    "current": {"precision","recall","f1"}|None, "previous": {...}|None, "delta_f1"}]}``;
    rows follow the project's label order.
    """
    project = store.get_project(project_id)
    current, previous = _current_and_previous(store.list_versions(project_id))

    def per_label(v: ModelVersion | None) -> dict[str, dict[str, Any]]:
        data = v.metrics.get("per_label") if v is not None else None
        return data if isinstance(data, dict) else {}

    cur, prev = per_label(current), per_label(previous)
    labels = list(project.labels) + sorted((set(cur) | set(prev)) - set(project.labels))
    rows = []
    for lb in labels:
        c, p = cur.get(lb), prev.get(lb)
        if c is None and p is None:
            continue

        def pick(d: dict[str, Any] | None) -> dict[str, float | None] | None:
            if not isinstance(d, dict):
                return None
            return {k: _num(d.get(k)) for k in ("precision", "recall", "f1")}

        cc, pp = pick(c), pick(p)
        cf = cc["f1"] if cc else None
        pf = pp["f1"] if pp else None
        support = (c or p or {}).get("support")
        rows.append(
            {
                "label": lb,
                "support": int(support) if isinstance(support, int | float) and _num(support) is not None else None,
                "current": cc,
                "previous": pp,
                "delta_f1": cf - pf if cf is not None and pf is not None else None,
            }
        )
    return {
        "current": current.name if current else None,
        "previous": previous.name if previous else None,
        "rows": rows,
    }
