"""Persistence: projects, items, labels, rounds, scores, model versions, Label Studio links (SQLAlchemy)."""

from al_loop.store.records import (
    ImportReport,
    Item,
    LabelRecord,
    LabelStudioLink,
    ModelVersion,
    Project,
    RejectedAnnotation,
    Round,
    ScoredItem,
)
from al_loop.store.repository import Store, text_hash, utcnow

__all__ = [
    "ImportReport",
    "Item",
    "LabelRecord",
    "LabelStudioLink",
    "ModelVersion",
    "Project",
    "RejectedAnnotation",
    "Round",
    "ScoredItem",
    "Store",
    "text_hash",
    "utcnow",
]
