"""Model artifact folders: written atomically, read back with a schema check.

An artifact folder holds the Hugging Face files (``config.json`` with
``id2label``/``label2id``, ``model.safetensors``, tokenizer files) plus:

- ``label_schema.json``: :meth:`LabelSchema.to_dict` (task, sorted labels, multi_label).
- ``manifest.json``: ``{"format": "al-loop-model", "format_version": 1,
  "base_model", "task", "schema_hash", "tags", "precision", "created_at"
  (ISO-8601 UTC), "al_loop_version", "training_config", "extra"}``.

Never pickle: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from al_loop import __version__
from al_loop.data.schema import LabelSchema
from al_loop.errors import ModelLoadError, SchemaError
from al_loop.folders import replace_folder

__all__ = [
    "ARTIFACT_FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "SCHEMA_FILE",
    "make_manifest",
    "read_artifact",
    "write_artifact",
]

ARTIFACT_FORMAT = "al-loop-model"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = "label_schema.json"


def make_manifest(
    schema: LabelSchema,
    base_model: str,
    *,
    training_config: dict[str, Any] | None = None,
    precision: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest dict for a model over ``schema``; ``created_at`` is now (UTC, ISO-8601)."""
    return {
        "format": ARTIFACT_FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model": base_model,
        "task": schema.task.value,
        "schema_hash": schema.hash,
        "tags": list(schema.tags),
        "precision": precision,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "al_loop_version": __version__,
        "training_config": training_config or {},
        "extra": dict(extra or {}),
    }


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_artifact(
    target: str | Path,
    write_files: Callable[[Path], None],
    schema: LabelSchema,
    manifest: dict[str, Any],
) -> Path:
    """Create or replace the artifact folder ``target`` atomically; return its absolute path.

    ``write_files(tmp)`` writes the model/tokenizer files into a fresh temporary
    folder created next to ``target`` (same file system); this function adds
    ``label_schema.json`` and ``manifest.json`` and then moves the folder into
    place with ``os.replace``. If anything fails before the move, the temporary
    folder is removed, ``target`` is not created and a previous ``target`` is
    left untouched. Replacing an existing folder renames it aside first
    (``os.replace`` cannot overwrite a non-empty directory), moves the new one in,
    then deletes the old one; if the move fails the old one is put back.
    """
    target = Path(target).expanduser().absolute()
    if manifest.get("schema_hash") != schema.hash:
        raise SchemaError("manifest schema_hash does not match the schema being saved")
    def fill(tmp: Path) -> None:
        write_files(tmp)
        _write_json(tmp / SCHEMA_FILE, schema.to_dict())
        _write_json(tmp / MANIFEST_FILE, manifest)

    replace_folder(target, fill)
    _fsync_dir(target.parent)
    return target


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_artifact(artifact_dir: str | Path) -> tuple[LabelSchema, dict[str, Any]]:
    """Read ``label_schema.json`` and ``manifest.json`` of an artifact folder.

    Raises ModelLoadError when the folder or a file is missing or not valid JSON
    or not an al-loop artifact, and SchemaError when the schema's hash differs
    from the manifest's ``schema_hash`` (the files were mixed up or edited).
    """
    path = Path(artifact_dir).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"artifact {path} not found (no such directory)")
    data: dict[str, Any] = {}
    for name in (SCHEMA_FILE, MANIFEST_FILE):
        file = path / name
        try:
            with open(file, encoding="utf-8") as fh:
                data[name] = json.load(fh)
        except FileNotFoundError as exc:
            raise ModelLoadError(f"artifact {path} has no {name}; not an al-loop model folder") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"artifact {path}: cannot read {name}: {exc}") from exc
        if not isinstance(data[name], dict):
            raise ModelLoadError(f"artifact {path}: {name} is not a JSON object")
    manifest = data[MANIFEST_FILE]
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise ModelLoadError(f"artifact {path}: manifest format is {manifest.get('format')!r}, not {ARTIFACT_FORMAT!r}")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelLoadError(
            f"artifact {path}: format_version {manifest.get('format_version')} is newer than this al-loop supports"
        )
    schema = LabelSchema.from_dict(data[SCHEMA_FILE])
    if manifest.get("schema_hash") != schema.hash:
        raise SchemaError(
            f"artifact {path}: label_schema.json (hash {schema.hash}) does not match the manifest "
            f"(schema_hash {manifest.get('schema_hash')})"
        )
    return schema, manifest
