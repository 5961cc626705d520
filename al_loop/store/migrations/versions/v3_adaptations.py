"""Pool-adaptive pretraining: the ``adaptations`` table (a project's masked-LM adaptation, its progress and result).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

A revision is frozen: it never imports ``al_loop.store.tables``. Idempotent like the ones before it: a database
that has the table already keeps it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    insp = sa.inspect(op.get_bind())
    if insp.has_table("adaptations"):
        return
    op.create_table(
        "adaptations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("base_model", sa.String(500), nullable=False),
        sa.Column("steps_done", sa.Integer(), nullable=False),
        sa.Column("steps_total", sa.Integer(), nullable=False),
        sa.Column("texts", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("heldout_loss", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("folder", sa.Text(), nullable=True),
        sa.Column("key", sa.String(100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_adaptations_project", "adaptations", ["project_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_adaptations_project", table_name="adaptations")
    op.drop_table("adaptations")
