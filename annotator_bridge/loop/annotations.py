"""``AnnotationSync``: Label Studio annotations into the store (webhook events and reconciliation).

Labels are recorded idempotently (key ``ls:<annotation id>``; a newer ``updated_at`` wins; an
event without a parseable ``updated_at`` is compared by content: the same content is a duplicate,
other content an update; a deletion is final unless a strictly newer version arrives; skipped =
skipped label; the rules: :mod:`al_loop.store.versions`); invalid annotations are rejected (one row each in the
store, written by the ingest that refused them), logged and listed in the project's status,
never raised; after new labels the retrain policy may queue a round. ``reconcile`` re-reads
every annotated task: Label Studio is the source of truth, so a lost webhook loses nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from al_loop.errors import AlLoopError, DataFormatError, NotFoundError, SchemaError
from al_loop.store.records import Item, Project, Round, payload_from_example
from al_loop.store.repository import Store
from al_loop.types import ItemId, TaskKind
from annotator_bridge.labelstudio.config import LabelConfig, parse_label_config
from annotator_bridge.labelstudio.convert import (
    AnnotationEvent,
    AnnotationsCreated,
    AnnotationsDeleted,
    Ignored,
    Skipped,
    StartTraining,
    WebhookPayloadError,
    annotation_to_example,
    parse_webhook,
)
from annotator_bridge.loop.link import LabelStudioLinks
from annotator_bridge.loop.ports import LABEL_SOURCE, MAX_DB_INT, annotation_key, parse_ls_time

log = logging.getLogger("annotator_bridge.loop")

StartRound = Callable[[int, str], Round | None]
ShouldStart = Callable[[int], bool]


class AnnotationSync:
    """Events, ingest and reconcile of one process (thread-safe: state lives in the store)."""

    def __init__(self, store: Store, links: LabelStudioLinks, *, start_round: StartRound,
                 should_start_round: ShouldStart, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.links = links
        self._start_round = start_round
        self._should_start = should_start_round
        self.clock = clock

    # ------------------------------------------------------------------ events
    def handle_event(self, project_id: int, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Apply one webhook body; never raises for bad annotations (they are rejected and listed).

        Returns a summary: ``{"status", "action", "outcomes": {created|updated|duplicate|stale|
        skipped|rejected|unknown_task|deleted: n}, "round_id"}``.
        """
        project = self.store.get_project(project_id)
        try:
            event = parse_webhook(payload)
        except WebhookPayloadError as exc:
            log.warning("project %s: unreadable webhook dropped: %s", project_id, exc)
            return {"status": "rejected", "error": str(exc)}
        action = getattr(event, "action", type(event).__name__)
        link = self.links.link(project_id)
        event_ls = getattr(event, "project_ls_id", None)
        if link is not None and event_ls is not None and int(event_ls) != link.ls_project_id:
            log.warning("project %s: event for Label Studio project %s, expected %s; ignored", project_id, event_ls,
                        link.ls_project_id)
            return {"status": "ignored", "action": action, "reason": "another Label Studio project"}
        outcomes: Counter[str] = Counter()
        started: Round | None = None
        if isinstance(event, AnnotationEvent | AnnotationsCreated):
            events = [event] if isinstance(event, AnnotationEvent) else list(event.events)
            action = events[0].action if events else "ANNOTATIONS_CREATED"
            cfg = self.links.label_config(project, link)
            for ev in events:
                outcomes[self.ingest(project, cfg, ev)] += 1
        elif isinstance(event, AnnotationsDeleted):
            action = "ANNOTATIONS_DELETED"
            keys = [annotation_key(a) for a in event.annotation_ids]
            outcomes["deleted"] = self.store.delete_labels(project_id, keys)
        elif isinstance(event, StartTraining):
            action = "START_TRAINING"
            started = self._start_round(project_id, "label_studio")
        elif isinstance(event, Ignored):
            if event.action == "TASKS_CREATED" and link is not None:
                tasks = payload.get("tasks") if isinstance(payload, Mapping) else None
                outcomes["tasks_mapped"] = self.links.adopt_tasks(project, tasks if isinstance(tasks, list) else [])
            elif event.action == "PROJECT_UPDATED" and link is not None:
                self._check_config(project, payload.get("project") if isinstance(payload, Mapping) else None)
            else:
                log.debug("project %s: %s ignored", project_id, event.action)
                return {"status": "ignored", "action": event.action}
        changed = outcomes["created"] or outcomes["updated"]
        if started is None and changed and self._should_start(project_id):
            started = self._start_round(project_id, "policy")
        log.info("project %s: %s -> %s%s", project_id, action, dict(outcomes),
                 f"; round {started.index} queued" if started else "")
        return {"status": "processed", "action": action, "outcomes": dict(outcomes),
                "round_id": started.id if started else None}

    def _item_for(self, project: Project, item_id: ItemId | None, task_id: int | None) -> Item | None:
        if item_id is not None:
            try:
                return self.store.get_items(project.id, [item_id])[0]
            except NotFoundError:
                pass
        if task_id is not None:
            return self.store.item_by_ext_task(project.id, int(task_id))
        return None

    def ingest(self, project: Project, cfg: LabelConfig, ev: AnnotationEvent) -> str:
        """Record one annotation; returns the store outcome, ``rejected`` or ``unknown_task``."""
        if not (0 < ev.annotation_id <= MAX_DB_INT and 0 < ev.task_id <= MAX_DB_INT):
            log.warning("project %s: annotation id or task id out of range (annotation %s, task %s); dropped",
                        project.id, str(ev.annotation_id)[:30], str(ev.task_id)[:30])
            return "rejected"
        item = self._item_for(project, ev.item_id, ev.task_id)
        if item is None:
            log.info("project %s: annotation %s is for task %s, which al-loop does not know yet; reconcile later",
                     project.id, ev.annotation_id, ev.task_id)
            if self.links.link(project.id) is not None:
                self.store.update_link(project.id, needs_reconcile=True)
            return "unknown_task"
        try:
            shown = ev.task_data.get(cfg.text_key)
            if (project.task is TaskKind.NER and not ev.was_cancelled and isinstance(shown, str)
                    and shown != item.text):
                raise DataFormatError(f"task {ev.task_id}: the Label Studio text differs from al-loop's text of item "
                                      f"{item.item_id}; span offsets cannot be trusted")
            converted = annotation_to_example(list(ev.result), item_id=item.item_id, text=item.text, config=cfg,
                                              was_cancelled=ev.was_cancelled, annotation_id=ev.annotation_id,
                                              task_id=ev.task_id)
        except AlLoopError as exc:
            log.warning("project %s: Label Studio annotation %s (task %s, item %s) rejected: %s: %s", project.id,
                        ev.annotation_id, ev.task_id, item.item_id, type(exc).__name__, exc)
            self.store.reject_annotation(project.id, annotation_id=ev.annotation_id, task_id=ev.task_id,
                                         item_id=item.item_id, updated_at=ev.updated_at,
                                         error_type=type(exc).__name__, error=str(exc))
            return "rejected"
        annotator = str(ev.completed_by) if ev.completed_by is not None else None
        updated_at = parse_ls_time(ev.updated_at)
        if updated_at is None and ev.updated_at is not None:
            log.warning("project %s: annotation %s has an unreadable updated_at (%r); compared by content",
                        project.id, ev.annotation_id, str(ev.updated_at)[:40])
        key = annotation_key(ev.annotation_id)
        if isinstance(converted, Skipped):
            outcome = self.store.record_label(project.id, item.item_id, key, payload=None, source=LABEL_SOURCE,
                                              skipped=True, annotator=annotator, updated_at=updated_at)
            return "skipped" if outcome in ("created", "updated") else outcome
        return self.store.record_label(project.id, item.item_id, key, payload=payload_from_example(converted),
                                       source=LABEL_SOURCE, annotator=annotator, updated_at=updated_at)

    def _check_config(self, project: Project, ls_project: Any) -> None:
        """PROJECT_UPDATED: follow tag renames in the label config; warn when its labels drift from al-loop's."""
        link = self.links.link(project.id)
        if not isinstance(ls_project, Mapping) or link is None:
            return
        xml = ls_project.get("label_config")
        if not isinstance(xml, str) or not xml or xml == link.label_config:
            return
        try:
            cfg = parse_label_config(xml)
        except SchemaError as exc:
            warning = f"the Label Studio label config can no longer be driven by al-loop: {exc}"
        else:
            theirs, ours = cfg.schema, project.schema
            if theirs.task is ours.task and set(theirs.labels) == set(ours.labels):
                self.store.update_link(project.id, label_config=xml, config_warning=None)
                log.info("project %s: Label Studio label config updated (same labels)", project.id)
                return
            added = sorted(set(theirs.labels) - set(ours.labels))
            removed = sorted(set(ours.labels) - set(theirs.labels))
            warning = (f"the Label Studio label config changed (added {added}, removed {removed}); al-loop keeps the "
                       f"project's labels {list(ours.labels)} and rejects annotations with other labels")
        log.warning("project %s: %s", project.id, warning)
        self.store.update_link(project.id, config_warning=warning)

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, project_id: int) -> dict[str, Any]:
        """Re-read every annotated task of the Label Studio project (the source of truth).

        Records every annotation (idempotent), marks stored Label Studio annotations that no
        longer exist as deleted, adopts tasks created in Label Studio directly and creates
        tasks for items without one. LabelStudioUnavailable propagates (the caller retries).
        """
        project = self.store.get_project(project_id)
        link = self.links.link(project_id)
        if link is None:
            return {"status": "skipped", "reason": "the project has no Label Studio project"}
        if not self.links.backend_is_current(link):
            self.links.connect_backend(project)  # never connected, or this server moved (AL_LOOP_PUBLIC_URL changed)
        tasks = self.links.sync_tasks(project)
        cfg = self.links.label_config(project)
        outcomes: Counter[str] = Counter()
        seen: set[str] = set()
        for task in self.links.gateway.list_annotated_tasks(link.ls_project_id, text_key=cfg.text_key):
            for ann in task.annotations:
                seen.add(annotation_key(ann.annotation_id))
                outcomes[self.ingest(project, cfg, ann)] += 1
        vanished = self.store.live_annotation_keys(project_id, LABEL_SOURCE) - seen
        outcomes["deleted"] = self.store.delete_labels(project_id, sorted(vanished)) if vanished else 0
        summary = {"status": "done", "at": self.clock().isoformat() + "Z", "outcomes": dict(outcomes), "tasks": tasks}
        self.store.update_link(project_id, needs_reconcile=outcomes["unknown_task"] > 0, last_reconcile=summary)
        log.info("project %s: reconciled with Label Studio project %s: %s", project_id, link.ls_project_id,
                 dict(outcomes))
        return summary


__all__ = ["AnnotationSync"]
