"""Schema migrations run when a ``Store`` opens a database (each one checks first, so reopening is free).

- ``projects.integration`` (a JSON bag, before the typed link) -> ``label_studio_links`` and
  ``rejected_annotations`` rows; the column is dropped.
- ``labels.version_at`` (the source's own version time, before content comparison): added, and
  filled from ``updated_at`` for the rows already there (they were all stored with a time).
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import DateTime, Engine, insert, inspect, text

from al_loop.store.tables import LabelStudioLinkRow, RejectedAnnotationRow


def migrate(engine: Engine) -> None:
    """Bring an existing database up to the current tables (``create_all`` has made the missing ones)."""
    _migrate_integration_column(engine)
    _migrate_label_version_column(engine)


def _columns(engine: Engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def _migrate_label_version_column(engine: Engine) -> None:
    if "version_at" in _columns(engine, "labels"):
        return
    kind = DateTime().compile(dialect=engine.dialect)
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE labels ADD COLUMN version_at {kind}"))
        conn.execute(text("UPDATE labels SET version_at = updated_at"))


def _migrate_integration_column(engine: Engine) -> None:
    """Databases written before the typed link kept it in ``projects.integration`` (JSON): move it, drop the column."""
    if "integration" not in _columns(engine, "projects"):
        return
    with engine.begin() as conn:
        for pid, raw in conn.execute(text("SELECT id, integration FROM projects")).all():
            bag = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
            if bag.get("ls_project_id") is None:
                continue
            ml = bag.get("ml_backend") or {}
            conn.execute(insert(LabelStudioLinkRow).values(
                project_id=pid, ls_project_id=int(bag["ls_project_id"]), url=bag.get("ls_url"),
                label_config=bag.get("ls_label_config"), attached=bool(bag.get("ls_attached")),
                model_version=bag.get("ls_model_version"), ml_backend_status=ml.get("status"),
                ml_backend_url=ml.get("url"), ml_backend_id=ml.get("id"), ml_backend_error=ml.get("error"),
                needs_reconcile=bool(bag.get("needs_reconcile")), last_reconcile=bag.get("last_reconcile"),
                config_warning=bag.get("config_warning")))
            for r in bag.get("rejected") or []:
                conn.execute(insert(RejectedAnnotationRow).values(
                    project_id=pid, annotation_id=int(r.get("annotation_id") or 0), task_id=r.get("task_id"),
                    item_id=r.get("item_id"), updated_at=r.get("updated_at") or "", type=str(r.get("type") or ""),
                    error=str(r.get("error") or ""), at=datetime.utcnow()))
        conn.execute(text("ALTER TABLE projects DROP COLUMN integration"))


__all__ = ["migrate"]
