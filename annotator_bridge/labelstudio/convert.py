"""Label Studio payloads <-> al-loop types. Pure functions, no network, no SDK import.

Id spaces: ``task_id``/``annotation_id``/``project_ls_id`` are Label Studio's integer
ids; ``ItemId`` is al-loop's stable item id, stored in every task as
``task.data["item_id"]``; the text is ``task.data[text_key]`` (``LabelConfig.text_key``,
default ``"text"``). NER offsets are end-exclusive Python character indices.

- ``annotation_to_example``: one annotation result -> ``Example`` (or ``Skipped`` when
  the annotator skipped/cancelled: never a training label);
- ``prediction_result`` / ``prediction_to_ls``: model output -> Label Studio prediction dict;
- ``parse_webhook``: a webhook body -> ``AnnotationEvent`` / ``AnnotationsCreated`` /
  ``AnnotationsDeleted`` / ``StartTraining`` / ``Ignored``; malformed -> ``WebhookPayloadError``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from al_loop.errors import AlignmentError, AlLoopError, UnknownLabelError
from al_loop.types import Example, ItemId, Span, TaskKind

from .config import LabelConfig

log = logging.getLogger(__name__)

ITEM_ID_KEY = "item_id"
SKIPPED = "skipped"
MAX_ID = 2**31 - 1  # largest Label Studio id al-loop accepts: the store's Integer columns (32-bit in PostgreSQL)
MAX_ITEM_ID_CHARS = 200  # the store's item_id columns
MAX_UPDATED_AT_CHARS = 64  # the store's updated_at column
MAX_ACTION_CHARS = 100

ANNOTATION_ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED"})
KNOWN_ACTIONS = frozenset({
    "ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED",
    "TASKS_CREATED", "TASKS_DELETED", "PROJECT_CREATED", "PROJECT_UPDATED", "PROJECT_DELETED",
    "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED", "START_TRAINING",
})


class WebhookPayloadError(AlLoopError):
    """A webhook body that is not a Label Studio event al-loop can read; the message says what is wrong."""


# ---------------------------------------------------------------------------- annotations -> examples
@dataclass(frozen=True)
class Skipped:
    """An annotation the annotator skipped or cancelled (``was_cancelled``): not a training label."""

    item_id: ItemId
    annotation_id: int | None = None
    task_id: int | None = None
    label: str = SKIPPED


def annotation_to_example(result: Sequence[Mapping[str, Any]] | None, *, item_id: ItemId | str, text: str,
                          config: LabelConfig, was_cancelled: bool = False, annotation_id: int | None = None,
                          task_id: int | None = None, meta: Mapping[str, object] | None = None) -> Example | Skipped:
    """Convert one annotation's ``result`` list for the task holding ``text``.

    Only result items of the config's control (``from_name``) are read; others
    (comments, relations) are ignored. NER: spans from ``value.start/end`` (a
    ``value.text`` mismatch is logged and the offsets win), sorted; AlignmentError for
    spans outside the text, inverted, whitespace-only, overlapping or carrying several
    labels. Classification: the ``value.choices``. UnknownLabelError for a label outside
    the schema (or not exactly one label for single-label classification).
    """
    item = ItemId(str(item_id))
    if was_cancelled:
        return Skipped(item, annotation_id, task_id)
    items = [r for r in (result or []) if isinstance(r, Mapping) and r.get("from_name") == config.from_name]
    ex_meta: dict[str, object] = dict(meta or {})
    if annotation_id is not None:
        ex_meta.setdefault("ls_annotation_id", annotation_id)
    if task_id is not None:
        ex_meta.setdefault("ls_task_id", task_id)
    if config.task is TaskKind.NER:
        spans = _spans_from_result(items, text, config, item)
        return Example(item, text, spans=spans, meta=ex_meta)
    labels = _choices_from_result(items, config, item)
    return config.schema.check_example(Example(item, text, labels=labels, meta=ex_meta))


def _as_int(value: Any, what: str, item: ItemId) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float)
                                                                            and not value.is_integer()):
        raise AlignmentError(f"item {item}: {what} must be an integer character offset, got {value!r}")
    return int(value)


def _utf16_to_codepoints(text: str, offset: int) -> int | None:
    units = 0
    for i, ch in enumerate(text):
        if units == offset:
            return i
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(text) if units == offset else None


def _spans_from_result(items: Sequence[Mapping[str, Any]], text: str, config: LabelConfig,
                       item: ItemId) -> tuple[Span, ...]:
    spans: list[Span] = []
    for r in items:
        if r.get("type", config.result_type).lower() != config.result_type:
            continue
        value = r.get("value")
        if not isinstance(value, Mapping):
            raise AlignmentError(f"item {item}: result item without a value object")
        start = _as_int(value.get("start"), "value.start", item)
        end = _as_int(value.get("end"), "value.end", item)
        labels = value.get(config.result_type, value.get("labels"))
        if not isinstance(labels, list) or not labels:
            raise AlignmentError(f"item {item}: span [{start}, {end}) carries no label")
        if len(labels) != 1:
            raise AlignmentError(f"item {item}: span [{start}, {end}) carries several labels {labels}; "
                                 "overlapping entities are not supported")
        label = config.label_of(str(labels[0]))
        config.schema.check_label(label)
        shown = value.get("text")
        if isinstance(shown, str) and text[max(start, 0):max(end, 0)] != shown:
            # Old Label Studio front ends counted UTF-16 units; accept that reading only when it matches exactly.
            s16, e16 = _utf16_to_codepoints(text, start), _utf16_to_codepoints(text, end)
            if s16 is not None and e16 is not None and text[s16:e16] == shown:
                start, end = s16, e16
            else:
                log.info("item %s: span [%d, %d) value.text %r differs from the task text %r; offsets win",
                         item, start, end, shown[:40], text[start:end][:40])
        if start < 0 or end > len(text):
            raise AlignmentError(f"item {item}: span [{start}, {end}) lies outside the text (length {len(text)})")
        if start >= end:
            raise AlignmentError(f"item {item}: span [{start}, {end}) is empty or inverted")
        if not text[start:end].strip():
            raise AlignmentError(f"item {item}: span [{start}, {end}) covers only whitespace")
        spans.append(Span(start, end, label))
    spans.sort()
    for a, b in itertools.pairwise(spans):
        if b.start < a.end:
            raise AlignmentError(f"item {item}: spans [{a.start}, {a.end}) {a.label} and [{b.start}, {b.end}) "
                                 f"{b.label} overlap")
    return tuple(spans)


def _choices_from_result(items: Sequence[Mapping[str, Any]], config: LabelConfig, item: ItemId) -> tuple[str, ...]:
    found: list[str] = []
    for r in items:
        if r.get("type", config.result_type).lower() != config.result_type:
            continue
        value = r.get("value")
        choices = value.get("choices") if isinstance(value, Mapping) else None
        if not isinstance(choices, list):
            raise UnknownLabelError(f"item {item}: choices result without a list of choices")
        for c in choices:
            label = config.schema.check_label(config.label_of(str(c)))
            if label not in found:
                found.append(label)
    return tuple(sorted(found))


# ---------------------------------------------------------------------------- model output -> predictions
def prediction_result(predicted: Sequence[Span] | Sequence[str], config: LabelConfig, *,
                      text: str | None = None) -> list[dict[str, Any]]:
    """Label Studio ``result`` items for one task's predicted spans (NER, needs ``text``) or labels."""
    if config.task is TaskKind.NER:
        if text is None:
            raise AlignmentError("NER predictions need the task text")
        out: list[dict[str, Any]] = []
        for sp in predicted:
            if not isinstance(sp, Span):
                raise AlignmentError(f"NER prediction items must be Span, got {type(sp).__name__}")
            config.schema.check_label(sp.label)
            if not 0 <= sp.start < sp.end <= len(text):
                raise AlignmentError(f"predicted span [{sp.start}, {sp.end}) lies outside the text "
                                     f"(length {len(text)})")
            out.append({"from_name": config.from_name, "to_name": config.to_name, "type": config.result_type,
                        "value": {"start": sp.start, "end": sp.end, "text": text[sp.start:sp.end],
                                  config.result_type: [config.result_label(sp.label)]}})
        return out
    labels = [str(lb) for lb in predicted]
    for lb in labels:
        config.schema.check_label(lb)
    if not labels:
        return []
    return [{"from_name": config.from_name, "to_name": config.to_name, "type": config.result_type,
             "value": {"choices": [config.result_label(lb) for lb in labels]}}]


def prediction_to_ls(task_id: int, predicted: Sequence[Span] | Sequence[str], config: LabelConfig, *,
                     model_version: str, score: float, text: str | None = None) -> dict[str, Any]:
    """``{"task", "model_version", "score", "result"}`` for ``projects.import_predictions``.

    ``score`` is Label Studio's priority: uncertainty sampling serves the LOWEST score
    first, so pass low = ask first (e.g. the rank in the selection, or 1 - informativeness).
    """
    if not model_version:
        raise ValueError("model_version must be a non-empty string")
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"score must be finite, got {score}")
    return {"task": int(task_id), "model_version": model_version, "score": score,
            "result": prediction_result(predicted, config, text=text)}


# ---------------------------------------------------------------------------- webhooks
@dataclass(frozen=True)
class AnnotationEvent:
    """ANNOTATION_CREATED / ANNOTATION_UPDATED (also each item of ANNOTATIONS_CREATED)."""

    action: str
    project_ls_id: int
    task_id: int
    annotation_id: int
    updated_at: str | None
    result: tuple[dict[str, Any], ...]
    was_cancelled: bool
    completed_by: int | None
    task_data: dict[str, Any] = field(default_factory=dict)

    @property
    def item_id(self) -> ItemId | None:
        """al-loop item id from ``task_data["item_id"]`` (None for tasks al-loop did not create)."""
        value = self.task_data.get(ITEM_ID_KEY)
        return ItemId(str(value)) if value is not None else None

    def to_example(self, config: LabelConfig) -> Example | Skipped:
        """Convert with the project's config; WebhookPayloadError when the task lacks item id or text."""
        if self.item_id is None:
            raise WebhookPayloadError(f"task {self.task_id} has no data[{ITEM_ID_KEY!r}]")
        text = self.task_data.get(config.text_key)
        if not isinstance(text, str):
            raise WebhookPayloadError(f"task {self.task_id} has no text in data[{config.text_key!r}]")
        meta = {"ls_updated_at": self.updated_at, "ls_completed_by": self.completed_by}
        return annotation_to_example(list(self.result), item_id=self.item_id, text=text, config=config,
                                     was_cancelled=self.was_cancelled, annotation_id=self.annotation_id,
                                     task_id=self.task_id, meta=meta)


@dataclass(frozen=True)
class AnnotationsCreated:
    """ANNOTATIONS_CREATED (bulk, e.g. import with annotations): one AnnotationEvent per annotation."""

    project_ls_id: int
    events: tuple[AnnotationEvent, ...]


@dataclass(frozen=True)
class AnnotationsDeleted:
    project_ls_id: int
    annotation_ids: tuple[int, ...]


@dataclass(frozen=True)
class StartTraining:
    project_ls_id: int


@dataclass(frozen=True)
class Ignored:
    """An event al-loop does not act on (``known`` is False for actions this version does not list)."""

    action: str
    project_ls_id: int | None = None
    known: bool = True


WebhookEvent = AnnotationEvent | AnnotationsCreated | AnnotationsDeleted | StartTraining | Ignored


def is_id(value: Any) -> TypeGuard[int]:
    """A Label Studio id al-loop can store: an int (not a bool) in 1 .. ``MAX_ID``."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int_field(obj: Any, key: str, where: str) -> int:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if not is_id(value):
        raise WebhookPayloadError(f"{where}.{key} must be an integer id in [1, {MAX_ID}], got {_short(value)}")
    return int(value)


def _project_id(payload: Mapping[str, Any], action: str) -> int:
    project = payload.get("project")
    if isinstance(project, int) and not isinstance(project, bool):
        if not is_id(project):
            raise WebhookPayloadError(f"{action}: project must be an integer id in [1, {MAX_ID}], got "
                                      f"{_short(project)}")
        return project
    if not isinstance(project, Mapping):
        raise WebhookPayloadError(f"{action} payload has no project object (was the webhook created with "
                                  "send_payload=true?)")
    return _int_field(project, "id", "project")


def _user_id(value: Any) -> int | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if is_id(value) else None


def parse_annotation(annotation: Mapping[str, Any], *, action: str, project_ls_id: int,
                     task: Mapping[str, Any] | None = None) -> AnnotationEvent:
    """One annotation dict (webhook or task listing) -> AnnotationEvent; WebhookPayloadError if malformed."""
    if not isinstance(annotation, Mapping):
        raise WebhookPayloadError(f"{action}: annotation must be an object, got {type(annotation).__name__}")
    annotation_id = _int_field(annotation, "id", "annotation")
    task_ref = annotation.get("task")
    if isinstance(task_ref, Mapping):
        task = task if task is not None else task_ref
        task_ref = task_ref.get("id")
    if (task_ref is None or isinstance(task_ref, bool)) and task is not None:
        task_ref = task.get("id")
    if not is_id(task_ref):
        raise WebhookPayloadError(f"{action}: annotation {annotation_id} names no task id in [1, {MAX_ID}]")
    result = annotation.get("result")
    if result is None:
        result = []
    if not isinstance(result, list) or not all(isinstance(r, Mapping) for r in result):
        raise WebhookPayloadError(f"{action}: annotation {annotation_id} result must be a list of objects")
    updated_at = annotation.get("updated_at")
    if updated_at is not None and (not isinstance(updated_at, str) or len(updated_at) > MAX_UPDATED_AT_CHARS):
        raise WebhookPayloadError(f"{action}: annotation {annotation_id} updated_at must be a string of at most "
                                  f"{MAX_UPDATED_AT_CHARS} characters")
    data: dict[str, Any] = {}
    if task is not None:
        if not isinstance(task, Mapping):
            raise WebhookPayloadError(f"{action}: task must be an object")
        data = _task_data(task, action)
    return AnnotationEvent(action=action, project_ls_id=project_ls_id, task_id=int(task_ref),
                           annotation_id=annotation_id, updated_at=updated_at,
                           result=tuple(dict(r) for r in result),
                           was_cancelled=bool(annotation.get("was_cancelled", False)),
                           completed_by=_user_id(annotation.get("completed_by")), task_data=data)


def _task_data(task: Mapping[str, Any], action: str) -> dict[str, Any]:
    """``task.data`` as a dict; WebhookPayloadError unless it is an object whose ``item_id`` al-loop can store."""
    raw = task.get("data") or {}
    if not isinstance(raw, Mapping):
        raise WebhookPayloadError(f"{action}: task.data must be an object")
    item_id = raw.get(ITEM_ID_KEY)
    if item_id is not None and (isinstance(item_id, bool) or not isinstance(item_id, str | int)
                                or len(str(item_id)) > MAX_ITEM_ID_CHARS):
        raise WebhookPayloadError(f"{action}: task.data.{ITEM_ID_KEY} must be a string of at most "
                                  f"{MAX_ITEM_ID_CHARS} characters or an integer")
    return dict(raw)


def check_tasks(payload: Mapping[str, Any], action: str) -> None:
    """``payload["tasks"]`` (TASKS_CREATED; ANNOTATIONS_CREATED's task list): objects with an id in [1, ``MAX_ID``]
    and a storable ``data``; WebhookPayloadError otherwise."""
    tasks = payload.get("tasks") or []
    if not isinstance(tasks, list):
        raise WebhookPayloadError(f"{action}: tasks must be a list of task objects")
    for i, task in enumerate(tasks):
        if not isinstance(task, Mapping):
            raise WebhookPayloadError(f"{action}: tasks[{i}] must be an object")
        _int_field(task, "id", f"tasks[{i}]")
        _task_data(task, action)


def parse_webhook(payload: Any) -> WebhookEvent:
    """Type a Label Studio webhook body (``{"action": ..., **payload}``) or an ML-backend ``/webhook`` call."""
    if not isinstance(payload, Mapping):
        raise WebhookPayloadError(f"webhook body must be a JSON object, got {type(payload).__name__}")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise WebhookPayloadError("webhook body has no 'action'")
    if len(action) > MAX_ACTION_CHARS:
        raise WebhookPayloadError(f"webhook action is longer than {MAX_ACTION_CHARS} characters")
    if action in ANNOTATION_ACTIONS:
        project_id = _project_id(payload, action)
        task = payload.get("task")
        if task is not None and not isinstance(task, Mapping):
            raise WebhookPayloadError(f"{action}: task must be an object")
        if "annotation" not in payload:
            raise WebhookPayloadError(f"{action} payload has no annotation")
        return parse_annotation(payload["annotation"], action=action, project_ls_id=project_id, task=task)
    if action == "ANNOTATIONS_CREATED":
        project_id = _project_id(payload, action)
        anns = payload.get("annotation", payload.get("annotations"))
        if not isinstance(anns, list):
            raise WebhookPayloadError(f"{action}: annotation must be a list")
        tasks = payload.get("task") or []
        tasks = tasks if isinstance(tasks, list) else [tasks]
        check_tasks({"tasks": tasks}, action)
        by_id = {t["id"]: t for t in tasks}
        events = []
        for ann in anns:
            ref = ann.get("task") if isinstance(ann, Mapping) else None
            key = ref.get("id") if isinstance(ref, Mapping) else ref
            task = by_id.get(key) if is_id(key) else None
            events.append(parse_annotation(ann, action=action, project_ls_id=project_id, task=task))
        return AnnotationsCreated(project_id, tuple(events))
    if action == "ANNOTATIONS_DELETED":
        project_id = _project_id(payload, action)
        anns = payload.get("annotations")
        if not isinstance(anns, list):
            raise WebhookPayloadError(f"{action}: annotations must be a list of {{'id': ...}}")
        ids = tuple(_int_field(a, "id", "annotations[]") for a in anns)
        return AnnotationsDeleted(project_id, ids)
    if action == "START_TRAINING":
        return StartTraining(_project_id(payload, action))
    if action == "TASKS_CREATED":
        check_tasks(payload, action)
    project = payload.get("project")
    pid = project.get("id") if isinstance(project, Mapping) else project
    if isinstance(pid, int) and not isinstance(pid, bool) and not is_id(pid):
        raise WebhookPayloadError(f"{action}: project id must be in [1, {MAX_ID}], got {_short(pid)}")
    pid = pid if is_id(pid) else None
    return Ignored(action, pid, known=action in KNOWN_ACTIONS)
