"""Label Studio tasks: paged listing, import of al-loop items, annotated tasks for reconciliation.

``task_id`` is a Label Studio id (int); ``ItemId`` is al-loop's item id, stored as
``task.data["item_id"]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from al_loop.errors import DataFormatError
from al_loop.types import Example, ItemId

from .config import DEFAULT_TEXT_KEY, LabelConfig
from .connection import LabelStudioRequestError
from .convert import ITEM_ID_KEY, AnnotationEvent, Skipped, parse_annotation
from .projects import ProjectCalls

ANNOTATED_FILTER = {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}]}


@dataclass(frozen=True)
class AnnotatedTask:
    """A task with at least one annotation, for reconciliation."""

    task_id: int
    item_id: ItemId | None          # None for tasks not created by al-loop (no data["item_id"])
    text: str | None
    data: dict[str, Any]
    annotations: tuple[AnnotationEvent, ...]

    def examples(self, config: LabelConfig) -> list[Example | Skipped]:
        """Each annotation as an Example (or Skipped); needs item id and text."""
        return [ann.to_example(config) for ann in self.annotations]


class TaskCalls(ProjectCalls):
    """The task endpoints of ``LabelStudioGateway``."""

    def list_tasks(self, project_id: int, *, query: Mapping[str, Any] | None = None, fields: str = "task_only",
                   page_size: int = 500, token: str | None = None) -> Iterator[dict[str, Any]]:
        """Tasks of a project, page by page (``query``: Data Manager filters/ordering, default id order)."""
        q = dict(query or {})
        q.setdefault("ordering", ["tasks:id"])
        page, seen = 1, 0
        while True:
            params = {"project": int(project_id), "page": page, "page_size": int(page_size), "fields": fields,
                      "query": json.dumps(q)}
            body = self._raw("GET", "api/tasks/", params=params, token=token, allow_404=True)
            tasks = (body or {}).get("tasks") or []
            yield from tasks
            seen += len(tasks)
            total = (body or {}).get("total")
            if not tasks or len(tasks) < page_size or (isinstance(total, int) and seen >= total):
                return
            page += 1

    def tasks_after(self, project_id: int, task_id: int, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Tasks (``task_only``) whose id is greater than ``task_id``, in id order: Label Studio's ids only grow,
        so these are the tasks created since that one."""
        after = {"conjunction": "and", "items": [
            {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": int(task_id)}]}
        yield from self.list_tasks(project_id, query={"filters": after}, fields="task_only", page_size=page_size)

    def task_count(self, project_id: int) -> int:
        """How many tasks the project holds (the project's ``task_number``)."""
        return int(self.get_project(project_id).raw.get("task_number") or 0)

    def task_ids_by_item(self, project_id: int) -> dict[ItemId, int]:
        """``item_id -> task id`` for every task carrying ``data["item_id"]`` (first task wins on duplicates)."""
        out: dict[ItemId, int] = {}
        for t in self.list_tasks(project_id, fields="task_only", page_size=1000):
            item = (t.get("data") or {}).get(ITEM_ID_KEY)
            if item is not None:
                out.setdefault(ItemId(str(item)), int(t["id"]))
        return out

    def import_tasks(self, project_id: int, items: Iterable[tuple[ItemId | str, str, Mapping[str, Any] | None]], *,
                     text_key: str = DEFAULT_TEXT_KEY, chunk_size: int = 500, skip_existing: bool = True,
                     verify: bool = False) -> dict[ItemId, int]:
        """Import ``(item_id, text, meta)`` items as tasks; returns ``item_id -> task id`` for all of them.

        Task data is ``{text_key: text, "item_id": item_id}``; ``meta`` goes to the task's
        ``meta``. With ``skip_existing`` items already in the project (by item id) are not
        imported again, which makes a retried import safe (costs one listing of the
        project's tasks, ~1.5 s per 1,000 tasks, skipped for an empty project).
        Label Studio 1.23 (Community) returns the new task ids in request order when asked
        (``return_task_ids``); when it does not, or with ``verify=True``, the mapping is read
        back by listing the project's tasks (the authoritative source; LabelStudioRequestError
        when an item is missing or maps to another task).
        """
        batch: list[tuple[ItemId, str, dict[str, Any]]] = []
        seen: set[ItemId] = set()
        for item_id, text, meta in items:
            iid = ItemId(str(item_id))
            if iid in seen:
                raise DataFormatError(f"item id {iid!r} appears twice in the import")
            if not isinstance(text, str):
                raise DataFormatError(f"item {iid!r}: text must be a string")
            seen.add(iid)
            batch.append((iid, text, dict(meta or {})))
        existing: dict[ItemId, int] = {}
        if skip_existing and int(self.get_project(project_id).raw.get("task_number") or 0) > 0:
            existing = self.task_ids_by_item(project_id)
        todo = [b for b in batch if b[0] not in existing]
        returned: dict[ItemId, int] = {}
        complete = True
        for start in range(0, len(todo), max(1, chunk_size)):
            chunk = todo[start:start + chunk_size]
            request = [{"data": {text_key: text, ITEM_ID_KEY: iid}, "meta": meta} for iid, text, meta in chunk]
            resp = self._call(f"import of {len(chunk)} tasks into project {project_id}",
                              lambda request=request: self.client.projects.import_tasks(  # type: ignore[misc]
                                  id=int(project_id), request=request, return_task_ids=True),
                              idempotent=False)
            if resp.task_count != len(chunk):
                raise LabelStudioRequestError(f"Label Studio imported {resp.task_count} of {len(chunk)} tasks "
                                              f"into project {project_id}")
            ids = list(getattr(resp, "task_ids", None) or [])  # present with return_task_ids (CE 1.23)
            if len(ids) == len(chunk):
                returned.update({iid: int(t) for (iid, _, _), t in zip(chunk, ids)})
            else:
                complete = False
        mapping = {**existing, **returned}
        if verify or not complete:
            listed = self.task_ids_by_item(project_id)
            missing = [iid for iid, _, _ in batch if iid not in listed]
            if missing:
                raise LabelStudioRequestError(f"{len(missing)} imported items are missing from project "
                                              f"{project_id}, e.g. {missing[:3]}")
            wrong = [iid for iid, tid in returned.items() if listed[iid] != tid]
            if wrong:
                raise LabelStudioRequestError(f"{len(wrong)} item ids of project {project_id} are held by other "
                                              f"tasks than the import reported (duplicate item ids?), "
                                              f"e.g. {wrong[:3]}")
            mapping = listed
        return {iid: mapping[iid] for iid, _, _ in batch}

    def list_annotated_tasks(self, project_id: int, *, text_key: str | None = None,
                             page_size: int = 100) -> Iterator[AnnotatedTask]:
        """Tasks with ``total_annotations > 0`` and their annotations (``only_annotated`` is ignored by LS).

        ``text_key`` defaults to the project's label config. Cancelled (skipped)
        annotations are included with ``was_cancelled=True``.
        """
        key = text_key or self.project_config(project_id).text_key
        for t in self.list_tasks(project_id, query={"filters": ANNOTATED_FILTER}, fields="all",
                                 page_size=page_size):
            data = dict(t.get("data") or {})
            task_id = int(t["id"])
            anns = tuple(parse_annotation({**a, "task": task_id}, action="LIST", project_ls_id=int(project_id),
                                          task={"id": task_id, "data": data})
                         for a in t.get("annotations") or [])
            item = data.get(ITEM_ID_KEY)
            text = data.get(key)
            yield AnnotatedTask(task_id=task_id, item_id=ItemId(str(item)) if item is not None else None,
                                text=text if isinstance(text, str) else None, data=data, annotations=anns)
