"""Label schemas: sorted labels, BIO tags, ids and a stable hash.

A schema is saved with every model version (``id2label`` in the model config and
``label_schema.json`` beside it) so a model is never read with the wrong labels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from al_loop.errors import SchemaError, UnknownLabelError
from al_loop.types import Example, TaskKind

OUTSIDE = "O"


@dataclass(frozen=True)
class LabelSchema:
    """The label set of a project.

    ``labels`` are entity types (NER) or class names (classification), always
    sorted and unique. For NER the model predicts ``tags``: ``O`` then
    ``B-X``/``I-X`` for each type X in sorted order.
    """

    task: TaskKind
    labels: tuple[str, ...]
    multi_label: bool = False

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        if not labels:
            raise SchemaError("a label schema needs at least one label")
        for label in labels:
            if not isinstance(label, str) or not label.strip() or label != label.strip():
                raise SchemaError(f"invalid label {label!r}: labels are non-empty strings without outer spaces")
        if len(set(labels)) != len(labels):
            raise SchemaError("duplicate labels in schema")
        if self.task is TaskKind.NER:
            if self.multi_label:
                raise SchemaError("multi_label applies to classification only")
            bad = [lb for lb in labels if lb == OUTSIDE or lb[:2] in ("B-", "I-")]
            if bad:
                raise SchemaError(f"NER labels are entity types without BIO prefixes, got {bad}")
        elif len(labels) < 2 and not self.multi_label:
            raise SchemaError("single-label classification needs at least two classes")
        object.__setattr__(self, "labels", tuple(sorted(labels)))
        object.__setattr__(self, "task", TaskKind(self.task))

    @classmethod
    def build(cls, task: TaskKind | str, labels: Iterable[str], multi_label: bool = False) -> LabelSchema:
        return cls(TaskKind(task), tuple(sorted(set(labels))), multi_label)

    @classmethod
    def from_examples(cls, task: TaskKind | str, examples: Iterable[Example], multi_label: bool = False) -> LabelSchema:
        """Collect the labels that occur in labelled examples."""
        found: set[str] = set()
        for ex in examples:
            if ex.spans:
                found.update(s.label for s in ex.spans)
            if ex.labels:
                found.update(ex.labels)
        if not found:
            raise SchemaError("no labels found in the examples")
        return cls.build(task, found, multi_label)

    @property
    def tags(self) -> tuple[str, ...]:
        """Model output names: BIO tags for NER, the labels for classification."""
        if self.task is TaskKind.NER:
            out = [OUTSIDE]
            for label in self.labels:
                out += [f"B-{label}", f"I-{label}"]
            return tuple(out)
        return self.labels

    @property
    def num_outputs(self) -> int:
        return len(self.tags)

    @property
    def label2id(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tags)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.tags))

    def check_label(self, label: str) -> str:
        """Return ``label`` or raise UnknownLabelError naming the known labels."""
        if label not in self.labels:
            raise UnknownLabelError(f"unknown label {label!r}; known labels: {', '.join(self.labels)}")
        return label

    def check_example(self, ex: Example) -> Example:
        for s in ex.spans or ():
            self.check_label(s.label)
        for lb in ex.labels or ():
            self.check_label(lb)
        if ex.labels is not None and not self.multi_label and len(ex.labels) != 1:
            raise UnknownLabelError(
                f"item {ex.item_id}: single-label task needs exactly one label, got {len(ex.labels)}"
            )
        return ex

    def to_dict(self) -> dict[str, object]:
        return {"task": self.task.value, "labels": list(self.labels), "multi_label": self.multi_label}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> LabelSchema:
        try:
            labels = d["labels"]
            if not isinstance(labels, list | tuple):
                raise TypeError("labels must be a list")
            return cls(TaskKind(str(d["task"])), tuple(labels), bool(d.get("multi_label", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"invalid label schema: {exc}") from exc

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of the canonical JSON form (task, tags, multi_label)."""
        canon = json.dumps(
            {"task": self.task.value, "tags": list(self.tags), "multi_label": self.multi_label},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canon.encode()).hexdigest()[:16]
