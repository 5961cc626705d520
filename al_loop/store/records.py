"""Plain records returned by the store (no ORM objects leak out of it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from al_loop.config import LoopConfig, TrainingConfig, config_from_dict
from al_loop.data.schema import LabelSchema
from al_loop.types import Example, ItemId, Span, TaskKind


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def _jsonable(obj: Any) -> dict[str, Any]:
    out = asdict(obj)
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = _iso(value)
    return out


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    task: TaskKind
    labels: tuple[str, ...]
    multi_label: bool
    base_model: str
    loop_config: dict[str, Any]
    training_config: dict[str, Any]
    integration: dict[str, Any]
    created_at: datetime

    @property
    def schema(self) -> LabelSchema:
        return LabelSchema(self.task, self.labels, self.multi_label)

    @property
    def loop(self) -> LoopConfig:
        return config_from_dict(LoopConfig, self.loop_config)  # type: ignore[no-any-return]

    @property
    def training(self) -> TrainingConfig:
        return config_from_dict(TrainingConfig, self.training_config)  # type: ignore[no-any-return]

    def to_dict(self) -> dict[str, Any]:
        out = _jsonable(self)
        out["task"] = self.task.value
        out["labels"] = list(self.labels)
        return out


@dataclass(frozen=True)
class Item:
    item_id: ItemId
    text: str
    split: str
    n_words: int
    gold: dict[str, Any] | None
    ext_task_id: int | None

    def to_example(self, annotation: dict[str, Any] | None = None) -> Example:
        """The item as an Example carrying ``annotation`` (payload format) or nothing."""
        return example_from_payload(self.item_id, self.text, annotation)


@dataclass(frozen=True)
class Round:
    id: int
    project_id: int
    index: int
    status: str
    phase: str
    progress: float
    trigger: str
    strategy: str
    batch_size: int
    seed: int
    n_labels: int | None
    n_tokens: int | None
    version_tag: str | None
    model_version_id: int | None
    metrics: dict[str, Any]
    timings: dict[str, Any]
    report: dict[str, Any]
    push_status: str
    error: str | None
    owner: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

    def to_dict(self, with_report: bool = False) -> dict[str, Any]:
        out = _jsonable(self)
        if not with_report:
            out.pop("report", None)
        return out


@dataclass(frozen=True)
class ModelVersion:
    id: int
    project_id: int
    round_id: int | None
    name: str
    base_model: str
    schema_hash: str
    labels: tuple[str, ...]
    metrics: dict[str, Any]
    train_report: dict[str, Any]
    artifact_path: str
    status: str
    created_at: datetime
    promoted_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        out = _jsonable(self)
        out["labels"] = list(self.labels)
        return out


@dataclass(frozen=True)
class ScoredItem:
    item_id: ItemId
    rank: int
    score: float
    selected: bool
    prediction: dict[str, Any] | None


@dataclass(frozen=True)
class ImportReport:
    added: int = 0
    existing: int = 0
    duplicate_texts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LabelRecord:
    item_id: ItemId
    annotation_key: str
    source: str
    payload: dict[str, Any]
    annotator: str | None
    updated_at: datetime
    received_at: datetime
    skipped: bool
    deleted: bool


def payload_from_example(ex: Example) -> dict[str, Any] | None:
    """Annotation payload as stored: ``{"spans": [...]}`` (NER) or ``{"labels": [...]}``."""
    if ex.spans is not None:
        return {"spans": [s.to_dict() for s in ex.spans]}
    if ex.labels is not None:
        return {"labels": list(ex.labels)}
    return None


def example_from_payload(item_id: str, text: str, payload: dict[str, Any] | None) -> Example:
    if not payload:
        return Example(ItemId(item_id), text)
    if "spans" in payload:
        spans = tuple(sorted(Span.from_dict(s) for s in payload["spans"]))
        return Example(ItemId(item_id), text, spans=spans)
    return Example(ItemId(item_id), text, labels=tuple(payload.get("labels") or ()))
