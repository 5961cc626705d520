"""Plain records returned by the store (no ORM objects leak out of it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from al_loop.config import LoopConfig, TrainingConfig, config_from_dict
from al_loop.data.schema import LabelSchema
from al_loop.states import PushStatus, RoundPhase, RoundStatus, VersionStatus
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
    status: RoundStatus
    phase: RoundPhase
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
    push_status: PushStatus
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
    status: VersionStatus
    created_at: datetime
    promoted_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        out = _jsonable(self)
        out["labels"] = list(self.labels)
        return out


@dataclass(frozen=True)
class LabelStudioLink:
    """How a project is tied to its Label Studio project (table ``label_studio_links``; one per project at most).

    ``ls_project_id`` is Label Studio's project id; ``label_config`` the config XML al-loop drives
    (tag names come from it); ``attached`` = the Label Studio project existed before al-loop;
    ``model_version`` = the version tag whose predictions Label Studio serves now; ``ml_backend_*``
    = the ML-backend connection (status ``connected``, ``failed`` or ``not configured``);
    ``needs_reconcile`` / ``last_reconcile`` = the reconcile state; ``config_warning`` = why the
    Label Studio label config no longer matches the project's labels.
    """

    project_id: int
    ls_project_id: int
    url: str | None
    label_config: str | None
    attached: bool
    model_version: str | None
    ml_backend_status: str | None
    ml_backend_url: str | None
    ml_backend_id: int | None
    ml_backend_error: str | None
    needs_reconcile: bool
    last_reconcile: dict[str, Any] | None
    config_warning: str | None

    @property
    def ml_backend(self) -> dict[str, Any] | None:
        """The connection as the API shows it: ``{"status", "url", "id"|"error"}`` (None before any attempt)."""
        if self.ml_backend_status is None:
            return None
        out: dict[str, Any] = {"status": self.ml_backend_status}
        if self.ml_backend_status == "connected":
            out.update(url=self.ml_backend_url, id=self.ml_backend_id)
        elif self.ml_backend_status == "failed":
            out.update(url=self.ml_backend_url, error=self.ml_backend_error)
        return out


LINK_FIELDS = frozenset({
    "url", "label_config", "attached", "model_version", "ml_backend_status", "ml_backend_url", "ml_backend_id",
    "ml_backend_error", "needs_reconcile", "last_reconcile", "config_warning",
})
"""The ``LabelStudioLink`` fields ``Store.update_link`` may set."""


@dataclass(frozen=True)
class RejectedAnnotation:
    """An annotation al-loop refused (label outside the schema, bad span, ...): kept for the project's status."""

    annotation_id: int
    task_id: int | None
    item_id: str | None
    updated_at: str | None
    type: str
    error: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


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
    version_at: datetime | None = None
    """The source's own version time (None: the annotation came without one; compared by content)."""


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
