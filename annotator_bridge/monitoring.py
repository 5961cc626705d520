"""Facts for the dashboard, ``al-loop status`` and ``/metrics``, computed from the store.

Pure functions over :class:`~al_loop.store.Store` (plus an injectable :class:`QueueProbe`
for the broker and the workers). No Flask, no Celery: the web blueprint, the CLI and the
tests all call the same functions, and every result is a JSON-ready ``dict``/``list``
(datetimes as ISO-8601 strings with a ``Z``, durations in seconds).

Id spaces: ``project_id`` and ``round_id`` are database ids; ``round["index"]`` is the
0-based round number inside its project (what people talk about); ``item_id`` is the
stable :class:`~al_loop.types.ItemId`; version ``id`` is the model-version database id and
``name`` the model_version string shown in Label Studio.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from al_loop.errors import NotFoundError
from al_loop.states import RoundStatus, VersionStatus
from al_loop.store.records import ModelVersion, Project, Round
from al_loop.store.repository import Store
from al_loop.types import TaskKind

log = logging.getLogger("annotator_bridge.monitoring")

DEFAULT_STALE_AFTER = timedelta(minutes=10)
"""A running round whose heartbeat is older than this is considered dead (same default as RoundService)."""

PHASES = ("snapshot", "train", "evaluate", "publish", "score", "select", "push", "total")
"""Phase names that rounds record in ``round.timings`` (seconds)."""


# --------------------------------------------------------------------------- queue probe
@runtime_checkable
class QueueProbe(Protocol):
    """What the dashboard needs to know about the broker and the workers.

    ``depth()`` maps queue name -> number of waiting messages (e.g. ``{"default": 0, "train": 1}``).
    ``workers()`` lists live workers, each a dict with at least ``"name"``; optional keys the
    dashboard shows: ``"status"`` ("online"/"offline"), ``"queues"`` (list of names),
    ``"active"`` (tasks running now), ``"heartbeat_age_s"`` (seconds since the worker last
    answered). Both may raise; callers catch and show "unavailable". Implementations must not
    block for long (use short broker timeouts).
    """

    def depth(self) -> dict[str, int]: ...

    def workers(self) -> list[dict[str, Any]]: ...


class NullQueueProbe:
    """No broker to ask (inline dispatcher, tests): no queues, no workers."""

    available = False

    def depth(self) -> dict[str, int]:
        return {}

    def workers(self) -> list[dict[str, Any]]:
        return []


@dataclass
class StaticQueueProbe:
    """A probe with fixed answers (tests, demos)."""

    queues: dict[str, int] = field(default_factory=dict)
    worker_list: list[dict[str, Any]] = field(default_factory=list)

    def depth(self) -> dict[str, int]:
        return dict(self.queues)

    def workers(self) -> list[dict[str, Any]]:
        return [dict(w) for w in self.worker_list]


# ------------------------------------------------------------------------------- helpers
def iso(value: datetime | None) -> str | None:
    """Naive-UTC datetime -> ``2026-01-02T03:04:05Z`` (None stays None)."""
    return value.replace(microsecond=0).isoformat() + "Z" if value is not None else None


def _num(value: Any) -> float | None:
    """A finite float, or None (metrics may hold None, strings or NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def format_duration(seconds: Any, *, sep: str = " ", missing: str = "-") -> str:
    """Seconds -> ``850 ms``, ``12.3 s``, ``4 m 05 s``, ``2 h 03 m`` (``sep=""``: ``4m05s``, for terminals)."""
    s = _num(seconds)
    if s is None:
        return missing
    if s < 1:
        return f"{s * 1000:.0f}{sep}ms"
    if s < 60:
        return f"{s:.1f}{sep}s"
    if s < 3600:
        return f"{int(s // 60)}{sep}m{sep}{int(s % 60):02d}{sep}s"
    return f"{int(s // 3600)}{sep}h{sep}{int(s % 3600 // 60):02d}{sep}m"


def _age(now: datetime, then: datetime | None) -> float | None:
    return round((now - then).total_seconds(), 1) if then is not None else None


def metric_name(task: TaskKind | str, multi_label: bool = False) -> str:
    """Human name of ``metrics["score"]`` for a task (see ``al_loop.training.metrics``)."""
    if TaskKind(task) is TaskKind.NER:
        return "entity micro-F1"
    return "subset accuracy" if multi_label else "accuracy"


def _now(store: Store, now: datetime | None) -> datetime:
    return now if now is not None else store.clock()


# ----------------------------------------------------------------------------- rounds
def round_score(rnd: Round) -> float | None:
    return _num(rnd.metrics.get("score"))


def rounds_table(store: Store, project_id: int, *, now: datetime | None = None,
                 stale_after: timedelta = DEFAULT_STALE_AFTER) -> list[dict[str, Any]]:
    """One row per round, oldest first.

    Keys: ``id``, ``index``, ``status``, ``phase``, ``progress`` (0..1), ``trigger``, ``strategy``,
    ``batch_size``, ``labels``/``tokens`` (labelled set the round trained on; None until its
    snapshot), ``version`` (model_version string), ``model_version_id``, ``score`` (main metric),
    ``delta`` (score minus the score of the latest earlier round that has one), ``helped``
    (delta > 0, None when unknown), ``eval_set``, ``durations`` (seconds: ``train``, ``score``
    = scoring + selection, ``push`` (``timings["push"]``, else ``report["push"]["seconds"]``,
    when the push recorded it), ``total`` = the round itself, push excluded), ``elapsed_s`` (running: since
    start; finished: start to finish), ``heartbeat_age_s``, ``stale`` (running with an old
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


# --------------------------------------------------------------------------- labels
def label_distribution(store: Store, project_id: int) -> dict[str, Any]:
    """Counts of the current labels: ``labelled``, ``skipped``, ``tokens``, ``pool`` (pool items),
    ``unlabelled``, ``test`` (test items), ``per_label`` (label -> count: entity mentions for NER,
    items for classification), in the project's label order."""
    project = store.get_project(project_id)
    stats = store.label_stats(project_id)
    pool = store.count_items(project_id, "pool")
    counts = stats.get("per_label", {})
    per_label = {lb: int(counts.get(lb, 0)) for lb in project.labels}
    per_label.update({lb: int(n) for lb, n in counts.items() if lb not in per_label})
    return {
        "labelled": int(stats["labelled"]),
        "skipped": int(stats["skipped"]),
        "tokens": int(stats["tokens"]),
        "pool": pool,
        "unlabelled": max(pool - int(stats["labelled"]) - int(stats["skipped"]), 0),
        "test": store.count_items(project_id, "test"),
        "per_label": per_label,
        "unit": "entity mentions" if project.task is TaskKind.NER else "items",
    }


def annotation_rate(store: Store, project_id: int, *, now: datetime | None = None, hours: int = 24) -> dict[str, Any]:
    """Annotations per hour over the last ``hours`` hours, and per annotator.

    Times are the annotations' own ``updated_at`` (when the annotator submitted, as Label
    Studio reports it). Skipped annotations count as answered (the annotator spent the time);
    deleted ones do not. Returns ``{"hours", "buckets": [{"start", "count"}] (oldest first, one
    per hour, the last one is the current partial hour), "last_hour", "window_total",
    "per_hour" (window_total / hours), "annotators": [{"name", "total", "skipped", "last_hour",
    "window", "per_hour", "last_seen", "idle_s"}] (most active first)}``.
    """
    now = _now(store, now)
    hours = max(int(hours), 1)
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    buckets = [0] * hours
    per: dict[str, dict[str, Any]] = {}
    last_hour = 0
    for rec in store.label_records(project_id):
        if rec.deleted:
            continue
        name = rec.annotator or rec.source or "unknown"
        a = per.setdefault(name, {"name": name, "total": 0, "skipped": 0, "last_hour": 0, "window": 0,
                                  "last_seen": None})
        a["total"] += 1
        a["skipped"] += int(rec.skipped)
        t = rec.updated_at
        if a["last_seen"] is None or t > a["last_seen"]:
            a["last_seen"] = t
        if start <= t < end:
            buckets[int((t - start).total_seconds() // 3600)] += 1
            a["window"] += 1
        if now - timedelta(hours=1) <= t <= now:
            a["last_hour"] += 1
            last_hour += 1
    annotators = []
    for a in sorted(per.values(), key=lambda x: (-x["last_hour"], -x["window"], -x["total"], x["name"])):
        seen = a["last_seen"]
        annotators.append({**a, "per_hour": round(a["window"] / hours, 2), "last_seen": iso(seen),
                           "idle_s": _age(now, seen)})
    total = sum(buckets)
    return {
        "hours": hours,
        "buckets": [{"start": iso(start + timedelta(hours=i)), "count": n} for i, n in enumerate(buckets)],
        "last_hour": last_hour,
        "window_total": total,
        "per_hour": round(total / hours, 2),
        "annotators": annotators,
    }


# --------------------------------------------------------------------------- batch
def _prediction_text(pred: dict[str, Any] | None, text: str) -> str:
    if not pred:
        return ""
    if "spans" in pred:
        return ", ".join(f"{text[s['start']:s['end']]} [{s['label']}]" for s in pred["spans"][:6]) or "(no entities)"
    return ", ".join(str(lb) for lb in pred.get("labels", []))


def current_batch(store: Store, project_id: int, *, text_chars: int = 200) -> dict[str, Any] | None:
    """The batch Label Studio is serving now: the selected items of the newest succeeded round.

    Returns None before the first round. Otherwise ``{"round_id", "round_index", "version",
    "push_status", "size", "done" (answered so far), "items": [{"rank", "item_id", "score",
    "confidence", "prediction" (short text), "text" (truncated), "answered"}]}`` in ask order.
    """
    rnd = store.last_succeeded_round(project_id)
    if rnd is None:
        return None
    scored = store.get_scores(rnd.id, selected_only=True)
    items = {it.item_id: it for it in store.get_items(project_id, [s.item_id for s in scored])} if scored else {}
    unanswered = set(store.unlabelled_item_ids(project_id))
    rows = []
    for s in scored:
        item = items.get(s.item_id)
        text = item.text if item is not None else ""
        pred = s.prediction or {}
        rows.append(
            {
                "rank": s.rank,
                "item_id": s.item_id,
                "score": _num(s.score),
                "confidence": _num(pred.get("confidence")),
                "prediction": _prediction_text(pred, text),
                "text": text if len(text) <= text_chars else text[: text_chars - 1] + "…",
                "answered": s.item_id not in unanswered,
            }
        )
    return {
        "round_id": rnd.id,
        "round_index": rnd.index,
        "version": rnd.version_tag,
        "push_status": rnd.push_status,
        "size": len(rows),
        "done": sum(1 for r in rows if r["answered"]),
        "items": rows,
    }


# --------------------------------------------------------------------------- liveness
def probe_queues(probe: QueueProbe | None) -> dict[str, Any]:
    """Ask the probe, never raising: ``{"available", "queues", "workers", "error"}``."""
    probe = probe or NullQueueProbe()
    out: dict[str, Any] = {"available": getattr(probe, "available", True), "queues": {}, "workers": [], "error": None}
    errors = []
    try:
        out["queues"] = {str(k): int(v) for k, v in dict(probe.depth()).items()}
    except Exception as exc:  # a broker outage must not break the dashboard
        log.warning("queue probe depth() failed: %s", exc)
        errors.append(f"queue depth: {type(exc).__name__}: {exc}")
    try:
        out["workers"] = [dict(w) for w in probe.workers()]
    except Exception as exc:
        log.warning("queue probe workers() failed: %s", exc)
        errors.append(f"workers: {type(exc).__name__}: {exc}")
    if errors:
        out["error"] = "; ".join(errors)
    return out


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


__all__ = [
    "DEFAULT_STALE_AFTER",
    "PHASES",
    "NullQueueProbe",
    "QueueProbe",
    "StaticQueueProbe",
    "annotation_rate",
    "confusion_top_errors",
    "current_batch",
    "iso",
    "label_distribution",
    "learning_curve",
    "liveness",
    "metric_name",
    "per_label_comparison",
    "probe_queues",
    "project_snapshot",
    "project_status",
    "project_summary",
    "round_report",
    "round_score",
    "rounds_table",
    "versions_table",
]
