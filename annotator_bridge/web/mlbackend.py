"""The Label Studio ML-backend protocol: ``/health``, ``/setup``, ``/predict``, ``/webhook``.

Registered twice: at the root and under ``/ml``, so the backend works whether it was
connected as ``<public url>`` (what ``LoopService`` does; Label Studio's auto-created webhook
then posts to ``<public url>/webhook``) or as ``<public url>/ml`` (webhook ``/ml/webhook``).

- ``/health``, ``/setup``: answered from the database, in milliseconds; never load a model.
- ``/predict``: exactly one result per task, in order, always (a short list makes Label
  Studio drop the batch): tasks of a project without a promoted model, unknown projects and
  empty texts get ``{"result": [], "score": 1.0}`` (score 1.0 = served last under
  uncertainty sampling, so they never jump the queue the rounds computed). Torch is imported
  lazily by the predictor, only when a model is really needed.
Bodies are read by :mod:`annotator_bridge.web.validate` (depth, size, NaN/Infinity, 64-bit
integers, real Unicode, no NUL: 400 otherwise).

- ``/webhook``: secret header check, a quick parse (malformed = 400, ids outside Label Studio's
  range included, so nothing unreadable is queued), project lookup
  (unknown Label Studio project = 404), then ``dispatcher.ingest_event`` and ``{"status":
  "queued"}``. Label Studio waits 1 s and never retries, so nothing slow happens here: in the
  steady state the webhook does not touch the database at all. The Label Studio project ->
  al-loop project mapping comes from :class:`LinkCache` (a known link is answered from memory
  and re-read in the background every ``LINK_TTL`` seconds; an unknown project is looked up
  every time, so a project linked a moment ago is found at once). Without it every webhook
  opened SQLite transactions, which wait for the ingest drain's and the training worker's write
  transactions (the long tail of the load benchmark).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

from al_loop.errors import AlLoopError, NotFoundError
from al_loop.store.records import Project
from al_loop.types import Span, TaskKind
from annotator_bridge.labelstudio.config import LabelConfig, parse_label_config
from annotator_bridge.labelstudio.convert import MAX_ID, Ignored, parse_webhook, prediction_result
from annotator_bridge.settings import WEBHOOK_SECRET_HEADER
from annotator_bridge.web.validate import json_body

log = logging.getLogger("annotator_bridge.web")

bp = Blueprint("mlbackend", __name__)

MODEL_CLASS = "al-loop"
NO_MODEL_VERSION = "al-loop-untrained"
EMPTY_SCORE = 1.0
FORWARDED_IGNORED = frozenset({"TASKS_CREATED", "PROJECT_UPDATED"})
LINK_TTL = 60.0
"""Seconds after which a known Label Studio link is re-read (in the background; links are never moved today,
this bounds how stale one can get)."""


class LinkCache:
    """Label Studio project id -> al-loop project id, for the webhook path (thread-safe).

    ``lookup(ls_id)`` answers a known link from memory. A link older than ``ttl`` seconds is still
    answered at once, and one background thread (``spawn``) re-reads it: no webhook waits for the
    database for a known link (a read can wait long behind the drain's and a round's write
    transactions on SQLite). An unknown project is asked of ``find`` (the store) every time, so a
    link made a moment ago is found at once; a re-read that finds no link drops it.
    """

    def __init__(self, find: Callable[[int], int | None], ttl: float = LINK_TTL,
                 clock: Callable[[], float] = time.monotonic,
                 spawn: Callable[[Callable[[], None]], Any] | None = None) -> None:
        self._find, self.ttl, self._clock = find, float(ttl), clock
        self._spawn = spawn or _daemon_thread
        self._hits: dict[int, tuple[int, float]] = {}
        self._refreshing: set[int] = set()
        self._lock = threading.Lock()

    def lookup(self, ls_id: int) -> int | None:
        now = self._clock()
        with self._lock:
            hit = self._hits.get(ls_id)
            stale = hit is not None and now - hit[1] >= self.ttl and ls_id not in self._refreshing
            if stale:
                self._refreshing.add(ls_id)
        if hit is None:
            return self._read(ls_id, now)
        if stale:
            self._spawn(lambda: self._refresh(ls_id))
        return hit[0]

    def _read(self, ls_id: int, now: float) -> int | None:
        project_id = self._find(ls_id)
        with self._lock:
            if project_id is None:
                self._hits.pop(ls_id, None)
            else:
                self._hits[ls_id] = (project_id, now)
        return project_id

    def _refresh(self, ls_id: int) -> None:
        try:
            self._read(ls_id, self._clock())
        except Exception as exc:  # the stale link stays; the next lookup tries again
            log.warning("webhook: could not re-read the link of Label Studio project %s: %s", ls_id, exc)
        finally:
            with self._lock:
                self._refreshing.discard(ls_id)

    def forget(self) -> None:
        with self._lock:
            self._hits.clear()


def _daemon_thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="al-loop-link-refresh", daemon=True).start()


def _services() -> Any:
    return current_app.extensions["al_loop"]


def ls_project_id(value: Any) -> int | None:
    """Label Studio's project reference in ML-backend calls (``"3.1795593595"``, ``"3"`` or ``3``) -> 3.

    None for anything else, and for ids outside 1 .. ``MAX_ID`` (no Label Studio project has them).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= MAX_ID else None
    if isinstance(value, str):
        head = value.strip().split(".", 1)[0]
        if head.isascii() and head.isdigit() and len(head) <= 12:
            return ls_project_id(int(head))
    return None


def _project_for(value: Any) -> Project | None:
    ls_id = ls_project_id(value)
    if ls_id is None:
        return None
    return _linked_project(ls_id)


def _linked_project(ls_id: int) -> Project | None:
    """The al-loop project linked to Label Studio project ``ls_id``, if any."""
    store = _services().store
    link = store.find_link(ls_id)
    return store.get_project(link.project_id) if link is not None else None


def model_version_of(project: Project | None) -> str:
    """What ``/setup`` and ``/predict`` report: the promoted version, else the last round's tag."""
    if project is None:
        return NO_MODEL_VERSION
    store = _services().store
    promoted = store.promoted_version(project.id)
    if promoted is not None:
        return str(promoted.name)
    last = store.last_succeeded_round(project.id)
    if last is not None and last.version_tag:
        return str(last.version_tag)
    return NO_MODEL_VERSION


@bp.get("/health")
def health() -> Any:
    return jsonify({"status": "UP", "model_class": MODEL_CLASS, "model_dir": None, "v2": True})


@bp.post("/setup")
def setup() -> Any:
    body = json_body(required=False)
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise BadRequest("the /setup body must be a JSON object")
    project = _project_for(body.get("project"))
    version = model_version_of(project)
    log.info("setup: Label Studio project %s -> al-loop project %s, model version %s",
             ls_project_id(body.get("project")), project.id if project else None, version)
    return jsonify({"model_version": version})


def _config_for(project: Project, body: Mapping[str, Any]) -> LabelConfig:
    """The project's label config without calling Label Studio (stored XML, else the request's)."""
    link = _services().store.get_link(project.id)
    if link is not None and link.label_config:
        return _services().loop.label_config(project)  # type: ignore[no-any-return]
    xml = body.get("label_config")
    if isinstance(xml, str) and xml.strip():
        try:
            return replace(parse_label_config(xml), schema=project.schema)
        except AlLoopError as exc:
            log.warning("predict: project %s: unreadable label_config in the request: %s", project.id, exc)
    return LabelConfig(project.schema, "label", "text")


def _empty(version: str) -> dict[str, Any]:
    return {"result": [], "score": EMPTY_SCORE, "model_version": version}


@bp.post("/predict")
def predict() -> Any:
    body = json_body()
    if not isinstance(body, Mapping):
        raise BadRequest("the /predict body must be a JSON object with 'tasks'")
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        raise BadRequest("'tasks' must be a list of Label Studio tasks")
    project = _project_for(body.get("project"))
    version = model_version_of(project)
    results = [_empty(version) for _ in tasks]
    if project is None or not tasks:
        if project is None:
            log.info("predict: no al-loop project for Label Studio project %s; %d empty results",
                     ls_project_id(body.get("project")), len(tasks))
        return jsonify({"results": results})
    services = _services()
    current = services.predictor.current_version(project.id)
    if current is None or not current.artifact_path:
        return jsonify({"results": results})
    cfg = _config_for(project, body)
    texts: list[str] = []
    for task in tasks:
        data = task.get("data") if isinstance(task, Mapping) else None
        text = data.get(cfg.text_key) if isinstance(data, Mapping) else None
        texts.append(text if isinstance(text, str) else "")
    wanted = [i for i, t in enumerate(texts) if t.strip()]
    for r in results:
        r["model_version"] = current.name
    if not wanted:
        return jsonify({"results": results})
    try:
        out = services.predictor.predict(project.id, [texts[i] for i in wanted])
    except AlLoopError as exc:
        log.warning("predict: project %s version %s: %s; %d empty results", project.id, current.name, exc,
                    len(tasks))
        return jsonify({"results": results})
    for i, pred in zip(wanted, out.predictions, strict=True):
        try:
            if project.task is TaskKind.NER:
                predicted: list[Any] = [Span.from_dict(s) for s in pred.get("spans") or []]
            else:
                predicted = list(pred.get("labels") or [])
            result = prediction_result(predicted, cfg, text=texts[i])
        except AlLoopError as exc:
            log.warning("predict: project %s version %s: task %d not convertible: %s", project.id, out.model_version,
                        i, exc)
            result = []
        results[i] = {"result": result, "score": float(pred.get("confidence", 0.0)),
                      "model_version": out.model_version}
    log.info("predict: project %s version %s: %d tasks (%d with text)", project.id, out.model_version, len(tasks),
             len(wanted))
    return jsonify({"results": results})


@bp.post("/webhook")
def webhook() -> Any:
    services = _services()
    services.webhook_guard.check(request.headers.get(WEBHOOK_SECRET_HEADER))
    payload = json_body()
    event = parse_webhook(payload)  # WebhookPayloadError -> 400
    ls_id = getattr(event, "project_ls_id", None)
    action = getattr(event, "action", None) or str(payload.get("action"))
    if isinstance(event, Ignored) and (event.action not in FORWARDED_IGNORED or ls_id is None):
        return jsonify({"status": "ignored", "action": event.action})
    project_id = services.links.lookup(int(ls_id)) if ls_id is not None else None
    if project_id is None:
        raise NotFoundError(f"no al-loop project is attached to Label Studio project {ls_id}")
    services.dispatcher.ingest_event(project_id, dict(payload))
    log.info("webhook: %s for project %s queued", action, project_id)
    return jsonify({"status": "queued", "action": action, "project_id": project_id})
