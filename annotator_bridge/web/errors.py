"""The one place where errors become HTTP responses.

Every error body is ``{"error": {"type": <name>, "message": <text>}}``; no traceback ever
leaves the server. al-loop errors carry user-facing messages and map by class; anything
unexpected is logged with its traceback and answered with a generic 500 message.

=================================================  =====
``NotFoundError`` (incl. Label Studio 404s)         404
``ConflictError``, ``EmptyPoolError``               409
``UnknownLabelError``, ``AlignmentError``,          422
``SchemaError``, ``NotExportableError``
``DataFormatError``, ``ConfigError``,               400
``WebhookPayloadError``, other ``AlLoopError``
``LabelStudioRequestError`` (Label Studio said 4xx) 502
``LabelStudioUnavailable``, ``BrokerUnavailable``   503
``ModelLoadError``                                  500 (message kept: it is about the server's model)
werkzeug ``HTTPException``                          its own code
anything else                                       500 "internal server error"
=================================================  =====
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from al_loop.errors import (
    AlignmentError,
    AlLoopError,
    ConflictError,
    EmptyPoolError,
    ModelLoadError,
    NotExportableError,
    NotFoundError,
    SchemaError,
    UnknownLabelError,
)
from annotator_bridge.labelstudio.connection import LabelStudioRequestError, LabelStudioUnavailable

log = logging.getLogger("annotator_bridge.web")

# first match wins: subclasses before their bases
STATUS_BY_ERROR: tuple[tuple[type[AlLoopError], int], ...] = (
    (LabelStudioUnavailable, 503),
    (NotFoundError, 404),
    (LabelStudioRequestError, 502),
    (ConflictError, 409),
    (EmptyPoolError, 409),
    (UnknownLabelError, 422),
    (AlignmentError, 422),
    (SchemaError, 422),
    (NotExportableError, 422),
    (ModelLoadError, 500),
)


# errors of modules the web layer must not import (the Celery dispatcher's), by class name
STATUS_BY_NAME: dict[str, int] = {"BrokerUnavailable": 503}


def status_for(exc: AlLoopError) -> int:
    for klass in type(exc).__mro__:
        if klass.__name__ in STATUS_BY_NAME:
            return STATUS_BY_NAME[klass.__name__]
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 400


def error_response(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> Response:
    resp = jsonify({"error": {"type": type_, "message": message}})
    resp.status_code = status
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def _al_loop_error(exc: AlLoopError) -> Response:
    status = status_for(exc)
    if status >= 500:
        log.error("%s %s -> %d %s: %s", request.method, request.path, status, type(exc).__name__, exc)
    else:
        log.info("%s %s -> %d %s: %s", request.method, request.path, status, type(exc).__name__, exc)
    headers = {"Retry-After": "30"} if status == 503 else None
    return error_response(status, type(exc).__name__, str(exc) or type(exc).__name__, headers)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = exc.description or exc.name
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        message = (f"request body too large: the limit is {limit} bytes (AL_LOOP_MAX_REQUEST_MB); split the items "
                   "into several requests or import a server-side file with {\"path\": ...}")
    headers: dict[str, str] = {}
    for key, value in exc.get_headers():
        if key.lower() in ("www-authenticate", "allow", "retry-after"):
            headers[key] = value
    type_ = "".join(part.capitalize() for part in exc.name.split())
    return error_response(status, type_, message, headers)


def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if isinstance(exc, AlLoopError):
        return _al_loop_error(exc)
    log.exception("%s %s -> 500: unexpected %s", request.method, request.path, type(exc).__name__)
    return error_response(500, "InternalServerError", "internal server error; see the server log")


def register_error_handlers(app: Flask) -> None:
    """Install the JSON error handlers on ``app``."""
    app.register_error_handler(AlLoopError, _al_loop_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)

