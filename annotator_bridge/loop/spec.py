"""What a new project is made of: ``ProjectSpec`` (the create spec, validated) and API items -> Examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from al_loop.config import LoopConfig, TrainingConfig, config_from_dict
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError, DataFormatError, ModelLoadError
from al_loop.model_paths import check_base_model, parse_source_ref, source_ref
from al_loop.types import Example, ItemId, Span, TaskKind

LOOP_KEYS = ("strategy", "batch_size", "seed_size", "retrain_every", "cold_start", "promote", "max_pool_scored", "seed",
             "dedupe_threshold")
SPEC_KEYS = frozenset({"name", "task", "labels", "multi_label", "base_model", "training", "loop", "label_studio",
                       *LOOP_KEYS})
LS_SPEC_KEYS = frozenset({"project_id", "title", "description"})
LS_MAX_ID = 2**31 - 1  # Label Studio's ids (and the store's Integer columns: 32-bit in PostgreSQL)
MAX_LABELS = 1000
MAX_LABEL_CHARS = 200
MAX_ITEM_ID_CHARS = 200  # the store's item_id columns
MAX_BASE_MODEL_CHARS = 500  # the store's base_model column
MAX_PROJECT_ID = 2**63 - 1
MAX_VERSION_CHARS = 200  # the store's model version names


@dataclass(frozen=True)
class ProjectSpec:
    """What ``create_project`` builds.

    ``label_studio``: ``None`` = no Label Studio project (local/API-only); ``{"project_id": n}``
    = attach to an existing Label Studio project (task, labels and multi_label come from its
    label config; when given here they must agree); otherwise a new Label Studio project is
    created (``title`` defaults to ``name``, optional ``description``).
    """

    name: str
    task: TaskKind | None = None
    labels: tuple[str, ...] | None = None
    multi_label: bool | None = None
    base_model: str = "default"
    loop: LoopConfig = field(default_factory=LoopConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    label_studio: dict[str, Any] | None = field(default_factory=dict)

    @property
    def attach_to(self) -> int | None:
        return None if self.label_studio is None else self.label_studio.get("project_id")

    def schema(self) -> LabelSchema:
        """The schema of a new project (SchemaError/ConfigError when task or labels are missing)."""
        if self.task is None:
            raise ConfigError("the project spec needs 'task' ('ner' or 'classification')")
        if not self.labels:
            raise ConfigError("the project spec needs 'labels' (a list of label names) unless it attaches to an "
                              "existing Label Studio project")
        return LabelSchema.build(self.task, self.labels, bool(self.multi_label))

    def check_base_model(self, *, cache_dir: str | None = None) -> None:
        """ConfigError unless ``base_model`` is "default", a local model folder (an al-loop artifact included) or a
        name in the local Hugging Face cache (reads the model's ``config.json`` only: no weights, no torch).
        Another project's version (``project:<id>:<version>``) is checked with the store, when the project's
        task is known (``al_loop.store.sources.check_source``)."""
        if parse_source_ref(self.base_model) is not None:
            return
        try:
            check_base_model(self.base_model, cache_dir=cache_dir)
        except ModelLoadError as exc:
            raise ConfigError(f"'base_model': {exc}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProjectSpec:
        """Validate a JSON spec; ConfigError names the offending key."""
        if not isinstance(data, Mapping):
            raise ConfigError("the project spec must be a JSON object")
        unknown = sorted(set(data) - SPEC_KEYS)
        if unknown:
            raise ConfigError(f"unknown project spec keys: {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(SPEC_KEYS))}")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ConfigError("'name' must be a non-empty string of at most 200 characters")
        task: TaskKind | None = None
        if data.get("task") is not None:
            try:
                task = TaskKind(data["task"])
            except ValueError:
                raise ConfigError(f"'task' must be 'ner' or 'classification', got {data['task']!r}") from None
        labels = data.get("labels")
        if labels is not None:
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise ConfigError("'labels' must be a list of strings")
            if len(labels) > MAX_LABELS or any(len(x) > MAX_LABEL_CHARS for x in labels):
                raise ConfigError(f"'labels': at most {MAX_LABELS} labels of at most {MAX_LABEL_CHARS} characters each")
            labels = tuple(labels)
        multi = data.get("multi_label")
        if multi is not None and not isinstance(multi, bool):
            raise ConfigError("'multi_label' must be true or false")
        base_model = _base_model(data.get("base_model", "default"))
        loop_dict = data.get("loop") or {}
        if not isinstance(loop_dict, Mapping):
            raise ConfigError("'loop' must be an object")
        loop_dict = {**loop_dict, **{k: data[k] for k in LOOP_KEYS if k in data}}
        training_dict = data.get("training") or {}
        if not isinstance(training_dict, Mapping):
            raise ConfigError("'training' must be an object of TrainingConfig fields")
        loop = _config(LoopConfig, loop_dict, "")
        training = _config(TrainingConfig, training_dict, "training.")
        ls = data.get("label_studio", {})
        if ls is False or ls is None:
            ls_dict: dict[str, Any] | None = None
        elif ls is True:
            ls_dict = {}
        elif isinstance(ls, Mapping):
            bad = sorted(set(ls) - LS_SPEC_KEYS)
            if bad:
                raise ConfigError(f"unknown label_studio keys: {', '.join(bad)}; allowed: project_id, title, "
                                  "description")
            ls_dict = dict(ls)
            pid = ls_dict.get("project_id")
            if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or not 1 <= pid <= LS_MAX_ID):
                raise ConfigError(f"label_studio.project_id must be an integer in [1, {LS_MAX_ID}] (an existing "
                                  "project's id)")
            for key in ("title", "description"):
                if key in ls_dict and not isinstance(ls_dict[key], str):
                    raise ConfigError(f"label_studio.{key} must be a string")
        else:
            raise ConfigError("'label_studio' must be an object ({'project_id': n} to attach), true or false")
        return cls(name=name.strip(), task=task, labels=labels, multi_label=multi, base_model=base_model,
                   loop=loop, training=training, label_studio=ls_dict)


def _base_model(value: Any) -> str:
    """The spec's ``base_model`` as stored: a name or path, or another project's version ``{"project": id,
    "version": name}`` as ``project:<id>:<name>``."""
    if isinstance(value, Mapping):
        pid, version = value.get("project"), value.get("version")
        if set(value) != {"project", "version"} or isinstance(pid, bool) or not isinstance(pid, int) \
                or not 1 <= pid <= MAX_PROJECT_ID or not isinstance(version, str) or not version.strip() \
                or len(version) > MAX_VERSION_CHARS:
            raise ConfigError("'base_model' as another project's model version must be {\"project\": <project id>, "
                              f"\"version\": <version name of at most {MAX_VERSION_CHARS} characters>}}")
        return source_ref(pid, version.strip())
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_BASE_MODEL_CHARS:
        raise ConfigError(f"'base_model' must be a non-empty string of at most {MAX_BASE_MODEL_CHARS} characters, "
                          "or {\"project\": <id>, \"version\": <name>} (another project's model version)")
    return value.strip()


def _config(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    """``cls`` from ``data``; a ConfigError names the field as the spec spells it (``training.batch_size``)."""
    try:
        return config_from_dict(cls, dict(data))
    except TypeError as exc:
        raise ConfigError(f"invalid {prefix or 'loop '}settings: {exc}") from None
    except ConfigError as exc:
        text = str(exc)
        if prefix and text.startswith("'"):
            text = f"'{prefix}{text[1:]}"
        raise ConfigError(text) from None


def examples_from_records(records: Sequence[Any], task: TaskKind) -> list[Example]:
    """API items -> Examples. Each record: ``{"id", "text"}`` plus optional gold fields.

    NER: ``"spans": [{"start", "end", "label"}]`` (character offsets, end-exclusive).
    Classification: ``"label": "x"`` or ``"labels": ["x", ...]`` (multi-label).
    DataFormatError names the record (0-based index) for anything malformed.
    """
    out: list[Example] = []
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise DataFormatError(f"item {i}: must be an object with 'id' and 'text'")
        item_id = r.get("id", r.get("item_id"))
        if isinstance(item_id, bool) or not isinstance(item_id, str | int) or str(item_id).strip() == "" \
                or len(str(item_id)) > MAX_ITEM_ID_CHARS:
            raise DataFormatError(f"item {i}: 'id' must be a non-empty string of at most {MAX_ITEM_ID_CHARS} "
                                  "characters or an integer")
        text = r.get("text")
        if not isinstance(text, str):
            raise DataFormatError(f"item {i} ({item_id}): 'text' must be a string")
        spans: tuple[Span, ...] | None = None
        labels: tuple[str, ...] | None = None
        if r.get("spans") is not None:
            if task is not TaskKind.NER:
                raise DataFormatError(f"item {i} ({item_id}): 'spans' are for NER projects")
            raw = r["spans"]
            if not isinstance(raw, list):
                raise DataFormatError(f"item {i} ({item_id}): 'spans' must be a list of {{start, end, label}}")
            parsed = []
            for s in raw:
                if not isinstance(s, Mapping) or not {"start", "end", "label"} <= set(s):
                    raise DataFormatError(f"item {i} ({item_id}): each span needs start, end and label")
                if any(isinstance(s[k], bool) or not isinstance(s[k], int) for k in ("start", "end")) \
                        or not isinstance(s["label"], str):
                    raise DataFormatError(f"item {i} ({item_id}): span start/end must be integers, label a string")
                parsed.append(Span(s["start"], s["end"], s["label"]))
            spans = tuple(parsed)
        for key in ("label", "labels"):
            if r.get(key) is None:
                continue
            if task is not TaskKind.CLASSIFICATION:
                raise DataFormatError(f"item {i} ({item_id}): '{key}' is for classification projects; NER uses "
                                      "'spans'")
            value = r[key]
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise DataFormatError(f"item {i} ({item_id}): '{key}' must be a string or a list of strings")
            labels = tuple(values)
        out.append(Example(ItemId(str(item_id)), text, spans=spans, labels=labels))
    return out


__all__ = ["ProjectSpec", "examples_from_records"]
