"""What the loop services need from the outside: the Label Studio gateway protocol and the id conventions.

Id spaces: ``project_id`` and ``round_id`` are al-loop database ids; ``ItemId`` is al-loop's
stable item id; Label Studio ids (project, task, annotation) are named ``ls_*``/``task_id``.
A Label Studio annotation is stored under ``annotation_key(id)`` = ``ls:<id>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from al_loop.errors import ConfigError
from al_loop.types import ItemId
from annotator_bridge.settings import Settings

LABEL_SOURCE = "labelstudio"
"""``source`` of labels that came from Label Studio."""
IMPORT_SOURCE = "import"
"""``source`` of gold labels recorded by an import (``record_labels``)."""
MAX_DB_INT = 2**63 - 1
"""The largest id a database integer column holds (SQLite, PostgreSQL BIGINT); larger Label Studio ids are refused."""


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


class Gateway(Protocol):
    """The Label Studio calls the loop makes (``LabelStudioGateway`` implements them; tests fake them)."""

    def create_project(self, title: str, label_config: str, *, description: str = "", sampling: str | None = None,
                       model_version: str | None = None, **fields: Any) -> Any: ...

    def get_project(self, project_id: int) -> Any: ...

    def delete_project(self, project_id: int) -> None: ...

    def set_model_version(self, project_id: int, version: str, sampling: str | None = ...) -> Any: ...

    def model_versions(self, project_id: int) -> dict[str, int]: ...

    def list_tasks(self, project_id: int, *, query: Mapping[str, Any] | None = None, fields: str = ...,
                   page_size: int = ..., token: str | None = None) -> Iterator[dict[str, Any]]: ...

    def tasks_after(self, project_id: int, task_id: int, *, page_size: int = ...) -> Iterator[dict[str, Any]]: ...

    def task_count(self, project_id: int) -> int: ...

    def import_tasks(self, project_id: int, items: Iterable[tuple[ItemId | str, str, Mapping[str, Any] | None]], *,
                     text_key: str = ..., chunk_size: int = ..., skip_existing: bool = ...) -> dict[ItemId, int]: ...

    def list_annotated_tasks(self, project_id: int, *, text_key: str | None = None,
                             page_size: int = ...) -> Iterator[Any]: ...

    def import_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]], *,
                           model_version: str | None = None, chunk_size: int = ...) -> int: ...

    def predictions_of_version(self, project_id: int, model_version: str) -> list[tuple[int, int]]: ...

    def delete_prediction(self, prediction_id: int) -> None: ...

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


__all__ = [
    "IMPORT_SOURCE",
    "LABEL_SOURCE",
    "MAX_DB_INT",
    "Gateway",
    "GatewayFactory",
    "annotation_key",
    "label_studio_gateway_factory",
    "parse_ls_time",
]
