"""Export a model version as a folder that ``transformers.pipeline`` loads, with a model card.

``plan_export(store, project_id, version_name)`` checks that the version can leave al-loop as a Hugging Face
folder and lists the folder's files (:class:`ExportPlan`); ``write_export(plan, out)`` writes that folder atomically
(a temporary folder beside ``out``, then a rename; a non-empty ``out`` only with ``force``); ``zip_chunks(plan)``
yields the same folder as a zip archive, chunk by chunk (a download never holds the weights in memory). Every
folder has ``config.json`` with ``id2label`` / ``label2id`` from the version's sorted labels (and the multi-label
problem type, so the pipeline applies a sigmoid), the tokenizer files, al-loop's own ``manifest.json`` and
``label_schema.json``, and a model card ``README.md`` (:mod:`al_loop.rounds.model_card`). Two forms, by what the
artifact is (see :mod:`al_loop.models`):

- **stock** (fine-tuned with the checkpoint's own head: ``training.pooling: cls`` for classification,
  ``training.token_head: hf`` for NER): the artifact *is* a ``*ForSequenceClassification`` /
  ``*ForTokenClassification`` folder; its safetensors weights are copied as they are and
  ``pipeline(task, model=DIR)`` computes what al-loop computes.
- **custom code** (al-loop's own heads, i.e. the defaults): the LP-FT classifier (``pooling: mean``: the mean of
  the last hidden states over real tokens, L2-normalised, then one linear layer) and token head (``token_head:
  probe``: a linear layer over each L2-normalised token state), ``pooled_head.safetensors`` beside the encoder;
  the head learner (``learner: head``, also chosen by ``auto``: a logistic regression over the frozen base model's
  same features, ``head.safetensors``; its encoder is the base model its manifest names, still on disk). No
  transformers head normalises the hidden states before its classifier and a norm cannot be folded into linear
  weights, so the folder ships ``modeling_al_loop.py``, names its class in ``config.json`` and holds one merged
  ``model.safetensors``; it loads with ``pipeline(task, model=DIR, trust_remote_code=True)``
  (:mod:`al_loop.rounds.export_custom`).

:class:`~al_loop.errors.NotExportableError` says why a version cannot leave (not an al-loop artifact, a schema or
labels that disagree, unreadable weights, a head learner whose base model is gone) and names the project's
exportable versions.

Torch-free: only the store and files are read (the web process serves downloads without importing torch),
so the artifact's JSON files and safetensors headers are read here rather than through :mod:`al_loop.models`.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from al_loop.data.schema import LabelSchema
from al_loop.errors import AlLoopError, ConflictError, NotExportableError, NotFoundError
from al_loop.folders import replace_folder
from al_loop.rounds.export_custom import (
    CODE_FILE,
    CODE_TEMPLATE,
    CUSTOM_CLASSES,
    REMOTE_CODE_REASON,
    MergedSafetensors,
    TensorRange,
    custom_config,
    encoder_tensors,
    head_encoder,
    head_tensors,
    read_header,
    tokenizer_files,
)
from al_loop.rounds.model_card import CardFacts, model_card
from al_loop.store.records import ModelVersion, Project
from al_loop.store.repository import Store
from al_loop.types import TaskKind

__all__ = [
    "CUSTOM_CLASSES",
    "REMOTE_CODE_REASON",
    "ExportFile",
    "ExportForm",
    "ExportPlan",
    "MergedSafetensors",
    "TensorRange",
    "find_version",
    "plan_export",
    "write_export",
    "zip_chunks",
]

# the artifact's file names (al_loop.models.artifacts / head / pooled; tests check they agree)
MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = "label_schema.json"
HEAD_FILE = "head.safetensors"
POOLED_HEAD_FILE = "pooled_head.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
WEIGHTS_FILE = "model.safetensors"
_COPIED_SUFFIXES = (".safetensors", ".json", ".txt", ".model")
"""Artifact files copied into the export: weights, tokenizer and configs. Never pickles (``.bin``, ``.pt``)."""
_GENERATED = {CONFIG_FILE, CARD_FILE}
_MAX_JSON_BYTES = 64 * 2**20
_CHUNK = 2**20

PIPELINE_TASKS = {TaskKind.CLASSIFICATION: "text-classification", TaskKind.NER: "token-classification"}
_HEADS = {TaskKind.CLASSIFICATION: "ForSequenceClassification", TaskKind.NER: "ForTokenClassification"}
EXPORTABLE = ("every version whose artifact is intact can be exported (al-loop's own heads, the defaults, as "
              "custom code that loads with trust_remote_code=True; versions fine-tuned with training.pooling 'cls' "
              "or training.token_head 'hf' as a stock transformers folder)")
class ExportForm(StrEnum):
    """What an exported folder is: the checkpoint's stock head, or al-loop's head as custom code."""

    STOCK = "stock"
    LPFT = "lpft"  # the LP-FT heads (pooled_head.safetensors beside the encoder)
    HEAD = "head"  # the head learner (head.safetensors; the encoder is the base model)


@dataclass(frozen=True)
class ExportFile:
    """One file of the export: ``name`` inside the folder, copied from ``source``, written from ``data`` or
    assembled from other safetensors files (``merged``)."""

    name: str
    source: Path | None = None
    data: bytes | None = None
    merged: MergedSafetensors | None = None

    @property
    def size(self) -> int:
        if self.merged is not None:
            return self.merged.size
        return len(self.data) if self.data is not None else (self.source.stat().st_size if self.source else 0)

    def chunks(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The file's bytes, at most ``chunk_size`` at a time (a generated file's data at once)."""
        if self.data is not None:
            yield self.data
        elif self.merged is not None:
            yield from self.merged.chunks(chunk_size)
        elif self.source is not None:
            with open(self.source, "rb") as src:
                while block := src.read(chunk_size):
                    yield block


@dataclass(frozen=True)
class ExportPlan:
    """What an export writes: ``files`` of the folder named ``folder_name`` (the zip's top folder); ``form``:
    a stock transformers folder, or al-loop's head as custom code (loads with ``trust_remote_code=True``)."""

    project: Project
    version: ModelVersion
    pipeline_task: str
    files: tuple[ExportFile, ...]
    form: ExportForm = ExportForm.STOCK

    @property
    def custom_code(self) -> bool:
        return self.form is not ExportForm.STOCK

    @property
    def folder_name(self) -> str:
        return f"project-{self.project.id}-{self.version.name}"


def find_version(store: Store, project_id: int, name: str | None = None) -> ModelVersion:
    """Version ``name`` of the project, or its promoted version when ``name`` is None (NotFoundError)."""
    store.get_project(project_id)
    if name is None:
        promoted = store.promoted_version(project_id)
        if promoted is None:
            raise NotFoundError(f"project {project_id} has no promoted model version; name one (its versions: "
                                f"{_names(store.list_versions(project_id))})")
        return promoted
    versions = store.list_versions(project_id)
    found = next((v for v in versions if v.name == name), None)
    if found is None:
        raise NotFoundError(f"project {project_id} has no model version {name[:200]!r} (its versions: "
                            f"{_names(versions)})")
    return found


def _names(versions: list[ModelVersion], last: int = 8) -> str:
    names = [v.name for v in versions[-last:]]
    return (", ".join(names) + (" and older" if len(versions) > last else "")) if names else "none yet"


def plan_export(store: Store, project_id: int, version_name: str | None = None, *,
                now: datetime | None = None) -> ExportPlan:
    """Check that the version (default: the promoted one) can be exported and list its folder's files.

    NotFoundError for an unknown project or version; ConflictError when the version has no artifact on disk;
    NotExportableError (naming the exportable versions) for an artifact that is not what its version says, or a
    head-learner version whose base model (its encoder) is no longer there.
    """
    project = store.get_project(project_id)
    version = find_version(store, project_id, version_name)
    folder = _artifact_folder(version)
    try:
        found = _check_exportable(store, project, version, folder)
    except NotExportableError as exc:
        others = [v.name for v in store.list_versions(project_id)
                  if v.id != version.id and _exportable(store, project, v)]
        hint = f"exportable versions of project {project_id}: {', '.join(others[-8:])}" if others else (
            f"project {project_id} has no exportable version")
        raise NotExportableError(f"{exc}. {EXPORTABLE}; {hint}") from None
    schema = found.schema
    rnd = store.get_round(version.round_id) if version.round_id is not None else None
    rounds = [r for r in store.list_rounds(project_id) if rnd is None or r.index <= rnd.index]
    facts = CardFacts(project=project, version=version, schema=schema, manifest=found.manifest, round=rnd,
                      rounds=rounds, pipeline_task=PIPELINE_TASKS[schema.task],
                      exported_at=now or datetime.now(UTC), custom_code=found.form is not ExportForm.STOCK)
    files = [ExportFile(CARD_FILE, data=model_card(facts).encode("utf-8"))]
    if found.form is ExportForm.STOCK:
        files.append(ExportFile(CONFIG_FILE, data=_json_bytes(_export_config(found.config, schema))))
        for path in sorted(folder.iterdir()):
            if path.name in _GENERATED or not path.name.endswith(_COPIED_SUFFIXES) or path.is_symlink():
                continue
            if path.is_file():
                files.append(ExportFile(path.name, source=path))
    else:
        assert found.merged is not None
        config = custom_config(_export_config(found.config, schema), schema.task)
        files += [ExportFile(CONFIG_FILE, data=_json_bytes(config)),
                  ExportFile(CODE_FILE, data=CODE_TEMPLATE.read_bytes()),
                  ExportFile(WEIGHTS_FILE, merged=found.merged),
                  ExportFile(MANIFEST_FILE, source=folder / MANIFEST_FILE),
                  ExportFile(SCHEMA_FILE, source=folder / SCHEMA_FILE),
                  *(ExportFile(p.name, source=p) for p in found.tokenizer)]
    return ExportPlan(project=project, version=version, pipeline_task=PIPELINE_TASKS[schema.task],
                      files=tuple(sorted(files, key=lambda f: f.name)), form=found.form)


def _artifact_folder(version: ModelVersion) -> Path:
    folder = Path(version.artifact_path) if version.artifact_path else None
    if folder is None or not folder.is_dir():
        raise ConflictError(f"model version {version.name} has no artifact on this server (it was never saved, "
                            "or its folder was removed): nothing to export")
    return folder


def _exportable(store: Store, project: Project, version: ModelVersion) -> bool:
    try:
        _check_exportable(store, project, version, _artifact_folder(version))
    except AlLoopError:
        return False
    return True


@dataclass(frozen=True)
class _Checked:
    """What :func:`_check_exportable` found: the artifact's schema and manifest, the encoder's config.json, the
    form, and for al-loop's heads the merged weights and the tokenizer files."""

    schema: LabelSchema
    manifest: dict[str, Any]
    config: dict[str, Any]
    form: ExportForm
    merged: MergedSafetensors | None = None
    tokenizer: tuple[Path, ...] = ()


def _check_exportable(store: Store, project: Project, version: ModelVersion, folder: Path) -> _Checked:
    """What the artifact holds and how it leaves; NotExportableError saying why it cannot."""
    what = f"model version {version.name} of project {project.id}"
    manifest = _read_json(folder / MANIFEST_FILE, what)
    if manifest.get("format") != "al-loop-model":
        raise NotExportableError(f"{what}: its folder is not an al-loop model artifact (no al-loop manifest)")
    try:
        schema = LabelSchema.from_dict(_read_json(folder / SCHEMA_FILE, what))
    except AlLoopError as exc:
        raise NotExportableError(f"{what}: unreadable {SCHEMA_FILE}: {exc}") from None
    if schema.hash != version.schema_hash or manifest.get("schema_hash") != schema.hash:
        raise NotExportableError(f"{what}: the artifact's label schema does not match the version's")
    if manifest.get("learner") == "head" or (folder / HEAD_FILE).exists():
        encoder = head_encoder(store, manifest, what)
        config = _encoder_config(encoder, what)
        head = head_tensors(folder / HEAD_FILE, ("coef", "intercept"), schema.num_outputs, config["hidden_size"],
                            what)
        return _custom(schema, manifest, config, ExportForm.HEAD, encoder, head, what)
    if (folder / POOLED_HEAD_FILE).exists():
        config = _encoder_config(folder, what)
        head = head_tensors(folder / POOLED_HEAD_FILE, ("weight", "bias"), schema.num_outputs, config["hidden_size"],
                            what)
        return _custom(schema, manifest, config, ExportForm.LPFT, folder, head, what)
    config = _read_json(folder / CONFIG_FILE, what)
    archs = [str(a) for a in config.get("architectures") or ()]
    if not any(a.endswith(_HEADS[schema.task]) for a in archs):
        raise NotExportableError(f"{what}: config.json names {archs or 'no architecture'}, not a "
                                 f"*{_HEADS[schema.task]} model that the {PIPELINE_TASKS[schema.task]} pipeline runs")
    _check_labels(config, schema, what)
    weights = [p for p in folder.glob("*.safetensors") if p.is_file()]
    if not weights:
        raise NotExportableError(f"{what}: no safetensors weights in its artifact")
    for path in weights:
        read_header(path, what)
    return _Checked(schema, manifest, config, ExportForm.STOCK)


def _check_labels(config: dict[str, Any], schema: LabelSchema, what: str) -> None:
    stored = config.get("id2label") or {}
    if [str(stored.get(str(i), stored.get(i, ""))) for i in range(len(stored))] != list(schema.tags):
        raise NotExportableError(f"{what}: config.json's id2label does not match the version's labels")


def _custom(schema: LabelSchema, manifest: dict[str, Any], config: dict[str, Any], form: ExportForm,
            encoder: Path, head: list[TensorRange], what: str) -> _Checked:
    """An export of al-loop's head over the encoder in folder ``encoder``: merged weights and its tokenizer."""
    tokenizer = tokenizer_files(encoder, what)
    merged = MergedSafetensors.build([*encoder_tensors(encoder, what, (HEAD_FILE, POOLED_HEAD_FILE)), *head])
    return _Checked(schema, manifest, config, form, merged, tokenizer)


def _encoder_config(folder: Path, what: str) -> dict[str, Any]:
    config = _read_json(folder / CONFIG_FILE, what)
    if not isinstance(config.get("model_type"), str):
        raise NotExportableError(f"{what}: {folder / CONFIG_FILE} names no model_type")
    if not isinstance(config.get("hidden_size"), int):
        raise NotExportableError(f"{what}: {folder / CONFIG_FILE} has no integer hidden_size")
    return config


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            raise NotExportableError(f"{what}: {path.name} is larger than {_MAX_JSON_BYTES} bytes")
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise NotExportableError(f"{what}: its artifact has no {path.name}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise NotExportableError(f"{what}: cannot read {path.name} ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise NotExportableError(f"{what}: {path.name} is not a JSON object")
    return data


def _export_config(config: dict[str, Any], schema: LabelSchema) -> dict[str, Any]:
    """config.json with id2label / label2id from the schema's sorted tags and the classification problem type
    (the pipeline applies a sigmoid to multi-label models, a softmax otherwise)."""
    out = dict(config)
    out["id2label"] = {str(i): tag for i, tag in schema.id2label.items()}
    out["label2id"] = dict(schema.label2id)
    if schema.task is TaskKind.CLASSIFICATION:
        out["problem_type"] = "multi_label_classification" if schema.multi_label else "single_label_classification"
    return out


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------- writing
def write_export(plan: ExportPlan, out: str | Path, *, force: bool = False) -> Path:
    """Write the plan's folder to ``out`` atomically and return its absolute path.

    The files go to a temporary folder beside ``out`` (same file system), which is then renamed to ``out``.
    An existing empty folder is replaced; a non-empty one (or a file) is refused with ConflictError unless
    ``force``, and then replaced only once the new folder is complete (on a failure it is left as it was).
    """
    target = Path(out).expanduser().absolute()
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ConflictError(f"{target} exists and is not a folder; choose another --out")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ConflictError(f"{target} is not empty; choose an empty or new folder, or pass --force to replace it")
    def fill(tmp: Path) -> None:
        for item in plan.files:
            _write_file(item, tmp / item.name)

    return replace_folder(target, fill)


def _write_file(item: ExportFile, dest: Path) -> None:
    with open(dest, "wb") as fh:
        for block in item.chunks(_CHUNK):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream that keeps what was written until :meth:`take` (zipfile's output)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._pos += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._pos

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def zip_chunks(plan: ExportPlan, chunk_size: int = _CHUNK) -> Iterator[bytes]:
    """The plan's folder as a zip archive (top folder :attr:`ExportPlan.folder_name`), in chunks of about
    ``chunk_size`` bytes: files are read and deflated piece by piece, so memory stays bounded by the chunk."""
    sink = _Sink()
    # level 1: the weights barely compress, the JSON and vocabulary files do; a name (not a ZipInfo) takes it
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for item in plan.files:
            with zf.open(f"{plan.folder_name}/{item.name}", "w", force_zip64=True) as dest:
                for block in item.chunks(chunk_size):
                    dest.write(block)
                    if sink.pending:
                        yield sink.take()
            if sink.pending:
                yield sink.take()
    if sink.pending:
        yield sink.take()
