"""``BatchIngest``: many webhook bodies of one project at once (the worker's batched drain).

Consecutive annotation events (``ANNOTATION_CREATED`` / ``_UPDATED``, ``ANNOTATIONS_CREATED``)
are recorded through :meth:`AnnotationSync.ingest` inside ONE store transaction (one commit,
one read of the project, its link and its label config for the whole run); any other event
(deletions, ``TASKS_CREATED``, ``PROJECT_UPDATED``) ends the run and goes through
:meth:`AnnotationSync.handle_event` on its own, so the order of the events is kept. Rounds are
started only after the commit (a worker must never read a round that is not committed yet),
once per batch: ``START_TRAINING`` first, else the retrain policy when labels were added or
changed.

A transaction that fails (a database error) is replayed one event per transaction, so one bad
event costs only itself; ``LabelStudioUnavailable`` propagates (the caller retries the batch:
ingest is idempotent).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from al_loop.store.records import LabelStudioLink, Project, Round
from al_loop.store.repository import Store
from annotator_bridge.labelstudio.connection import LabelStudioUnavailable
from annotator_bridge.labelstudio.convert import (
    AnnotationEvent,
    AnnotationsCreated,
    StartTraining,
    WebhookPayloadError,
    parse_webhook,
)
from annotator_bridge.loop.annotations import AnnotationSync
from annotator_bridge.loop.link import LabelStudioLinks

log = logging.getLogger("annotator_bridge.loop")


class BatchIngest:
    """Batches of webhook bodies into the store (thread-safe: state lives in the store)."""

    def __init__(self, store: Store, links: LabelStudioLinks, annotations: AnnotationSync, *,
                 start_round: Callable[[int, str], Round | None], should_start_round: Callable[[int], bool]) -> None:
        self.store = store
        self.links = links
        self.annotations = annotations
        self._start_round = start_round
        self._should_start = should_start_round

    def handle_events(self, project_id: int, payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Apply webhook bodies of project ``project_id`` in order; see the module docstring.

        Returns ``{"events", "outcomes": {created|updated|duplicate|...: n}, "round_id"}``.
        NotFoundError when the project does not exist (the batch is dropped by the caller).
        """
        project = self.store.get_project(project_id)
        link = self.links.link(project_id)
        outcomes: Counter[str] = Counter()
        run: list[AnnotationEvent] = []
        train = False
        for payload in payloads:
            try:
                event = parse_webhook(payload)
            except WebhookPayloadError as exc:
                log.warning("project %s: unreadable webhook dropped: %s", project_id, exc)
                outcomes["unreadable"] += 1
                continue
            if isinstance(event, AnnotationEvent | AnnotationsCreated):
                if link is not None and int(event.project_ls_id) != link.ls_project_id:
                    outcomes["other_project"] += 1
                    continue
                run.extend([event] if isinstance(event, AnnotationEvent) else event.events)
                continue
            self._record(project, link, run, outcomes)
            if isinstance(event, StartTraining):
                train = True
                continue
            summary = self.annotations.handle_event(project_id, payload)
            outcomes.update(summary.get("outcomes") or {})
        self._record(project, link, run, outcomes)
        started: Round | None = None
        if train:
            started = self._start_round(project_id, "label_studio")
        elif (outcomes["created"] or outcomes["updated"]) and self._should_start(project_id):
            started = self._start_round(project_id, "policy")
        log.info("project %s: %d webhook events -> %s%s", project_id, len(payloads), dict(outcomes),
                 f"; round {started.index} queued" if started else "")
        return {"events": len(payloads), "outcomes": dict(outcomes), "round_id": started.id if started else None}

    def _record(self, project: Project, link: LabelStudioLink | None, run: list[AnnotationEvent],
                outcomes: Counter[str]) -> None:
        """Record ``run`` in one transaction (replayed one by one if it fails), then empty it."""
        if not run:
            return
        events, run[:] = list(run), []
        cfg = self.links.label_config(project, link)  # reads Label Studio only when the link has no config yet
        try:
            with self.store.transaction():
                done = Counter(self.annotations.ingest(project, cfg, ev) for ev in events)
        except LabelStudioUnavailable:
            raise
        except Exception as exc:  # a database error rolled the run back: one transaction per event
            log.warning("project %s: batch of %d annotations failed (%s: %s); recording them one by one",
                        project.id, len(events), type(exc).__name__, exc)
            done = Counter()
            for ev in events:
                try:
                    done[self.annotations.ingest(project, cfg, ev)] += 1
                except LabelStudioUnavailable:
                    raise
                except Exception:
                    log.exception("project %s: annotation %s (task %s) could not be recorded", project.id,
                                  ev.annotation_id, ev.task_id)
                    done["failed"] += 1
        outcomes.update(done)


__all__ = ["BatchIngest"]
