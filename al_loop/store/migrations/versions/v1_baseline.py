"""Baseline: the schema of al-loop 0.1 (what ``create_all`` made up to commit a2b6118), adopting older databases.

Revision ID: 0001
Revises: -
Create Date: 2026-12-02

Idempotent, because databases written before the migrations carry no revision: every table that is
missing is created, the ones there are kept with their rows; then the two upgrades the store used to
run on open (``store/migrate.py``) bring still older databases to this schema:

- ``projects.integration`` (a JSON bag, before the typed Label Studio link) -> ``label_studio_links`` and
  ``rejected_annotations`` rows; the column is dropped;
- ``labels.version_at`` (the source's own version time) added and filled from ``updated_at``.

A revision is frozen: it declares its tables here and never imports ``al_loop.store.tables``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _project_fk() -> sa.Column:
    return sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)


def _tables() -> list[tuple[str, list[Any], list[tuple[str, list[str]]]]]:
    """(name, columns and constraints, indexes), parents first."""
    S, N, J, B, D, T, F = sa.String, sa.Integer, sa.JSON, sa.Boolean, sa.DateTime, sa.Text, sa.Float
    return [
        ("projects", [
            _id(), sa.Column("name", S(200), nullable=False), sa.Column("task", S(20), nullable=False),
            sa.Column("labels", J(), nullable=False), sa.Column("multi_label", B(), nullable=False),
            sa.Column("base_model", S(500), nullable=False), sa.Column("loop_config", J(), nullable=False),
            sa.Column("training_config", J(), nullable=False), sa.Column("created_at", D(), nullable=False),
            sa.UniqueConstraint("name"),
        ], []),
        ("simulations", [
            _id(), sa.Column("project_id", N(), nullable=True), sa.Column("name", S(200), nullable=False),
            sa.Column("points", J(), nullable=False), sa.Column("created_at", D(), nullable=False),
        ], []),
        ("items", [
            _id(), _project_fk(), sa.Column("item_id", S(200), nullable=False), sa.Column("text", T(), nullable=False),
            sa.Column("text_hash", S(64), nullable=False), sa.Column("split", S(10), nullable=False),
            sa.Column("n_words", N(), nullable=False), sa.Column("gold", J(), nullable=True),
            sa.Column("ext_task_id", N(), nullable=True), sa.Column("created_at", D(), nullable=False),
            sa.UniqueConstraint("project_id", "item_id", name="uq_item"),
        ], [("ix_items_ext", ["project_id", "ext_task_id"]), ("ix_items_project_split", ["project_id", "split"])]),
        ("label_studio_links", [
            sa.Column("project_id", N(), sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("ls_project_id", N(), nullable=False), sa.Column("url", S(1000), nullable=True),
            sa.Column("label_config", T(), nullable=True), sa.Column("attached", B(), nullable=False),
            sa.Column("model_version", S(200), nullable=True), sa.Column("ml_backend_status", S(30), nullable=True),
            sa.Column("ml_backend_url", S(1000), nullable=True), sa.Column("ml_backend_id", N(), nullable=True),
            sa.Column("ml_backend_error", T(), nullable=True), sa.Column("needs_reconcile", B(), nullable=False),
            sa.Column("last_reconcile", J(), nullable=True), sa.Column("config_warning", T(), nullable=True),
            sa.UniqueConstraint("ls_project_id"),
        ], []),
        ("labels", [
            _id(), _project_fk(), sa.Column("item_id", S(200), nullable=False),
            sa.Column("annotation_key", S(200), nullable=False), sa.Column("source", S(30), nullable=False),
            sa.Column("payload", J(), nullable=False), sa.Column("annotator", S(200), nullable=True),
            sa.Column("updated_at", D(), nullable=False), sa.Column("version_at", D(), nullable=True),
            sa.Column("received_at", D(), nullable=False), sa.Column("skipped", B(), nullable=False),
            sa.Column("deleted", B(), nullable=False), sa.Column("lead_time", F(), nullable=True),
            sa.UniqueConstraint("project_id", "annotation_key", name="uq_annotation"),
        ], [("ix_labels_item", ["project_id", "item_id"])]),
        ("model_versions", [
            _id(), _project_fk(), sa.Column("round_id", N(), nullable=True), sa.Column("name", S(200), nullable=False),
            sa.Column("base_model", S(500), nullable=False), sa.Column("schema_hash", S(32), nullable=False),
            sa.Column("labels", J(), nullable=False), sa.Column("metrics", J(), nullable=False),
            sa.Column("train_report", J(), nullable=False), sa.Column("artifact_path", S(1000), nullable=False),
            sa.Column("status", S(20), nullable=False), sa.Column("created_at", D(), nullable=False),
            sa.Column("promoted_at", D(), nullable=True),
            sa.UniqueConstraint("project_id", "name", name="uq_version_name"),
        ], []),
        ("rejected_annotations", [
            _id(), _project_fk(), sa.Column("annotation_id", N(), nullable=False),
            sa.Column("task_id", N(), nullable=True), sa.Column("item_id", S(200), nullable=True),
            sa.Column("updated_at", S(64), nullable=False), sa.Column("type", S(100), nullable=False),
            sa.Column("error", T(), nullable=False), sa.Column("at", D(), nullable=False),
            sa.UniqueConstraint("project_id", "annotation_id", "updated_at", name="uq_rejected_version"),
        ], [("ix_rejected_project", ["project_id", "id"])]),
        ("rounds", [
            _id(), _project_fk(), sa.Column("index", N(), nullable=False), sa.Column("status", S(20), nullable=False),
            sa.Column("phase", S(20), nullable=False), sa.Column("progress", F(), nullable=False),
            sa.Column("trigger", S(30), nullable=False), sa.Column("strategy", S(50), nullable=False),
            sa.Column("batch_size", N(), nullable=False), sa.Column("seed", N(), nullable=False),
            sa.Column("n_labels", N(), nullable=True), sa.Column("n_tokens", N(), nullable=True),
            sa.Column("version_tag", S(200), nullable=True), sa.Column("model_version_id", N(), nullable=True),
            sa.Column("metrics", J(), nullable=False), sa.Column("timings", J(), nullable=False),
            sa.Column("report", J(), nullable=False), sa.Column("push_status", S(20), nullable=False),
            sa.Column("error", T(), nullable=True), sa.Column("owner", S(200), nullable=True),
            sa.Column("attempts", N(), nullable=False), sa.Column("created_at", D(), nullable=False),
            sa.Column("started_at", D(), nullable=True), sa.Column("heartbeat_at", D(), nullable=True),
            sa.Column("finished_at", D(), nullable=True),
            sa.UniqueConstraint("project_id", "index", name="uq_round_index"),
        ], []),
        ("round_scores", [
            _id(), sa.Column("round_id", N(), sa.ForeignKey("rounds.id", ondelete="CASCADE"), nullable=False),
            sa.Column("item_id", S(200), nullable=False), sa.Column("rank", N(), nullable=False),
            sa.Column("score", F(), nullable=False), sa.Column("selected", B(), nullable=False),
            sa.Column("prediction", J(), nullable=True),
        ], [("ix_scores_round_rank", ["round_id", "rank"])]),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    there = set(sa.inspect(bind).get_table_names())
    for name, columns, indexes in _tables():
        if name in there:
            continue
        op.create_table(name, *columns)
        for ix_name, ix_columns in indexes:
            op.create_index(ix_name, name, ix_columns)
    present: dict[str, set[str]] = {t: {c["name"] for c in sa.inspect(bind).get_columns(t)}
                                     for t in ("projects", "labels")}
    if "integration" in present["projects"]:
        _move_integration_column(bind)
    if "version_at" not in present["labels"]:
        with op.batch_alter_table("labels") as batch:
            batch.add_column(sa.Column("version_at", sa.DateTime(), nullable=True))
        op.execute("UPDATE labels SET version_at = updated_at")


def _move_integration_column(bind: sa.Connection) -> None:
    """Databases written before the typed link kept it in ``projects.integration`` (JSON): move it, drop it."""
    links = sa.table("label_studio_links", sa.column("last_reconcile", sa.JSON()), *(sa.column(c) for c in (
        "project_id", "ls_project_id", "url", "label_config", "attached", "model_version", "ml_backend_status",
        "ml_backend_url", "ml_backend_id", "ml_backend_error", "needs_reconcile", "config_warning")))
    rejected = sa.table("rejected_annotations", *(sa.column(c) for c in (
        "project_id", "annotation_id", "task_id", "item_id", "updated_at", "type", "error", "at")))
    for pid, raw in bind.execute(sa.text("SELECT id, integration FROM projects")).all():
        bag = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        if bag.get("ls_project_id") is None:
            continue
        ml = bag.get("ml_backend") or {}
        bind.execute(sa.insert(links).values(
            project_id=pid, ls_project_id=int(bag["ls_project_id"]), url=bag.get("ls_url"),
            label_config=bag.get("ls_label_config"), attached=bool(bag.get("ls_attached")),
            model_version=bag.get("ls_model_version"), ml_backend_status=ml.get("status"),
            ml_backend_url=ml.get("url"), ml_backend_id=ml.get("id"), ml_backend_error=ml.get("error"),
            needs_reconcile=bool(bag.get("needs_reconcile")), last_reconcile=bag.get("last_reconcile"),
            config_warning=bag.get("config_warning")))
        for r in bag.get("rejected") or []:
            bind.execute(sa.insert(rejected).values(
                project_id=pid, annotation_id=int(r.get("annotation_id") or 0), task_id=r.get("task_id"),
                item_id=r.get("item_id"), updated_at=r.get("updated_at") or "", type=str(r.get("type") or ""),
                error=str(r.get("error") or ""), at=datetime.utcnow()))
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("integration")


def downgrade() -> None:
    for name, _columns, _indexes in reversed(_tables()):
        op.drop_table(name)
