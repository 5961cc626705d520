"""Persistence: projects, items, labels, rounds, scores, model versions (SQLAlchemy)."""

from al_loop.store.records import ImportReport, Item, LabelRecord, ModelVersion, Project, Round, ScoredItem
from al_loop.store.repository import Store, text_hash, utcnow

__all__ = [
    "ImportReport",
    "Item",
    "LabelRecord",
    "ModelVersion",
    "Project",
    "Round",
    "ScoredItem",
    "Store",
    "text_hash",
    "utcnow",
]
