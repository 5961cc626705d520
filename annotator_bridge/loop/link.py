"""``LabelStudioLinks``: a project's side in Label Studio, shared by the loop services.

It owns the gateway (made on first use), reads each project's ``LabelStudioLink`` record,
turns its label config into tag names, connects al-loop as the project's ML backend and keeps
Label Studio tasks and al-loop items mapped to each other (push items as tasks, adopt tasks
created in Label Studio directly).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from al_loop.rounds.service import cold_version_tag
from al_loop.store.records import LabelStudioLink, Project
from al_loop.store.repository import Store
from al_loop.types import Example, ItemId
from annotator_bridge.labelstudio.config import LabelConfig, build_label_config, parse_label_config
from annotator_bridge.labelstudio.connection import LabelStudioRequestError, LabelStudioUnavailable
from annotator_bridge.labelstudio.convert import ITEM_ID_KEY
from annotator_bridge.loop.ports import MAX_DB_INT, Gateway, GatewayFactory
from annotator_bridge.settings import WEBHOOK_SECRET_HEADER, Settings

log = logging.getLogger("annotator_bridge.loop")


class LabelStudioLinks:
    """Label Studio access for every project (thread-safe: state lives in the store)."""

    def __init__(self, store: Store, settings: Settings, gateway_factory: GatewayFactory) -> None:
        self.store = store
        self.settings = settings
        self._gateway_factory = gateway_factory
        self._gateway: Gateway | None = None
        self._lock = threading.Lock()
        self._configs: dict[str, LabelConfig] = {}

    @property
    def gateway(self) -> Gateway:
        """The Label Studio gateway, made on first use (ConfigError when Label Studio is not configured)."""
        with self._lock:
            if self._gateway is None:
                self._gateway = self._gateway_factory()
            return self._gateway

    def link(self, project_id: int) -> LabelStudioLink | None:
        return self.store.get_link(project_id)

    def label_config(self, project: Project, link: LabelStudioLink | None = None) -> LabelConfig:
        """The project's Label Studio label config, validated against al-loop's schema for the project.

        Tag names (from_name/to_name/text_key) come from the stored config XML; labels are
        checked against the project's own schema, so a label added in Label Studio later is
        rejected (UnknownLabelError) instead of breaking the next round.
        """
        link = link if link is not None else self.link(project.id)
        if link is None:
            return LabelConfig(project.schema, "label", "text", xml=build_label_config(project.schema))
        xml = link.label_config
        if not xml:
            xml = str(self.gateway.get_project(link.ls_project_id).label_config)
            self.store.update_link(project.id, label_config=xml)
        cfg = self._configs.get(xml)
        if cfg is None:
            cfg = parse_label_config(xml)
            self._configs[xml] = cfg
        return replace(cfg, schema=project.schema)

    # ------------------------------------------------------------------ ML backend
    def backend_is_current(self, link: LabelStudioLink) -> bool:
        """Connected at this server's ``AL_LOOP_PUBLIC_URL`` (or no public URL to connect at)."""
        url = self.settings.public_url
        return not url or (link.ml_backend_status == "connected" and link.ml_backend_url == url)

    def connect_backend(self, project: Project) -> bool:
        """Connect al-loop as the ML backend (creates Label Studio's one webhook to ``<url>/webhook``)."""
        link = self.link(project.id)
        url = self.settings.public_url
        if link is None:
            return False
        if not url:
            log.warning("project %s: AL_LOOP_PUBLIC_URL is not set, so al-loop is not connected as the ML backend "
                        "of Label Studio project %s: no webhooks will arrive (labels come in through reconcile)",
                        project.id, link.ls_project_id)
            self.store.update_link(project.id, ml_backend_status="not configured", ml_backend_url=None,
                                   ml_backend_id=None, ml_backend_error=None)
            return False
        headers = {WEBHOOK_SECRET_HEADER: self.settings.webhook_secret} if self.settings.webhook_secret else None
        title = link.model_version or cold_version_tag(0, project.schema)
        try:
            ml = self.gateway.connect_ml_backend(link.ls_project_id, url, title=title, webhook_headers=headers)
        except (LabelStudioUnavailable, LabelStudioRequestError) as exc:
            log.warning("project %s: connecting the ML backend at %s failed: %s (retried on reconcile)",
                        project.id, url, exc)
            self.store.update_link(project.id, ml_backend_status="failed", ml_backend_url=url, ml_backend_id=None,
                                   ml_backend_error=str(exc)[:500])
            return False
        backend_id = (ml or {}).get("id")
        self.store.update_link(project.id, ml_backend_status="connected", ml_backend_url=url, ml_backend_error=None,
                               ml_backend_id=int(backend_id) if isinstance(backend_id, int) else None)
        return True

    # ------------------------------------------------------------------ tasks
    def push_tasks(self, project: Project) -> int:
        """Create Label Studio tasks for pool items that have none; returns how many items got a task id."""
        link = self.link(project.id)
        if link is None:
            return 0
        todo = [it for it in self.store.get_items(project.id, split="pool") if it.ext_task_id is None]
        if not todo:
            return 0
        cfg = self.label_config(project, link)
        mapping = self.gateway.import_tasks(link.ls_project_id, [(it.item_id, it.text, None) for it in todo],
                                            text_key=cfg.text_key)
        self.store.set_ext_task_ids(project.id, {str(k): int(v) for k, v in mapping.items()})
        return len(mapping)

    def sync_tasks(self, project: Project) -> dict[str, int]:
        """Map Label Studio tasks to items: adopt tasks al-loop does not know, create tasks for items without one."""
        link = self.link(project.id)
        if link is None:
            return {}
        tasks = self._new_tasks(project.id, link.ls_project_id)
        if tasks is None:
            tasks = list(self.gateway.list_tasks(link.ls_project_id, fields="task_only", page_size=1000))
        adopted = self.adopt_tasks(project, tasks)
        created = self.push_tasks(project)
        return {"adopted": adopted, "created": created}

    def _new_tasks(self, project_id: int, ls_project_id: int) -> list[dict[str, Any]] | None:
        """The tasks created since the newest one al-loop knows, when that accounts for every task of the Label
        Studio project (its task count = the tasks al-loop knows + these); None otherwise (the caller lists them
        all): a task created in between al-loop's own imports, or deleted, shows as a count that does not add up."""
        known, newest = self.store.ext_task_span(project_id)  # one aggregate query, not every item
        if newest is None:
            return None
        newer = list(self.gateway.tasks_after(ls_project_id, newest))
        if self.gateway.task_count(ls_project_id) != known + len(newer):
            log.info("project %s: Label Studio's task count differs from the tasks al-loop knows; listing them all",
                     project_id)
            return None
        return newer

    def adopt_tasks(self, project: Project, tasks: Iterable[Mapping[str, Any]]) -> int:
        """Items for Label Studio tasks al-loop does not know (item id = ``data.item_id`` or ``ls-<task id>``).

        The new items and every task id are written in one transaction: an item never lands without
        its task id. Task ids that are not database integers are skipped with a warning.
        """
        cfg = self.label_config(project)
        items = self.store.get_items(project.id)
        by_id = {it.item_id: it for it in items}
        by_task = {it.ext_task_id for it in items if it.ext_task_id is not None}
        mapping: dict[str, int] = {}
        new: list[Example] = []
        new_tasks: dict[str, int] = {}
        for task in tasks:
            if not isinstance(task, Mapping) or isinstance(task.get("id"), bool) or not isinstance(task.get("id"), int):
                continue
            task_id = int(task["id"])
            if not 0 < task_id <= MAX_DB_INT:
                log.warning("project %s: Label Studio task id %s is out of range; not adopted", project.id,
                            str(task_id)[:30])
                continue
            if task_id in by_task:
                continue
            raw_data = task.get("data")
            data: Mapping[str, Any] = raw_data if isinstance(raw_data, Mapping) else {}
            raw_id = data.get(ITEM_ID_KEY)
            item_id = str(raw_id) if raw_id is not None else f"ls-{task_id}"
            known = by_id.get(ItemId(item_id))
            if known is not None:
                if known.ext_task_id is None:
                    mapping[item_id] = task_id
                continue
            text = data.get(cfg.text_key)
            if not isinstance(text, str):
                log.warning("project %s: Label Studio task %s has no text in data[%r]; not adopted", project.id,
                            task_id, cfg.text_key)
                continue
            if item_id in new_tasks:
                continue
            new.append(Example(ItemId(item_id), text))
            new_tasks[item_id] = task_id
        dupes: set[str] = set()
        with self.store.transaction():  # the items and their task ids: both or neither
            if new:
                dupes = set(self.store.add_items(project.id, new, "pool").duplicate_texts)
                mapping.update({k: v for k, v in new_tasks.items() if k not in dupes})
            if mapping:
                self.store.set_ext_task_ids(project.id, mapping)
        if dupes:
            log.warning("project %s: %d Label Studio tasks repeat the text of an existing item; not adopted",
                        project.id, len(dupes))
        if mapping:
            log.info("project %s: %d Label Studio tasks mapped to items", project.id, len(mapping))
        return len(mapping)


__all__ = ["LabelStudioLinks"]
