"""``LabelStudioGateway``: the calls al-loop makes to Label Studio, over the 2.x SDK.

The gateway is built up in layers, one module each: ``connection`` (SDK clients, the
retry policy and its errors), ``projects`` (``LSProject``, project calls), ``tasks``
(listing, import, annotated tasks); this module adds predictions, webhooks, the ML
backend connection and labelling as a user (annotators, tests).

Id spaces: ``project_id``/``task_id``/``annotation_id`` are Label Studio ids (int);
``ItemId`` is al-loop's item id, stored as ``task.data["item_id"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from al_loop.errors import DataFormatError

from .connection import as_plain
from .tasks import TaskCalls


class LabelStudioGateway(TaskCalls):
    """The al-loop side of Label Studio: projects, tasks, predictions, webhooks, ordering.

    ``LabelStudioGateway(url, api_key, *, timeout=30.0, retries=4, backoff=0.5, max_backoff=8.0)``:
    the arguments are those of ``LabelStudioConnection``.
    """

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

    def predictions_of_version(self, project_id: int, model_version: str) -> list[tuple[int, int]]:
        """``(prediction id, task id)`` of every prediction of ``model_version`` in the project.

        Label Studio's prediction list filters by project only (no paging, no version filter): this
        reads every prediction of the project, so it is for repairs, not for every push.
        """
        rows = self._raw("GET", "api/predictions/", params={"project": int(project_id)}) or []
        return [(int(r["id"]), int(r["task"])) for r in rows
                if isinstance(r, Mapping) and r.get("model_version") == model_version]

    def delete_prediction(self, prediction_id: int) -> None:
        """Delete one prediction; one already gone is not an error."""
        self._raw("DELETE", f"api/predictions/{int(prediction_id)}/", allow_404=True)

    # ------------------------------------------------------------------ webhooks / ML backends
    def list_webhooks(self, project_id: int) -> list[dict[str, Any]]:
        hooks = self._call(f"listing webhooks of project {project_id}",
                           lambda: self.client.webhooks.list(project=str(int(project_id))))
        return [as_plain(h) for h in hooks if as_plain(h).get("project") == int(project_id)]

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
            return as_plain(self._call(f"update of webhook {hook_id}",
                                    lambda: self.client.webhooks.update(id=hook_id, **body)))
        return as_plain(self._call(f"creation of a webhook for project {project_id}",
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
        return dict(as_plain(ml) or {})

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
        return as_plain(self._call(f"annotation of task {task_id}",
                                lambda: client.annotations.create(id=int(task_id), **body), idempotent=False))
