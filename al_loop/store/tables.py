"""SQLAlchemy tables. SQLite by default; any SQLAlchemy URL (PostgreSQL in compose) works.

Id spaces: ``Project.id`` and ``Round.id`` are database ids; ``Item.item_id`` is the stable
``ItemId`` string shared with Label Studio task data and reports; ``Item.ext_task_id`` is the
Label Studio task id (the bridge's business, stored here so one row maps both).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class ProjectRow(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(20))
    labels: Mapped[list[Any]] = mapped_column(JSON)
    multi_label: Mapped[bool] = mapped_column(Boolean, default=False)
    base_model: Mapped[str] = mapped_column(String(500))
    loop_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    training_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class LabelStudioLinkRow(Base):
    """A project's Label Studio side (see ``records.LabelStudioLink``)."""

    __tablename__ = "label_studio_links"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    ls_project_id: Mapped[int] = mapped_column(Integer, unique=True)
    url: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    label_config: Mapped[str | None] = mapped_column(Text, nullable=True)
    attached: Mapped[bool] = mapped_column(Boolean, default=False)
    model_version: Mapped[str | None] = mapped_column(String(200), nullable=True)
    ml_backend_status: Mapped[str | None] = mapped_column(String(30), nullable=True)
    ml_backend_url: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    ml_backend_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ml_backend_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    needs_reconcile: Mapped[bool] = mapped_column(Boolean, default=False)
    last_reconcile: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    config_warning: Mapped[str | None] = mapped_column(Text, nullable=True)


class RejectedAnnotationRow(Base):
    """One refused version of a Label Studio annotation (written by the ingest that refused it)."""

    __tablename__ = "rejected_annotations"
    __table_args__ = (
        UniqueConstraint("project_id", "annotation_id", "updated_at", name="uq_rejected_version"),
        Index("ix_rejected_project", "project_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    annotation_id: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    item_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[str] = mapped_column(String(64), default="")  # Label Studio's string; "" when absent
    type: Mapped[str] = mapped_column(String(100))
    error: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime)


class ItemRow(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "item_id", name="uq_item"),
        Index("ix_items_project_split", "project_id", "split"),
        Index("ix_items_ext", "project_id", "ext_task_id"),
        Index("ix_items_hash", "project_id", "split", "text_hash"),  # a large import's duplicate-text check
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(10))  # "pool" | "test"
    n_words: Mapped[int] = mapped_column(Integer, default=0)
    gold: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    ext_task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class LabelRow(Base):
    """One annotation as received. The current label of an item is its newest live, non-skipped row."""

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("project_id", "annotation_key", name="uq_annotation"),
        Index("ix_labels_item", "project_id", "item_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(String(200))
    annotation_key: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(30))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    annotator: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)  # the version time, else when it was received
    version_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # the source's; None = it gave none
    received_at: Mapped[datetime] = mapped_column(DateTime)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    lead_time: Mapped[float | None] = mapped_column(Float, nullable=True)


class RoundRow(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("project_id", "index", name="uq_round_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    phase: Mapped[str] = mapped_column(String(20), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    trigger: Mapped[str] = mapped_column(String(30))
    strategy: Mapped[str] = mapped_column(String(50))
    batch_size: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    n_labels: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version_tag: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    push_status: Mapped[str] = mapped_column(String(20), default="none")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ScoreRow(Base):
    """The pool as scored by a round: rank 0 is asked first; ``selected`` marks the batch."""

    __tablename__ = "round_scores"
    __table_args__ = (Index("ix_scores_round_rank", "round_id", "rank"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(String(200))
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    selected: Mapped[bool] = mapped_column(Boolean, default=False)
    prediction: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_version_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    round_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    base_model: Mapped[str] = mapped_column(String(500))
    schema_hash: Mapped[str] = mapped_column(String(32))
    labels: Mapped[list[Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    train_report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifact_path: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class SimulationRow(Base):
    """Learning curves of an offline simulation attached to a project (for the dashboard overlay)."""

    __tablename__ = "simulations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    points: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class ImportRow(Base):
    """A file import job and its progress (``al_loop.states.ImportStatus``)."""

    __tablename__ = "imports"
    __table_args__ = (Index("ix_imports_project", "project_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str | None] = mapped_column(String(20), nullable=True)
    split: Mapped[str] = mapped_column(String(10))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    existing: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    labels_recorded: Mapped[int] = mapped_column(Integer, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class AdaptationRow(Base):
    """A project's pool-adaptive pretraining and its progress (``al_loop.states.AdaptStatus``)."""

    __tablename__ = "adaptations"
    __table_args__ = (Index("ix_adaptations_project", "project_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))
    base_model: Mapped[str] = mapped_column(String(500))
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    steps_total: Mapped[int] = mapped_column(Integer, default=0)
    texts: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    heldout_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    folder: Mapped[str | None] = mapped_column(Text, nullable=True)
    key: Mapped[str | None] = mapped_column(String(100), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
