"""LoopService: the live active-learning loop between al-loop's core and Label Studio.

One service object per process (web or worker) with its collaborators injected:
``LoopService(store, gateway_factory, rounds, dispatcher, settings)``. Methods take ids and
are safe to call again (webhooks are redelivered, Celery tasks are redelivered):

- ``create_project(spec)``: an al-loop project plus a new Label Studio project with a
  generated label config, or attached to an existing one (labels read from its config);
  al-loop is connected as the project's ML backend at ``AL_LOOP_PUBLIC_URL``, which makes
  Label Studio create the one webhook to ``<url>/webhook`` (with the secret header).
- ``import_items``: items into the store and, for the pool, into Label Studio as tasks with
  data ``{text_key: text, "item_id": item_id}``; the task ids are stored on the items.
- ``handle_event``: one webhook body -> labels recorded idempotently (key ``ls:<annotation id>``,
  newest ``updated_at`` wins, skipped = skipped label, deletions); invalid annotations are
  rejected, logged and listed in the project's status, never raised; then the retrain policy.
- ``reconcile``: Label Studio is the source of truth: re-read every annotated task, record all
  annotations, mark vanished ones deleted, adopt tasks created in Label Studio directly.
- ``request_round`` / ``execute_round`` / ``push_round``: queue a round; run it (reconcile
  first, then train/score/select); push its predictions with score = rank / N (Label Studio
  serves the LOWEST score first) and model_version = the round's tag, then point the
  project's model_version at that tag with "Uncertainty sampling".

Id spaces: ``project_id`` and ``round_id`` are al-loop database ids; ``ItemId`` is al-loop's
stable item id; Label Studio ids (project, task, annotation) are named ``ls_*``/``task_id``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from al_loop.config import LoopConfig, TrainingConfig, config_from_dict
from al_loop.data.align import check_spans
from al_loop.data.readers import read_examples
from al_loop.data.schema import LabelSchema
from al_loop.errors import (
    AlLoopError,
    ConfigError,
    ConflictError,
    DataFormatError,
    NotFoundError,
    SchemaError,
)
from al_loop.rounds.service import RoundService, cold_version_tag
from al_loop.rounds.states import RoundStatus
from al_loop.store.records import Item, Project, Round, payload_from_example
from al_loop.store.repository import Store, utcnow
from al_loop.strategies import make_strategy
from al_loop.types import Example, ItemId, Span, TaskKind
from annotator_bridge.dispatch import Dispatcher, InlineDispatcher
from annotator_bridge.labelstudio.config import LabelConfig, build_label_config, parse_label_config
from annotator_bridge.labelstudio.convert import (
    ITEM_ID_KEY,
    AnnotationEvent,
    AnnotationsCreated,
    AnnotationsDeleted,
    Ignored,
    Skipped,
    StartTraining,
    WebhookPayloadError,
    annotation_to_example,
    parse_webhook,
    prediction_to_ls,
)
from annotator_bridge.labelstudio.gateway import (
    UNCERTAINTY_SAMPLING,
    LabelStudioRequestError,
    LabelStudioUnavailable,
)
from annotator_bridge.settings import WEBHOOK_SECRET_HEADER, Settings

log = logging.getLogger("annotator_bridge.loop")

LS_PROJECT_KEY = "ls_project_id"
"""``Project.integration`` key of the Label Studio project id (``store.find_project(LS_PROJECT_KEY, id)``)."""
LS_CONFIG_KEY = "ls_label_config"
LABEL_SOURCE = "labelstudio"
IMPORT_SOURCE = "import"
MAX_REJECTED = 50
PREDICTION_CHUNK = 1000
LOOP_KEYS = ("strategy", "batch_size", "seed_size", "retrain_every", "cold_start", "promote", "max_pool_scored", "seed")
SPEC_KEYS = frozenset({"name", "task", "labels", "multi_label", "base_model", "training", "loop", "label_studio",
                       *LOOP_KEYS})
LS_SPEC_KEYS = frozenset({"project_id", "title", "description"})


def annotation_key(annotation_id: int) -> str:
    """Store key of a Label Studio annotation."""
    return f"ls:{int(annotation_id)}"


def parse_ls_time(value: str | None) -> datetime | None:
    """Label Studio ISO time (``2026-11-25T07:58:31.816564Z``) -> naive UTC (the store's convention)."""
    if not value or not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


# ---------------------------------------------------------------------------- gateway protocol
class Gateway(Protocol):
    """The Label Studio calls LoopService makes (``LabelStudioGateway`` implements them; tests fake them)."""

    def create_project(self, title: str, label_config: str, *, description: str = "", sampling: str | None = None,
                       model_version: str | None = None, **fields: Any) -> Any: ...

    def get_project(self, project_id: int) -> Any: ...

    def delete_project(self, project_id: int) -> None: ...

    def set_model_version(self, project_id: int, version: str, sampling: str | None = ...) -> Any: ...

    def model_versions(self, project_id: int) -> dict[str, int]: ...

    def list_tasks(self, project_id: int, *, query: Mapping[str, Any] | None = None, fields: str = ...,
                   page_size: int = ..., token: str | None = None) -> Iterator[dict[str, Any]]: ...

    def import_tasks(self, project_id: int, items: Iterable[tuple[ItemId | str, str, Mapping[str, Any] | None]], *,
                     text_key: str = ..., chunk_size: int = ..., skip_existing: bool = ...) -> dict[ItemId, int]: ...

    def list_annotated_tasks(self, project_id: int, *, text_key: str | None = None,
                             page_size: int = ...) -> Iterator[Any]: ...

    def import_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]], *,
                           model_version: str | None = None, chunk_size: int = ...) -> int: ...

    def connect_ml_backend(self, project_id: int, url: str, *, title: str,
                           webhook_headers: Mapping[str, str] | None = None, is_interactive: bool = ...,
                           timeout: float | None = None) -> dict[str, Any]: ...


GatewayFactory = Callable[[], Gateway]


def label_studio_gateway_factory(settings: Settings) -> GatewayFactory:
    """Factory of the real gateway from ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``."""

    def make() -> Gateway:
        if not settings.label_studio_configured:
            raise ConfigError("Label Studio is not configured: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or "
                              "create a local project with \"label_studio\": false)")
        from annotator_bridge.labelstudio.gateway import LabelStudioGateway

        return LabelStudioGateway(str(settings.label_studio_url), str(settings.label_studio_api_key))

    return make


# ---------------------------------------------------------------------------- project spec
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
            labels = tuple(labels)
        multi = data.get("multi_label")
        if multi is not None and not isinstance(multi, bool):
            raise ConfigError("'multi_label' must be true or false")
        base_model = data.get("base_model", "default")
        if not isinstance(base_model, str) or not base_model.strip():
            raise ConfigError("'base_model' must be a non-empty string")
        loop_dict = data.get("loop") or {}
        if not isinstance(loop_dict, Mapping):
            raise ConfigError("'loop' must be an object")
        loop_dict = {**loop_dict, **{k: data[k] for k in LOOP_KEYS if k in data}}
        training_dict = data.get("training") or {}
        if not isinstance(training_dict, Mapping):
            raise ConfigError("'training' must be an object of TrainingConfig fields")
        try:
            loop = config_from_dict(LoopConfig, dict(loop_dict))
            training = config_from_dict(TrainingConfig, dict(training_dict))
        except TypeError as exc:
            raise ConfigError(f"invalid loop/training settings: {exc}") from None
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
            if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 1):
                raise ConfigError("label_studio.project_id must be a positive integer (an existing project's id)")
            for key in ("title", "description"):
                if key in ls_dict and not isinstance(ls_dict[key], str):
                    raise ConfigError(f"label_studio.{key} must be a string")
        else:
            raise ConfigError("'label_studio' must be an object ({'project_id': n} to attach), true or false")
        return cls(name=name.strip(), task=task, labels=labels, multi_label=multi, base_model=base_model.strip(),
                   loop=loop, training=training, label_studio=ls_dict)


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
        if isinstance(item_id, bool) or not isinstance(item_id, str | int) or str(item_id).strip() == "":
            raise DataFormatError(f"item {i}: 'id' must be a non-empty string or integer")
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


# ---------------------------------------------------------------------------- the service
class LoopService:
    """The live loop (see the module docstring). Thread-safe: state lives in the store."""

    def __init__(
        self,
        store: Store,
        gateway_factory: GatewayFactory | None,
        rounds: RoundService,
        dispatcher: Dispatcher | None,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.rounds = rounds
        self.settings = settings
        self.clock = clock
        self._gateway_factory = gateway_factory or label_studio_gateway_factory(settings)
        self._gateway: Gateway | None = None
        self._lock = threading.Lock()
        self._configs: dict[str, LabelConfig] = {}
        if dispatcher is None:
            dispatcher = InlineDispatcher(self)
        elif isinstance(dispatcher, InlineDispatcher) and dispatcher.loop is None:
            dispatcher.bind(self)
        self.dispatcher: Dispatcher = dispatcher

    # ------------------------------------------------------------------ collaborators
    @property
    def gateway(self) -> Gateway:
        """The Label Studio gateway, made on first use (ConfigError when Label Studio is not configured)."""
        with self._lock:
            if self._gateway is None:
                self._gateway = self._gateway_factory()
            return self._gateway

    def _ls_id(self, project: Project) -> int | None:
        value = project.integration.get(LS_PROJECT_KEY)
        return int(value) if value is not None else None

    def label_config(self, project: Project) -> LabelConfig:
        """The project's Label Studio label config, validated against al-loop's schema for the project.

        Tag names (from_name/to_name/text_key) come from the stored config XML; labels are
        checked against the project's own schema, so a label added in Label Studio later is
        rejected (UnknownLabelError) instead of breaking the next round.
        """
        xml = project.integration.get(LS_CONFIG_KEY)
        if not xml:
            ls_id = self._ls_id(project)
            if ls_id is None:
                return LabelConfig(project.schema, "label", "text", xml=build_label_config(project.schema))
            xml = self.gateway.get_project(ls_id).label_config
            self.store.update_project(project.id, integration={LS_CONFIG_KEY: xml})
        cfg = self._configs.get(xml)
        if cfg is None:
            cfg = parse_label_config(xml)
            self._configs[xml] = cfg
        return replace(cfg, schema=project.schema)

    # ------------------------------------------------------------------ projects
    def create_project(self, spec: ProjectSpec | Mapping[str, Any]) -> Project:
        """Create an al-loop project (and its Label Studio side); see ``ProjectSpec``.

        ConflictError for a taken name or a Label Studio project already attached; SchemaError
        when labels/task disagree with an attached project's label config; LabelStudioUnavailable
        when Label Studio does not answer (nothing is created then).
        """
        spec = spec if isinstance(spec, ProjectSpec) else ProjectSpec.from_dict(spec)
        if any(p.name == spec.name for p in self.store.list_projects()):
            raise ConflictError(f"a project named {spec.name!r} already exists")
        integration: dict[str, Any] = {}
        created_ls: int | None = None
        if spec.label_studio is None:
            schema = spec.schema()
            make_strategy(spec.loop.strategy, schema.task)
        elif spec.attach_to is not None:
            ls_id = int(spec.attach_to)
            other = self.store.find_project(LS_PROJECT_KEY, ls_id)
            if other is not None:
                raise ConflictError(f"Label Studio project {ls_id} is already attached to al-loop project "
                                    f"{other.id} ({other.name!r})")
            ls = self.gateway.get_project(ls_id)
            schema = _attach_schema(spec, ls.config)
            make_strategy(spec.loop.strategy, schema.task)
            integration = {LS_PROJECT_KEY: ls_id, LS_CONFIG_KEY: ls.label_config, "ls_attached": True}
        else:
            schema = spec.schema()
            make_strategy(spec.loop.strategy, schema.task)
            xml = build_label_config(schema)
            title = _ls_title(spec.label_studio.get("title") or spec.name)
            ls = self.gateway.create_project(title, xml, description=spec.label_studio.get("description", ""))
            created_ls = int(ls.id)
            integration = {LS_PROJECT_KEY: created_ls, LS_CONFIG_KEY: ls.label_config or xml, "ls_attached": False}
        if integration:
            integration.update({"ls_url": self.settings.label_studio_url, "rejected": [], "rejected_total": 0,
                                "needs_reconcile": False})
        try:
            project = self.store.create_project(spec.name, schema, spec.base_model, spec.loop, spec.training,
                                                integration)
        except Exception:
            if created_ls is not None:
                self._delete_ls_project(created_ls)
            raise
        log.info("project %s (%s) created; Label Studio project %s", project.id, project.name,
                 integration.get(LS_PROJECT_KEY))
        if integration:
            self._connect_backend(project)
            if spec.attach_to is not None:
                try:
                    self._sync_tasks(self.store.get_project(project.id))
                except (LabelStudioUnavailable, LabelStudioRequestError) as exc:
                    log.warning("project %s: could not read the attached tasks yet (%s); reconcile later",
                                project.id, exc)
                    self.store.update_project(project.id, integration={"needs_reconcile": True})
        return self.store.get_project(project.id)

    def _delete_ls_project(self, ls_id: int) -> None:
        try:
            self.gateway.delete_project(ls_id)
        except AlLoopError as exc:
            log.warning("could not delete Label Studio project %s after a failed create: %s", ls_id, exc)

    def _connect_backend(self, project: Project) -> bool:
        """Connect al-loop as the ML backend (creates Label Studio's one webhook to ``<url>/webhook``)."""
        ls_id = self._ls_id(project)
        url = self.settings.public_url
        if ls_id is None:
            return False
        if not url:
            log.warning("project %s: AL_LOOP_PUBLIC_URL is not set, so al-loop is not connected as the ML backend "
                        "of Label Studio project %s: no webhooks will arrive (labels come in through reconcile)",
                        project.id, ls_id)
            self.store.update_project(project.id, integration={"ml_backend": {"status": "not configured"}})
            return False
        headers = {WEBHOOK_SECRET_HEADER: self.settings.webhook_secret} if self.settings.webhook_secret else None
        title = project.integration.get("ls_model_version") or cold_version_tag(0, project.schema)
        try:
            ml = self.gateway.connect_ml_backend(ls_id, url, title=title, webhook_headers=headers)
        except (LabelStudioUnavailable, LabelStudioRequestError) as exc:
            log.warning("project %s: connecting the ML backend at %s failed: %s (retried on reconcile)",
                        project.id, url, exc)
            self.store.update_project(project.id, integration={"ml_backend": {"status": "failed", "url": url,
                                                                              "error": str(exc)[:500]}})
            return False
        self.store.update_project(project.id, integration={"ml_backend": {"status": "connected", "url": url,
                                                                          "id": (ml or {}).get("id")}})
        return True

    def list_projects(self) -> list[Project]:
        return self.store.list_projects()

    def get_project(self, project_id: int) -> Project:
        return self.store.get_project(project_id)

    # ------------------------------------------------------------------ items
    def import_items(
        self,
        project_id: int,
        examples: Iterable[Example] | None = None,
        *,
        path: str | Path | None = None,
        format: str | None = None,
        split: str = "pool",
        record_labels: bool = False,
        start_round: bool = False,
    ) -> dict[str, Any]:
        """Add items (``examples`` or a server-side ``path`` read with ``read_examples``) to a split.

        Pool items are also created as Label Studio tasks (idempotent: items already there are
        not imported again). Gold annotations are kept as ``gold``; ``record_labels`` also
        records pool items' gold as labels (source "import") so they train the next round.
        ``split="test"`` items need gold labels and stay out of Label Studio (evaluation set).
        ``start_round`` queues a round after the import (ignored when one is active).
        """
        project = self.store.get_project(project_id)
        if split not in ("pool", "test"):
            raise ConfigError("split must be 'pool' or 'test'")
        if (examples is None) == (path is None):
            raise ConfigError("give either items or a file path")
        if path is not None:
            if not self.settings.allows_import_path(path):
                raise ConfigError(f"{path} is outside the folders the server may import from (AL_LOOP_IMPORT_DIRS)")
            examples = read_examples(path, task=project.task, format=format)
        batch = self._validate_examples(project, list(examples or []), split)
        report = self.store.add_items(project_id, batch, split)
        recorded = 0
        if record_labels and split == "pool":
            for ex in batch:
                payload = payload_from_example(ex)
                if payload is None:
                    continue
                outcome = self.store.record_label(project_id, ex.item_id, f"{IMPORT_SOURCE}:{ex.item_id}",
                                                  payload=payload, source=IMPORT_SOURCE)
                recorded += outcome in ("created", "updated")
        result: dict[str, Any] = {**report.to_dict(), "labels_recorded": recorded, "ls_tasks": 0, "round": None}
        if split == "pool" and self._ls_id(project) is not None:
            try:
                result["ls_tasks"] = self._push_tasks(project)
            except LabelStudioUnavailable as exc:
                raise LabelStudioUnavailable(f"{report.added} items were stored, but their Label Studio tasks could "
                                             f"not be created ({exc}); import again or reconcile to retry") from exc
        log.info("project %s: imported %d items into %s (%d existing, %d duplicate texts, %d tasks)", project_id,
                 report.added, split, report.existing, len(report.duplicate_texts), result["ls_tasks"])
        if start_round:
            rnd = self._start_round(project_id, "import")
            result["round"] = rnd.to_dict() if rnd else None
        return result

    def _validate_examples(self, project: Project, examples: list[Example], split: str) -> list[Example]:
        schema = project.schema
        seen: set[str] = set()
        out: list[Example] = []
        for ex in examples:
            if ex.item_id in seen:
                raise DataFormatError(f"item id {ex.item_id!r} appears twice in the import")
            seen.add(ex.item_id)
            if not isinstance(ex.text, str) or not ex.text.strip():
                raise DataFormatError(f"item {ex.item_id!r}: empty text")
            if ex.spans is not None:
                if schema.task is not TaskKind.NER:
                    raise DataFormatError(f"item {ex.item_id!r}: spans given for a classification project")
                ex = Example(ex.item_id, ex.text, spans=check_spans(ex.text, ex.spans, schema))
            elif ex.labels is not None:
                if schema.task is not TaskKind.CLASSIFICATION:
                    raise DataFormatError(f"item {ex.item_id!r}: class labels given for an NER project")
                schema.check_example(ex)
            elif split == "test":
                raise DataFormatError(f"item {ex.item_id!r}: test items need gold labels")
            out.append(ex)
        if not out:
            raise DataFormatError("no items to import")
        return out

    def _push_tasks(self, project: Project) -> int:
        """Create Label Studio tasks for pool items that have none; returns how many items got a task id."""
        ls_id = self._ls_id(project)
        if ls_id is None:
            return 0
        todo = [it for it in self.store.get_items(project.id, split="pool") if it.ext_task_id is None]
        if not todo:
            return 0
        cfg = self.label_config(project)
        mapping = self.gateway.import_tasks(ls_id, [(it.item_id, it.text, None) for it in todo], text_key=cfg.text_key)
        self.store.set_ext_task_ids(project.id, {str(k): int(v) for k, v in mapping.items()})
        return len(mapping)

    def _sync_tasks(self, project: Project) -> dict[str, int]:
        """Map Label Studio tasks to items: adopt tasks al-loop does not know, create tasks for items without one."""
        ls_id = self._ls_id(project)
        if ls_id is None:
            return {}
        tasks = list(self.gateway.list_tasks(ls_id, fields="task_only", page_size=1000))
        adopted = self._adopt_tasks(project, tasks)
        created = self._push_tasks(self.store.get_project(project.id))
        return {"adopted": adopted, "created": created}

    def _adopt_tasks(self, project: Project, tasks: Iterable[Mapping[str, Any]]) -> int:
        """Items for Label Studio tasks al-loop does not know (item id = ``data.item_id`` or ``ls-<task id>``)."""
        cfg = self.label_config(project)
        items = self.store.get_items(project.id)
        by_id = {it.item_id: it for it in items}
        by_task = {it.ext_task_id for it in items if it.ext_task_id is not None}
        mapping: dict[str, int] = {}
        new: list[Example] = []
        new_tasks: dict[str, int] = {}
        for task in tasks:
            if not isinstance(task, Mapping) or isinstance(task.get("id"), bool) or not isinstance(task.get("id"), int):
                continue
            task_id = int(task["id"])
            if task_id in by_task:
                continue
            raw_data = task.get("data")
            data: Mapping[str, Any] = raw_data if isinstance(raw_data, Mapping) else {}
            raw_id = data.get(ITEM_ID_KEY)
            item_id = str(raw_id) if raw_id is not None else f"ls-{task_id}"
            known = by_id.get(ItemId(item_id))
            if known is not None:
                if known.ext_task_id is None:
                    mapping[item_id] = task_id
                continue
            text = data.get(cfg.text_key)
            if not isinstance(text, str):
                log.warning("project %s: Label Studio task %s has no text in data[%r]; not adopted", project.id,
                            task_id, cfg.text_key)
                continue
            if item_id in new_tasks:
                continue
            new.append(Example(ItemId(item_id), text))
            new_tasks[item_id] = task_id
        if new:
            report = self.store.add_items(project.id, new, "pool")
            dupes = set(report.duplicate_texts)
            mapping.update({k: v for k, v in new_tasks.items() if k not in dupes})
            if dupes:
                log.warning("project %s: %d Label Studio tasks repeat the text of an existing item; not adopted",
                            project.id, len(dupes))
        if mapping:
            self.store.set_ext_task_ids(project.id, mapping)
            log.info("project %s: %d Label Studio tasks mapped to items", project.id, len(mapping))
        return len(mapping)

    # ------------------------------------------------------------------ events
    def handle_event(self, project_id: int, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Apply one webhook body; never raises for bad annotations (they are rejected and listed).

        Returns a summary: ``{"status", "action", "outcomes": {created|updated|duplicate|stale|
        skipped|rejected|unknown_task|deleted: n}, "round_id"}``.
        """
        project = self.store.get_project(project_id)
        try:
            event = parse_webhook(payload)
        except WebhookPayloadError as exc:
            log.warning("project %s: unreadable webhook dropped: %s", project_id, exc)
            return {"status": "rejected", "error": str(exc)}
        action = getattr(event, "action", type(event).__name__)
        ls_id = self._ls_id(project)
        event_ls = getattr(event, "project_ls_id", None)
        if ls_id is not None and event_ls is not None and int(event_ls) != ls_id:
            log.warning("project %s: event for Label Studio project %s, expected %s; ignored", project_id, event_ls,
                        ls_id)
            return {"status": "ignored", "action": action, "reason": "another Label Studio project"}
        outcomes: Counter[str] = Counter()
        started: Round | None = None
        if isinstance(event, AnnotationEvent | AnnotationsCreated):
            events = [event] if isinstance(event, AnnotationEvent) else list(event.events)
            action = events[0].action if events else "ANNOTATIONS_CREATED"
            cfg = self.label_config(project)
            for ev in events:
                outcomes[self._ingest(project, cfg, ev)] += 1
        elif isinstance(event, AnnotationsDeleted):
            action = "ANNOTATIONS_DELETED"
            keys = [annotation_key(a) for a in event.annotation_ids]
            outcomes["deleted"] = self.store.delete_labels(project_id, keys)
        elif isinstance(event, StartTraining):
            action = "START_TRAINING"
            started = self._start_round(project_id, "label_studio")
        elif isinstance(event, Ignored):
            if event.action == "TASKS_CREATED" and ls_id is not None:
                tasks = payload.get("tasks") if isinstance(payload, Mapping) else None
                outcomes["tasks_mapped"] = self._adopt_tasks(project, tasks if isinstance(tasks, list) else [])
            elif event.action == "PROJECT_UPDATED" and ls_id is not None:
                self._check_config(project, payload.get("project") if isinstance(payload, Mapping) else None)
            else:
                log.debug("project %s: %s ignored", project_id, event.action)
                return {"status": "ignored", "action": event.action}
        changed = outcomes["created"] or outcomes["updated"]
        if started is None and changed and self.rounds.should_start_round(project_id):
            started = self._start_round(project_id, "policy")
        log.info("project %s: %s -> %s%s", project_id, action, dict(outcomes),
                 f"; round {started.index} queued" if started else "")
        return {"status": "processed", "action": action, "outcomes": dict(outcomes),
                "round_id": started.id if started else None}

    def _item_for(self, project: Project, item_id: ItemId | None, task_id: int | None) -> Item | None:
        if item_id is not None:
            try:
                return self.store.get_items(project.id, [item_id])[0]
            except NotFoundError:
                pass
        if task_id is not None:
            return self.store.item_by_ext_task(project.id, int(task_id))
        return None

    def _ingest(self, project: Project, cfg: LabelConfig, ev: AnnotationEvent) -> str:
        """Record one annotation; returns the store outcome, ``rejected`` or ``unknown_task``."""
        item = self._item_for(project, ev.item_id, ev.task_id)
        if item is None:
            log.info("project %s: annotation %s is for task %s, which al-loop does not know yet; reconcile later",
                     project.id, ev.annotation_id, ev.task_id)
            self.store.update_project(project.id, integration={"needs_reconcile": True})
            return "unknown_task"
        try:
            shown = ev.task_data.get(cfg.text_key)
            if (project.task is TaskKind.NER and not ev.was_cancelled and isinstance(shown, str)
                    and shown != item.text):
                raise DataFormatError(f"task {ev.task_id}: the Label Studio text differs from al-loop's text of item "
                                      f"{item.item_id}; span offsets cannot be trusted")
            converted = annotation_to_example(list(ev.result), item_id=item.item_id, text=item.text, config=cfg,
                                              was_cancelled=ev.was_cancelled, annotation_id=ev.annotation_id,
                                              task_id=ev.task_id)
        except AlLoopError as exc:
            self._reject(project, ev, item.item_id, exc)
            return "rejected"
        annotator = str(ev.completed_by) if ev.completed_by is not None else None
        updated_at = parse_ls_time(ev.updated_at)
        key = annotation_key(ev.annotation_id)
        if isinstance(converted, Skipped):
            outcome = self.store.record_label(project.id, item.item_id, key, payload=None, source=LABEL_SOURCE,
                                              skipped=True, annotator=annotator, updated_at=updated_at)
            return "skipped" if outcome in ("created", "updated") else outcome
        return self.store.record_label(project.id, item.item_id, key, payload=payload_from_example(converted),
                                       source=LABEL_SOURCE, annotator=annotator, updated_at=updated_at)

    def _reject(self, project: Project, ev: AnnotationEvent, item_id: str, exc: Exception) -> None:
        log.warning("project %s: Label Studio annotation %s (task %s, item %s) rejected: %s: %s", project.id,
                    ev.annotation_id, ev.task_id, item_id, type(exc).__name__, exc)
        fresh = self.store.get_project(project.id)
        rejected = list(fresh.integration.get("rejected") or [])
        if any(r.get("annotation_id") == ev.annotation_id and r.get("updated_at") == ev.updated_at for r in rejected):
            return
        rejected.append({"annotation_id": ev.annotation_id, "task_id": ev.task_id, "item_id": item_id,
                         "updated_at": ev.updated_at, "type": type(exc).__name__, "error": str(exc)[:500],
                         "at": self.clock().isoformat() + "Z"})
        total = int(fresh.integration.get("rejected_total") or 0) + 1
        self.store.update_project(project.id, integration={"rejected": rejected[-MAX_REJECTED:],
                                                           "rejected_total": total})

    def _check_config(self, project: Project, ls_project: Any) -> None:
        """PROJECT_UPDATED: follow tag renames in the label config; warn when its labels drift from al-loop's."""
        if not isinstance(ls_project, Mapping):
            return
        xml = ls_project.get("label_config")
        if not isinstance(xml, str) or not xml or xml == project.integration.get(LS_CONFIG_KEY):
            return
        try:
            cfg = parse_label_config(xml)
        except SchemaError as exc:
            warning = f"the Label Studio label config can no longer be driven by al-loop: {exc}"
        else:
            theirs, ours = cfg.schema, project.schema
            if theirs.task is ours.task and set(theirs.labels) == set(ours.labels):
                self.store.update_project(project.id, integration={LS_CONFIG_KEY: xml, "config_warning": None})
                log.info("project %s: Label Studio label config updated (same labels)", project.id)
                return
            added = sorted(set(theirs.labels) - set(ours.labels))
            removed = sorted(set(ours.labels) - set(theirs.labels))
            warning = (f"the Label Studio label config changed (added {added}, removed {removed}); al-loop keeps the "
                       f"project's labels {list(ours.labels)} and rejects annotations with other labels")
        log.warning("project %s: %s", project.id, warning)
        self.store.update_project(project.id, integration={"config_warning": warning})

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, project_id: int) -> dict[str, Any]:
        """Re-read every annotated task of the Label Studio project (the source of truth).

        Records every annotation (idempotent), marks stored Label Studio annotations that no
        longer exist as deleted, adopts tasks created in Label Studio directly and creates
        tasks for items without one. LabelStudioUnavailable propagates (the caller retries).
        """
        project = self.store.get_project(project_id)
        ls_id = self._ls_id(project)
        if ls_id is None:
            return {"status": "skipped", "reason": "the project has no Label Studio project"}
        ml = project.integration.get("ml_backend") or {}
        if self.settings.public_url and (ml.get("status") != "connected" or ml.get("url") != self.settings.public_url):
            self._connect_backend(project)  # never connected, or this server moved (AL_LOOP_PUBLIC_URL changed)
        tasks = self._sync_tasks(project)
        project = self.store.get_project(project_id)
        cfg = self.label_config(project)
        outcomes: Counter[str] = Counter()
        seen: set[str] = set()
        for task in self.gateway.list_annotated_tasks(ls_id, text_key=cfg.text_key):
            for ann in task.annotations:
                seen.add(annotation_key(ann.annotation_id))
                outcomes[self._ingest(project, cfg, ann)] += 1
        vanished = self.store.live_annotation_keys(project_id, LABEL_SOURCE) - seen
        outcomes["deleted"] = self.store.delete_labels(project_id, sorted(vanished)) if vanished else 0
        summary = {"status": "done", "at": self.clock().isoformat() + "Z", "outcomes": dict(outcomes), "tasks": tasks}
        self.store.update_project(project_id, integration={"needs_reconcile": outcomes["unknown_task"] > 0,
                                                           "last_reconcile": summary})
        log.info("project %s: reconciled with Label Studio project %s: %s", project_id, ls_id, dict(outcomes))
        return summary

    # ------------------------------------------------------------------ rounds
    def request_round(self, project_id: int, trigger: str = "api", *, batch_size: int | None = None) -> Round:
        """Create the next round and dispatch it; ConflictError while one is active."""
        rnd = self.rounds.create_round(project_id, trigger, batch_size=batch_size)
        log.info("project %s: round %s created (trigger %s)", project_id, rnd.index, trigger)
        try:
            self.dispatcher.run_round(project_id, rnd.id)
        except Exception as exc:
            current = self.store.get_round(rnd.id)
            if current.status == RoundStatus.PENDING.value:
                # never leave a round that nobody will run blocking the project
                self.store.update_round(rnd.id, status=RoundStatus.CANCELLED, phase="done",
                                        error=f"could not be queued: {exc}"[:1000])
            raise
        return self.store.get_round(rnd.id)

    def _start_round(self, project_id: int, trigger: str) -> Round | None:
        try:
            return self.request_round(project_id, trigger)
        except ConflictError as exc:
            log.info("project %s: no new round (%s): %s", project_id, trigger, exc)
            return None

    def execute_round(self, round_id: int) -> Round:
        """Reconcile (best effort), run the round, then dispatch its push. Idempotent for final rounds."""
        rnd = self.store.get_round(round_id)
        status = RoundStatus(rnd.status)
        if status.is_final:
            if status is RoundStatus.SUCCEEDED and rnd.push_status == "pending":
                self._dispatch_push(rnd)
            return self.store.get_round(round_id)
        try:
            self.reconcile(rnd.project_id)
        except AlLoopError as exc:
            log.warning("project %s round %s: reconcile failed (%s: %s); going on with the stored labels",
                        rnd.project_id, rnd.index, type(exc).__name__, exc)
        except Exception:
            # a reconcile bug must not block training: the stored labels are a valid snapshot
            log.exception("project %s round %s: reconcile crashed; going on with the stored labels",
                          rnd.project_id, rnd.index)
        outcome = self.rounds.run_round(round_id)
        done = outcome.round
        log.info("project %s round %s: %s (version %s)%s", done.project_id, done.index, done.status,
                 done.version_tag, f": {done.error}" if done.error else "")
        if done.status == RoundStatus.SUCCEEDED.value and done.push_status == "pending":
            self._dispatch_push(done)
        return self.store.get_round(round_id)

    def _dispatch_push(self, rnd: Round) -> None:
        try:
            self.dispatcher.push_round(rnd.id)
        except AlLoopError as exc:
            # the push records push_status="failed"; it is retried by the worker or the API
            log.warning("project %s round %s: push to Label Studio failed: %s", rnd.project_id, rnd.index, exc)

    def push_round(self, round_id: int) -> Round:
        """Send a succeeded round's predictions to Label Studio and make them drive the queue.

        Each scored pool item with a task gets one prediction: ``score = rank / N`` (rank 0 =
        0.0 = served first under "Uncertainty sampling"), ``model_version = round.version_tag``,
        ``result`` from the stored prediction (empty for the cold start). Then the project's
        model_version is set to the tag with "Uncertainty sampling". Idempotent: progress is
        kept in ``round.report["push"]`` and checked against Label Studio's per-version
        prediction counts, so a retried or repeated push never duplicates predictions.
        A round older than the newest succeeded one is marked ``superseded`` (never rolls
        the queue back). On failure push_status is ``failed`` and the error is re-raised.
        """
        rnd = self.store.get_round(round_id)
        if rnd.status != RoundStatus.SUCCEEDED.value:
            raise ConflictError(f"round {rnd.index} of project {rnd.project_id} is {rnd.status}; only a succeeded "
                                "round can be pushed")
        project = self.store.get_project(rnd.project_id)
        ls_id = self._ls_id(project)
        if ls_id is None or not rnd.version_tag:
            return self.store.update_round(round_id, push_status="skipped")
        latest = self.store.last_succeeded_round(project.id)
        if latest is not None and latest.index > rnd.index:
            log.info("project %s round %s: not pushed, round %s is newer", project.id, rnd.index, latest.index)
            return self.store.update_round(round_id, push_status="superseded")
        tag = rnd.version_tag
        report = dict(rnd.report)
        state: dict[str, Any] = dict(report.get("push") or {})
        try:
            cfg = self.label_config(project)
            predictions = self._predictions(project, cfg, rnd)
            expected = len(predictions)
            gw = self.gateway
            if state.get("version") != tag:
                # first attempt: remember how many predictions of this version Label Studio already holds
                # (e.g. made through /predict) and persist that before importing anything
                state = {"version": tag, "expected": expected, "imported": 0,
                         "base": int(gw.model_versions(ls_id).get(tag, 0))}
                report["push"] = dict(state)
                self.store.update_round(round_id, report=report)
            elif int(state.get("imported", 0)) < expected:
                # a chunk may have been applied although the call failed (timeout): trust Label Studio's count
                applied = int(gw.model_versions(ls_id).get(tag, 0)) - int(state.get("base", 0))
                state["expected"] = expected
                if applied > int(state.get("imported", 0)):
                    state["imported"] = min(applied, expected)
            while state["imported"] < expected:
                start = int(state["imported"])
                chunk = predictions[start:start + PREDICTION_CHUNK]
                gw.import_predictions(ls_id, chunk, model_version=tag)
                state["imported"] = start + len(chunk)
                report["push"] = dict(state)
                self.store.update_round(round_id, report=report)
            gw.set_model_version(ls_id, tag, sampling=UNCERTAINTY_SAMPLING)
        except AlLoopError as exc:
            state["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            report["push"] = state
            self.store.update_round(round_id, push_status="failed", report=report)
            log.warning("project %s round %s: push of %s failed: %s", project.id, rnd.index, tag, exc)
            raise
        state.update(error=None, at=self.clock().isoformat() + "Z")
        report["push"] = state
        self.store.update_project(project.id, integration={"ls_model_version": tag})
        log.info("project %s round %s: %d predictions of %s in Label Studio project %s; uncertainty sampling on",
                 project.id, rnd.index, state["expected"], tag, ls_id)
        return self.store.update_round(round_id, push_status="done", report=report)

    def _predictions(self, project: Project, cfg: LabelConfig, rnd: Round) -> list[dict[str, Any]]:
        """Label Studio predictions of a round, in rank order (one per scored item that has a task)."""
        scores = self.store.get_scores(rnd.id)
        n = len(scores)
        items = {it.item_id: it for it in self.store.get_items(project.id, [s.item_id for s in scores])}
        out: list[dict[str, Any]] = []
        without_task = 0
        tag = str(rnd.version_tag)
        for position, s in enumerate(scores):
            item = items[s.item_id]
            if item.ext_task_id is None:
                without_task += 1
                continue
            pred = s.prediction or {}
            predicted: list[Any]
            if project.task is TaskKind.NER:
                predicted = [Span.from_dict(d) for d in pred.get("spans") or []]
            else:
                predicted = [str(x) for x in pred.get("labels") or []]
            priority = position / n
            try:
                out.append(prediction_to_ls(item.ext_task_id, predicted, cfg, model_version=tag, score=priority,
                                            text=item.text))
            except AlLoopError as exc:
                log.warning("project %s round %s: prediction for item %s not convertible (%s); sent empty",
                            project.id, rnd.index, item.item_id, exc)
                out.append(prediction_to_ls(item.ext_task_id, [], cfg, model_version=tag, score=priority,
                                            text=item.text))
        if without_task:
            log.warning("project %s round %s: %d scored items have no Label Studio task (reconcile creates them)",
                        project.id, rnd.index, without_task)
        return out

    # ------------------------------------------------------------------ versions
    def promote(self, project_id: int, version_id: int) -> Any:
        return self.rounds.promote(project_id, version_id)

    def rollback(self, project_id: int) -> Any:
        return self.rounds.rollback(project_id)

    # ------------------------------------------------------------------ status
    def status(self, project_id: int) -> dict[str, Any]:
        """Everything an operator asks first: queue state, label counts, current version, active round."""
        project = self.store.get_project(project_id)
        integ = project.integration
        rounds = self.store.list_rounds(project_id)
        active = next((r for r in rounds if RoundStatus(r.status).is_active), None)
        promoted = self.store.promoted_version(project_id)
        pushes = [{"round": r.index, "round_id": r.id, "push_status": r.push_status,
                   "error": (r.report.get("push") or {}).get("error")}
                  for r in rounds if r.push_status in ("pending", "failed")]
        pool = self.store.count_items(project_id, "pool")
        unlabelled = len(self.store.unlabelled_item_ids(project_id))
        out: dict[str, Any] = {
            "project": {"id": project.id, "name": project.name, "task": project.task.value,
                        "labels": list(project.labels), "multi_label": project.multi_label,
                        "base_model": project.base_model},
            "loop": project.loop_config,
            "items": {"pool": pool, "test": self.store.count_items(project_id, "test"), "unlabelled": unlabelled},
            "labels": self.store.label_stats(project_id),
            "new_labels_since_last_round": self.store.new_labels_since_last_round(project_id),
            "retrain_every": project.loop.retrain_every,
            "current_version": promoted.to_dict() if promoted else None,
            "active_round": active.to_dict() if active else None,
            "last_round": rounds[-1].to_dict() if rounds else None,
            "rounds": len(rounds),
            "queue": {
                "round": {"index": active.index, "status": active.status, "phase": active.phase,
                          "progress": active.progress} if active else None,
                "pushes_outstanding": pushes,
                "needs_reconcile": bool(integ.get("needs_reconcile")),
                "last_reconcile": integ.get("last_reconcile"),
            },
            "label_studio": None,
            "rejected": list(integ.get("rejected") or [])[-20:],
            "rejected_total": int(integ.get("rejected_total") or 0),
        }
        if integ.get(LS_PROJECT_KEY) is not None:
            out["label_studio"] = {"project_id": integ.get(LS_PROJECT_KEY), "url": integ.get("ls_url"),
                                   "model_version": integ.get("ls_model_version"),
                                   "attached": bool(integ.get("ls_attached")), "ml_backend": integ.get("ml_backend"),
                                   "config_warning": integ.get("config_warning")}
        return out


def _ls_title(name: str) -> str:
    """Label Studio project titles are 3 to 50 characters."""
    title = name.strip() if len(name.strip()) >= 3 else f"al-loop {name.strip()}"
    return title[:50]


def _attach_schema(spec: ProjectSpec, cfg: LabelConfig) -> LabelSchema:
    """The attached project's schema; SchemaError when the spec contradicts its label config."""
    schema = cfg.schema
    if spec.task is not None and spec.task is not schema.task:
        raise SchemaError(f"the Label Studio project is a {schema.task.value} project, the spec says {spec.task.value}")
    if spec.labels is not None and set(spec.labels) != set(schema.labels):
        missing = sorted(set(spec.labels) - set(schema.labels))
        extra = sorted(set(schema.labels) - set(spec.labels))
        raise SchemaError(f"labels differ from the Label Studio project's config (not in Label Studio: {missing}; "
                          f"only in Label Studio: {extra})")
    if spec.multi_label is not None and spec.multi_label != schema.multi_label:
        raise SchemaError(f"the Label Studio config has multi_label={schema.multi_label}, the spec says "
                          f"{spec.multi_label}")
    return schema


__all__ = [
    "LABEL_SOURCE",
    "LS_PROJECT_KEY",
    "Gateway",
    "GatewayFactory",
    "LoopService",
    "ProjectSpec",
    "annotation_key",
    "examples_from_records",
    "label_studio_gateway_factory",
    "parse_ls_time",
]
