"""Management API under ``/api`` (``Authorization: Bearer <AL_LOOP_API_TOKEN>`` on every route).

=======  ===============================================  =========================================
POST     /api/projects                                     create (or attach) a project -> 201
GET      /api/projects                                     list projects
GET      /api/projects/<id>                                one project
POST     /api/projects/<id>/items                          import items -> 201 (200 when nothing new); a large file
                                                           -> 202 with an import job
GET      /api/projects/<id>/imports                        the project's newest import jobs
GET      /api/projects/<id>/imports/<import_id>            one import job: state, counts, progress
GET      /api/projects/<id>/rounds                         rounds, oldest first
GET      /api/projects/<id>/rounds/<index>                 one round with its report and selection
POST     /api/projects/<id>/rounds                         start a round now -> 202 (409 when one is active)
POST     /api/projects/<id>/rounds/<index>/push            (re)push a succeeded round's predictions -> 202 (409)
GET      /api/projects/<id>/versions                       model versions
POST     /api/projects/<id>/versions/<vid>/promote         serve version <vid> (database id)
GET      /api/projects/<id>/versions/<name>/export         version <name> as a zip of a transformers folder
GET      /api/projects/<id>/export                         the promoted version, the same way
POST     /api/projects/<id>/rollback                       serve the previously promoted version
GET      /api/projects/<id>/status                         queue state, label counts, versions, rounds
POST     /api/projects/<id>/adapt                          pool-adaptive pretraining on a worker -> 202 (409 active)
POST     /api/projects/<id>/reconcile                      re-read Label Studio -> 202
=======  ===============================================  =========================================

Items body: a JSON list of ``{"id", "text", ...gold}`` (gold: ``"spans"`` for NER, ``"label"``/
``"labels"`` for classification), or an object ``{"items": [...]}`` / ``{"path": "<server file>",
"format": "jsonl"|...}`` with optional ``"split"`` ("pool" | "test"), ``"record_labels"`` and
``"start_round"``. A ``path`` to a file over 8 MiB (``SYNC_IMPORT_MAX_BYTES``), or any ``path`` with
``"background": true``, is an import job: 202 ``{"import": {...}}`` at once, read in batches by a worker
(``annotator_bridge.loop.imports``); follow it at ``GET /api/projects/<id>/imports/<import_id>``. Items in
the body are always imported in the request (the body limit bounds them).
Bodies over ``AL_LOOP_MAX_REQUEST_MB`` get 413; every body is read by
:mod:`annotator_bridge.web.validate` (depth, NaN/Infinity, 64-bit integers, real Unicode, no NUL: 400).
Ids in the URL past 64 bits do not match a route (404). The OpenAPI description of every route:
``GET /api/openapi.json`` (:mod:`annotator_bridge.web.openapi`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

from al_loop.config import LOOP_BOUNDS
from al_loop.errors import ConfigError, ConflictError, NotFoundError
from al_loop.rounds.export import plan_export, zip_chunks
from al_loop.states import ImportStatus, RoundStatus
from al_loop.store.imports import get_import, list_imports, update_import
from al_loop.store.records import Project, Round
from annotator_bridge.loop import ProjectSpec, examples_from_records
from annotator_bridge.web.auth import check_bearer
from annotator_bridge.web.validate import json_body, json_object

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_VERSION_NAME = 200  # the store's column; a longer name is no version (404)
ITEMS_OPTIONS = frozenset({"items", "path", "format", "split", "record_labels", "start_round", "background"})


def _services() -> Any:
    return current_app.extensions["al_loop"]


@bp.before_request
def _authenticate() -> None:
    check_bearer(_services().settings.api_token, request.headers.get("Authorization"))


def _flag(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"'{key}' must be true or false")
    return value


def _project_json(project: Project) -> dict[str, Any]:
    """A project as the API shows it: its fields plus ``integration`` (its Label Studio link, ``{}`` without one)."""
    store = _services().store
    link = store.get_link(project.id)
    integration: dict[str, Any] = {}
    if link is not None:
        integration = {"ls_project_id": link.ls_project_id, "ls_url": link.url, "ls_label_config": link.label_config,
                       "ls_attached": link.attached, "ls_model_version": link.model_version,
                       "ml_backend": link.ml_backend, "needs_reconcile": link.needs_reconcile,
                       "last_reconcile": link.last_reconcile, "config_warning": link.config_warning,
                       "rejected_total": store.count_rejected(project.id)}
    return {**project.to_dict(), "integration": integration}


def _round_by_index(project_id: int, index: int) -> Round:
    services = _services()
    services.store.get_project(project_id)
    for rnd in services.store.list_rounds(project_id):
        if rnd.index == index:
            return rnd  # type: ignore[no-any-return]
    raise NotFoundError(f"project {project_id} has no round {index}")


# ---------------------------------------------------------------------- projects
@bp.post("/projects")
def create_project() -> Any:
    # numbers are left to the spec: its fields are typed and bounded, and its messages name field and range
    spec = ProjectSpec.from_dict(json_object("the project spec", check_numbers=False))
    spec.check_base_model()
    project = _services().loop.create_project(spec)
    return jsonify({"project": _project_json(project)}), 201


@bp.get("/projects")
def list_projects() -> Any:
    return jsonify({"projects": [_project_json(p) for p in _services().store.list_projects()]})


@bp.get("/projects/<int:project_id>")
def get_project(project_id: int) -> Any:
    return jsonify({"project": _project_json(_services().store.get_project(project_id))})


@bp.post("/projects/<int:project_id>/items")
def import_items(project_id: int) -> Any:
    services = _services()
    project = services.store.get_project(project_id)
    body = json_body()
    options: Mapping[str, Any] = {}
    if isinstance(body, list):
        records: list[Any] | None = body
    elif isinstance(body, Mapping):
        unknown = sorted(set(body) - ITEMS_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown keys {unknown}; allowed: {sorted(ITEMS_OPTIONS)}")
        options = body
        records = body.get("items")
        if records is not None and not isinstance(records, list):
            raise ConfigError("'items' must be a list")
    else:
        raise BadRequest("send a JSON list of items, or an object with 'items' or 'path'")
    path = options.get("path")
    if path is not None and not isinstance(path, str):
        raise ConfigError("'path' must be a string (a file path on the server)")
    fmt = options.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise ConfigError("'format' must be a string")
    split = options.get("split", "pool")
    if not isinstance(split, str):
        raise ConfigError("'split' must be 'pool' or 'test'")
    background = _flag(options, "background")
    if background and path is None:
        raise ConfigError("'background' applies to a 'path' import (items in the body are imported at once)")
    if path is not None and records is None and services.loop.projects.wants_job(path, background):
        job = services.loop.projects.start_import(project_id, path, format=fmt, split=split,
                                                  record_labels=_flag(options, "record_labels"),
                                                  start_round=_flag(options, "start_round"))
        try:
            services.dispatcher.run_import(job.id)
        except Exception as exc:  # the broker refused it: the job would stay pending forever
            update_import(services.store, job.id, status=ImportStatus.FAILED,
                          error=f"the import could not be queued ({type(exc).__name__})")
            raise
        job = get_import(services.store, project_id, job.id)
        return jsonify({"import": job.to_dict()}), 202
    examples = examples_from_records(records, project.task) if records is not None else None
    result = services.loop.import_items(project_id, examples, path=path, format=fmt, split=split,
                                        record_labels=_flag(options, "record_labels"),
                                        start_round=_flag(options, "start_round"))
    return jsonify(result), (201 if result["added"] else 200)


@bp.get("/projects/<int:project_id>/imports")
def list_project_imports(project_id: int) -> Any:
    store = _services().store
    store.get_project(project_id)
    return jsonify({"imports": [j.to_dict() for j in list_imports(store, project_id)]})


@bp.get("/projects/<int:project_id>/imports/<int:import_id>")
def get_project_import(project_id: int, import_id: int) -> Any:
    store = _services().store
    store.get_project(project_id)
    return jsonify({"import": get_import(store, project_id, import_id).to_dict()})


# ---------------------------------------------------------------------- rounds
@bp.get("/projects/<int:project_id>/rounds")
def list_rounds(project_id: int) -> Any:
    store = _services().store
    store.get_project(project_id)
    return jsonify({"rounds": [r.to_dict() for r in store.list_rounds(project_id)]})


@bp.get("/projects/<int:project_id>/rounds/<int:index>")
def get_round(project_id: int, index: int) -> Any:
    rnd = _round_by_index(project_id, index)
    selected = _services().store.get_scores(rnd.id, selected_only=True)
    return jsonify({"round": _without_stop_set(rnd.to_dict(with_report=True)),
                    "selected": [{"item_id": s.item_id, "rank": s.rank, "score": s.score} for s in selected]})


def _without_stop_set(data: dict[str, Any]) -> dict[str, Any]:
    """A round's JSON with the stored stop set (its ids and each round's prediction codes, kept for the next
    round's comparison) reduced to counts; the criteria are in ``metrics.stopping``."""
    report = data.get("report")
    stored = report.get("stop_set") if isinstance(report, dict) else None
    if isinstance(report, dict) and isinstance(stored, dict):
        predicted = stored.get("predicted") or []
        report["stop_set"] = {"size": len(stored.get("ids") or []),
                              "predicted": sum(1 for p in predicted if p is not None)}
    return data


@bp.post("/projects/<int:project_id>/rounds")
def start_round(project_id: int) -> Any:
    body = json_body(required=False)
    if body is None:
        body = {}
    if not isinstance(body, Mapping) or set(body) - {"batch_size"}:
        raise ConfigError("the body may only hold {'batch_size': n}")
    batch_size = body.get("batch_size")
    if batch_size is not None:
        LOOP_BOUNDS["batch_size"].check("batch_size", batch_size)
    services = _services()
    services.store.get_project(project_id)
    rnd = services.loop.request_round(project_id, "api", batch_size=batch_size)
    return jsonify({"round": rnd.to_dict()}), 202


@bp.post("/projects/<int:project_id>/rounds/<int:index>/push")
def push_round(project_id: int, index: int) -> Any:
    rnd = _round_by_index(project_id, index)
    if rnd.status is not RoundStatus.SUCCEEDED:
        raise ConflictError(f"round {index} of project {project_id} is {rnd.status}; only a succeeded round can be "
                            "pushed")
    services = _services()
    services.dispatcher.push_round(rnd.id)
    return jsonify({"status": "queued", "round": services.store.get_round(rnd.id).to_dict()}), 202


# ---------------------------------------------------------------------- versions
@bp.get("/projects/<int:project_id>/versions")
def list_versions(project_id: int) -> Any:
    store = _services().store
    store.get_project(project_id)
    return jsonify({"versions": [v.to_dict() for v in store.list_versions(project_id)]})


@bp.post("/projects/<int:project_id>/versions/<int:version_id>/promote")
def promote(project_id: int, version_id: int) -> Any:
    services = _services()
    services.store.get_project(project_id)
    return jsonify({"version": services.loop.promote(project_id, version_id).to_dict()})


@bp.get("/projects/<int:project_id>/versions/<name>/export")
def export_version(project_id: int, name: str) -> Any:
    if len(name) > MAX_VERSION_NAME:
        raise NotFoundError(f"project {project_id} has no model version of a name that long")
    return _export(project_id, name)


@bp.get("/projects/<int:project_id>/export")
def export_promoted(project_id: int) -> Any:
    return _export(project_id, None)


def _export(project_id: int, name: str | None) -> Response:
    """The version's export folder (``al_loop.rounds.export``) as a zip, streamed: every check runs before the
    first byte (404 unknown project or version, 409 no artifact, 422 a kind of model no transformers class
    expresses); the weights are read and deflated chunk by chunk, never held in memory."""
    plan = plan_export(_services().store, project_id, name)
    filename = "".join(c if c.isalnum() or c in "._-" else "_" for c in plan.folder_name) + ".zip"
    resp = Response(zip_chunks(plan), mimetype="application/zip")
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Model-Version"] = plan.version.name
    return resp


@bp.post("/projects/<int:project_id>/rollback")
def rollback(project_id: int) -> Any:
    services = _services()
    services.store.get_project(project_id)
    return jsonify({"version": services.loop.rollback(project_id).to_dict()})


# ---------------------------------------------------------------------- status / reconcile
@bp.get("/projects/<int:project_id>/status")
def status(project_id: int) -> Any:
    return jsonify(_services().loop.status(project_id))


@bp.post("/projects/<int:project_id>/adapt")
def adapt(project_id: int) -> Any:
    """Masked-LM adaptation of the project's base encoder to its pool, on a training worker: 202 with the
    adaptation (follow it in ``GET .../status`` under ``adaptation``); 409 while one is pending or running."""
    body = json_body(required=False)
    if body not in (None, {}):
        raise ConfigError("this route takes no body (the budget is the project's loop.adapt_* settings)")
    adaptation = _services().loop.start_adaptation(project_id)
    return jsonify({"adaptation": adaptation.to_dict()}), 202


@bp.post("/projects/<int:project_id>/reconcile")
def reconcile(project_id: int) -> Any:
    services = _services()
    services.store.get_project(project_id)
    services.dispatcher.reconcile(project_id)
    return jsonify({"status": "queued", "project_id": project_id}), 202
