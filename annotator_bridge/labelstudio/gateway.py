"""``LabelStudioGateway``: the calls al-loop makes to Label Studio, over the 2.x SDK.

Every call goes through one retry policy: connection errors, timeouts of idempotent
calls and HTTP 5xx are retried with capped exponential backoff and end in
``LabelStudioUnavailable``; HTTP 4xx raise ``LabelStudioRequestError`` (404:
``LabelStudioNotFound``, also an al-loop ``NotFoundError``) carrying Label Studio's
``detail``. The SDK's own retries are switched off so the policy lives here.

Id spaces: ``project_id``/``task_id``/``annotation_id`` are Label Studio ids (int);
``ItemId`` is al-loop's item id, stored as ``task.data["item_id"]``.
Endpoints missing from SDK 2.x (``/next/``, ``/model-versions/``, paged task listing
with filters) are called raw through the SDK's authenticated httpx client.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from al_loop.errors import AlLoopError, DataFormatError, NotFoundError
from al_loop.types import Example, ItemId

from .config import DEFAULT_TEXT_KEY, LabelConfig, parse_label_config
from .convert import ITEM_ID_KEY, AnnotationEvent, Skipped, parse_annotation

log = logging.getLogger(__name__)
T = TypeVar("T")

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
SEQUENTIAL_SAMPLING = "Sequential sampling"
UNIFORM_SAMPLING = "Uniform sampling"
MAX_RETRIES = 10
ANNOTATED_FILTER = {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}]}


class LabelStudioUnavailable(AlLoopError):
    """Label Studio did not answer (connection refused/reset, timeout, HTTP 5xx) after all retries."""


class LabelStudioRequestError(AlLoopError):
    """Label Studio rejected a request (HTTP 4xx); ``detail`` is its explanation."""

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class LabelStudioNotFound(LabelStudioRequestError, NotFoundError):
    """HTTP 404: the project, task or annotation does not exist (or is not visible to this token)."""


class _Transient(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)


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


@dataclass(frozen=True)
class AnnotatedTask:
    """A task with at least one annotation, for reconciliation."""

    task_id: int
    item_id: ItemId | None          # None for tasks not created by al-loop (no data["item_id"])
    text: str | None
    data: dict[str, Any]
    annotations: tuple[AnnotationEvent, ...]

    def examples(self, config: LabelConfig) -> list[Example | Skipped]:
        """Each annotation as an Example (or Skipped); needs item id and text."""
        return [ann.to_example(config) for ann in self.annotations]


def _dump(obj: Any) -> Any:
    """SDK pydantic models -> plain dicts."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", by_alias=True)
    if hasattr(obj, "dict"):
        return obj.dict()
    return obj


def _detail(body: Any) -> str:
    if isinstance(body, Mapping):
        parts = [str(body.get("detail") or "")]
        if body.get("validation_errors"):
            parts.append(json.dumps(body["validation_errors"], default=str)[:500])
        text = " ".join(p for p in parts if p)
        return text or json.dumps(body, default=str)[:500]
    return str(body)[:500]


class LabelStudioGateway:
    """The al-loop side of Label Studio: projects, tasks, predictions, webhooks, ordering.

    ``url`` is Label Studio's base URL, ``api_key`` a legacy token or a personal access
    token (the SDK picks the scheme). ``timeout`` is per request in seconds; ``retries``
    is how many times a failed call is retried (capped at 10), waiting ``backoff``,
    2*``backoff``, ... seconds (capped at ``max_backoff``, with jitter).
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0, retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 8.0) -> None:
        if not api_key:
            raise AlLoopError("a Label Studio API key is required")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = max(0, min(int(retries), MAX_RETRIES))
        self.backoff = max(0.0, float(backoff))
        self.max_backoff = max(self.backoff, float(max_backoff))
        self._api_key = api_key
        self._clients: dict[str, LabelStudio] = {}
        self.client = self._client(None)

    # ------------------------------------------------------------------ plumbing
    def _client(self, token: str | None) -> LabelStudio:
        key = token or self._api_key
        if key not in self._clients:
            self._clients[key] = LabelStudio(base_url=self.url, api_key=key, timeout=self.timeout, max_retries=0)
        return self._clients[key]

    def close(self) -> None:
        for c in self._clients.values():
            c._client_wrapper.httpx_client.httpx_client.close()
        self._clients.clear()

    def __enter__(self) -> LabelStudioGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run ``fn`` under the retry policy; ``what`` names the operation in errors and logs."""
        attempt = 0
        while True:
            try:
                return fn()
            except ApiError as exc:
                status = exc.status_code or 0
                if status < 500:
                    msg = f"Label Studio rejected {what}: HTTP {status}: {_detail(exc.body)}"
                    if status in (401, 403):
                        msg += " (check the API key and that legacy tokens are enabled)"
                    cls = LabelStudioNotFound if status == 404 else LabelStudioRequestError
                    raise cls(msg, status, exc.body) from None
                reason = f"HTTP {status}: {_detail(exc.body)}"
                cause: Exception = exc
            except httpx.TimeoutException as exc:
                if not idempotent:
                    raise LabelStudioUnavailable(f"Label Studio at {self.url} timed out during {what} after "
                                                 f"{self.timeout:.0f} s; it may have been applied") from exc
                reason, cause = f"timeout ({type(exc).__name__})", exc
            except httpx.TransportError as exc:
                reason, cause = f"{type(exc).__name__}: {exc}", exc
            if attempt >= self.retries:
                raise LabelStudioUnavailable(f"Label Studio at {self.url} unavailable during {what} after "
                                             f"{attempt + 1} attempt(s): {reason}") from cause
            delay = min(self.backoff * (2 ** attempt), self.max_backoff) * random.uniform(0.8, 1.2)
            log.warning("Label Studio %s failed (%s); retry %d/%d in %.2f s", what, reason, attempt + 1,
                        self.retries, delay)
            time.sleep(delay)
            attempt += 1

    def _raw(self, method: str, path: str, *, token: str | None = None, params: Mapping[str, Any] | None = None,
             json_body: Any = None, allow_404: bool = False) -> Any:
        """Raw JSON request through the SDK's authenticated client; raises like ``_call``."""
        wrapper = self._client(token)._client_wrapper

        def go() -> Any:
            resp = wrapper.httpx_client.request(path.lstrip("/"), method=method, params=dict(params or {}),
                                                json=json_body, request_options={"max_retries": 0})
            if allow_404 and resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                try:
                    body: Any = resp.json()
                except ValueError:
                    body = resp.text
                raise ApiError(status_code=resp.status_code, headers=dict(resp.headers), body=body)
            if not resp.content:
                return None
            return resp.json()

        return self._call(f"{method} /{path.lstrip('/')}", go, idempotent=method in ("GET", "PATCH", "PUT", "DELETE"))

    # ------------------------------------------------------------------ users / health
    def whoami(self, token: str | None = None) -> dict[str, Any]:
        return self._raw("GET", "api/current-user/whoami", token=token)

    # ------------------------------------------------------------------ projects
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
        return LSProject.from_api(_dump(self._call(f"read of project {project_id}",
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

    # ------------------------------------------------------------------ tasks
    def list_tasks(self, project_id: int, *, query: Mapping[str, Any] | None = None, fields: str = "task_only",
                   page_size: int = 500, token: str | None = None) -> Iterator[dict[str, Any]]:
        """Tasks of a project, page by page (``query``: Data Manager filters/ordering, default id order)."""
        q = dict(query or {})
        q.setdefault("ordering", ["tasks:id"])
        page, seen = 1, 0
        while True:
            params = {"project": int(project_id), "page": page, "page_size": int(page_size), "fields": fields,
                      "query": json.dumps(q)}
            body = self._raw("GET", "api/tasks/", params=params, token=token, allow_404=True)
            tasks = (body or {}).get("tasks") or []
            yield from tasks
            seen += len(tasks)
            total = (body or {}).get("total")
            if not tasks or len(tasks) < page_size or (isinstance(total, int) and seen >= total):
                return
            page += 1

    def task_ids_by_item(self, project_id: int) -> dict[ItemId, int]:
        """``item_id -> task id`` for every task carrying ``data["item_id"]`` (first task wins on duplicates)."""
        out: dict[ItemId, int] = {}
        for t in self.list_tasks(project_id, fields="task_only", page_size=1000):
            item = (t.get("data") or {}).get(ITEM_ID_KEY)
            if item is not None:
                out.setdefault(ItemId(str(item)), int(t["id"]))
        return out

    def import_tasks(self, project_id: int, items: Iterable[tuple[ItemId | str, str, Mapping[str, Any] | None]], *,
                     text_key: str = DEFAULT_TEXT_KEY, chunk_size: int = 500, skip_existing: bool = True,
                     verify: bool = False) -> dict[ItemId, int]:
        """Import ``(item_id, text, meta)`` items as tasks; returns ``item_id -> task id`` for all of them.

        Task data is ``{text_key: text, "item_id": item_id}``; ``meta`` goes to the task's
        ``meta``. With ``skip_existing`` items already in the project (by item id) are not
        imported again, which makes a retried import safe (costs one listing of the
        project's tasks, ~1.5 s per 1,000 tasks, skipped for an empty project).
        Label Studio 1.23 (Community) returns the new task ids in request order when asked
        (``return_task_ids``); when it does not, or with ``verify=True``, the mapping is read
        back by listing the project's tasks (the authoritative source; LabelStudioRequestError
        when an item is missing or maps to another task).
        """
        batch: list[tuple[ItemId, str, dict[str, Any]]] = []
        seen: set[ItemId] = set()
        for item_id, text, meta in items:
            iid = ItemId(str(item_id))
            if iid in seen:
                raise DataFormatError(f"item id {iid!r} appears twice in the import")
            if not isinstance(text, str):
                raise DataFormatError(f"item {iid!r}: text must be a string")
            seen.add(iid)
            batch.append((iid, text, dict(meta or {})))
        existing: dict[ItemId, int] = {}
        if skip_existing and int(self.get_project(project_id).raw.get("task_number") or 0) > 0:
            existing = self.task_ids_by_item(project_id)
        todo = [b for b in batch if b[0] not in existing]
        returned: dict[ItemId, int] = {}
        complete = True
        for start in range(0, len(todo), max(1, chunk_size)):
            chunk = todo[start:start + chunk_size]
            request = [{"data": {text_key: text, ITEM_ID_KEY: iid}, "meta": meta} for iid, text, meta in chunk]
            resp = self._call(f"import of {len(chunk)} tasks into project {project_id}",
                              lambda request=request: self.client.projects.import_tasks(  # type: ignore[misc]
                                  id=int(project_id), request=request, return_task_ids=True),
                              idempotent=False)
            if resp.task_count != len(chunk):
                raise LabelStudioRequestError(f"Label Studio imported {resp.task_count} of {len(chunk)} tasks "
                                              f"into project {project_id}")
            ids = list(getattr(resp, "task_ids", None) or [])  # present with return_task_ids (CE 1.23)
            if len(ids) == len(chunk):
                returned.update({iid: int(t) for (iid, _, _), t in zip(chunk, ids)})
            else:
                complete = False
        mapping = {**existing, **returned}
        if verify or not complete:
            listed = self.task_ids_by_item(project_id)
            missing = [iid for iid, _, _ in batch if iid not in listed]
            if missing:
                raise LabelStudioRequestError(f"{len(missing)} imported items are missing from project "
                                              f"{project_id}, e.g. {missing[:3]}")
            wrong = [iid for iid, tid in returned.items() if listed[iid] != tid]
            if wrong:
                raise LabelStudioRequestError(f"{len(wrong)} item ids of project {project_id} are held by other "
                                              f"tasks than the import reported (duplicate item ids?), "
                                              f"e.g. {wrong[:3]}")
            mapping = listed
        return {iid: mapping[iid] for iid, _, _ in batch}

    def list_annotated_tasks(self, project_id: int, *, text_key: str | None = None,
                             page_size: int = 100) -> Iterator[AnnotatedTask]:
        """Tasks with ``total_annotations > 0`` and their annotations (``only_annotated`` is ignored by LS).

        ``text_key`` defaults to the project's label config. Cancelled (skipped)
        annotations are included with ``was_cancelled=True``.
        """
        key = text_key or self.project_config(project_id).text_key
        for t in self.list_tasks(project_id, query={"filters": ANNOTATED_FILTER}, fields="all",
                                 page_size=page_size):
            data = dict(t.get("data") or {})
            task_id = int(t["id"])
            anns = tuple(parse_annotation({**a, "task": task_id}, action="LIST", project_ls_id=int(project_id),
                                          task={"id": task_id, "data": data})
                         for a in t.get("annotations") or [])
            item = data.get(ITEM_ID_KEY)
            text = data.get(key)
            yield AnnotatedTask(task_id=task_id, item_id=ItemId(str(item)) if item is not None else None,
                                text=text if isinstance(text, str) else None, data=data, annotations=anns)

    # ------------------------------------------------------------------ predictions
    def import_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]], *,
                           model_version: str | None = None, chunk_size: int = 1000) -> int:
        """Bulk-create predictions (``{"task", "model_version", "score", "result"}``); returns the count.

        ``model_version`` fills in predictions without one and must match those that have one.
        """
        rows: list[dict[str, Any]] = []
        for p in predictions:
            row = dict(p)
            if model_version is not None:
                mv = row.setdefault("model_version", model_version)
                if mv != model_version:
                    raise DataFormatError(f"prediction for task {row.get('task')} has model_version {mv!r}, "
                                          f"expected {model_version!r}")
            if "task" not in row or not row.get("model_version"):
                raise DataFormatError("each prediction needs 'task' and 'model_version'")
            rows.append(row)
        created = 0
        for start in range(0, len(rows), max(1, chunk_size)):
            chunk = rows[start:start + chunk_size]
            resp = self._call(f"import of {len(chunk)} predictions into project {project_id}",
                              lambda chunk=chunk: self.client.projects.import_predictions(  # type: ignore[misc]
                                  id=int(project_id), request=chunk), idempotent=False)
            created += int(getattr(resp, "created", None) or len(chunk))
        return created

    # ------------------------------------------------------------------ webhooks / ML backends
    def list_webhooks(self, project_id: int) -> list[dict[str, Any]]:
        hooks = self._call(f"listing webhooks of project {project_id}",
                           lambda: self.client.webhooks.list(project=str(int(project_id))))
        return [_dump(h) for h in hooks if _dump(h).get("project") == int(project_id)]

    def add_webhook(self, project_id: int, url: str, *, headers: Mapping[str, str] | None = None,
                    actions: Sequence[str] | None = None) -> dict[str, Any]:
        """Register (or update, if one exists for ``url``) a project webhook that sends payloads.

        ``headers`` are sent with each call: put the shared secret there. ``actions=None``
        sends all actions. Use this only without an ML backend: ``connect_ml_backend``
        already creates a webhook to ``<ml url>/webhook``.
        """
        body: dict[str, Any] = {"url": url, "send_payload": True, "send_for_all_actions": actions is None,
                                "headers": dict(headers or {}), "is_active": True}
        if actions is not None:
            body["actions"] = list(actions)
        match = [wh for wh in self.list_webhooks(project_id) if wh.get("url") == url]
        if match:
            hook_id = int(match[0]["id"])
            return _dump(self._call(f"update of webhook {hook_id}",
                                    lambda: self.client.webhooks.update(id=hook_id, **body)))
        return _dump(self._call(f"creation of a webhook for project {project_id}",
                                lambda: self.client.webhooks.create(project=int(project_id), **body),
                                idempotent=False))

    def connect_ml_backend(self, project_id: int, url: str, *, title: str,
                           webhook_headers: Mapping[str, str] | None = None, is_interactive: bool = False,
                           timeout: float | None = None) -> dict[str, Any]:
        """Connect al-loop as the project's ML backend (``title`` = the model version to serve).

        Label Studio sets an empty project model_version to the backend *title*, so pass
        the model version your predictions carry. It also creates a webhook to
        ``<url>/webhook`` for all actions; ``webhook_headers`` (the shared secret) are
        added to that webhook instead of registering a second one.
        """
        body: dict[str, Any] = {"url": url, "title": title, "is_interactive": is_interactive}
        if timeout is not None:
            body["timeout"] = timeout
        # ml.list/get make Label Studio call the backend's /health and /setup (gotcha 7): read the raw list once.
        existing = [m for m in self._raw("GET", "api/ml/", params={"project": int(project_id)}) or []
                    if str(m.get("url", "")).rstrip("/") == url.rstrip("/")]
        ml: Any = existing[0] if existing else None
        if ml is not None and (ml.get("title") != title or bool(ml.get("is_interactive")) != is_interactive
                               or (timeout is not None and ml.get("timeout") != timeout)):
            # PATCH /api/ml/<id> answers HTTP 500 in Label Studio 1.23.2 (setup_() called without project):
            # replace the backend instead. Its webhook survives and is reused (not duplicated) by ml.create.
            ml_id = int(ml["id"])
            self._call(f"removal of ML backend {ml_id}", lambda: self.client.ml.delete(id=ml_id))
            ml = None
        if ml is None:
            ml = self._call(f"connecting an ML backend to project {project_id}",
                            lambda: self.client.ml.create(project=int(project_id), **body), idempotent=False)
        if webhook_headers:
            hook_url = url.rstrip("/") + "/webhook"
            hooks = [w for w in self.list_webhooks(project_id) if str(w.get("url", "")).rstrip("/") == hook_url]
            if hooks:
                hook_id = int(hooks[0]["id"])
                self._call(f"update of webhook {hook_id}", lambda: self.client.webhooks.update(
                    id=hook_id, headers=dict(webhook_headers), send_payload=True))
            else:
                self.add_webhook(project_id, hook_url, headers=webhook_headers)
        return dict(_dump(ml) or {})

    # ------------------------------------------------------------------ labelling (annotators, tests)
    def next_task(self, project_id: int, token: str | None = None) -> dict[str, Any] | None:
        """The task Label Studio serves next to the token's user (locks it for ~1 h); None on 404.

        Label Studio answers 404 both when no task is left for the user and when the
        project is not visible to the token. The task carries ``queue`` (why it was chosen).
        """
        return self._raw("GET", f"api/projects/{int(project_id)}/next/", token=token, allow_404=True)

    def create_annotation(self, task_id: int, result: Sequence[Mapping[str, Any]], token: str | None = None, *,
                          was_cancelled: bool = False, lead_time: float | None = None) -> dict[str, Any]:
        """Annotate (or, with ``was_cancelled``, skip) a task as the token's user."""
        body: dict[str, Any] = {"result": [dict(r) for r in result], "was_cancelled": was_cancelled}
        if lead_time is not None:
            body["lead_time"] = lead_time
        client = self._client(token)
        return _dump(self._call(f"annotation of task {task_id}",
                                lambda: client.annotations.create(id=int(task_id), **body), idempotent=False))
