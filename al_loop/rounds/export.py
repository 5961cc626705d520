"""Export a model version as a folder that ``transformers.pipeline`` loads, with a model card.

``plan_export(store, project_id, version_name)`` checks that the version can leave al-loop as a standard
Hugging Face folder and lists the folder's files (:class:`ExportPlan`): the artifact's safetensors weights and
tokenizer files as they are, ``config.json`` with ``id2label`` / ``label2id`` from the version's sorted labels,
al-loop's own ``manifest.json`` and ``label_schema.json``, and a model card ``README.md``
(:mod:`al_loop.rounds.model_card`). ``write_export(plan, out)`` writes that folder atomically (a temporary
folder beside ``out``, then a rename; a non-empty ``out`` only with ``force``); ``zip_chunks(plan)`` yields the
same folder as a zip archive, chunk by chunk (a download never holds the weights in memory).

Which versions can be exported (what is true of the artifacts, see :mod:`al_loop.models`):

- **fine-tuned with the checkpoint's own head** (``training.pooling: cls`` for classification,
  ``training.token_head: hf`` for NER): the artifact *is* a ``*ForSequenceClassification`` /
  ``*ForTokenClassification`` folder, so the pipeline computes what al-loop computes.
- **refused**: al-loop's own heads, i.e. the defaults. The LP-FT classifier (``pooling: mean``) is the
  mean of the last hidden states, L2-normalised, then one linear layer; the LP-FT token head
  (``token_head: probe``) one linear layer over each L2-normalised token state (``pooled_head.safetensors``);
  the head learner (``learner: head``, also chosen by ``auto``) is a logistic regression over the same
  frozen, normalised features, stored without the encoder (``head.safetensors``). No transformers model
  class normalises the hidden states before its classifier (BERT's classification head reads the ``[CLS]``
  state through a tanh pooler, its token head the raw states), and the L2 norm cannot be folded into a
  linear layer, so no weights of a standard class reproduce these predictions; loading them would need
  custom code (``trust_remote_code``), which a plain ``pipeline(task, model=DIR)`` refuses.
  :class:`~al_loop.errors.NotExportableError` says so and names the project's exportable versions.

Torch-free: only the store and files are read (the web process serves downloads without importing torch),
so the artifact's JSON files are read here rather than through :mod:`al_loop.models.artifacts`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from al_loop.data.schema import LabelSchema
from al_loop.errors import AlLoopError, ConflictError, NotExportableError, NotFoundError
from al_loop.folders import replace_folder
from al_loop.rounds.model_card import CardFacts, model_card
from al_loop.store.records import ModelVersion, Project
from al_loop.store.repository import Store
from al_loop.types import TaskKind

__all__ = [
    "ExportFile",
    "ExportPlan",
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

_COPIED_SUFFIXES = (".safetensors", ".json", ".txt", ".model")
"""Artifact files copied into the export: weights, tokenizer and configs. Never pickles (``.bin``, ``.pt``)."""
_GENERATED = {CONFIG_FILE, CARD_FILE}
_MAX_JSON_BYTES = 64 * 2**20
_CHUNK = 2**20

PIPELINE_TASKS = {TaskKind.CLASSIFICATION: "text-classification", TaskKind.NER: "token-classification"}
_HEADS = {TaskKind.CLASSIFICATION: "ForSequenceClassification", TaskKind.NER: "ForTokenClassification"}
EXPORTABLE = ("versions fine-tuned with the checkpoint's own transformers head can be exported: "
              "training.pooling 'cls' (classification) or training.token_head 'hf' (NER), "
              "trained by the 'finetune' learner (or by 'auto' when fine-tuning won)")


@dataclass(frozen=True)
class ExportFile:
    """One file of the export: ``name`` inside the folder, copied from ``source`` or written from ``data``."""

    name: str
    source: Path | None = None
    data: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else (self.source.stat().st_size if self.source else 0)


@dataclass(frozen=True)
class ExportPlan:
    """What an export writes: ``files`` of the folder named ``folder_name`` (the zip's top folder)."""

    project: Project
    version: ModelVersion
    pipeline_task: str
    files: tuple[ExportFile, ...]

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
    NotExportableError (naming the exportable versions) for a kind of model no standard class expresses or an
    artifact that is not what its version says.
    """
    project = store.get_project(project_id)
    version = find_version(store, project_id, version_name)
    folder = _artifact_folder(version)
    try:
        schema, manifest, config = _check_exportable(project, version, folder)
    except NotExportableError as exc:
        others = [v.name for v in store.list_versions(project_id) if v.id != version.id and _exportable(project, v)]
        hint = f"exportable versions of project {project_id}: {', '.join(others[-8:])}" if others else (
            f"project {project_id} has no exportable version")
        raise NotExportableError(f"{exc}. {EXPORTABLE}; {hint}") from None
    rnd = store.get_round(version.round_id) if version.round_id is not None else None
    rounds = [r for r in store.list_rounds(project_id) if rnd is None or r.index <= rnd.index]
    facts = CardFacts(project=project, version=version, schema=schema, manifest=manifest, round=rnd,
                      rounds=rounds, pipeline_task=PIPELINE_TASKS[schema.task],
                      exported_at=now or datetime.now(UTC))
    files = [ExportFile(CONFIG_FILE, data=_json_bytes(_export_config(config, schema))),
             ExportFile(CARD_FILE, data=model_card(facts).encode("utf-8"))]
    for path in sorted(folder.iterdir()):
        if path.name in _GENERATED or not path.name.endswith(_COPIED_SUFFIXES) or path.is_symlink():
            continue
        if path.is_file():
            files.append(ExportFile(path.name, source=path))
    return ExportPlan(project=project, version=version, pipeline_task=PIPELINE_TASKS[schema.task],
                      files=tuple(sorted(files, key=lambda f: f.name)))


def _artifact_folder(version: ModelVersion) -> Path:
    folder = Path(version.artifact_path) if version.artifact_path else None
    if folder is None or not folder.is_dir():
        raise ConflictError(f"model version {version.name} has no artifact on this server (it was never saved, "
                            "or its folder was removed): nothing to export")
    return folder


def _exportable(project: Project, version: ModelVersion) -> bool:
    try:
        _check_exportable(project, version, _artifact_folder(version))
    except AlLoopError:
        return False
    return True


def _check_exportable(project: Project, version: ModelVersion,
                      folder: Path) -> tuple[LabelSchema, dict[str, Any], dict[str, Any]]:
    """The artifact's schema, manifest and config.json; NotExportableError saying why it cannot be exported."""
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
        raise NotExportableError(
            f"{what} was trained by the head learner: a logistic regression on the frozen base model's "
            "L2-normalised features (mean-pooled sentence embeddings, or each word's first-subword state), stored "
            "without the encoder. No transformers model class normalises the hidden states before its classifier, "
            "so transformers.pipeline cannot load it without custom code")
    if (folder / POOLED_HEAD_FILE).exists():
        kind = ("the mean of the last hidden states, L2-normalised, then a linear layer (training.pooling 'mean', "
                "the default)") if schema.task is TaskKind.CLASSIFICATION else (
                "a linear layer over each L2-normalised token state (training.token_head 'probe', the default)")
        raise NotExportableError(
            f"{what} has al-loop's LP-FT head: {kind}. No transformers *{_HEADS[schema.task]} class normalises "
            "the hidden states before its classifier and the L2 norm cannot be folded into its weights, so "
            "transformers.pipeline cannot reproduce its predictions without custom code")
    config = _read_json(folder / CONFIG_FILE, what)
    archs = [str(a) for a in config.get("architectures") or ()]
    if not any(a.endswith(_HEADS[schema.task]) for a in archs):
        raise NotExportableError(f"{what}: config.json names {archs or 'no architecture'}, not a "
                                 f"*{_HEADS[schema.task]} model that the {PIPELINE_TASKS[schema.task]} pipeline runs")
    stored = config.get("id2label") or {}
    if [str(stored.get(str(i), stored.get(i, ""))) for i in range(len(stored))] != list(schema.tags):
        raise NotExportableError(f"{what}: config.json's id2label does not match the version's labels")
    weights = [p for p in folder.glob("*.safetensors") if p.is_file()]
    if not weights:
        raise NotExportableError(f"{what}: no safetensors weights in its artifact")
    for path in weights:
        _check_safetensors(path, what)
    return schema, manifest, config


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


def _check_safetensors(path: Path, what: str) -> None:
    """A safetensors file starts with its header's length (u64, little-endian) and that JSON header."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > _MAX_JSON_BYTES or n > path.stat().st_size - 8:
                raise ValueError("bad header length")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (OSError, ValueError, struct.error):
        raise NotExportableError(f"{what}: {path.name} is not a readable safetensors file") from None


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
        if item.data is not None:
            fh.write(item.data)
        elif item.source is not None:
            with open(item.source, "rb") as src:
                shutil.copyfileobj(src, fh, _CHUNK)
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
                if item.data is not None:
                    dest.write(item.data)
                elif item.source is not None:
                    with open(item.source, "rb") as src:
                        while block := src.read(chunk_size):
                            dest.write(block)
                            if sink.pending:
                                yield sink.take()
            if sink.pending:
                yield sink.take()
    if sink.pending:
        yield sink.take()
