"""Source models: a project's ``base_model`` naming another project's model version.

``base_model`` is ``"default"``, a Hugging Face name or folder, an al-loop artifact folder, or
``project:<id>:<version name>`` (:func:`al_loop.model_paths.source_ref`; the project spec's
``{"project": id, "version": name}`` is stored in this form). Only a process holding the store can turn
the reference into the version's artifact folder: :func:`resolve_base_model` (what a round passes to the
model factory) and :func:`check_source` (the checks at project creation, all ``ConfigError``: a 400 at
the API). Torch-free: reads the store and JSON files only.
"""

from __future__ import annotations

from pathlib import Path

from al_loop.errors import ConfigError, ModelLoadError, NotFoundError
from al_loop.model_paths import check_source_task, parse_source_ref
from al_loop.store.records import ModelVersion
from al_loop.store.repository import Store

__all__ = ["check_source", "resolve_base_model", "source_version"]


def source_version(store: Store, project_id: int, version: str) -> ModelVersion:
    """The model version ``version`` (its name, e.g. ``al-r005-1a2b3c4d``) of project ``project_id``, with its
    artifact folder on disk; ConfigError naming what is missing otherwise."""
    try:
        store.get_project(project_id)
    except NotFoundError:
        raise ConfigError(f"'base_model': project {project_id} not found") from None
    versions = store.list_versions(project_id)
    found = next((v for v in versions if v.name == version), None)
    if found is None:
        names = ", ".join(v.name for v in versions[-5:]) or "none yet"
        raise ConfigError(f"'base_model': project {project_id} has no model version {version[:200]!r} "
                          f"(latest versions: {names})")
    if not found.artifact_path or not Path(found.artifact_path).is_dir():
        raise ConfigError(f"'base_model': model version {found.name} of project {project_id} has no artifact "
                          "on disk (it was never saved, or its folder was removed)")
    return found


def resolve_base_model(store: Store, base_model: str) -> str:
    """What the model factory gets for ``base_model``: the artifact folder of a ``project:<id>:<version>``
    reference, anything else unchanged. ConfigError when the reference is not (or no longer) there."""
    ref = parse_source_ref(base_model)
    if ref is None:
        return base_model
    return source_version(store, *ref).artifact_path


def check_source(store: Store, base_model: str, task: str) -> None:
    """ConfigError unless ``base_model``'s source fits a ``task`` project: a referenced version must exist
    with its artifact, and a source model version (referenced or an artifact folder) must be of the same
    task kind (NER vs classification). Other models pass (``check_base_model`` checks they exist)."""
    ref = parse_source_ref(base_model)
    if ref is not None:
        version = source_version(store, *ref)
        source_task = store.get_project(ref[0]).task.value
        if source_task != str(task):
            raise ConfigError(f"'base_model': project {ref[0]} is a {source_task} project; a {task} project "
                              f"cannot start from its version {version.name} (the task kinds differ)")
        base_model = version.artifact_path
    try:
        check_source_task(base_model, str(task))
    except ModelLoadError as exc:
        raise ConfigError(f"'base_model': {exc}") from None
