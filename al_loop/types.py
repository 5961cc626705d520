"""Value types shared by every module of the core.

Id spaces:
- ``ItemId`` (str) is the one stable id of a text across the core, the store,
  Label Studio task data (``data["item_id"]``) and reports. Positional indices
  never cross a module boundary.
- Character offsets are Python string indices into ``Example.text``; ``end`` is
  exclusive (the Label Studio convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType

ItemId = NewType("ItemId", str)


class TaskKind(StrEnum):
    """What the model predicts: entity spans (NER) or text classes."""

    NER = "ner"
    CLASSIFICATION = "classification"


@dataclass(frozen=True, order=True)
class Span:
    """An entity mention: characters ``text[start:end]`` carry ``label``."""

    start: int
    end: int
    label: str

    def to_dict(self) -> dict[str, object]:
        return {"start": self.start, "end": self.end, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Span:
        return cls(int(d["start"]), int(d["end"]), str(d["label"]))  # type: ignore[call-overload]


@dataclass(frozen=True)
class Example:
    """One text with an optional gold annotation.

    For NER, ``spans`` holds the entities (an empty tuple means "labelled, no
    entity"; ``None`` means unlabelled). For classification, ``labels`` holds the
    class names (one for single-label, any number for multi-label; ``None``
    means unlabelled).
    """

    item_id: ItemId
    text: str
    spans: tuple[Span, ...] | None = None
    labels: tuple[str, ...] | None = None
    meta: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_labelled(self) -> bool:
        return self.spans is not None or self.labels is not None


@dataclass(frozen=True)
class Selection:
    """Items chosen by a strategy, most informative first.

    ``scores[i]`` is the informativeness of ``item_ids[i]`` (higher = ask
    first). Label Studio's low-first priority is derived at the edge.
    """

    item_ids: tuple[ItemId, ...]
    scores: tuple[float, ...]
    strategy: str = ""

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.scores):
            raise ValueError("item_ids and scores differ in length")
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("a selection holds an item twice")

    def __len__(self) -> int:
        return len(self.item_ids)
