"""Import jobs: the ``imports`` table (a large file import's state and progress) and an index on items' text hashes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

``ix_items_hash`` (project, split, text hash) lets a batched import check each batch's texts against the
project without reading every hash of the pool. A revision is frozen: it never imports ``al_loop.store.tables``.

Idempotent like the baseline: a database that has the table or the index already (one written by this release
whose ``alembic_version`` was lost, which the baseline then adopts) keeps them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    insp = sa.inspect(op.get_bind())
    if not insp.has_table("imports"):
        _create_imports()
    if "ix_items_hash" not in {ix["name"] for ix in insp.get_indexes("items")}:
        op.create_index("ix_items_hash", "items", ["project_id", "split", "text_hash"])


def _create_imports() -> None:
    op.create_table(
        "imports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("format", sa.String(20), nullable=True),
        sa.Column("split", sa.String(10), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("existing", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("labels_recorded", sa.Integer(), nullable=False),
        sa.Column("bytes_read", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_imports_project", "imports", ["project_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_items_hash", table_name="items")
    op.drop_index("ix_imports_project", table_name="imports")
    op.drop_table("imports")
