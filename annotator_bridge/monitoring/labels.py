"""Labels of a project: their distribution, the annotation rate and the batch Label Studio serves."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from al_loop.store.repository import Store
from al_loop.types import TaskKind
from annotator_bridge.monitoring.common import _age, _now, _num, iso


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
