"""Label Studio projects: ``LSProject`` and the project calls (create, read, update, model version).

Label Studio ids are ints (``project_id``); ordering by the active model version's
prediction scores is ``UNCERTAINTY_SAMPLING``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import LabelConfig, parse_label_config
from .connection import LabelStudioConnection, LabelStudioRequestError, as_plain

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
SEQUENTIAL_SAMPLING = "Sequential sampling"
UNIFORM_SAMPLING = "Uniform sampling"


@dataclass(frozen=True)
class LSProject:
    """The project fields al-loop reads; ``raw`` holds the full API object."""

    id: int
    title: str
    label_config: str
    parsed_label_config: dict[str, Any] | None
    model_version: str
    sampling: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def config(self) -> LabelConfig:
        """The parsed label config (SchemaError when al-loop cannot drive it)."""
        return parse_label_config(self.label_config, self.parsed_label_config)

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> LSProject:
        return cls(id=int(d["id"]), title=str(d.get("title") or ""), label_config=str(d.get("label_config") or ""),
                   parsed_label_config=d.get("parsed_label_config") or None,
                   model_version=str(d.get("model_version") or ""), sampling=str(d.get("sampling") or ""),
                   raw=dict(d))


class ProjectCalls(LabelStudioConnection):
    """The project endpoints of ``LabelStudioGateway``."""

    def create_project(self, title: str, label_config: str, *, description: str = "", sampling: str | None = None,
                       model_version: str | None = None, **fields: Any) -> LSProject:
        """Create a project (title of 3+ characters). Extra ``fields`` go to the API as is."""
        body: dict[str, Any] = {"title": title, "label_config": label_config, "description": description, **fields}
        if sampling is not None:
            body["sampling"] = sampling
        if model_version is not None:
            body["model_version"] = model_version
        created = self._call(f"creation of project {title!r}", lambda: self.client.projects.create(**body),
                             idempotent=False)
        if created.id is None:
            raise LabelStudioRequestError(f"Label Studio created project {title!r} without an id")
        return self.get_project(int(created.id))  # the create response lacks parsed_label_config

    def get_project(self, project_id: int) -> LSProject:
        return LSProject.from_api(as_plain(self._call(f"read of project {project_id}",
                                                   lambda: self.client.projects.get(id=int(project_id)))))

    def project_config(self, project_id: int) -> LabelConfig:
        """The project's label config as al-loop reads it (SchemaError when unsupported)."""
        return self.get_project(project_id).config

    def update_project(self, project_id: int, **fields: Any) -> LSProject:
        self._call(f"update of project {project_id}", lambda: self.client.projects.update(id=int(project_id), **fields))
        return self.get_project(project_id)

    def delete_project(self, project_id: int) -> None:
        self._call(f"deletion of project {project_id}", lambda: self.client.projects.delete(id=int(project_id)))

    def set_model_version(self, project_id: int, version: str,
                          sampling: str | None = UNCERTAINTY_SAMPLING) -> LSProject:
        """Make ``version``'s predictions drive ordering (Uncertainty sampling = lowest score first).

        Label Studio only counts predictions whose model_version equals the project's;
        a mismatch silently turns the queue random. Import the predictions first: Label
        Studio refuses (HTTP 400, LabelStudioRequestError) a version that no prediction
        and no ML backend title carries.
        """
        if not version:
            raise ValueError("model version must be non-empty")
        fields: dict[str, Any] = {"model_version": version}
        if sampling is not None:
            fields["sampling"] = sampling
        return self.update_project(project_id, **fields)

    def model_versions(self, project_id: int) -> dict[str, int]:
        """Prediction counts per model version, e.g. ``{"r3": 100, "r2": 100}``."""
        return {str(k): int(v) for k, v in (self._raw("GET", f"api/projects/{int(project_id)}/model-versions/")
                                            or {}).items()}
