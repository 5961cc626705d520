"""``ProjectSetup``: create or attach projects (and their Label Studio side) and import their items."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from al_loop.data.readers import FORMATS, read_examples
from al_loop.data.schema import LabelSchema
from al_loop.data.stream import DEFAULT_BATCH_SIZE, file_size
from al_loop.errors import (
    AlLoopError,
    ConfigError,
    ConflictError,
    DataFormatError,
    SchemaError,
)
from al_loop.states import ImportStatus
from al_loop.store.imports import ImportJob, create_import, get_import, update_import
from al_loop.store.records import Project, Round, payload_from_example
from al_loop.store.repository import Store
from al_loop.store.sources import check_source
from al_loop.strategies import make_strategy
from al_loop.types import Example
from annotator_bridge.labelstudio.config import LabelConfig, build_label_config
from annotator_bridge.labelstudio.connection import LabelStudioRequestError, LabelStudioUnavailable
from annotator_bridge.loop.imports import SYNC_IMPORT_MAX_BYTES, run_import, validate_examples
from annotator_bridge.loop.link import LabelStudioLinks
from annotator_bridge.loop.ports import IMPORT_SOURCE
from annotator_bridge.loop.spec import ProjectSpec
from annotator_bridge.settings import Settings

log = logging.getLogger("annotator_bridge.loop")

StartRound = Callable[[int, str], Round | None]
"""``(project_id, trigger) -> the queued round, or None when one is active already``."""


class ProjectSetup:
    """Project creation (new Label Studio project, attached one, or none) and item import."""

    import_batch_size = DEFAULT_BATCH_SIZE
    """Examples per transaction of an import job."""

    def __init__(self, store: Store, settings: Settings, links: LabelStudioLinks, start_round: StartRound) -> None:
        self.store = store
        self.settings = settings
        self.links = links
        self._start_round = start_round

    def create_project(self, spec: ProjectSpec | Mapping[str, Any]) -> Project:
        """Create an al-loop project (and its Label Studio side); see ``ProjectSpec``.

        ConflictError for a taken name or a Label Studio project already attached; SchemaError
        when labels/task disagree with an attached project's label config; LabelStudioUnavailable
        when Label Studio does not answer (nothing is created then).
        """
        spec = spec if isinstance(spec, ProjectSpec) else ProjectSpec.from_dict(spec)
        if any(p.name == spec.name for p in self.store.list_projects()):
            raise ConflictError(f"a project named {spec.name!r} already exists")
        ls_id: int | None = None
        link: dict[str, Any] = {}
        created_ls: int | None = None
        if spec.label_studio is None:
            schema = spec.schema()
            self._check(spec, schema)
        elif spec.attach_to is not None:
            ls_id = int(spec.attach_to)
            other = self.store.find_link(ls_id)
            if other is not None:
                name = self.store.get_project(other.project_id).name
                raise ConflictError(f"Label Studio project {ls_id} is already attached to al-loop project "
                                    f"{other.project_id} ({name!r})")
            ls = self.links.gateway.get_project(ls_id)
            schema = _attach_schema(spec, ls.config)
            self._check(spec, schema)
            link = {"label_config": ls.label_config, "attached": True}
        else:
            schema = spec.schema()
            self._check(spec, schema)
            xml = build_label_config(schema)
            title = _ls_title(spec.label_studio.get("title") or spec.name)
            ls = self.links.gateway.create_project(title, xml, description=spec.label_studio.get("description", ""))
            ls_id = created_ls = int(ls.id)
            link = {"label_config": ls.label_config or xml, "attached": False}
        if ls_id is not None:
            link.update(url=self.settings.label_studio_url, needs_reconcile=False)
        try:
            project = self.store.create_project(spec.name, schema, spec.base_model, spec.loop, spec.training,
                                                ls_project_id=ls_id, link=link)
        except Exception:
            if created_ls is not None:
                self._delete_ls_project(created_ls)
            raise
        log.info("project %s (%s) created; Label Studio project %s", project.id, project.name, ls_id)
        if ls_id is not None:
            self.links.connect_backend(project)
            if spec.attach_to is not None:
                try:
                    self.links.sync_tasks(project)
                except (LabelStudioUnavailable, LabelStudioRequestError) as exc:
                    log.warning("project %s: could not read the attached tasks yet (%s); reconcile later",
                                project.id, exc)
                    self.store.update_link(project.id, needs_reconcile=True)
        return self.store.get_project(project.id)

    def _check(self, spec: ProjectSpec, schema: LabelSchema) -> None:
        """What needs the schema's task: the strategy, and a source model's task kind (and that another project's
        version exists, with its artifact: ``al_loop.store.sources.check_source``), before anything is created."""
        make_strategy(spec.loop.strategy, schema.task)
        check_source(self.store, spec.base_model, schema.task.value)

    def _delete_ls_project(self, ls_id: int) -> None:
        try:
            self.links.gateway.delete_project(ls_id)
        except AlLoopError as exc:
            log.warning("could not delete Label Studio project %s after a failed create: %s", ls_id, exc)

    # ------------------------------------------------------------------ items
    def import_items(
        self,
        project_id: int,
        examples: Iterable[Example] | None = None,
        *,
        path: str | Path | None = None,
        format: str | None = None,
        split: str = "pool",
        record_labels: bool = False,
        start_round: bool = False,
    ) -> dict[str, Any]:
        """Add items (``examples`` or a server-side ``path`` read with ``read_examples``) to a split.

        ``path`` must lie in ``AL_LOOP_IMPORT_DIRS`` (see ``Settings.resolve_import_path``); the
        resolved path is what is read, a regular file of at most ``AL_LOOP_MAX_IMPORT_MB``, and
        errors about it name the file and line but quote none of its content.

        Pool items are also created as Label Studio tasks (idempotent: items already there are
        not imported again). Gold annotations are kept as ``gold``; ``record_labels`` also
        records pool items' gold as labels (source "import") so they train the next round.
        ``split="test"`` items need gold labels and stay out of Label Studio (evaluation set).
        ``start_round`` queues a round after the import (ignored when one is active).
        """
        project = self.store.get_project(project_id)
        if split not in ("pool", "test"):
            raise ConfigError("split must be 'pool' or 'test'")
        if (examples is None) == (path is None):
            raise ConfigError("give either items or a file path")
        from_file: Path | None = None
        if path is not None:
            from_file = self.settings.resolve_import_path(path)
            examples = self._read_file(from_file, project, format)
        batch = validate_examples(project, list(examples or []), split, from_file)
        report = self.store.add_items(project_id, batch, split)
        recorded = 0
        if record_labels and split == "pool":
            for ex in batch:
                payload = payload_from_example(ex)
                if payload is None:
                    continue
                outcome = self.store.record_label(project_id, ex.item_id, f"{IMPORT_SOURCE}:{ex.item_id}",
                                                  payload=payload, source=IMPORT_SOURCE)
                recorded += outcome in ("created", "updated")
        result: dict[str, Any] = {**report.to_dict(), "labels_recorded": recorded, "ls_tasks": 0, "round": None}
        if split == "pool" and self.links.link(project_id) is not None:
            try:
                result["ls_tasks"] = self.links.push_tasks(project)
            except LabelStudioUnavailable as exc:
                raise LabelStudioUnavailable(f"{report.added} items were stored, but their Label Studio tasks could "
                                             f"not be created ({exc}); import again or reconcile to retry") from exc
        log.info("project %s: imported %d items into %s (%d existing, %d duplicate texts, %d tasks)", project_id,
                 report.added, split, report.existing, len(report.duplicate_texts), result["ls_tasks"])
        if start_round:
            rnd = self._start_round(project_id, "import")
            result["round"] = rnd.to_dict() if rnd else None
        return result

    # ------------------------------------------------------------------ import jobs
    def wants_job(self, path: str | Path, background: bool = False) -> bool:
        """Whether a ``path`` import runs as a job: asked for, or a file over ``SYNC_IMPORT_MAX_BYTES``."""
        return background or file_size(self.settings.resolve_import_path(path)) > SYNC_IMPORT_MAX_BYTES

    def start_import(self, project_id: int, path: str | Path, *, format: str | None = None, split: str = "pool",
                     record_labels: bool = False, start_round: bool = False) -> ImportJob:
        """Accept a file import as a ``pending`` job (checked as ``import_items`` checks a path: the allowed
        folders, the size limit, the format name); the caller dispatches ``execute_import``."""
        self.store.get_project(project_id)
        if split not in ("pool", "test"):
            raise ConfigError("split must be 'pool' or 'test'")
        if format is not None and format not in FORMATS:
            raise ConfigError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
        resolved = self.settings.resolve_import_path(path)
        size = file_size(resolved)
        limit = self.settings.max_import_bytes
        if size > limit:
            raise DataFormatError(f"file is larger than the import limit of {limit // (1024 * 1024)} MiB "
                                  "(AL_LOOP_MAX_IMPORT_MB)", str(resolved))
        return create_import(self.store, project_id, str(resolved), format=format, split=split,
                             options={"record_labels": record_labels, "start_round": start_round}, bytes_total=size)

    def execute_import(self, import_id: int) -> ImportJob:
        """Run a pending import job (a worker's task; a job already started or finished is left alone), then
        create the Label Studio tasks of a linked project and queue the round the import asked for."""
        job = get_import(self.store, None, import_id)
        if job.status is not ImportStatus.PENDING:
            log.info("import %s is %s; duplicate delivery ignored", import_id, job.status)
            return job
        # the path was resolved inside AL_LOOP_IMPORT_DIRS when the job was accepted; check it again (this
        # worker's settings may differ): a refusal fails the job instead of leaving it pending
        try:
            path = self.settings.resolve_import_path(job.path)
        except AlLoopError as exc:
            return update_import(self.store, import_id, status=ImportStatus.FAILED, error=str(exc))
        job = run_import(self.store, import_id, path, max_bytes=self.settings.max_import_bytes,
                         batch_size=self.import_batch_size)
        if job.status is not ImportStatus.SUCCEEDED:
            return job
        project = self.store.get_project(job.project_id)
        if job.split == "pool" and job.added and self.links.link(project.id) is not None:
            try:
                self.links.push_tasks(project)
            except LabelStudioUnavailable as exc:
                log.warning("project %s: import %s stored %d items, but their Label Studio tasks could not be "
                            "created (%s); reconcile to retry", project.id, import_id, job.added, exc)
        if job.options.get("start_round"):
            self._start_round(project.id, "import")
        return job

    def _read_file(self, path: Path, project: Project, format: str | None) -> list[Example]:
        limit = self.settings.max_import_bytes
        try:
            size = path.stat().st_size
        except OSError:
            size = 0  # the reader names the problem
        if size > limit:
            raise DataFormatError(f"file is larger than the import limit of {limit // (1024 * 1024)} MiB "
                                  "(AL_LOOP_MAX_IMPORT_MB)", str(path))
        return read_examples(path, task=project.task, format=format, max_bytes=limit, follow_symlinks=False)


def _ls_title(name: str) -> str:
    """Label Studio project titles are 3 to 50 characters."""
    title = name.strip() if len(name.strip()) >= 3 else f"al-loop {name.strip()}"
    return title[:50]


def _attach_schema(spec: ProjectSpec, cfg: LabelConfig) -> LabelSchema:
    """The attached project's schema; SchemaError when the spec contradicts its label config."""
    schema = cfg.schema
    if spec.task is not None and spec.task is not schema.task:
        raise SchemaError(f"the Label Studio project is a {schema.task.value} project, the spec says {spec.task.value}")
    if spec.labels is not None and set(spec.labels) != set(schema.labels):
        missing = sorted(set(spec.labels) - set(schema.labels))
        extra = sorted(set(schema.labels) - set(spec.labels))
        raise SchemaError(f"labels differ from the Label Studio project's config (not in Label Studio: {missing}; "
                          f"only in Label Studio: {extra})")
    if spec.multi_label is not None and spec.multi_label != schema.multi_label:
        raise SchemaError(f"the Label Studio config has multi_label={schema.multi_label}, the spec says "
                          f"{spec.multi_label}")
    return schema


__all__ = ["ProjectSetup"]
