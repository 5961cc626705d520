"""Import jobs in the store: ``ImportJob`` records (the ``imports`` table) and their status changes.

A job is created ``pending`` by whoever accepts the import (the API, ``al-loop import``), run by
``annotator_bridge.loop.imports.run_import`` (one transaction per batch, progress written after each),
and ends ``succeeded`` or ``failed`` with its error (see ``al_loop.states.ImportStatus``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from al_loop.errors import NotFoundError
from al_loop.states import ImportStatus, check_import_transition
from al_loop.store.limits import check_string
from al_loop.store.repository import Store, _known_id
from al_loop.store.tables import ImportRow

PROGRESS_FIELDS = frozenset({"rows_read", "added", "existing", "duplicates", "labels_recorded", "bytes_read",
                             "bytes_total"})


@dataclass(frozen=True)
class ImportJob:
    id: int
    project_id: int
    status: ImportStatus
    path: str
    format: str | None
    split: str
    options: dict[str, Any]
    rows_read: int
    added: int
    existing: int
    duplicates: int
    labels_recorded: int
    bytes_read: int
    bytes_total: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def progress(self) -> float:
        """Bytes read / file size, 0..1 (1 once succeeded)."""
        if self.status is ImportStatus.SUCCEEDED:
            return 1.0
        return min(1.0, self.bytes_read / self.bytes_total) if self.bytes_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        out["progress"] = round(self.progress, 4)
        for key in ("created_at", "started_at", "finished_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


def _job(r: ImportRow) -> ImportJob:
    return ImportJob(id=r.id, project_id=r.project_id, status=ImportStatus(r.status), path=r.path, format=r.format,
                     split=r.split, options=dict(r.options or {}), rows_read=r.rows_read, added=r.added,
                     existing=r.existing, duplicates=r.duplicates, labels_recorded=r.labels_recorded,
                     bytes_read=r.bytes_read, bytes_total=r.bytes_total, error=r.error, created_at=r.created_at,
                     started_at=r.started_at, finished_at=r.finished_at)


def create_import(store: Store, project_id: int, path: str, *, format: str | None, split: str,
                  options: dict[str, Any] | None = None, bytes_total: int = 0) -> ImportJob:
    """A new ``pending`` job (NotFoundError for an unknown project; the format name and split are checked
    against their columns: the API and the command line accept only known formats and pool/test)."""
    if split not in ("pool", "test"):
        raise ValueError("split must be 'pool' or 'test'")
    if format is not None:
        check_string("import format", format, ImportRow.format)
    with store.session() as s:
        store._project_row(s, project_id)
        row = ImportRow(project_id=project_id, status=ImportStatus.PENDING.value, path=path, format=format,
                        split=split, options=dict(options or {}), rows_read=0, added=0, existing=0, duplicates=0,
                        labels_recorded=0, bytes_read=0, bytes_total=bytes_total, error=None,
                        created_at=store.clock())
        s.add(row)
        s.flush()
        return _job(row)


def get_import(store: Store, project_id: int | None, import_id: int) -> ImportJob:
    """Import ``import_id`` of ``project_id`` (any project's when None); NotFoundError otherwise."""
    with store.session() as s:
        row = s.get(ImportRow, _known_id("import", import_id))
        if row is None or (project_id is not None and row.project_id != project_id):
            where = f"project {project_id} has" if project_id is not None else "there is"
            raise NotFoundError(f"{where} no import {import_id}")
        return _job(row)


def list_imports(store: Store, project_id: int, limit: int = 20) -> list[ImportJob]:
    """The project's newest imports, newest first."""
    with store.session() as s:
        rows = s.scalars(select(ImportRow).where(ImportRow.project_id == project_id)
                         .order_by(ImportRow.id.desc()).limit(limit))
        return [_job(r) for r in rows]


def update_import(store: Store, import_id: int, *, status: ImportStatus | None = None, error: str | None = None,
                  progress: Mapping[str, int] | None = None) -> ImportJob:
    """Write progress counters (``PROGRESS_FIELDS``) and/or a status change (checked against ``IMPORT_TRANSITIONS``)."""
    progress = progress or {}
    unknown = set(progress) - PROGRESS_FIELDS
    if unknown:
        raise ValueError(f"unknown import fields {sorted(unknown)}")
    with store.session() as s:
        row = s.get(ImportRow, import_id)
        if row is None:
            raise NotFoundError(f"no import {import_id}")
        for key, value in progress.items():
            setattr(row, key, int(value))
        if status is not None:
            nxt = check_import_transition(row.status, status)
            now = store.clock()
            if nxt is ImportStatus.RUNNING and row.started_at is None:
                row.started_at = now
            if nxt.is_final:
                row.finished_at = now
            row.status = nxt.value
        if error is not None:
            row.error = error.replace("\x00", "")[:4000]
        s.flush()
        return _job(row)


__all__ = ["ImportJob", "create_import", "get_import", "list_imports", "update_import"]
